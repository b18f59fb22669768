//! The rules task: feeds readings, ticks and operator commands to the
//! engine, writes what changed to the alarm store *before* telling anyone,
//! then publishes it (event stream, MQTT, InfluxDB `alarm` measurement) and
//! refreshes the snapshot the web reads.
//!
//! A store write that fails (disk full) keeps the changes pending and tries
//! again every tick; the alarms stay visible meanwhile, and `/healthz` says so.
//!
//! Acknowledge after persist: a reading that changed an alarm keeps its
//! message's `Ack` until the store has the change on disk (committed, then
//! synced by `sync_then_ack`, see the store's module doc), so a crash or a
//! power cut in between makes the broker send the message again and the
//! alarm is raised again after the restart. A reading that changed nothing
//! lets go at once.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use super::engine::Engine;
use super::RuleSet;
use crate::alarms::store::{AlarmStore, StoreError, WalSync};
use crate::alarms::Alarm;
use crate::alarms::{Change, Command, CommandError};
use crate::config::{Config, ConfigError};
use crate::reading::now_ms;
use crate::reading::{Ack, Reading};
use crate::telemetry::{Health, LogLimiter, Metrics, Status};

/// The health component name of the alarm store.
pub const COMPONENT: &str = "alarms";

/// Readings already queued that are taken with the one that woke the task,
/// so that alarms arriving together (a flood) are one store commit and one
/// WAL sync instead of one each; bounded, so the first one's commit waits
/// for at most this many engine steps (microseconds each).
const GROUP_READINGS: usize = 64;

/// A command with the channel its answer goes back on.
pub type CommandRequest = (Command, oneshot::Sender<Result<Vec<Alarm>, CommandError>>);

/// What the rest of the gateway holds of the rules task.
#[derive(Debug, Clone)]
pub struct RulesHandle {
    /// Operator commands; the answer comes after the store has the change.
    pub commands: mpsc::Sender<CommandRequest>,
    /// New rules (reload).
    pub reload: mpsc::Sender<RuleSet>,
    /// Every persisted change (the event stream, MQTT publication).
    pub changes: broadcast::Sender<Arc<Change>>,
    /// The open alarms, as of the last persisted change.
    pub open: Arc<RwLock<Vec<Alarm>>>,
}

/// Everything the task works with.
pub struct RulesTask {
    /// The engine, already restored from the store.
    pub engine: Engine,
    /// The store, written synchronously (see `persist`).
    pub store: AlarmStore,
    /// Readings from the router.
    pub readings: mpsc::Receiver<Arc<Reading>>,
    /// Commands from the web.
    pub commands: mpsc::Receiver<CommandRequest>,
    /// Reloaded rules.
    pub reload: mpsc::Receiver<RuleSet>,
    /// Where alarm transitions go for InfluxDB.
    pub points: mpsc::Sender<Arc<Change>>,
    /// The handle's broadcast and snapshot.
    pub handle: RulesHandle,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Health.
    pub health: Arc<Health>,
}

/// Watches the gateway's own health and raises what the security room must
/// see as an alarm: the spool dropping data. Checked every two seconds.
pub async fn watch_system(
    health: Arc<Health>,
    commands: mpsc::Sender<CommandRequest>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut last = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let dropping = health.status(crate::sink::spool::COMPONENT) == Some(Status::Degraded);
        if last == Some(dropping) {
            continue;
        }
        last = Some(dropping);
        let cmd = Command::System {
            rule: "gateway-spool-full".into(),
            active: dropping,
            severity: crate::alarms::Severity::High,
            message: crate::alarms::Text::two(
                "网关缓存已满：InfluxDB 无法连接期间，最旧的读数正在被丢弃",
                "The gateway's spool is full: the oldest readings are being dropped while InfluxDB is unreachable",
            ),
        };
        let (tx, _rx) = oneshot::channel();
        if commands.send((cmd, tx)).await.is_err() {
            break;
        }
    }
}

/// Makes committed alarm changes survive a power cut, then lets their
/// messages be acknowledged: one fdatasync for whatever has gathered
/// meanwhile (group commit), off the alarm path; checkpoints the WAL too.
/// Blocking: runs on a thread of its own until the sender is dropped.
///
/// It syncs as soon as it has something. PUBACKs go out in arrival order,
/// so an alarm message waiting here holds back every message behind it in
/// the broker's window: a spacing between syncs (20 ms was tried) would
/// stall a broker with mosquitto's default window of 20 for up to that long
/// at each alarm, for ~1 µs of CPU per message at 5,000 msg/s.
fn sync_then_ack(mut wal: WalSync, mut rx: mpsc::Receiver<Vec<Ack>>, metrics: Arc<Metrics>) {
    while let Some(mut acks) = rx.blocking_recv() {
        while let Ok(more) = rx.try_recv() {
            acks.extend(more);
        }
        if let Err(e) = wal.sync() {
            metrics.alarm_store_errors.inc();
            error!(error = %e, "Cannot sync the alarm store to disk; the broker will send those messages again.");
            for a in &acks {
                a.abandon();
            }
        }
        drop(acks);
        if let Err(e) = wal.checkpoint_if_long() {
            warn!(error = %e, "Cannot checkpoint the alarm store's WAL; trying again later.");
        }
    }
}

/// Opens the store and restores the engine's open alarms.
pub fn restore(engine: &mut Engine, path: &std::path::Path) -> Result<AlarmStore, StoreError> {
    let store = AlarmStore::open(path)?;
    let open = store.load_open()?;
    if !open.is_empty() {
        info!(open = open.len(), "Open alarms restored from the store.");
    }
    engine.restore(open, store.load_suppressions()?, store.next_id()?);
    Ok(store)
}

impl RulesTask {
    /// Runs until the readings channel closes (shutdown), then persists what is pending.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Vec<Change> = Vec::new();
        // Acknowledgements of the messages whose changes are pending: the
        // broker hears "done" only once the alarm store has them.
        let mut held: Vec<Ack> = Vec::new();
        // When the readings behind the pending changes arrived.
        let mut arrived: Vec<Instant> = Vec::new();
        // Committed changes' acknowledgements wait there for the power-cut-safe sync.
        let (syncs, to_sync) = mpsc::channel(1024);
        let syncer = match self.store.wal_sync() {
            Ok(wal) => {
                let metrics = self.metrics.clone();
                Some(tokio::task::spawn_blocking(move || {
                    sync_then_ack(wal, to_sync, metrics)
                }))
            }
            Err(e) => {
                // Acknowledgements then wait for nothing but the commit.
                error!(error = %e, "Cannot open the alarm store for syncing; alarms survive a crash, not a power cut.");
                None
            }
        };
        let log_limit = LogLimiter::new(Duration::from_secs(60));
        self.publish_snapshot();
        loop {
            let mut reply = None;
            // Commands and reloads can change any alarm: the snapshot is
            // then rebuilt from the engine, not updated from the changes.
            let mut rebuild = false;
            let changes = tokio::select! {
                r = self.readings.recv() => match r {
                    Some(first) => {
                        let mut changes = Vec::new();
                        let mut next = Some(first);
                        let mut taken = 0;
                        while let Some(r) = next.take() {
                            let c = self.engine.on_reading(&r, now_ms());
                            if !c.is_empty() {
                                held.extend(r.ack.clone());
                                arrived.push(r.received);
                                changes.extend(c);
                            }
                            taken += 1;
                            if taken < GROUP_READINGS {
                                next = self.readings.try_recv().ok();
                            }
                        }
                        changes
                    }
                    None => break,
                },
                Some((cmd, tx)) = self.commands.recv() => {
                    rebuild = true;
                    let suppression = matches!(cmd, Command::Suppress(_) | Command::EndSuppression { .. });
                    match self.engine.command(cmd, now_ms()) {
                        Ok(changes) => {
                            if suppression {
                                self.save_suppressions();
                            }
                            reply = Some((tx, Ok(changes.iter().map(|c| c.alarm.clone()).collect())));
                            changes
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            continue;
                        }
                    }
                }
                Some(set) = self.reload.recv() => {
                    rebuild = true;
                    info!(rules = set.rules.len(), "Rules reloaded.");
                    self.engine.reload(set, now_ms())
                }
                _ = tick.tick() => self.engine.on_tick(now_ms()),
            };
            for (rule, e) in self.engine.take_eval_errors() {
                self.metrics.rule_errors.inc();
                if let Some(held) = log_limit.check("rule_eval") {
                    warn!(rule = %rule, error = %e, held_back = held, "A rule's expression could not be evaluated.");
                }
            }
            pending.extend(changes);
            if !pending.is_empty() && self.persist(&pending) {
                if !held.is_empty() {
                    // Without a syncer (logged at the start) the commit is all there is.
                    let _ = syncs.send(std::mem::take(&mut held)).await;
                }
                // The list before the stream: a page that fetches the list
                // on hearing of an alarm finds it there.
                if rebuild {
                    self.publish_snapshot();
                } else {
                    self.update_snapshot(&pending);
                }
                for c in pending.drain(..) {
                    self.announce(c);
                }
                for t in arrived.drain(..) {
                    self.metrics
                        .alarm_latency_seconds
                        .observe(t.elapsed().as_secs_f64());
                }
            }
            if let Some((tx, result)) = reply {
                let _ = tx.send(result);
            }
        }
        if !pending.is_empty() {
            if self.persist(&pending) {
                let _ = syncs.send(std::mem::take(&mut held)).await;
                for c in pending.drain(..) {
                    self.announce(c);
                }
            } else {
                // Not durable: the broker must send these messages again.
                for a in &held {
                    a.abandon();
                }
            }
        }
        drop(syncs);
        if let Some(s) = syncer {
            let _ = s.await;
        }
    }

    /// Writes changes to the store; false (and health down) when it failed.
    /// Synchronous on purpose: this task has the alarm path's thread to
    /// itself (see app.rs), and a commit without fsync takes well under a
    /// millisecond, less than a hop to a blocking thread on a busy machine.
    fn persist(&mut self, changes: &[Change]) -> bool {
        let result = self.store.apply(changes);
        match result {
            Ok(()) => {
                if self.health.set(COMPONENT, Status::Ok, None) {
                    info!("The alarm store accepts writes.");
                }
                true
            }
            Err(e) => {
                self.metrics.alarm_store_errors.inc();
                if self
                    .health
                    .set(COMPONENT, Status::Down, Some(e.to_string()))
                {
                    error!(error = %e, "Cannot write the alarm store; alarms are kept in memory and retried.");
                }
                false
            }
        }
    }

    fn save_suppressions(&mut self) {
        if let Err(e) = self.store.save_suppressions(self.engine.suppressions()) {
            error!(error = %e, "Cannot save the zone suppressions.");
        }
    }

    fn announce(&self, c: Change) {
        self.metrics
            .alarm_transition(c.event.action.as_str(), c.alarm.severity.as_str());
        let c = Arc::new(c);
        // No receiver (no page open, no MQTT publication) is fine.
        let _ = self.handle.changes.send(c.clone());
        if self.points.try_send(c).is_err() {
            self.metrics.drop_points("alarm_queue_full", 1);
        }
    }

    fn publish_snapshot(&self) {
        let open: Vec<Alarm> = self.engine.open_alarms().cloned().collect();
        for (state, n) in count_states(&open) {
            self.metrics.set_alarms(state, n);
        }
        *self.handle.open.write().unwrap_or_else(|e| e.into_inner()) = open;
    }

    /// The snapshot brought up to date with committed changes, copying only
    /// the alarms that changed. Copying every open alarm at every change
    /// (what `publish_snapshot` does) was 17 % of the gateway's CPU at 100
    /// alarm changes/s with a few hundred alarms waiting for acknowledgement.
    /// Exact: every change to an open alarm is a `Change` (the store is
    /// written from the same changes).
    fn update_snapshot(&self, changes: &[Change]) {
        let mut open = self.handle.open.write().unwrap_or_else(|e| e.into_inner());
        apply_changes(&mut open, changes);
        for (state, n) in count_states(&open) {
            self.metrics.set_alarms(state, n);
        }
    }
}

/// Applies committed changes to a list of the open alarms: a closed alarm
/// leaves it, any other takes its new version (or joins).
fn apply_changes(open: &mut Vec<Alarm>, changes: &[Change]) {
    for c in changes {
        let at = open.iter().position(|a| a.id == c.alarm.id);
        match (at, c.alarm.is_closed()) {
            (Some(i), true) => {
                open.swap_remove(i);
            }
            (Some(i), false) => open[i] = c.alarm.clone(),
            (None, false) => open.push(c.alarm.clone()),
            (None, true) => {}
        }
    }
}

fn count_states(open: &[Alarm]) -> [(&'static str, i64); 4] {
    use crate::alarms::State::*;
    let n = |s| open.iter().filter(|a| a.state == s && !a.is_group).count() as i64;
    [
        ("unacked", n(Unacked)),
        ("acked", n(Acked)),
        ("cleared_unacked", n(ClearedUnacked)),
        ("shelved", n(Shelved)),
    ]
}
/// Why the rules were not reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has problems (every one listed); the running rules stay.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The rules task is not running (the gateway is stopping).
    #[error("the alarm engine is not running")]
    Stopped,
}

/// The one way the alarm rules are reloaded, for SIGHUP and for
/// `POST /api/admin/reload`: the whole file is loaded and checked as `check`
/// does (so a file `run` would refuse is refused here too), then its rules
/// replace the running ones. Returns how many rules run now.
pub async fn reload(path: &Path, rules: &RulesHandle) -> Result<usize, ReloadError> {
    let file = path.to_owned();
    // Reading and parsing a large file must not hold up a runtime worker.
    let loaded = tokio::task::spawn_blocking(move || Config::load(&file))
        .await
        .map_err(|_| ReloadError::Stopped)??;
    // `load` compiled the rules already as part of validation.
    let set = RuleSet::compile(&loaded.config).map_err(|p| ConfigError {
        file: Some(path.to_owned()),
        problems: p
            .into_iter()
            .map(|(path, message)| crate::config::Problem {
                path,
                origin: None,
                message,
            })
            .collect(),
        note: None,
    })?;
    let n = set.rules.len();
    rules
        .reload
        .send(set)
        .await
        .map_err(|_| ReloadError::Stopped)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::reading::{FieldName, Kind, Source, Value};
    use crate::rules::engine::Flood;

    const T0: i64 = 1_764_380_000_000;

    fn smoke(device: &str, alarm: bool, ts: i64) -> Reading {
        Reading::new(
            Arc::from("yz"),
            Arc::from(device),
            Kind::Smoke,
            ts,
            vec![(FieldName::Borrowed("alarm"), Value::Bool(alarm))],
            Source::Mqtt,
        )
    }

    fn ids(open: &[Alarm]) -> Vec<(i64, String, bool, Option<i64>)> {
        let mut v: Vec<_> = open
            .iter()
            .map(|a| (a.id, a.state.as_str().to_owned(), a.active, a.group))
            .collect();
        v.sort();
        v
    }

    /// The list the web reads, kept up to date from the committed changes
    /// alone, is the engine's own set of open alarms through raises, clears,
    /// repeats, a flood group forming and growing, and acknowledgements.
    #[test]
    fn the_snapshot_updated_from_changes_is_the_engines_open_alarms() {
        let text = format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{}",
            "[[rules]]\nid = \"smoke-alarm\"\nseverity = \"critical\"\nkinds = [\"smoke\"]\nmessage = \"smoke {device}\"\ncondition = { type = \"equals\", field = \"alarm\", value = true }\n"
        );
        let cfg = Config::from_toml(&text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let set = RuleSet::compile(&cfg).expect("rules");
        let flood = Flood {
            threshold: 3,
            window_ms: 10_000,
        };
        let mut engine = Engine::new(set, flood, &cfg.known_devices(), T0);
        let mut open: Vec<Alarm> = Vec::new();
        let mut now = T0;
        let mut saw_group = false;
        let mut step = |engine: &mut Engine, open: &mut Vec<Alarm>, changes: Vec<Change>| {
            apply_changes(open, &changes);
            assert_eq!(
                ids(open),
                ids(&engine.open_alarms().cloned().collect::<Vec<_>>())
            );
            saw_group |= open.iter().any(|a| a.is_group);
        };
        for round in 0..3 {
            for d in 0..6 {
                now += 100;
                let c = engine.on_reading(&smoke(&format!("s{d}"), true, now), now);
                step(&mut engine, &mut open, c);
            }
            for d in 0..6 {
                now += 100;
                let c = engine.on_reading(&smoke(&format!("s{d}"), false, now), now);
                step(&mut engine, &mut open, c);
            }
            now += 1_000;
            let c = engine.on_tick(now);
            step(&mut engine, &mut open, c);
            // Acknowledge every other open alarm (groups with their members).
            let targets: Vec<i64> = engine
                .open_alarms()
                .filter(|a| a.group.is_none())
                .map(|a| a.id)
                .filter(|id| (id + round) % 2 == 0)
                .collect();
            for id in targets {
                let by = "张老师".to_owned();
                if let Ok(c) = engine.command(
                    Command::Ack {
                        id,
                        by,
                        comment: None,
                    },
                    now,
                ) {
                    step(&mut engine, &mut open, c);
                }
            }
        }
        assert!(saw_group, "no flood group formed");
    }
}
