//! The configuration file: serde structs, loading with `CAMPUSGW__…`
//! environment overrides, secrets from env or files, and validation that
//! reports every problem with its key path and line.
//!
//! Loading is three steps: parse the TOML (syntax errors carry a line), merge
//! the environment overrides into the parsed table, deserialize with
//! `serde_path_to_error` so type errors carry a key path, then `validate()`
//! collects the semantic problems. Key paths are mapped back to lines with
//! `toml_edit`'s spans; a key set from the environment says so instead.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::reading::{Kind, Location};

/// The prefix of environment overrides: `CAMPUSGW__MQTT__URL` sets `mqtt.url`.
pub const ENV_PREFIX: &str = "CAMPUSGW__";

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
            Secret::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} is not set")),
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
    /// Batches waiting for the writer before the pipeline applies backpressure.
    #[serde(default = "default_max_pending_batches")]
    pub max_pending_batches: usize,
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
            max_pending_batches: default_max_pending_batches(),
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
fn default_max_pending_batches() -> usize {
    4
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
        && s.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

// ---------------------------------------------------------------------------
// Loading

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `mqtt.topics[0].qos`.
    pub path: String,
    /// Where the key is: `line 12`, or the environment variable that set it.
    pub origin: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(o) = &self.origin {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

/// Every problem of a configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, when loaded from one.
    pub file: Option<PathBuf>,
    /// All problems found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => writeln!(f, "{} has {} problem(s):", p.display(), self.problems.len())?,
            None => writeln!(f, "the configuration has {} problem(s):", self.problems.len())?,
        }
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// A configuration that loaded, with what `check` should warn about.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Usable but worth a look (inline secrets, no database).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Loads `path` with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            problems: vec![Problem {
                path: String::new(),
                origin: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::from_toml(&text, std::env::vars()).map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Parses TOML text, applies `CAMPUSGW__…` overrides from `env`, validates.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let fail = |problems| ConfigError {
            file: None,
            problems,
        };
        let doc = text
            .parse::<toml_edit::ImDocument<String>>()
            .map_err(|e| fail(vec![syntax_problem(text, &e)]))?;
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            fail(vec![Problem {
                path: String::new(),
                origin: None,
                message: e.message().to_owned(),
            }])
        })?;
        let overrides = apply_env(&mut table, env).map_err(fail)?;
        let locate = |path: &str| locate(&doc, text, &overrides, path);

        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                // An unknown key's own position is more useful than its parent's.
                let key_path = unknown_field(&message)
                    .map(|k| join_path(&path, k))
                    .unwrap_or_else(|| path.clone());
                fail(vec![Problem {
                    origin: locate(&key_path).or_else(|| locate(&path)),
                    path: if path == "." { String::new() } else { path },
                    message,
                }])
            })?;

        let (errors, warnings) = config.validate();
        let with_origin = |ps: Vec<(String, String)>| {
            ps.into_iter()
                .map(|(path, message)| Problem {
                    origin: locate(&path),
                    path,
                    message,
                })
                .collect::<Vec<_>>()
        };
        let errors = with_origin(errors);
        if !errors.is_empty() {
            return Err(fail(errors));
        }
        Ok(Loaded {
            config,
            warnings: with_origin(warnings),
        })
    }

    /// Every semantic problem: `(errors, warnings)` as `(key path, message)`.
    pub fn validate(&self) -> (Vec<(String, String)>, Vec<(String, String)>) {
        let mut errs = Vec::new();
        let mut warns = Vec::new();
        let mut err = |p: &str, m: String| errs.push((p.to_owned(), m));

        let g = &self.gateway;
        if g.max_devices == 0 {
            err("gateway.max_devices", "must be at least 1".into());
        }
        if g.max_payload_bytes < 64 {
            err("gateway.max_payload_bytes", "must be at least 64".into());
        }
        if g.queue_capacity == 0 {
            err("gateway.queue_capacity", "must be at least 1".into());
        }

        let m = &self.mqtt;
        match m.url.split_once("://") {
            Some(("mqtt" | "tcp" | "mqtts" | "ssl", rest)) if !rest.is_empty() => {
                if crate::sources::mqtt::parse_url(&m.url).is_err() {
                    err("mqtt.url", format!("`{}` is not host:port", m.url));
                }
            }
            _ => err(
                "mqtt.url",
                format!("`{}` must look like mqtt://host:1883 or mqtts://host:8883", m.url),
            ),
        }
        let tls_scheme = m.url.starts_with("mqtts://") || m.url.starts_with("ssl://");
        if let Some(tls) = &m.tls {
            if !tls_scheme {
                err("mqtt.tls", "is set but mqtt.url is not mqtts://".into());
            }
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                err(
                    "mqtt.tls",
                    "client_cert_file and client_key_file go together".into(),
                );
            }
        }
        if m.client_id.is_empty() || m.client_id.len() > 64 {
            err("mqtt.client_id", "must be 1 to 64 characters".into());
        }
        if m.password.is_some() && m.username.is_none() {
            err("mqtt.password", "is set without mqtt.username".into());
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            err(
                "mqtt.reconnect_min",
                "must be above zero and at most mqtt.reconnect_max".into(),
            );
        }
        if m.topics.is_empty() {
            err("mqtt.topics", "needs at least one topic".into());
        }
        for (i, t) in m.topics.iter().enumerate() {
            let at = |k: &str| format!("mqtt.topics[{i}].{k}");
            if t.qos > 1 {
                err(&at("qos"), "must be 0 or 1".into());
            }
            match crate::sources::decode::TopicPattern::parse(&t.pattern) {
                Ok(p) => {
                    if !p.has("site") && t.site.is_none() {
                        err(&at("site"), "is needed when the pattern has no {site}".into());
                    }
                    if !p.has("kind") && t.kind.is_none() {
                        err(&at("kind"), "is needed when the pattern has no {kind}".into());
                    }
                }
                Err(e) => err(&at("pattern"), e),
            }
            if let Some(s) = &t.site {
                if !is_valid_id(s) {
                    err(&at("site"), "may hold only letters, digits, - and _".into());
                }
            }
            if !t.ts_field.is_empty() && !t.ts_field.starts_with('/') {
                err(&at("ts_field"), "must be a JSON pointer such as /ts".into());
            }
            for (name, f) in &t.fields {
                if !f.pointer.starts_with('/') {
                    err(
                        &format!("mqtt.topics[{i}].fields.{name}.pointer"),
                        "must be a JSON pointer such as /data/temp".into(),
                    );
                }
                if !f.scale.is_finite() || !f.offset.is_finite() {
                    err(
                        &format!("mqtt.topics[{i}].fields.{name}"),
                        "scale and offset must be finite".into(),
                    );
                }
            }
        }
        if matches!(m.password, Some(Secret::Inline(_))) {
            warns.push(("mqtt.password".into(), INLINE_SECRET.into()));
        }

        let f = &self.influx;
        match &f.url {
            None => warns.push((
                "influx.url".into(),
                "no InfluxDB is configured: readings are not stored".into(),
            )),
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                err("influx.url", format!("`{u}` must start with http:// or https://"))
            }
            Some(u) if reqwest::Url::parse(u).is_err() => {
                err("influx.url", format!("`{u}` is not a valid URL"))
            }
            Some(_) => match f.api {
                InfluxApi::V2 => {
                    for (k, v) in [("org", &f.org), ("bucket", &f.bucket)] {
                        if v.as_deref().is_none_or(str::is_empty) {
                            err(&format!("influx.{k}"), "is needed for api = \"v2\"".into());
                        }
                    }
                    if f.token.is_none() {
                        err("influx.token", "is needed for api = \"v2\"".into());
                    }
                }
                InfluxApi::V1 => {
                    if f.database.as_deref().is_none_or(str::is_empty) {
                        err("influx.database", "is needed for api = \"v1\"".into());
                    }
                    if f.password.is_some() && f.username.is_none() {
                        err("influx.password", "is set without influx.username".into());
                    }
                }
            },
        }
        for (k, s) in [("token", &f.token), ("password", &f.password)] {
            if matches!(s, Some(Secret::Inline(_))) {
                warns.push((format!("influx.{k}"), INLINE_SECRET.into()));
            }
        }
        if f.batch_size == 0 || f.batch_size > 100_000 {
            err("influx.batch_size", "must be 1 to 100000".into());
        }
        if f.flush_interval.is_zero() {
            err("influx.flush_interval", "must be above zero".into());
        }
        if f.timeout.is_zero() {
            err("influx.timeout", "must be above zero".into());
        }
        if f.retry_min.is_zero() || f.retry_min > f.retry_max {
            err(
                "influx.retry_min",
                "must be above zero and at most influx.retry_max".into(),
            );
        }
        if f.max_pending_batches == 0 {
            err("influx.max_pending_batches", "must be at least 1".into());
        }

        let mut seen = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !is_valid_id(&d.id) {
                err(
                    &format!("devices[{i}].id"),
                    format!("`{}` may hold only letters, digits, - and _", d.id),
                );
            }
            if !is_valid_id(&d.site) {
                err(
                    &format!("devices[{i}].site"),
                    format!("`{}` may hold only letters, digits, - and _", d.site),
                );
            }
            if !seen.insert((d.site.as_str(), d.id.as_str())) {
                err(
                    &format!("devices[{i}].id"),
                    format!("device `{}` of site `{}` is declared twice", d.id, d.site),
                );
            }
        }
        if self.devices.len() > g.max_devices {
            err(
                "gateway.max_devices",
                format!("is below the {} declared devices", self.devices.len()),
            );
        }
        (errs, warns)
    }
}

const INLINE_SECRET: &str =
    "is written inline; prefer { env = \"VAR\" } or { file = \"/path\" } so the file can be shared";

fn syntax_problem(text: &str, e: &toml_edit::TomlError) -> Problem {
    let origin = e.span().map(|s| format!("line {}", line_of(text, s.start)));
    let message = e.message().trim().to_owned();
    Problem {
        path: String::new(),
        origin,
        message: format!("TOML syntax: {message}"),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() || parent == "." {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Finds the line of a dotted key path (`a.b[2].c`) in the file, or the
/// environment variable that set it. Falls back to the deepest part found.
fn locate(
    doc: &toml_edit::ImDocument<String>,
    text: &str,
    overrides: &BTreeMap<String, String>,
    path: &str,
) -> Option<String> {
    use toml_edit::{Item, TableLike, Value};
    if let Some((var, _)) = overrides.iter().find(|(_, p)| path.starts_with(p.as_str())) {
        return Some(format!("set by environment variable {var}"));
    }
    let mut table: &dyn TableLike = doc.as_table();
    let mut span = None;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, v)) = table.get_key_value(key) else {
            break;
        };
        span = k.span().or(span);
        let next: Option<&dyn TableLike> = match (v, index) {
            (Item::ArrayOfTables(a), Some(i)) => match a.get(i) {
                Some(t) => {
                    span = t.span().or(span);
                    Some(t)
                }
                None => None,
            },
            (Item::Value(Value::Array(a)), Some(i)) => match a.get(i) {
                Some(v) => {
                    span = v.span().or(span);
                    v.as_inline_table().map(|t| t as &dyn TableLike)
                }
                None => None,
            },
            (v, None) => v.as_table_like(),
            _ => None,
        };
        match next {
            Some(t) => table = t,
            None => break,
        }
    }
    span.map(|s| format!("line {}", line_of(text, s.start)))
}

/// Merges `CAMPUSGW__SECTION__KEY=value` into the table. A value that parses
/// as a TOML value (number, bool, array) takes that type, else it is a string.
/// Returns variable → key path, so problems can name the variable.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, Vec<Problem>> {
    let mut applied = BTreeMap::new();
    let mut problems = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            problems.push(Problem {
                path: String::new(),
                origin: Some(format!("environment variable {var}")),
                message: "has an empty key part".into(),
            });
            continue;
        }
        match insert_path(table, &keys, parse_env_value(&raw)) {
            Ok(()) => {
                applied.insert(var, keys.join("."));
            }
            Err(section) => problems.push(Problem {
                path: keys.join("."),
                origin: Some(format!("environment variable {var}")),
                message: format!("`{section}` is not a section"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(applied)
    } else {
        Err(problems)
    }
}

/// Sets `keys` (a path) to `value`, creating sections; `Err(key)` when a
/// parent key holds a value, not a section.
fn insert_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    match keys {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => insert_path(inner, rest, value),
            _ => Err(first.clone()),
        },
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // `x = <raw>` parses numbers, booleans and arrays; anything else is a string.
    match format!("x = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("x") {
            Some(v @ (toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_))) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";

    fn load(text: &str) -> Result<Loaded, ConfigError> {
        Config::from_toml(text, Vec::new())
    }

    fn problems(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let l = load(MINIMAL).expect("minimal config");
        assert_eq!(l.config.mqtt.topics[0].pattern, "campus/{site}/{kind}/{device}");
        assert_eq!(l.config.influx.batch_size, 5000);
        assert!(l.warnings.iter().any(|w| w.path == "influx.url"));
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let p = problems("[mqtt]\nurl = \"mqtt://a:1\"\n\n[influx]\nurll = \"x\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown field `urll`"), "{p:?}");
        assert!(p[0].contains("line 5"), "{p:?}");
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let p = problems(
            "[mqtt]\nurl = \"mqtt://a:1\"\n[[mqtt.topics]]\npattern = \"a/{site}/{kind}/{device}\"\nqos = \"one\"\n",
        );
        assert!(p[0].starts_with("mqtt.topics[0].qos"), "{p:?}");
        assert!(p[0].contains("line 5"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let p = problems(
            "[mqtt]\nurl = \"http://x\"\n[[mqtt.topics]]\npattern = \"a/{device}\"\nqos = 2\n[influx]\nurl = \"http://db:8086\"\n",
        );
        let joined = p.join("\n");
        for needle in [
            "mqtt.url",
            "mqtt.topics[0].qos",
            "mqtt.topics[0].site",
            "mqtt.topics[0].kind",
            "influx.org",
            "influx.bucket",
            "influx.token",
        ] {
            assert!(joined.contains(needle), "{needle} missing in {joined}");
        }
        assert!(joined.contains("line 5"), "{joined}");
    }

    #[test]
    fn syntax_error_has_line() {
        let p = problems("[mqtt]\nurl = \"mqtt://a:1\"\nfoo = = 3\n");
        assert!(p[0].contains("line 3"), "{p:?}");
    }

    #[test]
    fn env_overrides_and_types() {
        let env = vec![
            ("CAMPUSGW__INFLUX__URL".to_owned(), "http://db:8086".to_owned()),
            ("CAMPUSGW__INFLUX__API".to_owned(), "v1".to_owned()),
            ("CAMPUSGW__INFLUX__DATABASE".to_owned(), "campus".to_owned()),
            ("CAMPUSGW__INFLUX__BATCH_SIZE".to_owned(), "100".to_owned()),
            ("CAMPUSGW__WEB__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let l = Config::from_toml(MINIMAL, env).expect("overridden config");
        assert_eq!(l.config.influx.url.as_deref(), Some("http://db:8086"));
        assert_eq!(l.config.influx.api, InfluxApi::V1);
        assert_eq!(l.config.influx.batch_size, 100);
        assert_eq!(l.config.web.listen.port(), 0);
    }

    #[test]
    fn env_problem_names_variable() {
        let env = vec![("CAMPUSGW__INFLUX__BATCH_SIZE".to_owned(), "0".to_owned())];
        let e = Config::from_toml(MINIMAL, env).expect_err("batch size 0");
        assert!(e.to_string().contains("CAMPUSGW__INFLUX__BATCH_SIZE"), "{e}");
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write token");
        let s = Secret::File { file: path };
        assert_eq!(s.resolve().as_deref(), Ok("s3cret"));
        let missing = Secret::Env {
            env: "CAMPUSGW_TEST_SURELY_UNSET".into(),
        };
        assert!(missing.resolve().is_err());
        assert_eq!(format!("{:?}", Secret::Inline("pw".into())), "Secret(inline, redacted)");
    }

    #[test]
    fn duplicate_devices_are_refused() {
        let text = format!(
            "{MINIMAL}[[devices]]\nid = \"a\"\nkind = \"smoke\"\nsite = \"s\"\n[[devices]]\nid = \"a\"\nkind = \"gate\"\nsite = \"s\"\n"
        );
        let p = problems(&text);
        assert!(p.iter().any(|x| x.contains("devices[1].id") && x.contains("line 8")), "{p:?}");
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/campus.example.toml");
        let l = load(text).unwrap_or_else(|e| panic!("example config: {e}"));
        assert!(!l.config.devices.is_empty());
    }
}
