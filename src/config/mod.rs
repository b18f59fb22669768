//! The configuration file: one serde struct per component
//! (`deny_unknown_fields`, a doc line per key, defaults as functions).
//!
//! `load` reads the file with its `CAMPUSGW__…` environment overrides and
//! maps every problem to its key path and line (`collect` finds every type
//! and unknown-key error, with "did you mean"); `validate` collects every
//! semantic problem at once, never stopping at the first.

mod buses;
mod collect;
mod devices_file;
mod load;
mod notify;
mod rules;
mod validate;

pub use buses::{BusesConfig, TripConfig, VehicleConfig};
pub use load::{ConfigError, Loaded, Problem, ENV_PREFIX};
pub use notify::{
    ChannelConfig, ChannelKind, NotifyConfig, PersonConfig, ShiftConfig, SmtpSecurity, TeamConfig,
};
pub use rules::{AlarmsConfig, CalendarConfig, Calendars, ConditionConfig, RuleConfig, TextConfig};
pub use validate::Findings;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::reading::{Kind, Location};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Gateway-wide settings.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// The MQTT broker the campus devices publish to.
    pub mqtt: MqttConfig,
    /// Where time series go; without `url`, nothing is written (the demo's default).
    #[serde(default)]
    pub influx: InfluxConfig,
    /// The status page, `/healthz` and `/metrics`.
    #[serde(default)]
    pub web: WebConfig,
    /// The devices of the campus, with their places: those of `[[devices]]`,
    /// then those of `devices_file`.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// A CSV file with more devices (columns id, kind, site, building, floor,
    /// room, name), relative to this file: the way to declare a large campus.
    #[serde(default)]
    pub devices_file: Option<PathBuf>,
    /// How many of `devices` came from `devices_file` (the last ones).
    #[serde(skip)]
    pub devices_from_file: usize,
    /// Alarm handling: floods, MQTT publication, holidays, local time.
    #[serde(default)]
    pub alarms: AlarmsConfig,
    /// Named calendars that rules refer to (`school_hours`, `canteen_cooking`…).
    #[serde(default)]
    pub calendars: Calendars,
    /// The alarm rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Modbus devices the gateway polls (TCP and RTU), their serial lines and register maps.
    #[serde(default)]
    pub modbus: ModbusConfig,
    /// The duty staff: people, teams, the weekly duty pattern and the roster file.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// School buses: the route file, the vehicles, the timetable, the route checks.
    #[serde(default)]
    pub buses: BusesConfig,
}

/// What to do with a device that publishes but is not declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UndeclaredPolicy {
    /// Store its readings and list it, without a location.
    Accept,
    /// Drop its readings (counted as `unknown_device`).
    Ignore,
}

/// Gateway-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway keeps its state (users, alarms, spool).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Devices that publish without being declared in `[[devices]]`.
    #[serde(default = "default_undeclared")]
    pub undeclared_devices: UndeclaredPolicy,
    /// The most devices the registry will know; protects memory from a flood of made-up ids.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Larger payloads are rejected as `payload_too_large`.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// The most fields kept of one reading; further unknown fields are cut
    /// (`too_many_fields`), the kind's own fields always kept.
    #[serde(default = "default_max_fields")]
    pub max_fields: usize,
    /// The longest string value kept, in bytes; a longer one is shortened on
    /// a character boundary (`string_truncated`), the reading kept.
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,
    /// A reading older than this (by its `ts`) is rejected as `ts_out_of_range`.
    #[serde(default = "default_max_ts_past", with = "humantime_serde")]
    pub max_ts_past: Duration,
    /// A reading further in the future than this is rejected as `ts_out_of_range`.
    #[serde(default = "default_max_ts_future", with = "humantime_serde")]
    pub max_ts_future: Duration,
    /// Capacity of each internal queue, in readings.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// How long shutdown may take to flush what was accepted.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The most disk the spool (`<data_dir>/spool`) may use, in MiB. Past it
    /// the oldest data is dropped, counted and shown as an alarm state.
    #[serde(default = "default_spool_max_mb")]
    pub spool_max_mb: u64,
    /// fdatasync the spool before acknowledging (off: survives a crash of the
    /// gateway but not a power cut).
    #[serde(default = "default_true")]
    pub spool_fsync: bool,
    /// The shortest time between two fsyncs of the spool: appends in between
    /// share one (fewer writes on flash, a little more latency).
    #[serde(default = "default_spool_sync_interval", with = "humantime_serde")]
    pub spool_sync_interval: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            undeclared_devices: default_undeclared(),
            max_devices: default_max_devices(),
            max_payload_bytes: default_max_payload_bytes(),
            max_fields: default_max_fields(),
            max_string_bytes: default_max_string_bytes(),
            max_ts_past: default_max_ts_past(),
            max_ts_future: default_max_ts_future(),
            queue_capacity: default_queue_capacity(),
            shutdown_timeout: default_shutdown_timeout(),
            spool_max_mb: default_spool_max_mb(),
            spool_fsync: true,
            spool_sync_interval: default_spool_sync_interval(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/campusgw")
}
fn default_undeclared() -> UndeclaredPolicy {
    UndeclaredPolicy::Accept
}
fn default_max_devices() -> usize {
    20_000
}
fn default_max_payload_bytes() -> usize {
    64 * 1024
}
fn default_max_fields() -> usize {
    64
}
fn default_max_string_bytes() -> usize {
    256
}
fn default_max_ts_past() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_ts_future() -> Duration {
    Duration::from_secs(300)
}
fn default_queue_capacity() -> usize {
    // ~2 MB per full queue. QoS 1 traffic never fills them (the broker's
    // in-flight window is smaller); they absorb QoS 0 bursts and Modbus polls.
    4_096
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_spool_max_mb() -> u64 {
    1024
}
fn default_spool_sync_interval() -> Duration {
    Duration::from_millis(2)
}

/// A secret: inline (discouraged, `check` warns), from an environment variable, or from a file.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The secret itself, written in the file.
    Inline(String),
    /// `{ env = "VAR" }`: read from this environment variable at start.
    Env {
        /// The variable's name.
        env: String,
    },
    /// `{ file = "/etc/campusgw/influx.token" }`: read from this file at start (trailing newline trimmed).
    File {
        /// The file's path.
        file: PathBuf,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(inline, redacted)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

impl Secret {
    /// The secret's value; an empty one is refused like a missing one (the
    /// shipped `campusgw.env` has every variable present but empty).
    pub fn resolve(&self) -> Result<String, String> {
        let value = match self {
            Secret::Inline(s) => s.clone(),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))?
            }
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
        };
        if value.is_empty() {
            return Err(match self {
                Secret::Inline(_) => "is empty".to_owned(),
                Secret::Env { env } => format!("environment variable {env} is empty"),
                Secret::File { file } => format!("{} is empty", file.display()),
            });
        }
        Ok(value)
    }
}

/// The MQTT broker and what to subscribe to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883`; left out when the gateway
    /// is the broker (`embedded_broker`).
    #[serde(default)]
    pub url: String,
    /// Fixed client id: with `clean_session = false` the broker keeps QoS 1 messages for it while the gateway is away.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Start a clean session on every connect (loses what the broker kept while away).
    #[serde(default)]
    pub clean_session: bool,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password, from `{ env = … }` or `{ file = … }`.
    pub password: Option<Secret>,
    /// TLS settings for `mqtts://`.
    pub tls: Option<MqttTlsConfig>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// The topics to subscribe to, each with how to read its messages.
    #[serde(default = "default_topics")]
    pub topics: Vec<TopicConfig>,
    /// The gateway as the school's broker, for a school without one.
    pub embedded_broker: Option<BrokerConfig>,
}

/// `[mqtt.embedded_broker]`: the built-in MQTT 3.1.1 broker (`crate::broker`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Plain MQTT, e.g. `0.0.0.0:1883`.
    pub listen: Option<SocketAddr>,
    /// MQTT over TLS.
    pub tls: Option<BrokerTlsConfig>,
    /// The accounts: argon2 hashes and what each may publish and subscribe
    /// to (`campusgw broker user add` writes it).
    pub users_file: Option<PathBuf>,
    /// Clients without a user name; only when every listener is on loopback.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Connections at once.
    #[serde(default = "default_broker_connections")]
    pub max_connections: usize,
    /// Connections at once from one address (a site's NAT counts as one).
    #[serde(default = "default_broker_per_address")]
    pub max_connections_per_address: usize,
    /// PUBLISH packets a connection may send per second; past it the broker
    /// stops reading from it for a while (nothing is dropped).
    #[serde(default = "default_broker_rate")]
    pub max_publish_rate: u32,
    /// Messages held for one session (queued and in flight); past it the
    /// oldest is dropped and counted, but the gateway's own session makes
    /// publishers wait instead.
    #[serde(default = "default_broker_queued")]
    pub max_queued_messages: usize,
    /// QoS 1 messages in flight to one subscriber.
    #[serde(default = "default_broker_inflight")]
    pub max_inflight: usize,
    /// Persistent sessions (`clean_session = false`) kept.
    #[serde(default = "default_broker_sessions")]
    pub max_sessions: usize,
}

fn default_broker_connections() -> usize {
    1024
}
fn default_broker_per_address() -> usize {
    256
}
fn default_broker_rate() -> u32 {
    100
}
fn default_broker_queued() -> usize {
    100_000
}
fn default_broker_inflight() -> usize {
    1000
}
fn default_broker_sessions() -> usize {
    10_000
}

/// `[mqtt.embedded_broker.tls]`: the broker's TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTlsConfig {
    /// Where, e.g. `0.0.0.0:8883`.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

fn default_client_id() -> String {
    "campusgw".to_owned()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_topics() -> Vec<TopicConfig> {
    vec![TopicConfig {
        pattern: default_pattern(),
        subscribe: None,
        qos: default_qos(),
        site: None,
        kind: None,
        ts_field: default_ts_field(),
        ts_unit: TsUnit::Ms,
        keep_unmapped: true,
        fields: BTreeMap::new(),
    }]
}

/// TLS for the MQTT connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, when the broker requires one.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

/// The unit of a numeric timestamp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TsUnit {
    /// Epoch milliseconds (the reference feed).
    Ms,
    /// Epoch seconds.
    S,
}

/// One subscription and how its messages become readings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic with named segments: `{site}`, `{kind}`, `{device}`; `+`/`{_}` match any one level, a final `#` the rest.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// The MQTT filter to subscribe to; by default the pattern with its named
    /// levels as `+`. A broader filter (`campus/#`) makes messages that do not
    /// fit the pattern arrive and be counted as `topic_mismatch` instead of unseen.
    pub subscribe: Option<String>,
    /// QoS of the subscription, 0 or 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The site, when the pattern has no `{site}`.
    pub site: Option<String>,
    /// The kind, when the pattern has no `{kind}`.
    pub kind: Option<Kind>,
    /// JSON pointer of the timestamp (`/ts`); a message without it takes the receive time.
    #[serde(default = "default_ts_field")]
    pub ts_field: String,
    /// Unit of a numeric timestamp.
    #[serde(default = "default_ts_unit")]
    pub ts_unit: TsUnit,
    /// Keep top-level fields that `fields` does not map (under their own names).
    #[serde(default = "default_true")]
    pub keep_unmapped: bool,
    /// Field mapping: reading field name → where to find it in the payload and how to scale it.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldMapping>,
}

fn default_pattern() -> String {
    "campus/{site}/{kind}/{device}".to_owned()
}
fn default_qos() -> u8 {
    1
}
fn default_ts_field() -> String {
    "/ts".to_owned()
}
fn default_ts_unit() -> TsUnit {
    TsUnit::Ms
}
fn default_true() -> bool {
    true
}

/// Where one reading field comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// JSON pointer into the payload, e.g. `/data/t`.
    pub pointer: String,
    /// Multiply a numeric value by this.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Then add this.
    #[serde(default)]
    pub offset: f64,
}

fn default_scale() -> f64 {
    1.0
}

/// Which InfluxDB write API to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/api/v2/write` with org, bucket and token (InfluxDB 2.x/3.x, VictoriaMetrics).
    V2,
    /// `/write` with database, retention policy, user and password (InfluxDB 1.x).
    V1,
}

/// The InfluxDB sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`. Without it nothing is written.
    pub url: Option<String>,
    /// Which write API.
    #[serde(default = "default_api")]
    pub api: InfluxApi,
    /// v2: organisation.
    pub org: Option<String>,
    /// v2: bucket.
    pub bucket: Option<String>,
    /// v2: API token.
    pub token: Option<Secret>,
    /// v1: database.
    pub database: Option<String>,
    /// v1: retention policy (the database's default when absent).
    pub retention_policy: Option<String>,
    /// v1: user name.
    pub username: Option<String>,
    /// v1: password.
    pub password: Option<Secret>,
    /// Flush a batch when it has this many points…
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// …or when its oldest point has waited this long.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Timeout of one write request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Compress request bodies.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay, also the pause after the database refuses our credentials.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Deprecated, no effect: batches wait in the disk spool now (`check` warns).
    pub max_pending_batches: Option<usize>,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: None,
            api: default_api(),
            org: None,
            bucket: None,
            token: None,
            database: None,
            retention_policy: None,
            username: None,
            password: None,
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            timeout: default_timeout(),
            gzip: true,
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            max_pending_batches: None,
        }
    }
}

fn default_api() -> InfluxApi {
    InfluxApi::V2
}
fn default_batch_size() -> usize {
    5_000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_min() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The page's address as people's phones reach it
    /// (`https://safety.school.example`): duty messages link to the alarm
    /// and, with a policy's `ack_links`, to `/ack/{token}`.
    pub public_url: Option<String>,
    /// Address to listen on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve the page over HTTPS with these files.
    pub tls: Option<WebTlsConfig>,
    /// Reverse proxies in front of the gateway: from these peers (and only
    /// these) the client's address is taken from `X-Forwarded-For`, for
    /// the sign-in throttle, the stream caps and the audit log.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A new connection must have sent its first request within this.
    #[serde(default = "default_web_timeout", with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// A request's headers must have arrived within this of the server
    /// waiting for them (also the longest wait for the next request on a
    /// kept-alive connection).
    #[serde(default = "default_web_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection on which nothing was read or written for this long is
    /// closed (a slow body, an event stream nobody reads).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections at most; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections per client address (a trusted proxy: only the total).
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Event streams per session or API token.
    #[serde(default = "default_max_streams_per_session")]
    pub max_streams_per_session: usize,
    /// Event streams per client address.
    #[serde(default = "default_max_streams_per_address")]
    pub max_streams_per_address: usize,
}

fn default_web_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_address() -> usize {
    64
}
fn default_max_streams_per_session() -> usize {
    4
}
fn default_max_streams_per_address() -> usize {
    16
}

/// TLS for the status page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebTlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            trusted_proxies: Vec::new(),
            first_request_timeout: default_web_timeout(),
            header_timeout: default_web_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_streams_per_session: default_max_streams_per_session(),
            max_streams_per_address: default_max_streams_per_address(),
            public_url: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// One declared device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device id as it appears in topics.
    pub id: String,
    /// What the device is.
    pub kind: Kind,
    /// School or campus code.
    pub site: String,
    /// Building.
    pub building: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Room.
    pub room: Option<String>,
    /// A human name for the place.
    pub name: Option<String>,
    /// How long it may stay silent before it counts as offline (default: three
    /// report intervals of its kind; for a polled device, the polls it takes
    /// the poller to give up on it).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
}

/// A device known before any message arrives: declared in `[[devices]]` (or
/// `devices_file`), polled over Modbus, or both.
#[derive(Debug, Clone)]
pub struct KnownDevice<'a> {
    /// Identity and place.
    pub config: Cow<'a, DeviceConfig>,
    /// Whether a `[[modbus.devices]]` entry polls it.
    pub polled: bool,
    /// Silence after which it is offline, ms: the one figure the registry
    /// (the page's online state) and the rules' `offline` condition judge by.
    pub heartbeat_ms: i64,
}

/// How long a device of `kind` that nobody configured a heartbeat for may
/// stay silent: three missed reports, so one lost message is not an outage.
pub fn kind_heartbeat_ms(kind: Kind) -> i64 {
    3 * 1000 * kind.nominal_interval_secs() as i64
}

impl DeviceConfig {
    /// The device's place.
    pub fn location(&self) -> Location {
        Location {
            building: self.building.clone(),
            floor: self.floor.clone(),
            room: self.room.clone(),
            name: self.name.clone(),
        }
    }
}

/// Whether `s` is a valid site, device or rule id: the ASCII set of the feed
/// (`A-Z a-z 0-9 - _`, at most 64). ASCII only, so that a Cyrillic `е` or a
/// fullwidth digit cannot make a look-alike of a real gate's id; the same
/// rule for the configuration and the feed, so every declared id can arrive.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What [`is_valid_id`] allows, for error messages.
pub const ID_RULE: &str = "may hold only ASCII letters (A-Z, a-z), digits, - and _ (at most 64)";

/// Modbus polling: defaults for every device, serial lines, named register
/// maps and the devices themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// How often a device is polled, unless it sets its own `poll_interval`.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long one request (or a TCP connect) may take before it counts as a timeout.
    #[serde(default = "default_modbus_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts within one poll after a timeout or a transport error (not after an exception).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Consecutive failed polls after which a device is marked offline.
    #[serde(default = "default_offline_after_failures")]
    pub offline_after_failures: u32,
    /// Unused registers (or bits) that may be read to join two neighbours into one request.
    #[serde(default)]
    pub max_gap: u16,
    /// Most registers in one read request (the protocol allows 125; some devices fewer).
    #[serde(default = "default_max_registers_per_request")]
    pub max_registers_per_request: u16,
    /// Most coils or discrete inputs in one read request (the protocol allows 2000).
    #[serde(default = "default_max_bits_per_request")]
    pub max_bits_per_request: u16,
    /// First delay before reconnecting after a failure; doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Serial (RS-485) lines by name, used by devices with `transport = "rtu"`.
    #[serde(default)]
    pub lines: BTreeMap<String, SerialLineConfig>,
    /// Register maps by name, shared by the devices that name them in `map`.
    #[serde(default)]
    pub maps: BTreeMap<String, RegisterMapConfig>,
    /// The devices to poll.
    #[serde(default)]
    pub devices: Vec<ModbusDeviceConfig>,
}

/// A polled device's timings: its own where it sets them, else `[modbus]`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTimings {
    /// Time between polls.
    pub poll_interval: Duration,
    /// Timeout of each request.
    pub timeout: Duration,
    /// Further attempts per poll after a timeout or transport error.
    pub retries: u32,
    /// Consecutive failed polls before it is offline (at least 1).
    pub offline_after: u32,
}

impl PollTimings {
    /// How long the device stays online without a reading: one poll cycle
    /// more than it takes the poller to declare it offline (`offline_after`
    /// polls, each as long as the interval or as its attempts running into
    /// the timeout, whichever is longer).
    pub fn heartbeat(&self) -> Duration {
        let cycle = self
            .poll_interval
            .max(self.timeout.saturating_mul(self.retries.saturating_add(1)));
        cycle.saturating_mul(self.offline_after.saturating_add(1))
    }
}

impl ModbusConfig {
    /// The timings of device `d`.
    pub fn timings(&self, d: &ModbusDeviceConfig) -> PollTimings {
        PollTimings {
            poll_interval: d.poll_interval.unwrap_or(self.poll_interval),
            timeout: d.timeout.unwrap_or(self.timeout),
            retries: d.retries.unwrap_or(self.retries),
            offline_after: d
                .offline_after_failures
                .unwrap_or(self.offline_after_failures)
                .max(1),
        }
    }
}

impl Default for ModbusConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_poll_interval(),
            timeout: default_modbus_timeout(),
            retries: default_retries(),
            offline_after_failures: default_offline_after_failures(),
            max_gap: 0,
            max_registers_per_request: default_max_registers_per_request(),
            max_bits_per_request: default_max_bits_per_request(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            lines: BTreeMap::new(),
            maps: BTreeMap::new(),
            devices: Vec::new(),
        }
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_modbus_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_offline_after_failures() -> u32 {
    3
}
fn default_max_registers_per_request() -> u16 {
    125
}
fn default_max_bits_per_request() -> u16 {
    2000
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (8N1, the common setting).
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// One serial line (an RS-485 bus): every unit on it is polled in turn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialLineConfig {
    /// The serial device, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/…`.
    pub path: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity: `none`, `even` or `odd`.
    #[serde(default = "default_parity")]
    pub parity: Parity,
    /// Data bits, 5 to 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits, 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence kept between two requests on the line (bus turnaround, slow transceivers).
    #[serde(default = "default_request_gap", with = "humantime_serde")]
    pub request_gap: Duration,
}

fn default_baud() -> u32 {
    9600
}
fn default_parity() -> Parity {
    Parity::None
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_request_gap() -> Duration {
    Duration::from_millis(5)
}

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils (read/write bits, function 1).
    #[serde(alias = "coils")]
    Coil,
    /// Discrete inputs (read-only bits, function 2).
    #[serde(alias = "discrete_inputs", alias = "discrete input")]
    DiscreteInput,
    /// Input registers (read-only words, function 4).
    #[serde(alias = "input_register", alias = "input_registers")]
    Input,
    /// Holding registers (read/write words, function 3).
    #[serde(alias = "holding_register", alias = "holding_registers")]
    Holding,
}

impl Table {
    /// Whether the table holds bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }
}

/// How a configured value is stored in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterType {
    /// Unsigned 16-bit register.
    U16,
    /// Signed 16-bit register (two's complement).
    I16,
    /// Unsigned 32-bit value in two registers.
    U32,
    /// Signed 32-bit value in two registers.
    I32,
    /// IEEE 754 single-precision float in two registers.
    F32,
    /// A coil or discrete input; on a register, true when it is not zero.
    Bool,
    /// One bit (`bit`, 0 = least significant) of a register.
    Bit,
}

impl RegisterType {
    /// How many registers (or bits) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            RegisterType::U32 | RegisterType::I32 | RegisterType::F32 => 2,
            _ => 1,
        }
    }

    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterType::U16 => "u16",
            RegisterType::I16 => "i16",
            RegisterType::U32 => "u32",
            RegisterType::I32 => "i32",
            RegisterType::F32 => "f32",
            RegisterType::Bool => "bool",
            RegisterType::Bit => "bit",
        }
    }

    /// Whether the decoded value is a boolean.
    pub fn is_bool(self) -> bool {
        matches!(self, RegisterType::Bool | RegisterType::Bit)
    }
}

/// Order of the two registers of a 32-bit value (the bytes in each register are always big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (the Modbus convention, "ABCD").
    Big,
    /// Low word first ("word-swapped", "CDAB").
    Little,
}

/// A register map: which registers hold which fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMapConfig {
    /// The device kind the map is made for; devices using it must be of this kind.
    pub kind: Option<Kind>,
    /// The values to read.
    pub registers: Vec<RegisterConfig>,
}

/// One value in a device's tables and the reading field it becomes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// The reading field, e.g. `duct_temp_c`.
    pub field: String,
    /// `coil`, `discrete_input`, `input` or `holding`.
    pub table: Table,
    /// Protocol address (0-based, as sent on the wire; register 30001 of a data sheet is input 0).
    pub address: u16,
    /// `u16`, `i16`, `u32`, `i32`, `f32`, `bool` or `bit`.
    #[serde(rename = "type")]
    pub ty: RegisterType,
    /// For `type = "bit"`: which bit of the register, 0 (least significant) to 15.
    pub bit: Option<u8>,
    /// For 32-bit types: `big` (high word first) or `little` (word-swapped).
    #[serde(default = "default_word_order")]
    pub word_order: WordOrder,
    /// Multiply the raw number by this.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Then add this.
    #[serde(default)]
    pub offset: f64,
}

fn default_word_order() -> WordOrder {
    WordOrder::Big
}

/// How the gateway reaches a Modbus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModbusTransport {
    /// Modbus TCP: `address` is `host:port`.
    Tcp,
    /// Modbus RTU on a serial line: `line` names a `[modbus.lines.<name>]`.
    Rtu,
}

/// One polled Modbus device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    /// The id of a device declared in `[[devices]]`, which gives kind, site and place;
    /// or leave it out and set `id`, `kind`, `site` (and the place) here.
    pub device: Option<String>,
    /// Device id, when not referring to a `[[devices]]` entry.
    pub id: Option<String>,
    /// What the device is, when not referring to a `[[devices]]` entry.
    pub kind: Option<Kind>,
    /// School or campus code; with `device`, picks the entry when several sites use the id.
    pub site: Option<String>,
    /// Building.
    pub building: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Room.
    pub room: Option<String>,
    /// A human name for the place.
    pub name: Option<String>,
    /// `tcp` or `rtu`.
    pub transport: ModbusTransport,
    /// TCP: `host:port` (port 502 when left out).
    pub address: Option<String>,
    /// RTU: the name of a `[modbus.lines.<name>]`.
    pub line: Option<String>,
    /// Unit (slave) id: 1 to 247 on a serial line; on TCP usually 1 (255 or 0 for some devices).
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// A named map from `[modbus.maps]`; or leave it out and list `registers` here.
    pub map: Option<String>,
    /// The device's own registers, when it uses no named map.
    #[serde(default)]
    pub registers: Vec<RegisterConfig>,
    /// How often to poll it (default `modbus.poll_interval`).
    #[serde(default, with = "humantime_serde")]
    pub poll_interval: Option<Duration>,
    /// Request timeout (default `modbus.timeout`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Further attempts per poll (default `modbus.retries`).
    pub retries: Option<u32>,
    /// Failed polls before it is offline (default `modbus.offline_after_failures`).
    pub offline_after_failures: Option<u32>,
    /// Unused registers that may be read to join requests (default `modbus.max_gap`).
    pub max_gap: Option<u16>,
}

fn default_unit() -> u8 {
    1
}

impl Config {
    /// The identity (id, kind, site, place) of a Modbus device: its own keys, or
    /// those of the `[[devices]]` entry it refers to. `None` when it refers to
    /// no declared device or lacks `id`, `kind` or `site` (validation says which).
    pub fn modbus_identity(&self, d: &ModbusDeviceConfig) -> Option<DeviceConfig> {
        match &d.device {
            Some(reference) => {
                let mut found = self
                    .devices
                    .iter()
                    .filter(|x| &x.id == reference)
                    .filter(|x| d.site.as_ref().is_none_or(|s| s == &x.site));
                let first = found.next()?;
                // An id declared in several sites must be told apart with `site`.
                found.next().is_none().then(|| first.clone())
            }
            None => Some(DeviceConfig {
                id: d.id.clone()?,
                kind: d.kind?,
                site: d.site.clone()?,
                building: d.building.clone(),
                floor: d.floor.clone(),
                room: d.room.clone(),
                name: d.name.clone(),
                heartbeat: None,
            }),
        }
    }

    /// Every device known before any message: the declared ones, then those
    /// only `[[modbus.devices]]` names. A device's own `heartbeat` wins; else
    /// a polled device's comes from its polling, the others' from their kind.
    pub fn known_devices(&self) -> Vec<KnownDevice<'_>> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut out: Vec<KnownDevice<'_>> = self
            .devices
            .iter()
            .map(|d| KnownDevice {
                heartbeat_ms: d.heartbeat.map_or_else(|| kind_heartbeat_ms(d.kind), ms),
                config: Cow::Borrowed(d),
                polled: false,
            })
            .collect();
        let index: HashMap<(&str, &str), usize> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| ((d.site.as_str(), d.id.as_str()), i))
            .collect();
        for m in &self.modbus.devices {
            let Some(d) = self.modbus_identity(m) else {
                continue;
            };
            let heartbeat_ms = ms(d
                .heartbeat
                .unwrap_or_else(|| self.modbus.timings(m).heartbeat()));
            match index.get(&(d.site.as_str(), d.id.as_str())) {
                Some(&i) => {
                    out[i].polled = true;
                    out[i].heartbeat_ms = heartbeat_ms;
                }
                None => out.push(KnownDevice {
                    config: Cow::Owned(d),
                    polled: true,
                    heartbeat_ms,
                }),
            }
        }
        out
    }

    /// The registers of a Modbus device: its named map's or its own.
    pub fn modbus_registers<'a>(
        &'a self,
        d: &'a ModbusDeviceConfig,
    ) -> Option<&'a [RegisterConfig]> {
        match &d.map {
            Some(name) => self.modbus.maps.get(name).map(|m| m.registers.as_slice()),
            None => Some(&d.registers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_id;

    #[test]
    fn ids_are_the_ascii_set_of_the_feed() {
        for ok in ["east-1", "a3-301", "hood_2", "Yazhong", "0"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in [
            "\u{435}ast-1", // Cyrillic е: looks like east-1
            "еast-1",
            "东门-1",         // CJK
            "gate-\u{ff11}",  // fullwidth digit one
            "east\u{2010}1",  // Unicode hyphen
            "east-1\u{200b}", // zero-width space
            "é",
            "",
            "a b",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
