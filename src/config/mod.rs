//! The configuration file: one serde struct per component
//! (`deny_unknown_fields`, a doc line per key, defaults as functions).
//!
//! `load` reads the file with its `CAMPUSGW__…` environment overrides and
//! maps every problem to its key path and line; `validate` collects every
//! semantic problem at once, never stopping at the first.

mod load;
mod validate;

pub use load::{ConfigError, Loaded, Problem, ENV_PREFIX};
pub use validate::Findings;

use std::collections::BTreeMap;
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
    /// The devices of the campus, with their places.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
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
fn default_max_ts_past() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_ts_future() -> Duration {
    Duration::from_secs(300)
}
fn default_queue_capacity() -> usize {
    16_384
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
    /// The secret's value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))
            }
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
        }
    }
}

/// The MQTT broker and what to subscribe to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883`.
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
    /// Address to listen on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
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

/// Whether `s` is a valid site or device id: letters, digits, `-`, `_`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}
