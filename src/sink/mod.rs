//! Time series out, through the disk spool: readings are encoded to line
//! protocol as they arrive, made durable in the spool, acknowledged, and
//! written to InfluxDB from the spool with retries.
//!
//! Three stages, each owning one thing:
//! - the batcher (task) owns the readings channel: it encodes readings into a
//!   chunk, moves each reading's [`Ack`] into it, and hands the chunk to the
//!   appender once it holds as many QoS 1 messages as the broker's window
//!   allows ([`Grouping`]) or its first point is 50 ms old, and the appender
//!   is free. Whatever arrives during an fsync rides on the next one (group
//!   commit): ~20 fsyncs a second whatever the rate, once the window is known
//!   to be large, and a broker with a small window is never kept waiting
//!   past its first stall.
//! - the appender (a blocking thread) owns the spool's segment file: it
//!   appends the chunks, fsyncs, and only then drops their `Ack`s, which
//!   confirms the messages to the broker. A disk error (full) is retried
//!   every second with nothing acknowledged; at a shutdown out of time the
//!   chunks' `Ack`s are abandoned, so the broker sends them again.
//! - the writer (task) owns the InfluxDB client: it reads batches of up to
//!   `batch_size` points from the spool (or fewer once the oldest has waited
//!   `flush_interval`), writes them in order with retries, and commits them.
//!   A backlog after an outage is replayed oldest first while new data keeps
//!   being spooled behind it. A batch the database refuses (400) is split
//!   until only the refused lines are left (`bisect`); those are dropped and
//!   counted, the rest stored.
//!
//! Memory stays bounded whatever the load: one chunk being filled, one
//! being appended, one batch being written. A database slower than the input
//! grows the spool on disk (bounded by `gateway.spool_max_mb`), not RAM;
//! `campusgw_spool_points` shows the backlog.

pub mod bisect;
pub mod influx;
pub mod line_protocol;
pub mod spool;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alarms::Change;
use crate::config::InfluxConfig;
use crate::reading::{Ack, Reading};
use crate::telemetry::metrics::WriteErrorKind;
use crate::telemetry::{Health, LogLimiter, Metrics, Status};
use influx::WriteError;
pub use influx::{InfluxWriter, SinkError};
pub use spool::{Appender, Spool, SpoolConfig, SpoolError};

/// The health component name of the sink.
pub const COMPONENT: &str = "influx";

/// Group commit: a chunk goes to the spool (write, fdatasync, then the
/// PUBACKs) once its first point is this old, or earlier once it holds the
/// [`Grouping`] limit of QoS 1 messages. A reading's acknowledgement waits at
/// most this long plus an fsync (its alarm does not wait at all). At 1,000
/// messages/s an fsync cycle (the appender's wake, the write, fdatasync, the
/// PUBACKs' wake) cost ~150 µs of CPU, and 10 ms here made ~100 of them a
/// second: ~15 µs of every message.
pub(crate) const HAND_OVER_AFTER: Duration = Duration::from_millis(50);

/// The fewest QoS 1 messages a chunk may wait for: fewer than the 20 a
/// broker with mosquitto's default window (`max_inflight_messages`) lets
/// wait, so such a broker never waits for the timer.
const MIN_GROUP: usize = 16;

/// How many QoS 1 messages a chunk gathers before it goes to the spool.
///
/// The broker sends at most its window of messages unacknowledged, and MQTT
/// 3.1.1 gives no way to ask it how many: a chunk that waits for more than
/// the window lets through waits for the timer, every time. So the limit is
/// learnt. It starts at [`MIN_GROUP`] and grows by an eighth with each chunk
/// that reaches it. A chunk that is due by the timer while its input has
/// stopped (no QoS 1 message for a quarter of the wait) with `waiting`
/// messages unacknowledged — in it and in the appender, every one of them
/// still unacknowledged to the broker — is taken for a full window: the
/// limit drops to 7/8 of `waiting` (at least [`MIN_GROUP`]) and stays under
/// it until more than `waiting` are seen unacknowledged at once (the window
/// is larger then: a burst that simply ended looks the same as a window).
/// With mosquitto's default window of 20 that is one stall of
/// [`HAND_OVER_AFTER`]; with the 1,000 of `deploy/mosquitto-gateway.conf`
/// the limit grows until the timer hands the chunks over.
///
/// One window is assumed: the MQTT source's one connection (Modbus polls and
/// QoS 0 messages carry no acknowledgement and do not count).
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// Messages a chunk gathers before it goes early.
    limit: usize,
    /// The window as far as a stall showed it, until disproved.
    ceiling: Option<usize>,
    /// Never more than a chunk holds (`influx.batch_size`).
    most: usize,
}

impl Grouping {
    /// Starts at the smallest limit; `most` bounds it (the batch size).
    pub fn new(most: usize) -> Self {
        Grouping {
            limit: MIN_GROUP.min(most.max(1)),
            ceiling: None,
            most: most.max(1),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn cap(&self) -> usize {
        let cap = self
            .ceiling
            .map_or(self.most, |c| (c * 7 / 8).max(MIN_GROUP));
        cap.min(self.most)
    }

    /// `waiting` messages are unacknowledged at once (a sound lower bound
    /// of the window): a ceiling below it was a burst's end, not the window.
    pub fn seen(&mut self, waiting: usize) {
        if self.ceiling.is_some_and(|c| waiting > c) {
            self.ceiling = None;
        }
    }

    /// A chunk reached the limit: try a larger one next time.
    pub fn reached(&mut self) {
        self.limit = (self.limit + self.limit / 8 + 1).min(self.cap());
    }

    /// A chunk went by the timer with `waiting` unacknowledged, its input
    /// stopped (`quiet`) or not.
    pub fn timed_out(&mut self, waiting: usize, quiet: bool) {
        if quiet && waiting >= MIN_GROUP && waiting < self.limit {
            self.ceiling = Some(waiting);
            self.limit = self.limit.min(self.cap());
        }
    }
}

/// Encoded readings on their way into the spool, with their tokens.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Line protocol, one point per line.
    pub lines: String,
    /// How many points.
    pub points: usize,
    /// Dropped once the chunk is durable: that confirms the messages.
    pub acks: Vec<Ack>,
    /// When its first point came.
    since: Option<Instant>,
}

impl Chunk {
    /// It goes to the spool now: the group's limit of QoS 1 messages, a
    /// full batch, or its time.
    fn ready(&self, group: &Grouping, max_points: usize, now: Instant) -> bool {
        self.acks.len() >= group.limit()
            || self.points >= max_points
            || self.due().is_some_and(|d| d <= now)
    }

    fn add_point(&mut self) {
        self.points += 1;
        self.since.get_or_insert_with(Instant::now);
    }

    /// When it goes to the spool even if it stays small.
    fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + HAND_OVER_AFTER)
    }

    /// The chunk was not persisted: its messages must be sent again.
    fn abandon(&self) {
        for a in &self.acks {
            a.abandon();
        }
    }
}

/// The sink's parts: what `Sink::run` works with.
pub struct Sink {
    /// Where the InfluxDB writer runs (a batch's gzip and HTTP take milliseconds).
    pub writer_rt: tokio::runtime::Handle,
    /// `[influx]`.
    pub cfg: InfluxConfig,
    /// Shortest time between two spool fsyncs (`gateway.spool_sync_interval`).
    pub sync_interval: Duration,
    /// The spool, and its one appender.
    pub spool: (Arc<Spool>, Appender),
    /// The InfluxDB writer; none: readings stay in the spool.
    pub writer: Option<InfluxWriter>,
    /// Readings; the router holds the other end.
    pub readings: mpsc::Receiver<Arc<Reading>>,
    /// Alarm transitions (already durable); the rules task holds the other end.
    pub alarms: mpsc::Receiver<Arc<Change>>,
    /// Finished bus episodes (`bus_episode`); the bus task holds the other end.
    pub episodes: mpsc::Receiver<Arc<crate::bus::task::EpisodePoint>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Health.
    pub health: Arc<Health>,
    /// Ends retrying at a shutdown that ran out of time.
    pub give_up: CancellationToken,
}

impl Sink {
    /// Runs the sink until the readings close, then spools what is left and
    /// writes what it can. `give_up` ends retrying at a shutdown that ran out
    /// of time; what was not written stays in the spool for the next start.
    /// The batcher runs where it is spawned (beside the router, so a reading
    /// is handed on without waking another thread); the writer runs on
    /// `writer_rt`.
    pub async fn run(self) {
        let Sink {
            writer_rt,
            cfg,
            sync_interval,
            spool: (spool, appender),
            writer,
            readings: mut rx,
            mut alarms,
            mut episodes,
            metrics,
            health,
            give_up,
        } = self;
        let writer_task = match writer {
            Some(writer) => {
                info!(target = %writer.target, "Writing time series to InfluxDB.");
                health.set(COMPONENT, Status::Starting, Some(writer.target.clone()));
                Some(writer_rt.spawn(write_loop(
                    cfg.clone(),
                    writer,
                    spool.clone(),
                    metrics.clone(),
                    health.clone(),
                    give_up.clone(),
                )))
            }
            None => {
                health.set(
                    COMPONENT,
                    Status::Disabled,
                    Some("no InfluxDB configured (set influx.url or CAMPUSGW__INFLUX__URL): readings are kept in the spool".into()),
                );
                None
            }
        };
        // Capacity 1: one chunk queued while one is being appended.
        let (ctx, crx) = mpsc::channel::<Chunk>(1);
        // Acknowledgements handed to the appender and not yet released: still
        // unacknowledged to the broker, so part of what its window holds.
        let syncing = Arc::new(AtomicUsize::new(0));
        let append_task = {
            let (health, give_up, syncing) = (health.clone(), give_up.clone(), syncing.clone());
            tokio::task::spawn_blocking(move || {
                append_loop(appender, crx, sync_interval, &syncing, &health, &give_up)
            })
        };

        let depth = metrics.queue_depth("sink");
        let max_points = cfg.batch_size.max(1);
        let mut group = Grouping::new(max_points);
        let mut chunk = Chunk::default();
        // When the last QoS 1 message came: a chunk due while its input had
        // stopped may have met the broker's window.
        let mut last_acked: Option<Instant> = None;
        // Alarm transitions (already durable in the alarm store) ride along.
        let (mut readings_open, mut alarms_open, mut episodes_open) = (true, true, true);
        while readings_open || alarms_open || episodes_open {
            let now = Instant::now();
            let ready = chunk.ready(&group, max_points, now);
            tokio::select! {
                biased;
                permit = ctx.reserve(), if ready => match permit {
                    Ok(permit) => {
                        let acks = chunk.acks.len();
                        if acks >= group.limit() {
                            group.reached();
                        } else if chunk.due().is_some_and(|d| d <= now) {
                            let quiet = last_acked.is_none_or(|t| now - t >= HAND_OVER_AFTER / 4);
                            group.timed_out(acks + syncing.load(Ordering::Acquire), quiet);
                        }
                        syncing.fetch_add(acks, Ordering::AcqRel);
                        permit.send(std::mem::take(&mut chunk));
                    }
                    Err(_) => break,
                },
                () = sleep_until(chunk.due().map(Instant::into_std)), if !ready => {}
                r = rx.recv(), if readings_open && chunk.points < max_points => match r {
                    Some(r) => {
                        depth.set(rx.len() as i64);
                        line_protocol::encode(&r, &mut chunk.lines);
                        chunk.add_point();
                        if let Some(ack) = &r.ack {
                            chunk.acks.push(ack.clone());
                            last_acked = Some(Instant::now());
                            group.seen(chunk.acks.len() + syncing.load(Ordering::Acquire));
                        }
                    }
                    None => readings_open = false,
                },
                a = alarms.recv(), if alarms_open && chunk.points < max_points => match a {
                    Some(c) => {
                        line_protocol::encode_alarm(&c, &mut chunk.lines);
                        chunk.add_point();
                    }
                    None => alarms_open = false,
                },
                e = episodes.recv(), if episodes_open && chunk.points < max_points => match e {
                    Some(e) => {
                        line_protocol::encode_bus_episode(&e, &mut chunk.lines);
                        chunk.add_point();
                    }
                    None => episodes_open = false,
                },
            }
        }
        if chunk.points > 0 {
            if let Err(mpsc::error::SendError(chunk)) = ctx.send(chunk).await {
                chunk.abandon();
            }
        }
        // Readings still queued (the appender is gone): not persisted.
        while let Ok(r) = rx.try_recv() {
            if let Some(a) = &r.ack {
                a.abandon();
            }
        }
        drop(ctx);
        if let Err(e) = append_task.await {
            error!(error = %e, "The spool appender failed.");
        }
        if let Some(task) = writer_task {
            if let Err(e) = task.await {
                error!(error = %e, "The InfluxDB writer task failed.");
            }
        }
    }
}

/// The appender thread: chunks into the spool, fsync, then confirm.
/// `syncing` counts the acknowledgements it holds (the batcher adds them).
fn append_loop(
    mut app: Appender,
    mut rx: mpsc::Receiver<Chunk>,
    sync_interval: Duration,
    syncing: &AtomicUsize,
    health: &Health,
    give_up: &CancellationToken,
) {
    let mut last_sync: Option<std::time::Instant> = None;
    let mut failing = false;
    while let Some(first) = rx.blocking_recv() {
        if let Some(last) = last_sync {
            let wait = (last + sync_interval).saturating_duration_since(std::time::Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let mut group = vec![first];
        while let Ok(c) = rx.try_recv() {
            group.push(c);
        }
        loop {
            let result = group
                .iter()
                .try_for_each(|c| app.append(c.lines.as_bytes(), c.points as u32))
                .and_then(|()| app.sync());
            match result {
                Ok(()) => {
                    if failing {
                        failing = false;
                        health.set(
                            spool::COMPONENT,
                            Status::Ok,
                            Some(app.spool().dir().display().to_string()),
                        );
                        info!("The spool is writable again.");
                    }
                    break;
                }
                Err(e) => {
                    app.rollback();
                    app.make_room();
                    let detail = spool::describe(&e);
                    if health.set(spool::COMPONENT, Status::Down, Some(detail.clone())) || !failing
                    {
                        error!(error = %e, dir = %app.spool().dir().display(), "{detail}");
                    }
                    failing = true;
                    if give_up.is_cancelled() {
                        let points: usize = group.iter().map(|c| c.points).sum();
                        warn!(
                            points,
                            "Shutdown: points not spooled are left to the broker to send again."
                        );
                        group.iter().for_each(Chunk::abandon);
                        break;
                    }
                    spool::sleep_unless(Duration::from_secs(1), give_up);
                }
            }
        }
        last_sync = Some(std::time::Instant::now());
        let acks: usize = group.iter().map(|c| c.acks.len()).sum();
        // Durable now (or abandoned): dropping the tokens tells the broker.
        drop(group);
        syncing.fetch_sub(acks, Ordering::AcqRel);
    }
    app.close();
}

/// The writer task: spool → InfluxDB, in order, then commit.
async fn write_loop(
    cfg: InfluxConfig,
    writer: InfluxWriter,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    give_up: CancellationToken,
) {
    let max_points = cfg.batch_size as u64;
    // Woken for a batch, not for every append (see `Spool::wake_reader_at`).
    spool.wake_reader_at(max_points);
    let mut cursor_failing = false;
    let log_limit = LogLimiter::new(Duration::from_secs(10));
    loop {
        loop {
            let (unread, oldest) = spool.unread();
            let closed = spool.is_closed();
            let due = oldest.map(|t| t + cfg.flush_interval);
            if unread >= max_points
                || (unread > 0 && (closed || due.is_some_and(|d| d <= std::time::Instant::now())))
            {
                break;
            }
            if unread == 0 && closed {
                return;
            }
            tokio::select! {
                () = spool.appended() => {}
                () = sleep_until(due) => {}
                () = give_up.cancelled() => return,
            }
        }
        let reader = spool.clone();
        let gzip = writer.gzip();
        // Reading and compressing take milliseconds: off the async workers,
        // which also serve the page's event streams.
        let batch = match tokio::task::spawn_blocking(move || {
            reader
                .read_batch(max_points)
                .map(|b| b.map(|b| (influx::request_body(&b.lines, gzip), b)))
        })
        .await
        {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                error!(error = %e, "Cannot read the spool; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = give_up.cancelled() => return,
                }
            }
            Err(e) => {
                error!(error = %e, "The spool reader failed.");
                return;
            }
        };
        let (body, batch) = batch;
        let (points, end) = (batch.points, batch.end);
        let out = Out {
            cfg: &cfg,
            writer: &writer,
            spool: &spool,
            metrics: &metrics,
            health: &health,
            give_up: &give_up,
            log_limit: &log_limit,
        };
        if !out.write_batch(&batch.lines, body, points).await {
            info!(
                points = spool.backlog_points(),
                "Points not yet in InfluxDB stay in the spool; they are written at the next start."
            );
            return;
        }
        let committer = spool.clone();
        match tokio::task::spawn_blocking(move || committer.commit(end, points)).await {
            Ok(Ok(())) => cursor_failing = false,
            Ok(Err(e)) => {
                if !cursor_failing {
                    warn!(error = %e, "Cannot save the spool cursor (the points may be written again after a restart, which is harmless).");
                }
                cursor_failing = true;
            }
            Err(e) => error!(error = %e, "The spool commit failed."),
        }
    }
}

async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// What writing one batch works with.
struct Out<'a> {
    cfg: &'a InfluxConfig,
    writer: &'a InfluxWriter,
    spool: &'a Spool,
    metrics: &'a Metrics,
    health: &'a Health,
    give_up: &'a CancellationToken,
    log_limit: &'a LogLimiter,
}

impl Out<'_> {
    /// Writes one batch (`body` is `lines` as sent); true once InfluxDB has
    /// it, all but the lines it refuses for good, false when giving up (shutdown).
    async fn write_batch(&self, lines: &[u8], body: Bytes, points: u64) -> bool {
        let first = match self.write_with_retries(body, points).await {
            bisect::Attempt::Stored => return true,
            bisect::Attempt::GaveUp => return false,
            bisect::Attempt::Refused(e) => e,
        };
        let gzip = self.writer.gzip();
        let refused = bisect::bisect(lines, |part| async move {
            let n = bisect::line_count(part) as u64;
            let body = if part.len() < 64 * 1024 {
                influx::request_body(part, gzip)
            } else {
                // Compressing a large part takes milliseconds: off the async workers.
                let owned = part.to_vec();
                match tokio::task::spawn_blocking(move || influx::request_body(&owned, gzip)).await
                {
                    Ok(b) => b,
                    // The blocking pool is going away: compress here rather than stop writing.
                    Err(_) => influx::request_body(part, gzip),
                }
            };
            self.write_with_retries(body, n).await
        })
        .await;
        let Some(refused) = refused else {
            return false;
        };
        let dropped = refused.len() as u64;
        self.metrics.drop_points("rejected", dropped);
        if let Some(held) = self.log_limit.check("rejected") {
            let (line, e) = refused
                .first()
                .map(|(l, e)| (String::from_utf8_lossy(l), e.detail.as_str()))
                .unwrap_or_default();
            error!(
                dropped,
                points,
                first_line = %line.chars().take(200).collect::<String>(),
                error = %e,
                batch_error = %first.detail,
                held_back = held,
                "InfluxDB refused some points of a batch; only those are dropped, the others are stored."
            );
        }
        true
    }

    /// Writes one body with retries for everything but a refusal.
    async fn write_with_retries(&self, body: Bytes, points: u64) -> bisect::Attempt<WriteError> {
        let (cfg, writer, spool, metrics, health, give_up) = (
            self.cfg,
            self.writer,
            self.spool,
            self.metrics,
            self.health,
            self.give_up,
        );
        let mut delay = cfg.retry_min;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = writer.write(body.clone()) => r,
                () = give_up.cancelled() => return bisect::Attempt::GaveUp,
            };
            match result {
                Ok(()) => {
                    metrics
                        .write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics.points_written.inc_by(points);
                    metrics.batches_written.inc();
                    if health.set(COMPONENT, Status::Ok, Some(writer.target.clone())) {
                        info!(target = %writer.target, "InfluxDB accepts writes.");
                    }
                    return bisect::Attempt::Stored;
                }
                Err(e) => {
                    metrics.write_error(e.kind);
                    // Retrying the same bytes would be refused again: the
                    // caller splits them. The database itself is up.
                    if e.kind == WriteErrorKind::Rejected {
                        return bisect::Attempt::Refused(e);
                    }
                    let changed = health.set(COMPONENT, Status::Down, Some(e.detail.clone()));
                    if e.kind == WriteErrorKind::Config {
                        if changed {
                            error!(error = %e, "InfluxDB refuses our writes; fix the configuration. Retrying slowly.");
                        }
                        // Not a retry loop: one probe per retry_max until someone fixes it.
                        delay = cfg.retry_max;
                    } else if changed {
                        warn!(error = %e, backlog = spool.backlog_points(), "InfluxDB write failed; spooling and retrying with backoff.");
                    }
                    if spool.is_closed() {
                        // Shutting down: the spool keeps it, no need to wait.
                        return bisect::Attempt::GaveUp;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(jitter(delay)) => {}
                        () = give_up.cancelled() => return bisect::Attempt::GaveUp,
                        // Shutting down: the spool keeps it, no need to wait.
                        () = spool.wait_closed() => return bisect::Attempt::GaveUp,
                    }
                    delay = (delay * 2).min(cfg.retry_max);
                }
            }
        }
    }
}

/// ±20 % so that many gateways do not retry in step after a database restart.
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{AckState, Kind, Source, Value};
    use tokio::sync::Notify;

    /// A broker that lets `window` messages wait for their PUBACK and sends
    /// the next one only when one is acknowledged, against the batcher's
    /// grouping: how many times its chunks wait for the timer.
    fn stalls(window: usize, chunks: usize) -> (usize, usize) {
        let mut g = Grouping::new(5_000);
        let mut stalls = 0;
        for _ in 0..chunks {
            // Every chunk's messages are acknowledged before the next is
            // filled: the window's whole is the most a chunk can hold.
            let waiting = window;
            g.seen(waiting);
            if waiting >= g.limit() {
                g.reached();
            } else {
                stalls += 1;
                g.timed_out(waiting, true);
            }
        }
        (stalls, g.limit())
    }

    #[test]
    fn a_broker_with_a_small_window_waits_for_the_timer_once_at_most() {
        // mosquitto's default window.
        let (n, limit) = stalls(20, 1_000);
        assert_eq!(n, 1, "one stall teaches the window");
        assert!(limit <= 20, "{limit}");
        // Smaller than the smallest group: as before, each chunk waits.
        assert_eq!(stalls(10, 10).0, 10);
        // A large window: the limit grows and never stalls the input.
        let (n, limit) = stalls(1_000, 1_000);
        assert!(n <= 1, "{n}");
        assert!(limit > 100 && limit <= 1_000, "{limit}");
    }

    #[test]
    fn the_end_of_a_burst_is_not_taken_for_the_window_for_good() {
        let mut g = Grouping::new(5_000);
        for _ in 0..100 {
            g.reached();
        }
        let grown = g.limit();
        assert_eq!(grown, 5_000, "up to the batch size");
        // A burst ended with 40 waiting: the limit falls under it…
        g.timed_out(40, true);
        assert!(g.limit() <= 40, "{}", g.limit());
        // …and more than 40 waiting at once disproves it: growing again.
        g.seen(41);
        for _ in 0..100 {
            g.reached();
        }
        assert_eq!(g.limit(), grown);
        // Few waiting, or the input still flowing: no conclusion.
        g.timed_out(5, true);
        g.timed_out(100, false);
        assert_eq!(g.limit(), grown);
    }

    /// Acknowledge after persist: a reading's message is confirmed only once
    /// its point is synced in the spool, never before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_is_confirmed_only_after_its_point_is_synced_in_the_spool() {
        let dir = tempfile::tempdir().expect("tmp");
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let spool = Spool::open(
            SpoolConfig::new(dir.path(), 16, true),
            metrics.clone(),
            health.clone(),
        )
        .expect("spool");
        let reader = spool.0.clone();
        let (tx, readings) = mpsc::channel(64);
        let (alarms_tx, alarms) = mpsc::channel(1);
        let (episodes_tx, episodes) = mpsc::channel(1);
        let sink = Sink {
            writer_rt: tokio::runtime::Handle::current(),
            cfg: InfluxConfig::default(),
            sync_interval: Duration::from_millis(2),
            spool,
            writer: None,
            readings,
            alarms,
            episodes,
            metrics,
            health,
            give_up: CancellationToken::new(),
        };
        let task = tokio::spawn(sink.run());
        let wake = Arc::new(Notify::new());
        let mut watches = Vec::new();
        // Fewer than a group: they go by the timer.
        for i in 0..5 {
            let (ack, watch) = Ack::new(&wake);
            let mut r = Reading::new(
                Arc::from("s"),
                Arc::from(format!("d{i}").as_str()),
                Kind::Smoke,
                1_000 + i,
                vec![("temp_c".into(), Value::F64(20.0))],
                Source::Mqtt,
            );
            r.ack = Some(ack);
            tx.send(Arc::new(r)).await.expect("sink");
            watches.push(watch);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let confirmed = watches
                .iter()
                .filter(|w| w.state() == AckState::Confirmed)
                .count() as u64;
            // Read after the states: whatever was confirmed was synced first.
            let synced = reader.unread().0;
            assert!(
                confirmed <= synced,
                "{confirmed} confirmed with {synced} points synced"
            );
            assert!(watches.iter().all(|w| w.state() != AckState::Abandoned));
            if confirmed == watches.len() as u64 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "not confirmed");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        drop((tx, alarms_tx, episodes_tx));
        task.await.expect("sink ends");
    }
}
