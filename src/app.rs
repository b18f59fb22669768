//! Wiring only: builds the components, connects them with bounded channels,
//! runs them on a `TaskTracker`, and shuts them down in order.
//!
//! Shutdown: the sources stop taking messages first; their senders drop, so
//! the router and then the sink see their inputs close and drain into the
//! spool, which confirms the messages; the MQTT source sends those last
//! PUBACKs before it disconnects. The writer then tries once to empty the
//! spool into InfluxDB. If all that takes longer than
//! `gateway.shutdown_timeout`, the sink gives up: what is in the spool is
//! written at the next start, and what is not is abandoned, so the broker
//! sends it again.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::registry::Registry;
use crate::sink::{InfluxWriter, Spool, SpoolConfig};
use crate::sources::mqtt::MqttSource;
use crate::telemetry::{Health, Metrics};
use crate::web::{self, AppState};

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where the HTTP server listens.
    pub web_addr: SocketAddr,
    /// Its metrics (tests read them directly).
    pub metrics: Arc<Metrics>,
    /// Its component states.
    pub health: Arc<Health>,
    /// Its devices.
    pub registry: Arc<Registry>,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Gateway {
    /// Starts every component; returns once the HTTP server is bound.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        install_crypto_provider();
        std::fs::create_dir_all(&cfg.gateway.data_dir).with_context(|| {
            format!(
                "cannot create gateway.data_dir {}",
                cfg.gateway.data_dir.display()
            )
        })?;
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let registry = Arc::new(Registry::new(&cfg));
        let shutdown = CancellationToken::new();
        let give_up = CancellationToken::new();
        let cap = cfg.gateway.queue_capacity;

        // sources → router → sink
        let (source_tx, source_rx) = mpsc::channel(cap);
        let (sink_tx, sink_rx) = mpsc::channel(cap);

        let spool_cfg = SpoolConfig::new(
            &cfg.gateway.data_dir,
            cfg.gateway.spool_max_mb,
            cfg.gateway.spool_fsync,
        );
        let spool = {
            let (m, h) = (metrics.clone(), health.clone());
            tokio::task::spawn_blocking(move || Spool::open(spool_cfg, m, h))
                .await
                .context("the spool opener failed")?
                .context("cannot open the spool under gateway.data_dir")?
        };
        let writer = InfluxWriter::new(&cfg.influx)?;
        if writer.is_none() {
            warn!("No InfluxDB is configured (influx.url or CAMPUSGW__INFLUX__URL): readings are shown but not stored.");
        }
        let mqtt = MqttSource::new(
            cfg.mqtt.clone(),
            &cfg.gateway,
            source_tx,
            metrics.clone(),
            health.clone(),
        )?;

        let state = AppState {
            metrics: metrics.clone(),
            health: health.clone(),
            registry: registry.clone(),
        };
        let (web_addr, server) = web::bind(cfg.web.listen, state, shutdown.clone())
            .await
            .with_context(|| format!("cannot listen on web.listen {}", cfg.web.listen))?;
        info!(address = %web_addr, "HTTP server listening.");

        let tracker = TaskTracker::new();
        let sources_stop = shutdown.child_token();
        tracker.spawn(async move {
            if let Err(e) = mqtt.run(sources_stop).await {
                error!(error = %e, "The MQTT source stopped.");
            }
        });
        tracker.spawn(crate::router::run(
            source_rx,
            sink_tx,
            registry.clone(),
            metrics.clone(),
        ));
        let pipeline = tracker.spawn(crate::sink::run(
            cfg.influx.clone(),
            cfg.gateway.spool_sync_interval,
            spool,
            writer,
            sink_rx,
            metrics.clone(),
            health.clone(),
            give_up.clone(),
        ));
        tracker.spawn(async move {
            if let Err(e) = server.await {
                error!(error = %e, "The HTTP server failed.");
            }
        });
        tracker.close();

        let deadline = cfg.gateway.shutdown_timeout;
        let stop = shutdown.clone();
        let done = tokio::spawn(async move {
            stop.cancelled().await;
            info!("Shutting down: flushing what was accepted.");
            if tokio::time::timeout(deadline, pipeline).await.is_err() {
                warn!(timeout = ?deadline, "Flushing took too long; giving up on the rest.");
                give_up.cancel();
            }
            if tokio::time::timeout(deadline, tracker.wait())
                .await
                .is_err()
            {
                error!("Some tasks did not stop in time.");
            }
            info!("Stopped.");
        });

        Ok(Self {
            web_addr,
            metrics,
            health,
            registry,
            shutdown,
            done,
        })
    }

    /// A token that stops the gateway when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the gateway has stopped (after its token was cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// Stops the gateway, flushing what was accepted.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gw = Gateway::start(cfg).await?;
    let token = gw.shutdown_token();
    tokio::select! {
        () = shutdown.cancelled() => token.cancel(),
        () = token.cancelled() => {}
    }
    gw.wait().await;
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("Signal received.");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
