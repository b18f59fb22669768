//! The notifier: on a thread of its own, it follows the alarm ledger from a
//! durable cursor (so a change the event stream dropped, or one made while
//! the gateway was down, is still seen), starts each routed alarm's
//! escalation, fires the steps that are due, and delivers the outbox.
//!
//! - a new alarm's first message waits `group_wait`, so a flood folded into
//!   one group is one message (the group's, with its count and places);
//! - acknowledging stops the chain; shelved, drill-suppressed and covered
//!   alarms notify nobody (recorded as `skipped`); a step that names nobody
//!   (no one on duty) is recorded and skipped, not waited out;
//! - each channel has a token bucket at its peer's rate: what waits is
//!   merged into one message, never dropped; a failed attempt is retried
//!   with a jittered, doubling delay until the channel's `max_age`, then
//!   given up, counted and raised as the gateway's own `notify-failed`
//!   alarm; a refusal that cannot get better (a bad key) is given up at once
//!   and shown in `/healthz` as `notify/<channel>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::channel::{Channel, Message, Outcome};
use super::outbox::{Escalation, Notification, Outbox};
use super::policy::{people, Plan};
use super::roster::Roster;
use crate::alarms::store::AlarmStore;
use crate::alarms::{Alarm, Command, Lang, Severity, State};
use crate::config::{ChannelKind, Config, PersonConfig};
use crate::rules::task::CommandRequest;
use crate::telemetry::{Health, Metrics, Status};

/// The rule id of the gateway's own alarm for notifications given up.
pub const FAILED_RULE: &str = "notify-failed";

/// The `/healthz` component that warns of a team with nobody on duty.
pub const ROSTER_COMPONENT: &str = "roster";

/// Ledger entries taken per round.
const BATCH: usize = 500;

/// A clock: epoch ms. Tests drive their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the notifier needs.
pub struct Notifier {
    plan: Plan,
    roster: Roster,
    channels: BTreeMap<String, (Channel, Bucket, bool, Duration)>,
    alarms: AlarmStore,
    outbox: Outbox,
    offset: chrono::FixedOffset,
    link: Option<String>,
    /// The one-time tokens of ack links (policies with `ack_links`).
    ack: Option<super::ack::AckLinks>,
    commands: mpsc::Sender<CommandRequest>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    clock: Clock,
    /// Channels whose last message was given up: the `notify-failed` alarm holds while any is.
    failing: BTreeSet<String>,
    /// The minute the roster was last checked for teams with nobody on duty.
    roster_minute: Option<i64>,
    http: reqwest::Client,
}

/// A token bucket of one channel.
#[derive(Debug, Clone)]
struct Bucket {
    per_minute: f64,
    tokens: f64,
    at: i64,
}

impl Bucket {
    fn new(per_minute: u32, now: i64) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            tokens: f64::from(per_minute.max(1)),
            at: now,
        }
    }

    fn available(&mut self, now: i64) -> f64 {
        let refill = (now - self.at).max(0) as f64 / 60_000.0 * self.per_minute;
        self.tokens = (self.tokens + refill).min(self.per_minute);
        self.at = now;
        self.tokens
    }
}

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The configuration is wrong (`check` says the same).
    #[error("{0}")]
    Config(String),
    /// A store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::alarms::store::StoreError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] super::outbox::OutboxError),
    /// The ack links' key or table.
    #[error(transparent)]
    Ack(#[from] super::ack::AckError),
}

fn joined(problems: Vec<(String, String)>) -> String {
    problems
        .into_iter()
        .map(|(k, m)| format!("{k}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Channels that send one message per person; the others are group robots.
fn per_person(kind: &ChannelKind) -> bool {
    matches!(kind, ChannelKind::Sms { .. } | ChannelKind::Email { .. })
}

fn default_rate(kind: &ChannelKind) -> u32 {
    match kind {
        ChannelKind::Wecom { .. } | ChannelKind::Dingtalk { .. } => 20,
        ChannelKind::Feishu { .. } => 100,
        ChannelKind::Webhook { .. } | ChannelKind::Sms { .. } | ChannelKind::Email { .. } => 60,
    }
}

impl Notifier {
    /// Prepares the notifier of `cfg`; `None` when no route sends anything.
    pub fn new(
        cfg: &Config,
        data_dir: &std::path::Path,
        commands: mpsc::Sender<CommandRequest>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        clock: Clock,
    ) -> Result<Option<Self>, NotifierError> {
        let plan = Plan::new(cfg).map_err(|p| NotifierError::Config(joined(p)))?;
        if plan.is_empty() {
            return Ok(None);
        }
        let roster = Roster::new(cfg).map_err(|p| NotifierError::Config(joined(p)))?;
        let now = clock();
        let mut channels = BTreeMap::new();
        for (id, c) in &cfg.notify.channels {
            let ch = Channel::new(id, c).map_err(NotifierError::Config)?;
            let rate = c.rate_per_minute.unwrap_or_else(|| default_rate(&c.kind));
            channels.insert(
                id.clone(),
                (ch, Bucket::new(rate, now), per_person(&c.kind), c.max_age),
            );
            health.set(&format!("notify/{id}"), Status::Ok, None);
        }
        let offset = crate::rules::calendar::parse_offset(&cfg.alarms.utc_offset)
            .map_err(NotifierError::Config)?;
        let alarms = AlarmStore::open(&data_dir.join("alarms.db"))?;
        let mut outbox = Outbox::open(&super::outbox::path(data_dir))?;
        if outbox.cursor()?.is_none() {
            // A fresh install does not page anyone for the alarms of the past.
            let last = alarms.last_event_id()?;
            outbox.transaction(|tx| tx.set_cursor(last))?;
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| NotifierError::Config(format!("cannot build the HTTP client: {e}")))?;
        let ack = if cfg.notify.policies.values().any(|p| p.ack_links) {
            Some(super::ack::AckLinks::open(data_dir)?)
        } else {
            None
        };
        Ok(Some(Self {
            ack,
            plan,
            roster,
            channels,
            alarms,
            outbox,
            offset,
            link: cfg.notify.public_url(&cfg.web).map(str::to_owned),
            commands,
            metrics,
            health,
            clock,
            failing: BTreeSet::new(),
            roster_minute: None,
            http,
        }))
    }

    /// Runs on a thread of its own until `cancel`; `wake` is tickled by
    /// every persisted alarm change (a hint: the ledger is the truth).
    pub fn spawn(
        self,
        wake: tokio::sync::broadcast::Receiver<Arc<crate::alarms::Change>>,
        cancel: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("campusgw-notify".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "Cannot start the notifier: no duty alerts will be sent.");
                        return;
                    }
                };
                rt.block_on(self.run(wake, cancel));
            })
    }

    async fn run(
        mut self,
        mut wake: tokio::sync::broadcast::Receiver<Arc<crate::alarms::Change>>,
        cancel: CancellationToken,
    ) {
        info!(channels = self.channels.len(), "Duty notifier running.");
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
                r = wake.recv() => {
                    // Lagged or closed: the ledger has it all anyway.
                    if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        tick.tick().await;
                    }
                }
            }
            if let Err(e) = self.round().await {
                error!(error = %e, "The duty notifier cannot use its store; retrying.");
            }
        }
    }

    /// One round: take in new ledger entries, fire due steps, deliver.
    pub async fn round(&mut self) -> Result<(), NotifierError> {
        let now = (self.clock)();
        self.check_roster(now);
        self.take_events(now)?;
        self.fire_steps(now)?;
        self.deliver(now).await?;
        self.metrics.outbox_depth.set(self.outbox.pending_count()?);
        Ok(())
    }

    /// A team with nobody on duty is a warning in `/healthz` (component
    /// `roster`, degraded, naming the teams and the time); checked once a
    /// minute, as shifts start and end on minutes.
    fn check_roster(&mut self, now: i64) {
        let minute = now.div_euclid(60_000);
        if self.roster_minute == Some(minute) {
            return;
        }
        self.roster_minute = Some(minute);
        let gaps: Vec<String> = self
            .roster
            .duty(now)
            .into_iter()
            .filter(|d| d.people.is_empty())
            .map(|d| match d.team_name {
                Some(name) => format!("{} ({name})", d.team),
                None => d.team.to_owned(),
            })
            .collect();
        if gaps.is_empty() {
            self.health.set(ROSTER_COMPONENT, Status::Ok, None);
            return;
        }
        let at = chrono::DateTime::from_timestamp_millis(now)
            .map(|t| {
                t.with_timezone(&self.offset)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        let detail = format!("nobody on duty at {at}: {}", gaps.join(", "));
        if self
            .health
            .set(ROSTER_COMPONENT, Status::Degraded, Some(detail.clone()))
        {
            warn!(detail = %detail, "A shift has nobody on it: alarms routed to it reach no one on duty.");
        }
    }

    fn take_events(&mut self, now: i64) -> Result<(), NotifierError> {
        loop {
            let cursor = self.outbox.cursor()?.unwrap_or(0);
            let events = self.alarms.events_after(cursor, BATCH)?;
            let Some(last) = events.last().map(|(id, _)| *id) else {
                return Ok(());
            };
            let mut alarms: HashMap<i64, Option<Alarm>> = HashMap::new();
            for (_, e) in &events {
                if let std::collections::hash_map::Entry::Vacant(slot) = alarms.entry(e.alarm_id) {
                    slot.insert(self.alarms.get(e.alarm_id)?);
                }
            }
            let plan = &self.plan;
            let metrics = &self.metrics;
            let offset = self.offset;
            let full = events.len() == BATCH;
            self.outbox.transaction(|tx| {
                for (id, e) in &events {
                    let Some(Some(a)) = alarms.get(&e.alarm_id) else {
                        continue;
                    };
                    match e.action.as_str() {
                        "raise" => {
                            if let Some(why) = &a.suppressed {
                                tx.skip(
                                    a.id,
                                    0,
                                    now,
                                    &format!("drill or maintenance: {why}"),
                                    &format!("alarm:{}:suppressed", a.id),
                                )?;
                                metrics.notification("-", "skipped");
                            } else if a.inhibited_by.is_some() {
                                // Covered by the alarm of the same event, which is told.
                            } else if let Some(p) = plan.route(a) {
                                let due = p.due(0, a.raised_at, plan.group_wait_ms);
                                // A `low` alarm of a policy with digests waits for the next one.
                                let due = if p.digests(a.severity) {
                                    due.and_then(|t| p.next_digest(t, offset))
                                } else {
                                    due
                                };
                                if let Some(at) = due {
                                    tx.start(&Escalation {
                                        alarm_id: a.id,
                                        policy: p.id.clone(),
                                        step: 0,
                                        next_at: at,
                                        raised_at: a.raised_at,
                                    })?;
                                }
                            }
                        }
                        // Handled, folded into a flood group, or covered: the chain stops.
                        "ack" | "group" | "inhibit" => tx.advance(a.id, None)?,
                        "clear" => {
                            let policy = tx.escalation(a.id)?;
                            let on_clear = policy
                                .as_deref()
                                .and_then(|p| plan.policy(p))
                                .is_some_and(|p| p.notify_on_clear);
                            if on_clear {
                                for (channel, who) in tx.delivered(a.id)? {
                                    tx.add(
                                        a.id,
                                        0,
                                        &channel,
                                        &who,
                                        "clear",
                                        "pending",
                                        now,
                                        None,
                                        &format!("alarm:{}:clear:{id}:{channel}:{who}", a.id),
                                    )?;
                                }
                            }
                        }
                        _ => {}
                    }
                    tx.set_cursor(*id)?;
                }
                tx.set_cursor(last)
            })?;
            if !full {
                return Ok(());
            }
        }
    }

    fn fire_steps(&mut self, now: i64) -> Result<(), NotifierError> {
        for esc in self.outbox.due_escalations(now)? {
            let alarm = self.alarms.get(esc.alarm_id)?;
            let policy = self.plan.policy(&esc.policy).cloned();
            // Over: the alarm is gone, its policy removed by a reload, or it was
            // handled, folded into a flood group or covered.
            let (Some(a), Some(p)) = (alarm, policy) else {
                self.outbox
                    .transaction(|tx| tx.advance(esc.alarm_id, None))?;
                continue;
            };
            if matches!(a.state, State::Acked | State::Cleared)
                || a.group.is_some()
                || a.inhibited_by.is_some()
            {
                self.outbox.transaction(|tx| tx.advance(a.id, None))?;
                continue;
            }
            let next = p
                .due(esc.step + 1, esc.raised_at, self.plan.group_wait_ms)
                .map(|at| (esc.step + 1, at));
            let Some(step) = p.step(esc.step) else {
                self.outbox.transaction(|tx| tx.advance(a.id, None))?;
                continue;
            };
            let round = format!("alarm:{}:step:{}", a.id, esc.step);
            if a.state == State::Shelved {
                self.outbox.transaction(|tx| {
                    tx.skip(a.id, esc.step, now, "shelved", &format!("{round}:shelved"))?;
                    tx.advance(a.id, next)
                })?;
                continue;
            }
            let who = people(&step.targets, &self.roster, now);
            if who.is_empty() {
                warn!(alarm = a.id, policy = %p.id, step = esc.step, "An escalation step names nobody on duty now; it is skipped.");
                self.metrics.notification("-", "nobody");
                self.outbox.transaction(|tx| {
                    tx.skip(
                        a.id,
                        esc.step,
                        now,
                        "nobody on duty",
                        &format!("{round}:nobody"),
                    )?;
                    tx.advance(a.id, next)
                })?;
                continue;
            }
            // A digest is its alarms' only message: no escalation after it.
            let (kind, next) = if p.digests(a.severity) {
                ("digest", None)
            } else {
                ("alarm", next)
            };
            let channels = &self.channels;
            self.outbox.transaction(|tx| {
                for c in &step.channels {
                    let Some((_, _, personal, _)) = channels.get(c) else {
                        continue;
                    };
                    if *personal {
                        for person in &who {
                            tx.add(
                                a.id,
                                esc.step,
                                c,
                                &person.id,
                                kind,
                                "pending",
                                now,
                                None,
                                &format!("{round}:{c}:{}", person.id),
                            )?;
                        }
                    } else {
                        let ids: Vec<&str> = who.iter().map(|p| p.id.as_str()).collect();
                        tx.add(
                            a.id,
                            esc.step,
                            c,
                            &ids.join(","),
                            kind,
                            "pending",
                            now,
                            None,
                            &format!("{round}:{c}"),
                        )?;
                    }
                }
                tx.advance(a.id, next)
            })?;
        }
        Ok(())
    }

    async fn deliver(&mut self, now: i64) -> Result<(), NotifierError> {
        let due = self.outbox.due(now, 200)?;
        let mut by_channel: BTreeMap<String, Vec<Notification>> = BTreeMap::new();
        for n in due {
            by_channel.entry(n.channel.clone()).or_default().push(n);
        }
        for (channel, rows) in by_channel {
            let Some((ch, bucket, personal, max_age)) = self.channels.get_mut(&channel) else {
                // The channel was removed from the configuration.
                for n in rows {
                    self.outbox.record(
                        n.id,
                        "failed",
                        now,
                        None,
                        "the channel is no longer configured",
                    )?;
                    self.metrics.notification(&channel, "failed");
                }
                continue;
            };
            let (ch, personal, max_age) = (ch.clone(), *personal, *max_age);
            let tokens = bucket.available(now).floor() as usize;
            if tokens == 0 {
                // Over the peer's rate: they wait (and are merged when a token comes).
                for n in rows
                    .iter()
                    .filter(|n| now - n.created_at > max_age.as_millis() as i64)
                {
                    self.give_up(
                        n,
                        &channel,
                        now,
                        "waited past the channel's max_age behind its rate limit",
                    )?;
                }
                continue;
            }
            // A digest is one message per recipient, whatever it holds.
            let (digest, rows): (Vec<Notification>, Vec<Notification>) =
                rows.into_iter().partition(|n| n.kind == "digest");
            let mut batches: Vec<Vec<Notification>> = Vec::new();
            let mut by_people: BTreeMap<String, Vec<Notification>> = BTreeMap::new();
            for n in digest {
                by_people.entry(n.people.clone()).or_default().push(n);
            }
            batches.extend(by_people.into_values());
            let tokens = tokens.saturating_sub(batches.len());
            // A group robot with more waiting than it may take now gets one
            // merged message; per-person messages go one by one.
            if !personal && rows.len() > tokens && !rows.is_empty() {
                batches.push(rows);
            } else {
                batches.extend(rows.into_iter().take(tokens).map(|n| vec![n]));
            }
            for batch in batches {
                if let Some((_, b, _, _)) = self.channels.get_mut(&channel) {
                    b.tokens -= 1.0;
                }
                let msg = self.compose(&batch)?;
                let outcome = ch.send(&self.http, &msg, now).await;
                self.settle(&batch, &channel, outcome, now, max_age)?;
            }
        }
        Ok(())
    }

    fn settle(
        &mut self,
        batch: &[Notification],
        channel: &str,
        outcome: Outcome,
        now: i64,
        max_age: Duration,
    ) -> Result<(), NotifierError> {
        let component = format!("notify/{channel}");
        match outcome {
            Outcome::Delivered(answer) => {
                for n in batch {
                    self.outbox.record(n.id, "sent", now, Some(now), &answer)?;
                    self.metrics.notification(channel, "sent");
                }
                self.health.set(&component, Status::Ok, None);
                if self.failing.remove(channel) && self.failing.is_empty() {
                    self.system_alarm(false, String::new());
                }
            }
            Outcome::Retry(answer) => {
                for n in batch {
                    if now - n.created_at > max_age.as_millis() as i64 {
                        self.give_up(n, channel, now, &answer)?;
                        continue;
                    }
                    // 5 s doubling to 5 minutes, ±25 %: many gateways behind
                    // one relay do not retry in step.
                    let base = 5_000i64.saturating_mul(1 << n.attempts.min(6)).min(300_000);
                    let jitter = rand::thread_rng().gen_range(-(base / 4)..=(base / 4));
                    self.outbox
                        .record(n.id, "pending", now + base + jitter, None, &answer)?;
                    self.metrics.notification(channel, "retried");
                }
                self.health.set(&component, Status::Degraded, Some(answer));
            }
            Outcome::Permanent(answer) => {
                error!(channel, answer = %answer, "A channel refused a duty alert; fix its address, key or secret (campusgw notify test).");
                self.health
                    .set(&component, Status::Down, Some(answer.clone()));
                for n in batch {
                    self.give_up(n, channel, now, &answer)?;
                }
            }
        }
        Ok(())
    }

    fn give_up(
        &mut self,
        n: &Notification,
        channel: &str,
        now: i64,
        why: &str,
    ) -> Result<(), NotifierError> {
        self.outbox.record(n.id, "failed", now, None, why)?;
        self.metrics.notification(channel, "failed");
        self.failing.insert(channel.to_owned());
        self.system_alarm(
            true,
            format!(
                "duty alert for alarm {} not delivered through `{channel}`: {why}",
                n.alarm_id
            ),
        );
        Ok(())
    }

    /// The gateway's own alarm while notifications are being given up.
    fn system_alarm(&self, active: bool, detail: String) {
        let cmd = Command::System {
            rule: FAILED_RULE.into(),
            active,
            severity: Severity::High,
            message: crate::alarms::Text::two(
                format!("值班通知发送失败：{detail}"),
                format!("Duty alerts are failing: {detail}"),
            ),
        };
        let (tx, _rx) = oneshot::channel();
        if self.commands.try_send((cmd, tx)).is_err() {
            warn!("The alarm engine is busy; the notify-failed alarm waits for the next failure.");
        }
    }

    /// The ack links of a notification, one per person (name, URL), when its
    /// alarm's policy has `ack_links`; the same on every attempt.
    fn ack_links(
        &self,
        n: &Notification,
        people: &[&PersonConfig],
    ) -> Result<Vec<(String, String)>, NotifierError> {
        let (Some(ack), Some(base)) = (&self.ack, &self.link) else {
            return Ok(Vec::new());
        };
        if n.kind != "alarm" {
            return Ok(Vec::new());
        }
        let expiry = self
            .outbox
            .policy_of(n.alarm_id)?
            .and_then(|p| self.plan.policy(&p).and_then(|p| p.ack_links_ms));
        let Some(expiry) = expiry else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for p in people {
            let token = ack.issue(
                &n.key,
                &p.id,
                n.alarm_id,
                n.created_at,
                n.created_at.saturating_add(expiry),
            )?;
            out.push((p.name.clone(), format!("{base}/ack/{token}")));
        }
        Ok(out)
    }

    /// The message of a batch of notifications (one, or several merged).
    fn compose(&self, batch: &[Notification]) -> Result<Message, NotifierError> {
        let mut parts = Vec::new();
        let mut fields = BTreeMap::new();
        let mut mobiles = Vec::new();
        let mut phone = None;
        let mut email = None;
        let mut lang = Lang::Zh;
        for n in batch {
            let people: Vec<&PersonConfig> = n
                .people
                .split(',')
                .filter_map(|id| self.roster.person(id))
                .collect();
            if let [one] = people.as_slice() {
                lang = one.lang;
                phone = one.phone.clone();
                email = one.email.clone();
            }
            for p in &people {
                if let Some(m) = p.dingtalk_mobile.as_ref().or(p.phone.as_ref()) {
                    if !mobiles.contains(m) {
                        mobiles.push(m.clone());
                    }
                }
            }
            if let Some(a) = self.alarms.get(n.alarm_id)? {
                let acks = self.ack_links(n, &people)?;
                let (title, text, f) =
                    describe(&a, &n.kind, lang, self.offset, self.link.as_deref(), &acks);
                if fields.is_empty() {
                    fields = f;
                }
                parts.push((title, text));
            }
        }
        let digest = batch.iter().all(|n| n.kind == "digest");
        let (title, text) = match parts.as_slice() {
            [(t, x)] => (t.clone(), x.clone()),
            _ if digest => (
                match lang {
                    Lang::Zh => format!("【提示汇总】{} 条提示报警", parts.len()),
                    Lang::En => format!("[Digest] {} low alarms", parts.len()),
                },
                parts
                    .iter()
                    .map(|(t, x)| format!("{t}\n{x}"))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
            _ => (
                match lang {
                    Lang::Zh => format!("【{} 条报警】", parts.len()),
                    Lang::En => format!("[{} alarms]", parts.len()),
                },
                parts
                    .iter()
                    .map(|(t, x)| format!("{t}\n{x}"))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
        };
        let key = batch
            .iter()
            .map(|n| n.key.as_str())
            .collect::<Vec<_>>()
            .join("+");
        Ok(Message {
            title,
            text,
            mobiles,
            phone,
            email,
            idempotency_key: key,
            fields,
        })
    }
}

/// An alarm in words for a person: title, text and the template fields.
/// A severity as a duty message (and its ack page) words it.
pub(crate) fn severity_word(s: Severity, lang: Lang) -> &'static str {
    match (lang, s) {
        (Lang::Zh, Severity::Critical) => "紧急",
        (Lang::Zh, Severity::High) => "重要",
        (Lang::Zh, Severity::Medium) => "一般",
        (Lang::Zh, Severity::Low) => "提示",
        (Lang::En, s) => s.as_str(),
    }
}

fn describe(
    a: &Alarm,
    kind: &str,
    lang: Lang,
    offset: chrono::FixedOffset,
    link: Option<&str>,
    acks: &[(String, String)],
) -> (String, String, BTreeMap<String, String>) {
    let sev = severity_word(a.severity, lang);
    let resolved = kind == "clear";
    let what = a.name.get(lang).to_owned();
    let title = match (lang, resolved) {
        (Lang::Zh, false) => format!("【{sev}】{what}"),
        (Lang::Zh, true) => format!("【已恢复】{what}"),
        (Lang::En, false) => format!("[{sev}] {what}"),
        (Lang::En, true) => format!("[resolved] {what}"),
    };
    let place = a.place();
    let time = chrono::DateTime::from_timestamp_millis(if resolved {
        a.cleared_at.unwrap_or(a.raised_at)
    } else {
        a.raised_at
    })
    .map(|t| {
        t.with_timezone(&offset)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
    .unwrap_or_default();
    let value = a.value.map(|v| v.to_string()).unwrap_or_default();
    // One person's ack link replaces the page's; several get a line each.
    let link = match acks {
        [(_, one)] => one.clone(),
        _ => link
            .map(|l| format!("{}/#alarm-{}", l.trim_end_matches('/'), a.id))
            .unwrap_or_default(),
    };
    let mut lines = vec![a.message.get(lang).to_owned()];
    let label = |zh: &str, en: &str| {
        if lang == Lang::Zh {
            zh.to_owned()
        } else {
            en.to_owned()
        }
    };
    lines.push(format!("{}{place}", label("位置：", "Where: ")));
    if !value.is_empty() {
        lines.push(format!("{}{value}", label("数值：", "Value: ")));
    }
    lines.push(format!("{}{time}", label("时间：", "Time: ")));
    if !a.declared {
        lines.push(label(
            "注意：设备未登记，来源待核实",
            "Note: the device is not declared; check the source",
        ));
    }
    if let [(_, one)] = acks {
        lines.push(format!("{}{one}", label("确认收到：", "Acknowledge: ")));
    } else {
        if !link.is_empty() {
            lines.push(link.clone());
        }
        for (name, url) in acks {
            lines.push(format!(
                "{}{url}",
                label(&format!("{name} 确认："), &format!("{name}, acknowledge: "))
            ));
        }
    }
    let fields = BTreeMap::from([
        ("severity".to_owned(), sev.to_owned()),
        ("what".to_owned(), what),
        ("where".to_owned(), place),
        ("value".to_owned(), value),
        ("time".to_owned(), time),
        ("link".to_owned(), link),
    ]);
    (title, lines.join("\n"), fields)
}
