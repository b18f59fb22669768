//! MQTT test clients on rumqttc 0.25: a [`Publisher`] that can wait until
//! every QoS 1/2 publish was acknowledged, and a [`Subscriber`] that hands
//! received messages over a channel.
//!
//! Each client drives its rumqttc event loop in a spawned tokio task, so use
//! them inside a tokio runtime (`#[tokio::test]`). The task keeps polling
//! after a connection error (rumqttc reconnects on the next poll; we back off
//! 200 ms), so a client survives a broker restart; the [`Subscriber`]
//! subscribes again when the broker did not keep its session.
//!
//! TLS: rumqttc is built with `use-rustls-no-provider`, so a rustls crypto
//! provider must be installed first; [`install_crypto_provider`] does it and
//! every TLS config here calls it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, SubscribeFilter,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

pub use rumqttc::QoS;

use super::DEADLINE;

/// How long `connect` waits for the first CONNACK (or refusal).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

static CLIENT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique client id: `{prefix}-{pid}-{n}`.
pub fn unique_client_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        CLIENT_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connection settings for the test clients.
#[derive(Clone, Debug)]
pub struct MqttClientConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (`user:pass@` allowed).
    pub url: String,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// CA certificate (PEM) to trust; required for `mqtts://`.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM) for brokers that require one.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
    /// MQTT clean session (default true). false + a fixed `client_id` makes
    /// a persistent session.
    pub clean_session: bool,
    pub keep_alive: Duration,
    /// rumqttc outgoing in-flight window (default 100).
    pub inflight: u16,
    /// rumqttc request channel capacity (default 1000).
    pub request_channel_capacity: usize,
}

impl MqttClientConfig {
    pub fn new(url: &str) -> Self {
        MqttClientConfig {
            url: url.to_string(),
            client_id: unique_client_id("test"),
            credentials: None,
            ca_pem: None,
            client_auth: None,
            clean_session: true,
            keep_alive: Duration::from_secs(30),
            inflight: 100,
            request_channel_capacity: 1000,
        }
    }
    /// The same settings for another URL.
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = url.to_string();
        self
    }
    pub fn client_id(mut self, id: &str) -> Self {
        self.client_id = id.to_string();
        self
    }
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_string(), password.to_string()));
        self
    }
    pub fn no_credentials(mut self) -> Self {
        self.credentials = None;
        self
    }
    pub fn ca_pem(mut self, pem: &[u8]) -> Self {
        self.ca_pem = Some(pem.to_vec());
        self
    }
    pub fn client_auth(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.client_auth = Some((cert_pem.to_vec(), key_pem.to_vec()));
        self
    }
    pub fn no_client_auth(mut self) -> Self {
        self.client_auth = None;
        self
    }
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }
    pub fn inflight(mut self, inflight: u16) -> Self {
        self.inflight = inflight;
        self
    }

    /// The rumqttc options for this config (installs the crypto provider
    /// for TLS). Panics on a malformed URL or `mqtts://` without a CA.
    pub fn mqtt_options(&self) -> MqttOptions {
        let url = parse_url(&self.url);
        let mut options = MqttOptions::new(self.client_id.clone(), url.host.clone(), url.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_inflight(self.inflight)
            .set_request_channel_capacity(self.request_channel_capacity)
            .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        if let Some((user, pass)) = self.credentials.clone().or(url.credentials) {
            options.set_credentials(user, pass);
        }
        if url.tls {
            install_crypto_provider();
            let ca = self.ca_pem.clone().unwrap_or_else(|| {
                panic!(
                    "{} is a TLS URL: give the client a CA (MqttClientConfig::ca_pem)",
                    self.url
                )
            });
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: self.client_auth.clone(),
            }));
        }
        options
    }
}

struct ParsedUrl {
    tls: bool,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

fn parse_url(url: &str) -> ParsedUrl {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("MQTT URL without scheme: {url:?}"));
    let (tls, default_port) = match scheme {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => panic!("unsupported MQTT URL scheme {other:?} in {url:?}"),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (Some((user.to_string(), pass.to_string())), host_port)
        }
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host.to_string(),
            port.parse()
                .unwrap_or_else(|e| panic!("bad port in MQTT URL {url:?}: {e}")),
        ),
        None => (host_port.to_string(), default_port),
    };
    ParsedUrl {
        tls,
        host,
        port,
        credentials,
    }
}

#[derive(Default)]
struct PublisherState {
    /// QoS 1/2 publishes handed to rumqttc.
    sent: AtomicU64,
    /// PUBACKs (QoS 1) + PUBCOMPs (QoS 2) received.
    acked: AtomicU64,
    connected: AtomicBool,
    connacks: AtomicU64,
    last_error: Mutex<Option<String>>,
    progress: Notify,
}

/// Publishes test messages and can wait for every QoS 1/2 acknowledgement.
pub struct Publisher {
    client: AsyncClient,
    state: Arc<PublisherState>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Connects with default settings; panics if the broker refuses or does
    /// not answer within 10 s.
    pub async fn connect(url: &str) -> Publisher {
        Publisher::connect_with(MqttClientConfig::new(url)).await
    }

    /// Connects with `config`; panics on failure.
    pub async fn connect_with(config: MqttClientConfig) -> Publisher {
        let url = config.url.clone();
        match Publisher::try_connect(config).await {
            Ok(publisher) => publisher,
            Err(e) => panic!("MQTT publisher could not connect to {url}: {e}"),
        }
    }

    /// Connects and waits for the first CONNACK. `Err` carries the first
    /// connection error (e.g. "Connection refused, return code:
    /// `BadUserNamePassword`", or a TLS error); the client is then dropped.
    pub async fn try_connect(config: MqttClientConfig) -> Result<Publisher, String> {
        let options = config.mqtt_options();
        let (client, eventloop) = AsyncClient::new(options, config.request_channel_capacity.max(1));
        let state = Arc::new(PublisherState::default());
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(publisher_loop(eventloop, state.clone(), first_tx));
        match tokio::time::timeout(CONNECT_TIMEOUT, first_rx).await {
            Ok(Ok(Ok(()))) => Ok(Publisher {
                client,
                state,
                task,
            }),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e)
            }
            Ok(Err(_)) => {
                task.abort();
                Err("event loop ended before connecting".to_string())
            }
            Err(_) => {
                task.abort();
                Err(format!("no CONNACK within {CONNECT_TIMEOUT:?}"))
            }
        }
    }

    /// Publishes (not retained). For QoS 1/2 the message counts towards
    /// [`Publisher::flush`]. Waits only while rumqttc's request queue is full.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS) {
        self.publish_inner(topic, payload.into(), qos, false).await
    }

    /// Publishes with the retain flag.
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS) {
        self.publish_inner(topic, payload.into(), qos, true).await
    }

    async fn publish_inner(&self, topic: &str, payload: Vec<u8>, qos: QoS, retain: bool) {
        if qos != QoS::AtMostOnce {
            self.state.sent.fetch_add(1, Ordering::SeqCst);
        }
        self.client
            .publish(topic, qos, retain, payload)
            .await
            .unwrap_or_else(|e| panic!("MQTT publish to {topic}: {e}"));
    }

    /// Waits until every QoS 1/2 publish so far was acknowledged (PUBACK /
    /// PUBCOMP). Panics after 60 s with the counts and the last error.
    pub async fn flush(&self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.state.progress.notified();
            if self.acked() >= self.sent() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "MQTT publisher flush: {} of {} QoS>0 publishes acknowledged after {DEADLINE:?} \
                     (connected: {}, last error: {:?})",
                    self.acked(),
                    self.sent(),
                    self.is_connected(),
                    self.last_error()
                );
            }
        }
    }

    /// QoS 1/2 publishes handed over so far.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    /// Acknowledgements (PUBACK + PUBCOMP) received so far.
    pub fn acked(&self) -> u64 {
        self.state.acked.load(Ordering::SeqCst)
    }

    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::SeqCst)
    }

    /// Number of successful CONNACKs (1 + reconnects).
    pub fn connections(&self) -> u64 {
        self.state.connacks.load(Ordering::SeqCst)
    }

    pub fn last_error(&self) -> Option<String> {
        self.state
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// The underlying rumqttc client (e.g. to subscribe).
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Sends DISCONNECT and stops the event loop.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn publisher_loop(
    mut eventloop: EventLoop,
    state: Arc<PublisherState>,
    first: oneshot::Sender<Result<(), String>>,
) {
    let mut first = Some(first);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                state.connected.store(true, Ordering::SeqCst);
                state.connacks.fetch_add(1, Ordering::SeqCst);
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                state.progress.notify_waiters();
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                state.acked.fetch_add(1, Ordering::SeqCst);
                state.progress.notify_waiters();
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                state.connected.store(false, Ordering::SeqCst);
                // rumqttc answers the next poll with an error; stop here.
                let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                state.connected.store(false, Ordering::SeqCst);
                let text = e.to_string();
                if let Ok(mut last) = state.last_error.lock() {
                    *last = Some(text.clone());
                }
                state.progress.notify_waiters();
                if let Some(first) = first.take() {
                    let _ = first.send(Err(text));
                    return;
                }
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A message the [`Subscriber`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

impl Received {
    pub fn payload_str(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                self.payload_str()
            )
        })
    }
}

/// Subscribes to topic filters and queues what arrives.
pub struct Subscriber {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects (clean session) and subscribes to `filter` with QoS 1;
    /// returns after the SUBACK. Panics on failure.
    pub async fn connect(url: &str, filter: &str) -> Subscriber {
        Subscriber::connect_with(MqttClientConfig::new(url), &[filter], QoS::AtLeastOnce).await
    }

    /// Connects with `config` and subscribes to every filter with `qos`.
    pub async fn connect_with(config: MqttClientConfig, filters: &[&str], qos: QoS) -> Subscriber {
        let url = config.url.clone();
        match Subscriber::try_connect(config, filters, qos).await {
            Ok(subscriber) => subscriber,
            Err(e) => panic!("MQTT subscriber could not connect to {url}: {e}"),
        }
    }

    /// Like [`Subscriber::connect_with`] but returns the first connection
    /// error instead of panicking.
    pub async fn try_connect(
        config: MqttClientConfig,
        filters: &[&str],
        qos: QoS,
    ) -> Result<Subscriber, String> {
        let options = config.mqtt_options();
        let (client, eventloop) = AsyncClient::new(options, config.request_channel_capacity.max(1));
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let connected = Arc::new(AtomicBool::new(false));
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let task = tokio::spawn(subscriber_loop(
            eventloop,
            client.clone(),
            filters,
            qos,
            tx,
            connected.clone(),
            ready_tx,
        ));
        match tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Subscriber {
                client,
                rx,
                connected,
                task,
            }),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e)
            }
            Ok(Err(_)) => {
                task.abort();
                Err("event loop ended before subscribing".to_string())
            }
            Err(_) => {
                task.abort();
                Err(format!("no CONNACK+SUBACK within {CONNECT_TIMEOUT:?}"))
            }
        }
    }

    /// The next message; panics after 60 s without one.
    pub async fn recv(&mut self) -> Received {
        match self.recv_timeout(DEADLINE).await {
            Some(message) => message,
            None => panic!("MQTT subscriber: no message within {DEADLINE:?}"),
        }
    }

    /// The next message, or `None` after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// A message already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    /// The next `n` messages; panics if they do not all arrive within 60 s.
    pub async fn collect(&mut self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut messages = Vec::with_capacity(n);
        while messages.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => messages.push(message),
                _ => panic!(
                    "MQTT subscriber: got {} of {n} messages within {DEADLINE:?}",
                    messages.len()
                ),
            }
        }
        messages
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Sends DISCONNECT (a persistent session stays on the broker).
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscriber_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    qos: QoS,
    tx: mpsc::UnboundedSender<Received>,
    connected: Arc<AtomicBool>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                connected.store(true, Ordering::SeqCst);
                // First connection, or the broker lost our session: (re)subscribe.
                if !filters.is_empty() && (ready.is_some() || !connack.session_present) {
                    let subscription = filters
                        .iter()
                        .map(|filter| SubscribeFilter::new(filter.clone(), qos));
                    if let Err(e) = client.subscribe_many(subscription).await {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(format!("subscribe {filters:?}: {e}")));
                            return;
                        }
                    }
                }
                if filters.is_empty() {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                let refused = suback
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure));
                if let Some(ready) = ready.take() {
                    let _ = ready.send(if refused {
                        Err(format!("subscription refused: {suback:?}"))
                    } else {
                        Ok(())
                    });
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let _ = tx.send(Received {
                    topic: publish.topic.clone(),
                    payload: publish.payload.to_vec(),
                    qos: publish.qos,
                    retain: publish.retain,
                });
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                connected.store(false, Ordering::SeqCst);
                let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::SeqCst);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
