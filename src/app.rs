//! Wiring only: builds the components, connects them with bounded channels,
//! runs them on a `TaskTracker`, and shuts them down in order.
//!
//! The alarm path — the MQTT source, the router, the rules task, the alarms'
//! MQTT publication and the sink's batcher — runs on a thread of its own
//! ([`AlarmThread`]), so that a reading that trips a rule is not queued
//! behind the web's event streams, the InfluxDB writer or a Modbus poll on
//! the two shared workers; and a reading goes from the source to the spool's
//! appender without waking another thread.
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::alarms::store::AlarmStore;
use crate::config::{Config, ConfigError};
use crate::registry::Registry;
use crate::rules::engine::{Engine, Flood};
use crate::rules::task::{RulesHandle, RulesTask};
use crate::rules::RuleSet;
use crate::sink::{InfluxWriter, Spool, SpoolConfig};
use crate::sources::modbus::ModbusSource;
use crate::sources::mqtt::MqttSource;
use crate::telemetry::{Health, Metrics};
use crate::web::{self, AppState, AuthStore};

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
    /// The alarm engine's handle: commands, reloads, changes, open alarms.
    pub rules: RulesHandle,
    /// Users, sessions, tokens and the audit log.
    pub auth: Arc<AuthStore>,
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
        Self::start_from(cfg, None).await
    }

    /// Starts every component; `path` is the file the configuration came
    /// from, which the admin API reloads rules from.
    pub async fn start_from(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<Self> {
        install_crypto_provider();
        // Held until the shutdown below is over: one gateway per data directory.
        let dir_lock = crate::data_dir::lock(&cfg.gateway.data_dir, "run")
            .context("gateway.data_dir cannot be used")?;
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        // Both the registry and the rules engine start from them.
        let known = cfg.known_devices();
        let registry = Arc::new(Registry::new(&cfg, &known));
        let shutdown = CancellationToken::new();
        let give_up = CancellationToken::new();
        let cap = cfg.gateway.queue_capacity;

        // sources → router → rules and sink; rules → sink (alarm points)
        let (source_tx, source_rx) = mpsc::channel(cap);
        let (sink_tx, sink_rx) = mpsc::channel(cap);
        let (rules_tx, rules_rx) = mpsc::channel(cap);
        let (points_tx, points_rx) = mpsc::channel(4096);
        let (buses_tx, _) = broadcast::channel(256);
        // router → bus checks → rules (alarms) and sink (bus_episode)
        let (checks_tx, checks_rx) = mpsc::channel(cap);
        let (episodes_tx, episodes_rx) = mpsc::channel(1024);

        let rules = RuleSet::compile(&cfg).map_err(|p| {
            anyhow::anyhow!(
                "rules: {}",
                p.iter()
                    .map(|(k, m)| format!("{k}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let flood = Flood {
            threshold: cfg.alarms.flood_threshold,
            window_ms: cfg.alarms.flood_window.as_millis() as i64,
        };
        let mut engine = Engine::new(rules, flood, &known, crate::reading::now_ms());
        let store_path = cfg.gateway.data_dir.join("alarms.db");
        let store = crate::rules::task::restore(&mut engine, &store_path)
            .with_context(|| format!("cannot open the alarm store {}", store_path.display()))?;
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let (changes_tx, _) = broadcast::channel(1024);
        let rules_handle = RulesHandle {
            commands: commands_tx,
            reload: reload_tx,
            changes: changes_tx,
            // Filled before any task runs, so the restored alarms are visible at once.
            open: Arc::new(std::sync::RwLock::new(
                engine.open_alarms().cloned().collect(),
            )),
        };
        let rules_task = RulesTask {
            engine,
            store,
            readings: rules_rx,
            commands: commands_rx,
            reload: reload_rx,
            points: points_tx,
            handle: rules_handle.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };

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
        let modbus = ModbusSource::new(&cfg, source_tx.clone(), metrics.clone(), health.clone())?;
        let mqtt = MqttSource::new(
            cfg.mqtt.clone(),
            &cfg.gateway,
            source_tx,
            metrics.clone(),
            health.clone(),
        )?;

        let bus = crate::bus::task::BusTask::new(
            &cfg,
            checks_rx,
            rules_handle.commands.clone(),
            episodes_tx,
            metrics.clone(),
        )
        .context("cannot start the bus route checks")?;
        let (bus_task, bus_handle) = bus.map_or((None, None), |(t, h)| (Some(t), Some(h)));
        let auth = Arc::new(AuthStore::open(&cfg.gateway.data_dir).with_context(|| {
            format!(
                "cannot open the user store in {}",
                cfg.gateway.data_dir.display()
            )
        })?);
        let alarms_db = AlarmStore::open(&store_path)
            .with_context(|| format!("cannot open the alarm store {}", store_path.display()))?;
        let live = web::stream::Live::default();
        let state = AppState {
            metrics: metrics.clone(),
            health: health.clone(),
            registry: registry.clone(),
            auth: auth.clone(),
            rules: rules_handle.clone(),
            alarms_db: Arc::new(std::sync::Mutex::new(alarms_db)),
            live: live.clone(),
            tls: cfg.web.tls.is_some(),
            config_path: path,
            utc_offset: crate::rules::calendar::parse_offset(&cfg.alarms.utc_offset)
                .map_err(|e| anyhow::anyhow!("alarms.utc_offset: {e}"))?,
            roster: crate::notify::roster::Roster::new(&cfg).ok().map(Arc::new),
            notify_db: Some(crate::notify::task::outbox_path(&cfg.gateway.data_dir)),
            signin: Arc::new(
                web::signin::SignIn::start(&auth).context("cannot start the sign-in threads")?,
            ),
            trusted_proxies: cfg.web.trusted_proxies.clone().into(),
            limits: Arc::new(web::limits::Limits::new(&cfg.web, metrics.clone())),
            buses: bus_handle,
        };
        let tls = cfg.web.tls.as_ref().map(|t| web::TlsFiles {
            cert: t.cert_file.clone(),
            key: t.key_file.clone(),
        });
        let (web_addr, server) = web::bind(cfg.web.listen, tls, state, shutdown.clone())
            .await
            .with_context(|| format!("cannot serve on web.listen {}", cfg.web.listen))?;
        info!(address = %web_addr, "HTTP server listening.");

        let tracker = TaskTracker::new();
        let alarm_thread = AlarmThread::start().context("cannot start the alarm path's thread")?;
        let alarm_path = alarm_thread.handle.clone();
        let sources_stop = shutdown.child_token();
        if !modbus.is_empty() {
            modbus.spawn(&tracker, &sources_stop);
        }
        let mqtt_health = health.clone();
        tracker.spawn_on(
            async move {
                if let Err(e) = mqtt.run(sources_stop).await {
                    // The core source is gone: /healthz says so (503), with why.
                    mqtt_health.set(
                        crate::sources::mqtt::COMPONENT,
                        crate::telemetry::Status::Down,
                        Some(format!("not running: {e}")),
                    );
                    error!(error = %e, "The MQTT source stopped.");
                }
            },
            &alarm_path,
        );
        let outputs = crate::router::Outputs {
            sink: sink_tx,
            rules: rules_tx,
            buses: buses_tx.clone(),
            checks: bus_task.is_some().then_some(checks_tx),
        };
        tracker.spawn_on(
            crate::router::run(source_rx, outputs, registry.clone(), metrics.clone()),
            &alarm_path,
        );
        tracker.spawn(web::stream::fan_out(
            live,
            web::stream::Sources {
                changes: rules_handle.changes.subscribe(),
                buses: buses_tx,
                registry: registry.clone(),
            },
            shutdown.clone(),
        ));
        tracker.spawn_on(rules_task.run(), &alarm_path);
        if let Some(t) = bus_task {
            // Ends when the router drops its sender (after the sources), saving its trips.
            tracker.spawn(t.run(CancellationToken::new()));
        }
        // Its first round runs at once: start-up (a large configuration
        // parsed and dropped) is over.
        tracker.spawn(crate::memory::release_periodically(shutdown.clone()));
        tracker.spawn(crate::rules::task::watch_system(
            health.clone(),
            rules_handle.commands.clone(),
            shutdown.clone(),
        ));
        // Duty alerts follow the alarm ledger on a thread of their own.
        let notify_stop = CancellationToken::new();
        let notifier = match crate::notify::task::Notifier::new(
            &cfg,
            &cfg.gateway.data_dir,
            rules_handle.commands.clone(),
            metrics.clone(),
            health.clone(),
            Arc::new(crate::reading::now_ms),
        ) {
            Ok(Some(n)) => Some(
                n.spawn(rules_handle.changes.subscribe(), notify_stop.clone())
                    .context("cannot start the duty notifier's thread")?,
            ),
            Ok(None) => {
                info!("No [[notify.routes]]: duty alerts are off; alarms reach only the page and MQTT.");
                None
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot start the duty notifier")),
        };
        let publisher_stop = CancellationToken::new();
        if !cfg.alarms.mqtt_topic.is_empty() {
            tracker.spawn_on(
                crate::alarms::publish::run(
                    cfg.mqtt.clone(),
                    cfg.alarms.mqtt_topic.clone(),
                    rules_handle.changes.subscribe(),
                    publisher_stop.clone(),
                ),
                &alarm_path,
            );
        }
        let pipeline = tracker.spawn_on(
            crate::sink::Sink {
                writer_rt: tokio::runtime::Handle::current(),
                cfg: cfg.influx.clone(),
                sync_interval: cfg.gateway.spool_sync_interval,
                spool,
                writer,
                readings: sink_rx,
                alarms: points_rx,
                episodes: episodes_rx,
                metrics: metrics.clone(),
                health: health.clone(),
                give_up: give_up.clone(),
            }
            .run(),
            &alarm_path,
        );
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
            // The last alarm transitions were handed to the publisher before the pipeline ended.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            publisher_stop.cancel();
            notify_stop.cancel();
            if let Some(t) = notifier {
                // Its round ends within a request's timeout; the outbox keeps the rest.
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            if tokio::time::timeout(deadline, tracker.wait())
                .await
                .is_err()
            {
                error!("Some tasks did not stop in time.");
            }
            alarm_thread.stop();
            drop(dir_lock);
            info!("Stopped.");
        });

        Ok(Self {
            web_addr,
            metrics,
            health,
            registry,
            rules: rules_handle,
            auth,
            shutdown,
            done,
        })
    }

    /// Replaces the alarm rules with those of the configuration file it
    /// was started from (see [`reload_rules`]).
    pub async fn reload_rules(&self, path: &Path) -> Result<usize, ReloadError> {
        reload_rules(path, &self.rules).await
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

/// A current-thread runtime on an OS thread of its own, for the alarm path.
struct AlarmThread {
    handle: tokio::runtime::Handle,
    stop: CancellationToken,
}

impl AlarmThread {
    fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let stop = CancellationToken::new();
        let until = stop.clone();
        // The runtime is dropped on that thread when it ends, with whatever
        // task has not finished by then (only after the shutdown's wait).
        std::thread::Builder::new()
            .name("campusgw-alarms".into())
            .spawn(move || {
                raise_priority();
                rt.block_on(until.cancelled());
            })?;
        Ok(Self { handle, stop })
    }

    fn stop(self) {
        self.stop.cancel();
    }
}

/// Asks the scheduler to favour the calling thread (nice −10): on a busy
/// two-core box a woken alarm thread otherwise waits its turn behind the
/// database and the broker. Needs the `LimitNICE=-10` of
/// deploy/campusgw.service (or root); without it the thread keeps the normal
/// priority, which is only slower.
fn raise_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gettid and setpriority only read and set this thread's nice value.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -10)
        };
        if rc != 0 {
            info!(error = %std::io::Error::last_os_error(), "The alarm thread runs at normal priority (allow it with LimitNICE=-10).");
        }
    }
}

/// Runs the gateway until `shutdown` is cancelled. With the file it was
/// loaded from, SIGHUP reloads the rules; a file that fails validation is
/// refused and the running rules stay.
pub async fn run(
    cfg: Config,
    path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gw = Gateway::start_from(cfg, path.clone()).await?;
    let token = gw.shutdown_token();
    let mut hup = hangups();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                token.cancel();
                break;
            }
            () = token.cancelled() => break,
            Some(()) = hup.recv() => {
                let Some(p) = &path else { continue };
                match gw.reload_rules(p).await {
                    Ok(n) => info!(file = %p.display(), rules = n, "Rules reloaded on SIGHUP."),
                    Err(e) => error!(file = %p.display(), problems = %e, "Rules not reloaded; the running rules stay."),
                }
            }
        }
    }
    gw.wait().await;
    Ok(())
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
pub async fn reload_rules(path: &Path, rules: &RulesHandle) -> Result<usize, ReloadError> {
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

/// SIGHUPs as a stream (none where there are no signals).
fn hangups() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
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
