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
use crate::config::Config;
use crate::registry::Registry;
use crate::rules::engine::{Engine, Flood};
use crate::rules::task::{ReloadError, RulesHandle, RulesTask};
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
    /// The built-in broker, when it runs (its users file is reloaded with the rules).
    broker: Option<Arc<crate::broker::Broker>>,
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
    ///
    /// Every component is first built (nothing runs yet, so a broken part
    /// fails the start before anything is half-running), then spawned where
    /// it runs; the table below says what ends each one.
    pub async fn start_from(mut cfg: Config, path: Option<PathBuf>) -> anyhow::Result<Self> {
        install_crypto_provider();
        // Held until the shutdown is over: one gateway per data directory.
        let dir_lock = crate::data_dir::lock(&cfg.gateway.data_dir, "run")
            .context("gateway.data_dir cannot be used")?;
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        // The gateway as its own broker: up before anyone connects to it; the
        // gateway's connections then go to its internal loopback port.
        let broker = match &cfg.mqtt.embedded_broker {
            Some(b) => {
                let filters = crate::sources::mqtt::filters(&cfg.mqtt)?;
                let broker = crate::broker::Broker::start(
                    b,
                    &cfg.gateway.data_dir,
                    &cfg.mqtt.client_id,
                    &filters,
                    cfg.gateway.max_payload_bytes,
                    metrics.clone(),
                    health.clone(),
                )
                .await
                .context("cannot start the built-in MQTT broker")?;
                broker.internal.apply(&mut cfg.mqtt);
                Some(Arc::new(broker))
            }
            None => None,
        };

        // Both the registry and the rules engine start from them.
        let known = cfg.known_devices();
        let shared = Shared {
            metrics,
            health,
            registry: Arc::new(Registry::new(&cfg, &known)),
        };
        let shutdown = CancellationToken::new();
        let give_up = CancellationToken::new();

        // The edges: sources → router → rules and sink; rules → sink (alarm points).
        let cap = cfg.gateway.queue_capacity;
        let (source_tx, source_rx) = mpsc::channel(cap);
        let (sink_tx, sink_rx) = mpsc::channel(cap);
        let (rules_tx, rules_rx) = mpsc::channel(cap);
        let (points_tx, points_rx) = mpsc::channel(4096);
        let (buses_tx, _) = broadcast::channel(256);
        // router → bus checks → rules (alarms) and sink (bus_episode)
        let (checks_tx, checks_rx) = mpsc::channel(cap);
        let (episodes_tx, episodes_rx) = mpsc::channel(1024);

        // The components.
        let (rules, handle) = alarm_engine(&cfg, &known, &shared, rules_rx, points_tx)?;
        let sink = sink(
            &cfg,
            &shared,
            sink_rx,
            points_rx,
            episodes_rx,
            give_up.clone(),
        )
        .await?;
        let modbus = ModbusSource::new(
            &cfg,
            source_tx.clone(),
            shared.metrics.clone(),
            shared.health.clone(),
        )?;
        let mqtt = MqttSource::new(
            cfg.mqtt.clone(),
            &cfg.gateway,
            source_tx,
            shared.metrics.clone(),
            shared.health.clone(),
        )?;
        let bus = crate::bus::task::BusTask::new(
            &cfg,
            checks_rx,
            handle.commands.clone(),
            episodes_tx,
            shared.metrics.clone(),
        )
        .context("cannot start the bus route checks")?;
        let (bus_task, bus_handle) = bus.map_or((None, None), |(t, h)| (Some(t), Some(h)));
        let outputs = crate::router::Outputs {
            sink: sink_tx,
            rules: rules_tx,
            buses: buses_tx.clone(),
            checks: bus_task.is_some().then_some(checks_tx),
        };
        let notifier = notifier(&cfg, &shared, &handle)?;
        let web = web(&cfg, &shared, &handle, bus_handle, broker.clone(), path).await?;
        let (web_addr, server) = web::bind(cfg.web.listen, web.tls, web.state, shutdown.clone())
            .await
            .with_context(|| format!("cannot serve on web.listen {}", cfg.web.listen))?;
        info!(address = %web_addr, "HTTP server listening.");

        // Where each runs and what ends it. The alarm path runs on a thread
        // of its own (see the module docs); the rest on the shared workers.
        let alarm_thread = AlarmThread::start().context("cannot start the alarm path's thread")?;
        let on_alarm_path = &alarm_thread.handle;
        let tracker = TaskTracker::new();
        let sources_stop = shutdown.child_token();
        let late_stop = CancellationToken::new();
        // Ends on `sources_stop`.
        tracker.spawn_on(
            run_mqtt(mqtt, sources_stop.clone(), shared.health.clone()),
            on_alarm_path,
        );
        if !modbus.is_empty() {
            modbus.spawn(&tracker, &sources_stop);
        }
        // Ends when the sources' senders are gone.
        tracker.spawn_on(
            crate::router::run(
                source_rx,
                outputs,
                shared.registry.clone(),
                shared.metrics.clone(),
            ),
            on_alarm_path,
        );
        // Ends when the router's sender is gone.
        tracker.spawn_on(rules.run(), on_alarm_path);
        // Ends when the router's sender is gone, saving its trips.
        if let Some(t) = bus_task {
            tracker.spawn(t.run(CancellationToken::new()));
        }
        // Ends when the router and the rules are done, or on `give_up`.
        let pipeline = tracker.spawn_on(sink.run(), on_alarm_path);
        // Ends on `late_stop`, after the pipeline: the last transitions are announced.
        if !cfg.alarms.mqtt_topic.is_empty() {
            tracker.spawn_on(
                crate::alarms::publish::run(
                    cfg.mqtt.clone(),
                    cfg.alarms.mqtt_topic.clone(),
                    handle.changes.subscribe(),
                    late_stop.clone(),
                ),
                on_alarm_path,
            );
        }
        let notifier = match notifier {
            Some(n) => Some(
                n.spawn(handle.changes.subscribe(), late_stop.clone())
                    .context("cannot start the duty notifier's thread")?,
            ),
            None => None,
        };
        // These end on `shutdown`.
        tracker.spawn(web::stream::fan_out(
            web.live,
            web::stream::Sources {
                changes: handle.changes.subscribe(),
                buses: buses_tx,
                registry: shared.registry.clone(),
            },
            shutdown.clone(),
        ));
        // Its first round runs at once: start-up (a large configuration
        // parsed and dropped) is over.
        tracker.spawn(crate::memory::release_periodically(shutdown.clone()));
        tracker.spawn(crate::rules::task::watch_system(
            shared.health.clone(),
            handle.commands.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(async move {
            if let Err(e) = server.await {
                error!(error = %e, "The HTTP server failed.");
            }
        });
        tracker.close();

        let stopping_broker = broker.clone();
        let done = tokio::spawn(
            Stopping {
                shutdown: shutdown.clone(),
                deadline: cfg.gateway.shutdown_timeout,
                pipeline,
                give_up,
                late_stop,
                notifier,
                tracker,
                alarm_thread,
                broker,
                dir_lock,
            }
            .run(),
        );
        Ok(Self {
            web_addr,
            metrics: shared.metrics,
            health: shared.health,
            registry: shared.registry,
            rules: handle,
            auth: web.auth,
            broker: stopping_broker,
            shutdown,
            done,
        })
    }

    /// Replaces the alarm rules with those of the configuration file it
    /// was started from (see [`crate::rules::task::reload`]).
    pub async fn reload_rules(&self, path: &Path) -> Result<usize, ReloadError> {
        crate::rules::task::reload(path, &self.rules).await
    }

    /// Where the built-in broker listens (plain, TLS), when it runs.
    pub fn broker_addrs(&self) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
        self.broker.as_ref().map(|b| (b.plain_addr, b.tls_addr))
    }

    /// Rereads the built-in broker's users file (see
    /// [`crate::broker::Broker::reload_users`]); `None` without the broker.
    pub async fn reload_broker_users(
        &self,
    ) -> Option<Result<usize, crate::broker::acl::UsersError>> {
        match &self.broker {
            Some(b) => Some(b.reload_users().await),
            None => None,
        }
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

/// What most components are built with.
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    registry: Arc<Registry>,
}

/// The rule engine with its alarms restored from the store, and the handle
/// everyone else reaches it by.
fn alarm_engine(
    cfg: &Config,
    known: &[crate::config::KnownDevice],
    shared: &Shared,
    readings: mpsc::Receiver<Arc<crate::reading::Reading>>,
    points: mpsc::Sender<Arc<crate::alarms::Change>>,
) -> anyhow::Result<(RulesTask, RulesHandle)> {
    let rules = RuleSet::compile(cfg).map_err(|p| {
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
    let mut engine = Engine::new(rules, flood, known, crate::reading::now_ms());
    let store_path = cfg.gateway.data_dir.join("alarms.db");
    let store = crate::rules::task::restore(&mut engine, &store_path)
        .with_context(|| format!("cannot open the alarm store {}", store_path.display()))?;
    let (commands_tx, commands) = mpsc::channel(64);
    let (reload_tx, reload) = mpsc::channel(4);
    let (changes, _) = broadcast::channel(1024);
    let handle = RulesHandle {
        commands: commands_tx,
        reload: reload_tx,
        changes,
        // Filled before any task runs, so the restored alarms are visible at once.
        open: Arc::new(std::sync::RwLock::new(
            engine.open_alarms().cloned().collect(),
        )),
    };
    let task = RulesTask {
        engine,
        store,
        readings,
        commands,
        reload,
        points,
        handle: handle.clone(),
        metrics: shared.metrics.clone(),
        health: shared.health.clone(),
    };
    Ok((task, handle))
}

/// The spool (opened, with what an earlier run left in it) and the InfluxDB writer.
async fn sink(
    cfg: &Config,
    shared: &Shared,
    readings: mpsc::Receiver<Arc<crate::reading::Reading>>,
    alarms: mpsc::Receiver<Arc<crate::alarms::Change>>,
    episodes: mpsc::Receiver<Arc<crate::bus::task::EpisodePoint>>,
    give_up: CancellationToken,
) -> anyhow::Result<crate::sink::Sink> {
    let spool_cfg = SpoolConfig::new(
        &cfg.gateway.data_dir,
        cfg.gateway.spool_max_mb,
        cfg.gateway.spool_fsync,
    );
    let (m, h) = (shared.metrics.clone(), shared.health.clone());
    let spool = tokio::task::spawn_blocking(move || Spool::open(spool_cfg, m, h))
        .await
        .context("the spool opener failed")?
        .context("cannot open the spool under gateway.data_dir")?;
    let writer = InfluxWriter::new(&cfg.influx)?;
    if writer.is_none() {
        warn!("No InfluxDB is configured (influx.url or CAMPUSGW__INFLUX__URL): readings are shown but not stored.");
    }
    Ok(crate::sink::Sink {
        writer_rt: tokio::runtime::Handle::current(),
        cfg: cfg.influx.clone(),
        sync_interval: cfg.gateway.spool_sync_interval,
        spool,
        writer,
        readings,
        alarms,
        episodes,
        metrics: shared.metrics.clone(),
        health: shared.health.clone(),
        give_up,
    })
}

/// The duty notifier, when a route sends anything.
fn notifier(
    cfg: &Config,
    shared: &Shared,
    handle: &RulesHandle,
) -> anyhow::Result<Option<crate::notify::task::Notifier>> {
    let n = crate::notify::task::Notifier::new(
        cfg,
        &cfg.gateway.data_dir,
        handle.commands.clone(),
        shared.metrics.clone(),
        shared.health.clone(),
        Arc::new(crate::reading::now_ms),
    )
    .context("cannot start the duty notifier")?;
    if n.is_none() {
        info!("No [[notify.routes]]: duty alerts are off; alarms reach only the page and MQTT.");
    }
    Ok(n)
}

/// The web server's state, before it is bound.
struct Web {
    state: AppState,
    tls: Option<web::TlsFiles>,
    auth: Arc<AuthStore>,
    live: web::stream::Live,
}

async fn web(
    cfg: &Config,
    shared: &Shared,
    handle: &RulesHandle,
    buses: Option<crate::bus::task::BusHandle>,
    broker: Option<Arc<crate::broker::Broker>>,
    path: Option<PathBuf>,
) -> anyhow::Result<Web> {
    let data_dir = &cfg.gateway.data_dir;
    let auth = Arc::new(
        AuthStore::open(data_dir)
            .with_context(|| format!("cannot open the user store in {}", data_dir.display()))?,
    );
    let store_path = data_dir.join("alarms.db");
    let alarms_db = AlarmStore::open(&store_path)
        .with_context(|| format!("cannot open the alarm store {}", store_path.display()))?;
    let live = web::stream::Live::default();
    let state = AppState {
        metrics: shared.metrics.clone(),
        health: shared.health.clone(),
        registry: shared.registry.clone(),
        auth: auth.clone(),
        rules: handle.clone(),
        alarms_db: Arc::new(std::sync::Mutex::new(alarms_db)),
        live: live.clone(),
        tls: cfg.web.tls.is_some(),
        config_path: path,
        utc_offset: crate::rules::calendar::parse_offset(&cfg.alarms.utc_offset)
            .map_err(|e| anyhow::anyhow!("alarms.utc_offset: {e}"))?,
        roster: crate::notify::roster::Roster::new(cfg).ok().map(Arc::new),
        notify_db: Some(crate::notify::outbox::path(data_dir)),
        signin: Arc::new(
            web::signin::SignIn::start(&auth).context("cannot start the sign-in threads")?,
        ),
        trusted_proxies: cfg.web.trusted_proxies.clone().into(),
        limits: Arc::new(web::limits::Limits::new(&cfg.web, shared.metrics.clone())),
        ack: web::ack::AckPages::open_for(cfg).context("cannot open the ack links")?,
        buses,
        broker,
    };
    let tls = cfg.web.tls.as_ref().map(|t| web::TlsFiles {
        cert: t.cert_file.clone(),
        key: t.key_file.clone(),
    });
    Ok(Web {
        state,
        tls,
        auth,
        live,
    })
}

/// The MQTT source until `stop`; if it fails, the core source is gone and
/// `/healthz` says so (503), with why.
async fn run_mqtt(mqtt: MqttSource, stop: CancellationToken, health: Arc<Health>) {
    if let Err(e) = mqtt.run(stop).await {
        health.set(
            crate::sources::mqtt::COMPONENT,
            crate::telemetry::Status::Down,
            Some(format!("not running: {e}")),
        );
        error!(error = %e, "The MQTT source stopped.");
    }
}

/// The shutdown, in order (see the module docs).
struct Stopping {
    shutdown: CancellationToken,
    deadline: std::time::Duration,
    pipeline: JoinHandle<()>,
    give_up: CancellationToken,
    late_stop: CancellationToken,
    notifier: Option<std::thread::JoinHandle<()>>,
    tracker: TaskTracker,
    alarm_thread: AlarmThread,
    broker: Option<Arc<crate::broker::Broker>>,
    dir_lock: crate::data_dir::DirLock,
}

impl Stopping {
    async fn run(self) {
        self.shutdown.cancelled().await;
        info!("Shutting down: flushing what was accepted.");
        if tokio::time::timeout(self.deadline, self.pipeline)
            .await
            .is_err()
        {
            warn!(timeout = ?self.deadline, "Flushing took too long; giving up on the rest.");
            self.give_up.cancel();
        }
        // The last alarm transitions were handed to the publisher before the pipeline ended.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        self.late_stop.cancel();
        if let Some(t) = self.notifier {
            // Its round ends within a request's timeout; the outbox keeps the rest.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if tokio::time::timeout(self.deadline, self.tracker.wait())
            .await
            .is_err()
        {
            error!("Some tasks did not stop in time.");
        }
        self.alarm_thread.stop();
        // Last: the gateway's own connections have sent their final PUBACKs.
        if let Some(b) = self.broker {
            b.stop().await;
        }
        drop(self.dir_lock);
        info!("Stopped.");
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
                match gw.reload_broker_users().await {
                    Some(Ok(n)) => info!(accounts = n, "Broker accounts reloaded on SIGHUP."),
                    Some(Err(e)) => error!(error = %e, "Broker accounts not reloaded; the running ones stay."),
                    None => {}
                }
            }
        }
    }
    gw.wait().await;
    Ok(())
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
