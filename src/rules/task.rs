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
            let changes = tokio::select! {
                r = self.readings.recv() => match r {
                    Some(r) => {
                        let changes = self.engine.on_reading(&r, now_ms());
                        if !changes.is_empty() {
                            held.extend(r.ack.clone());
                            arrived.push(r.received);
                        }
                        changes
                    }
                    None => break,
                },
                Some((cmd, tx)) = self.commands.recv() => {
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
                for c in pending.drain(..) {
                    self.announce(c);
                }
                for t in arrived.drain(..) {
                    self.metrics
                        .alarm_latency_seconds
                        .observe(t.elapsed().as_secs_f64());
                }
                self.publish_snapshot();
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
