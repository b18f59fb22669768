//! The built-in MQTT 3.1.1 broker, for a school without a broker of its own
//! (`[mqtt.embedded_broker]`), and the demo's.
//!
//! The wire format is rumqttc's codec (`rumqttc::mqttbytes::v4`); what a
//! production broker needs beyond it is here:
//!
//! - `acl`: accounts with argon2 hashes, what each may publish and
//!   subscribe to, and the rules no file can lift (only the gateway
//!   publishes `campusgw/…`);
//! - `state`: sessions, subscriptions, retained messages and routing (pure);
//! - `store`: `broker.db`, where persistent sessions and their QoS 1
//!   messages outlive a restart; a publisher's PUBACK waits for it;
//! - `conn`: one connection: CONNECT checks, rate limit, the packets.
//!
//! Listeners: plain and TLS ones as configured, and an internal one on a
//! loopback port for the gateway's own connections (its MQTT source and the
//! alarm publisher), which take a secret made at start and may do anything.
//! Anonymous clients are refused unless `allow_anonymous` is set, which
//! `check` allows only when every listener is on loopback.
//!
//! Bounded: connections in total and per address, the publish rate per
//! connection, what a session may hold, persistent sessions, retained
//! topics; one argon2 check at a time.

pub mod acl;
mod conn;
pub mod state;
pub mod store;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{BrokerConfig, MqttConfig, Secret};
use crate::counts::Counts;
use crate::telemetry::{Health, LogLimiter, Metrics, Status};
use state::{Limits, State};
use store::lock;

pub use store::COMPONENT;

/// The user name of the gateway's own connections (internal listener only).
pub const INTERNAL_USER: &str = "campusgw-internal";

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain MQTT.
    Plain,
    /// MQTT over TLS.
    Tls,
    /// The gateway's own, on loopback.
    Internal,
}

/// What every connection shares.
pub(crate) struct Shared {
    state: Arc<Mutex<State>>,
    committed: watch::Receiver<u64>,
    store_thread: std::thread::Thread,
    metrics: Arc<Metrics>,
    /// Replaced whole by a reload; `accounts_changed` says when.
    accounts: std::sync::RwLock<Arc<acl::Accounts>>,
    accounts_changed: watch::Sender<u64>,
    allow_anonymous: bool,
    internal_secret: String,
    hashing: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Publishers wait while the gateway's session is this far behind.
    held: AtomicBool,
    /// The gateway's client id: it and its alarm publisher's (`-alarms`) are the gateway's alone.
    feed_client: String,
    max_publish_rate: u32,
    max_payload_bytes: usize,
    log_limit: LogLimiter,
    auto_id: AtomicU64,
}

impl Shared {
    /// Wakes the store thread when routing queued something for it.
    fn stored(&self, seq: u64) {
        if seq > 0 {
            self.store_thread.unpark();
        }
    }

    /// Whether publishers wait, from the state (under its lock already).
    fn set_held(&self, state: &State) {
        self.held.store(state.feed_held(), Ordering::Relaxed);
    }

    fn next_auto_id(&self) -> u64 {
        self.auto_id.fetch_add(1, Ordering::Relaxed)
    }

    fn accounts(&self) -> Arc<acl::Accounts> {
        self.accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A running broker.
pub struct Broker {
    /// Where the plain listener is bound.
    pub plain_addr: Option<SocketAddr>,
    /// Where the TLS listener is bound.
    pub tls_addr: Option<SocketAddr>,
    /// The `[mqtt]` settings for the gateway's own connections to it.
    pub internal: Internal,
    users_file: Option<std::path::PathBuf>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    store_stop: Arc<AtomicBool>,
    store_join: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How the gateway's own connections reach the broker.
#[derive(Debug, Clone)]
pub struct Internal {
    /// Its loopback address.
    pub addr: SocketAddr,
    /// The secret of [`INTERNAL_USER`].
    secret: String,
}

impl Internal {
    /// `mqtt` with its URL and credentials pointing at the broker.
    pub fn apply(&self, mqtt: &mut MqttConfig) {
        mqtt.url = format!("mqtt://{}", self.addr);
        mqtt.username = Some(INTERNAL_USER.to_owned());
        mqtt.password = Some(Secret::Inline(self.secret.clone()));
        mqtt.tls = None;
        // Its session is what broker.db keeps across restarts.
        mqtt.clean_session = false;
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("plain_addr", &self.plain_addr)
            .field("tls_addr", &self.tls_addr)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens `broker.db` in `data_dir`, binds the listeners and starts
    /// serving; `feed_client` is the gateway's own client id (its session
    /// holds the feed) and `feed_filters` what it subscribes to,
    /// `max_payload_bytes` the largest payload taken.
    pub async fn start(
        cfg: &BrokerConfig,
        data_dir: &Path,
        feed_client: &str,
        feed_filters: &[(String, rumqttc::QoS)],
        max_payload_bytes: usize,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> anyhow::Result<Self> {
        let accounts = match &cfg.users_file {
            Some(path) => acl::Accounts::new(
                &acl::UsersFile::load(path).context("mqtt.embedded_broker.users_file")?,
            ),
            None => acl::Accounts::default(),
        };
        let db_path = data_dir.join("broker.db");
        let conn = store::open(&db_path)
            .with_context(|| format!("cannot open the broker store {}", db_path.display()))?;
        let (sessions, retained) = store::load(&conn)
            .with_context(|| format!("cannot read the broker store {}", db_path.display()))?;
        let limits = Limits {
            max_queued: cfg.max_queued_messages,
            max_inflight: cfg.max_inflight,
            max_sessions: cfg.max_sessions,
            max_retained: 10_000,
            // Retained copies live in memory: a budget, whatever the payload limit.
            max_retained_bytes: 32 << 20,
        };
        let mut state = State::new(limits, Some(feed_client.to_owned()));
        let kept = sessions.len();
        state.restore(sessions, retained);
        state.reserve_feed(acl::Principal::Internal.name(), feed_filters);
        let (queued, _, _) = state.sizes();
        let state = Arc::new(Mutex::new(state));
        let store_stop = Arc::new(AtomicBool::new(false));
        let store = store::spawn(
            conn,
            state.clone(),
            health.clone(),
            metrics.broker.store_errors.clone(),
            store_stop.clone(),
        )
        .context("cannot start the broker store's thread")?;

        let tls = match &cfg.tls {
            Some(t) => Some(tls_acceptor(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on mqtt.embedded_broker.{what} {addr}"))
        };
        let plain = match cfg.listen {
            Some(a) => Some(bind(a, "listen").await?),
            None => None,
        };
        let secure = match (&cfg.tls, tls) {
            (Some(t), Some(acceptor)) => Some((bind(t.listen, "tls.listen").await?, acceptor)),
            _ => None,
        };
        let internal = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot bind the broker's internal loopback port")?;
        let internal_addr = internal.local_addr()?;
        let secret = {
            use rand::Rng as _;
            let bytes: [u8; 32] = rand::thread_rng().gen();
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };

        let shared = Arc::new(Shared {
            state,
            committed: store.committed,
            store_thread: store.thread,
            metrics: metrics.clone(),
            accounts: std::sync::RwLock::new(Arc::new(accounts)),
            accounts_changed: watch::channel(0).0,
            allow_anonymous: cfg.allow_anonymous,
            internal_secret: secret.clone(),
            hashing: Arc::new(Semaphore::new(1)),
            cancel: CancellationToken::new(),
            held: AtomicBool::new(false),
            feed_client: feed_client.to_owned(),
            max_publish_rate: cfg.max_publish_rate,
            max_payload_bytes,
            log_limit: LogLimiter::new(Duration::from_secs(10)),
            auto_id: AtomicU64::new(1),
        });
        let caps = Caps {
            total: cfg.max_connections,
            per_address: cfg.max_connections_per_address,
            open: Arc::new(Mutex::new(Counts::default())),
        };
        let tracker = TaskTracker::new();
        let plain_addr = plain.as_ref().map(TcpListener::local_addr).transpose()?;
        let tls_addr = secure.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        if let Some(l) = plain {
            tracker.spawn(accept(
                l,
                None,
                Listener::Plain,
                shared.clone(),
                caps.clone(),
            ));
        }
        if let Some((l, acceptor)) = secure {
            tracker.spawn(accept(
                l,
                Some(acceptor),
                Listener::Tls,
                shared.clone(),
                caps.clone(),
            ));
        }
        tracker.spawn(accept(
            internal,
            None,
            Listener::Internal,
            shared.clone(),
            caps,
        ));
        tracker.spawn(report(shared.clone()));
        let listening = [plain_addr, tls_addr]
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        info!(listen = %listening, sessions = kept, queued, anonymous = cfg.allow_anonymous, "Built-in MQTT broker listening.");
        health.set(
            COMPONENT,
            Status::Ok,
            Some(format!("listening on {listening}")),
        );
        Ok(Self {
            users_file: cfg.users_file.clone(),
            plain_addr,
            tls_addr,
            internal: Internal {
                addr: internal_addr,
                secret,
            },
            shared,
            tracker,
            store_stop,
            store_join: Mutex::new(Some(store.join)),
        })
    }

    /// Reads the users file again (SIGHUP, `POST /api/admin/reload`). New
    /// connections use it at once; an open connection whose account was
    /// removed, or whose password or topics changed, is closed (its client
    /// reconnects and is checked anew). A broken file changes nothing.
    /// Returns how many accounts there are.
    pub async fn reload_users(&self) -> Result<usize, acl::UsersError> {
        let Some(path) = self.users_file.clone() else {
            return Ok(0);
        };
        let file = tokio::task::spawn_blocking(move || acl::UsersFile::load(&path))
            .await
            .map_err(|e| acl::UsersError::Invalid {
                path: "users_file".into(),
                message: e.to_string(),
            })??;
        let n = file.users.len();
        *self
            .shared
            .accounts
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(acl::Accounts::new(&file));
        self.shared.accounts_changed.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// Closes every connection and writes what the store has pending.
    /// Call after the gateway's own connections have ended.
    pub async fn stop(&self) {
        self.shared.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .is_err()
        {
            warn!("Some broker connections did not close in time.");
        }
        self.store_stop.store(true, Ordering::Release);
        self.shared.store_thread.unpark();
        let join = self
            .store_join
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(j) = join {
            let _ = tokio::task::spawn_blocking(move || j.join()).await;
        }
    }
}

/// Connection counts, in total and per address.
#[derive(Clone)]
struct Caps {
    total: usize,
    per_address: usize,
    open: Arc<Mutex<Counts<IpAddr>>>,
}

/// One counted connection; uncounted when dropped.
struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<Counts<IpAddr>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.ip);
    }
}

impl Caps {
    fn take(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.total {
            return Err("connections_total");
        }
        if open.of(&ip) >= self.per_address {
            return Err("connections_per_address");
        }
        open.add(&ip);
        Ok(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
    caps: Caps,
) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shared.cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    warn!(error = %e, "The broker could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // The gateway's own connections are not counted against the caps.
        let slot = if kind == Listener::Internal {
            None
        } else {
            match caps.take(peer.ip()) {
                Ok(s) => Some(s),
                Err(reason) => {
                    shared.metrics.broker.refused(reason);
                    if let Some(held) = shared.log_limit.check(reason) {
                        warn!(peer = %peer, reason, held_back = held, "Broker connection refused: over the connection cap.");
                    }
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _slot = slot;
            serve(stream, peer, tls, kind, shared).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
) {
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(s)) => conn::serve(s, peer, kind, shared).await,
                Ok(Err(e)) => {
                    shared.metrics.broker.refused("protocol");
                    tracing::debug!(peer = %peer, error = %e, "Broker TLS handshake failed.");
                }
                Err(_) => shared.metrics.broker.refused("connect_timeout"),
            }
        }
        None => conn::serve(stream, peer, kind, shared).await,
    }
}

/// Keeps the gauges and drop counts current.
async fn report(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (sizes, tally) = {
            let s = lock(&shared.state);
            (s.sizes(), s.tally)
        };
        let m = &shared.metrics.broker;
        m.queued.set(sizes.0 as i64);
        m.sessions.set(sizes.1 as i64);
        m.set_dropped("queue_full", tally.dropped_queue_full);
        m.set_dropped("retained_full", tally.dropped_retained_full);
        shared.set_held(&lock(&shared.state));
    }
}

/// A TLS acceptor from PEM files.
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "mqtt.embedded_broker.tls.cert_file: cannot read {}",
                cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "mqtt.embedded_broker.tls.key_file: cannot read {}",
            key.display()
        )
    })?;
    // The provider named here, not the process default: nothing to install first.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("mqtt.embedded_broker.tls: no TLS version in common with the provider")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("mqtt.embedded_broker.tls: the certificate and key do not make a TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
