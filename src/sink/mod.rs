//! Time series out: readings are encoded to line protocol as they arrive,
//! batched by size and by age, and written to InfluxDB with retries.
//!
//! Two tasks: the batcher (owns the readings channel and encodes) and the
//! writer (owns the HTTP client and retries), joined by a small bounded
//! channel of batches, so encoding goes on while a write is in flight and a
//! slow database pushes back on the pipeline instead of growing memory.

pub mod influx;
pub mod line_protocol;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::InfluxConfig;
use crate::reading::Reading;
use crate::rules::engine::Change;
use crate::telemetry::metrics::WriteErrorKind;
use crate::telemetry::{Health, Metrics, Status};
pub use influx::{InfluxWriter, SinkError};

/// The health component name of the sink.
pub const COMPONENT: &str = "influx";

/// Encoded points waiting to be written.
#[derive(Debug, Default)]
pub struct Batch {
    /// Line protocol, one point per line.
    pub lines: String,
    /// How many points.
    pub points: usize,
}

/// Runs the sink until `rx` closes, then writes what is left. `give_up` ends
/// retrying at a shutdown that ran out of time; what was not written is counted.
pub async fn run(
    cfg: InfluxConfig,
    writer: Option<InfluxWriter>,
    mut rx: mpsc::Receiver<Reading>,
    mut alarms: mpsc::Receiver<Arc<Change>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    give_up: CancellationToken,
) {
    let Some(writer) = writer else {
        health.set(
            COMPONENT,
            Status::Disabled,
            Some("no InfluxDB configured (set influx.url or CAMPUSGW__INFLUX__URL)".into()),
        );
        // Drain, so the pipeline keeps flowing for the page and the rules.
        let depth = metrics.queue_depth("sink");
        let (mut readings_open, mut alarms_open) = (true, true);
        while readings_open || alarms_open {
            tokio::select! {
                r = rx.recv(), if readings_open => match r {
                    Some(_) => {
                        depth.set(rx.len() as i64);
                    }
                    None => readings_open = false,
                },
                a = alarms.recv(), if alarms_open => alarms_open = a.is_some(),
            }
        }
        return;
    };
    info!(target = %writer.target, "Writing time series to InfluxDB.");
    health.set(COMPONENT, Status::Starting, Some(writer.target.clone()));
    let (btx, brx) = mpsc::channel::<Batch>(cfg.max_pending_batches);
    let write_task = tokio::spawn(write_loop(
        cfg.clone(),
        writer,
        brx,
        metrics.clone(),
        health,
        give_up,
    ));

    let depth = metrics.queue_depth("sink");
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    let (mut readings_open, mut alarms_open) = (true, true);
    while readings_open || alarms_open {
        let flush_due = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let added = tokio::select! {
            r = rx.recv(), if readings_open => match r {
                Some(r) => {
                    depth.set(rx.len() as i64);
                    line_protocol::encode(&r, &mut batch.lines);
                    true
                }
                None => {
                    readings_open = false;
                    false
                }
            },
            a = alarms.recv(), if alarms_open => match a {
                Some(c) => {
                    line_protocol::encode_alarm(&c, &mut batch.lines);
                    true
                }
                None => {
                    alarms_open = false;
                    false
                }
            },
            () = flush_due => {
                deadline = None;
                if btx.send(std::mem::take(&mut batch)).await.is_err() {
                    break;
                }
                false
            }
        };
        if added {
            batch.points += 1;
            if batch.points == 1 {
                deadline = Some(Instant::now() + cfg.flush_interval);
            }
            if batch.points >= cfg.batch_size {
                deadline = None;
                if btx.send(std::mem::take(&mut batch)).await.is_err() {
                    break;
                }
            }
        }
    }
    if batch.points > 0 {
        let _ = btx.send(batch).await;
    }
    drop(btx);
    if let Err(e) = write_task.await {
        error!(error = %e, "The InfluxDB writer task failed.");
    }
}

async fn write_loop(
    cfg: InfluxConfig,
    writer: InfluxWriter,
    mut rx: mpsc::Receiver<Batch>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    give_up: CancellationToken,
) {
    let pending = metrics.queue_depth("sink_batches");
    while let Some(batch) = rx.recv().await {
        pending.set(rx.len() as i64);
        let body = writer.body(&batch.lines);
        drop(batch.lines);
        let mut delay = cfg.retry_min;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = writer.write(body.clone()) => r,
                () = give_up.cancelled() => {
                    metrics.drop_points("shutdown", batch.points as u64);
                    error!(points = batch.points, "Shutdown deadline passed: points not written.");
                    break;
                }
            };
            match result {
                Ok(()) => {
                    metrics
                        .write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics.points_written.inc_by(batch.points as u64);
                    metrics.batches_written.inc();
                    if health.set(COMPONENT, Status::Ok, Some(writer.target.clone())) {
                        info!(target = %writer.target, "InfluxDB accepts writes.");
                    }
                    break;
                }
                Err(e) => {
                    metrics.write_error(e.kind);
                    let changed = health.set(COMPONENT, Status::Down, Some(e.detail.clone()));
                    match e.kind {
                        WriteErrorKind::Rejected => {
                            // Retrying the same bytes would be refused again.
                            metrics.drop_points("rejected", batch.points as u64);
                            error!(points = batch.points, error = %e, "InfluxDB refused a batch; it is dropped.");
                            break;
                        }
                        WriteErrorKind::Config => {
                            if changed {
                                error!(error = %e, "InfluxDB refuses our writes; fix the configuration. Retrying slowly.");
                            }
                            // Not a retry loop: one probe per retry_max until someone fixes it.
                            delay = cfg.retry_max;
                        }
                        WriteErrorKind::Network | WriteErrorKind::Server => {
                            if changed {
                                warn!(error = %e, "InfluxDB write failed; retrying with backoff.");
                            }
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(jitter(delay)) => {}
                        () = give_up.cancelled() => {}
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
