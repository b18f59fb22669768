//! InfluxDB 1.6.7 (`influxd run -config FILE`) for the v1 write path.
//!
//! It has no v2 API (`/api/v2/write` and `/health` are 404): use
//! [`super::Victoria`] for the v2 path.
//!
//! Traps (measured on influxd 1.6.7):
//! - A write to a database that does not exist is 404 `database not found`:
//!   call [`Influx1::create_database`] first.
//! - A point is (measurement, tag set, timestamp): writing the same one twice
//!   MERGES/overwrites fields, it does not add a point. A retried batch is
//!   therefore idempotent here (unlike VictoriaMetrics, which keeps both).
//! - `SELECT count(*) FROM m` is NOT a point count: it returns one column per
//!   field (`count_temp_c`, `count_alarm`, ...), each counting the points that
//!   have that field; none of them need equal the number of points.
//!   [`Influx1::count`] therefore counts the rows of `SELECT * FROM "m"`
//!   (one row per distinct series+timestamp, across all series).
//! - With auth on: no credentials → 401 `unable to parse authentication
//!   credentials`; wrong password → 401 `authorization failed`; the v2-style
//!   header `Authorization: Token user:pass` is NOT understood by 1.6 (401;
//!   it arrived in 1.8): use Basic auth or `u=`/`p=` query parameters.
//! - Before any user exists, auth-enabled influx answers every query except
//!   `CREATE USER ... WITH ALL PRIVILEGES` with 403 `create admin user first`.
//! - A query error comes back as HTTP 200 with `results[i].error`.
//! - A large non-chunked `SELECT *` carries `"partial": true` on the series
//!   but still holds every row (checked with 130 000 rows, `max-row-limit = 0`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::process::{require_executable, restart_with_retries, start_with_retries, ServerProcess};
use super::{free_port, http_client, http_sync, urlencode, START_DEADLINE};

const INSTALL_HINT: &str =
    "run scripts/test.sh (it installs it) or apt-get install -y influxdb (the influxd binary)";

/// How to configure InfluxDB 1.x.
#[derive(Clone, Debug, Default)]
pub struct Influx1Options {
    /// `auth-enabled = true` plus an admin user with these credentials.
    pub admin: Option<(String, String)>,
    /// `[http] log-enabled = true` (one log line per request).
    pub http_log: bool,
}

impl Influx1Options {
    /// Enables auth and creates this admin user (ALL PRIVILEGES).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.admin = Some((user.to_string(), password.to_string()));
        self
    }
    pub fn http_log(mut self) -> Self {
        self.http_log = true;
        self
    }
    pub fn start(self) -> Influx1 {
        Influx1::start_with(self)
    }
}

/// A running (or stopped, restartable) InfluxDB 1.6 server.
pub struct Influx1 {
    options: Influx1Options,
    http_port: u16,
    rpc_port: u16,
    config_path: PathBuf,
    client: reqwest::Client,
    process: ServerProcess,
}

impl Influx1 {
    /// No auth.
    pub fn start() -> Influx1 {
        Influx1::start_with(Influx1Options::default())
    }

    /// Auth enabled with an admin user `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Influx1 {
        Influx1::start_with(Influx1Options::default().auth(user, password))
    }

    pub fn builder() -> Influx1Options {
        Influx1Options::default()
    }

    pub fn start_with(options: Influx1Options) -> Influx1 {
        let program = require_executable("influxd", INSTALL_HINT);
        let process = ServerProcess::new("influxd", program);
        let mut influx = Influx1 {
            config_path: process.dir().join("influxdb.conf"),
            options,
            http_port: 0,
            rpc_port: 0,
            client: http_client(),
            process,
        };
        start_with_retries("influxd", || {
            influx.http_port = free_port();
            influx.rpc_port = free_port();
            while influx.rpc_port == influx.http_port {
                influx.rpc_port = free_port();
            }
            influx.write_config();
            influx.spawn_once()
        });
        if let Some((user, pass)) = influx.options.admin.clone() {
            let q = format!(
                "CREATE USER \"{user}\" WITH PASSWORD '{}' WITH ALL PRIVILEGES",
                pass.replace('\'', "\\'")
            );
            let body = format!("q={}", urlencode(&q));
            let (status, text) = http_sync(
                influx.http_port,
                "POST",
                "/query",
                None,
                Some(("application/x-www-form-urlencoded", body.as_bytes())),
            )
            .unwrap_or_else(|e| panic!("influxd: CREATE USER request failed: {e}"));
            assert!(
                status == 200 && !text.contains("\"error\""),
                "influxd: creating the admin user failed: {status} {text}\nlog:\n{}",
                influx.log()
            );
        }
        influx
    }

    fn write_config(&self) {
        let dir = self.process.dir();
        let auth = self.options.admin.is_some();
        let config = format!(
            r#"# written by tests/common/influx.rs
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{meta}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  auth-enabled = {auth}
  log-enabled = {http_log}
  max-row-limit = 0
  pprof-enabled = false
  unix-socket-enabled = false
"#,
            rpc = self.rpc_port,
            http = self.http_port,
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
            wal = dir.join("wal").display(),
            http_log = self.options.http_log,
        );
        std::fs::write(&self.config_path, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config_path.display()));
    }

    fn spawn_once(&mut self) -> Result<(), String> {
        let port = self.http_port;
        let args = vec![
            "run".to_string(),
            "-config".to_string(),
            self.config_path.display().to_string(),
        ];
        self.process.spawn_and_wait(&args, START_DEADLINE, |log| {
            log.contains(&format!("addr=127.0.0.1:{port}"))
                && matches!(http_sync(port, "GET", "/ping", None, None), Ok((204, _)))
        })
    }

    /// The server's process id while it runs (for CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn port(&self) -> u16 {
        self.http_port
    }

    /// The admin (user, password) when auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options
            .admin
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.credentials() {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// Runs InfluxQL (POST /query, `epoch=ms`, admin credentials if auth is
    /// on). `Err` on a transport error, a non-200 answer, or any `error` in
    /// the answer (top level or per statement).
    pub async fn try_query(&self, db: &str, influxql: &str) -> Result<Value, String> {
        let request = self
            .client
            .post(format!("{}/query", self.url()))
            .query(&[("db", db), ("epoch", "ms")])
            .form(&[("q", influxql)]);
        let response = self
            .authed(request)
            .send()
            .await
            .map_err(|e| format!("POST /query {influxql:?}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("read /query answer: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("/query {influxql:?} → {status}: {text}"));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("/query {influxql:?} answered non-JSON ({e}): {text}"))?;
        if let Some(error) = value.get("error") {
            return Err(format!("/query {influxql:?} → error {error}"));
        }
        if let Some(results) = value.get("results").and_then(Value::as_array) {
            for result in results {
                if let Some(error) = result.get("error") {
                    return Err(format!("/query {influxql:?} → error {error}"));
                }
            }
        }
        Ok(value)
    }

    /// [`Influx1::try_query`], panicking (with the server log) on error.
    pub async fn query(&self, db: &str, influxql: &str) -> Value {
        match self.try_query(db, influxql).await {
            Ok(value) => value,
            Err(e) => panic!("influx query failed: {e}\nlog:\n{}", self.log()),
        }
    }

    /// `CREATE DATABASE "name"` (idempotent).
    pub async fn create_database(&self, name: &str) {
        self.query("", &format!("CREATE DATABASE \"{name}\"")).await;
    }

    /// Rows of the first statement's result, one JSON object per row
    /// (column → value), with each series' tags (GROUP BY) merged in, and
    /// `time` in epoch ms. No series (e.g. unknown measurement) → empty.
    pub async fn rows(&self, db: &str, influxql: &str) -> Vec<serde_json::Map<String, Value>> {
        let value = self.query(db, influxql).await;
        rows_of(&value)
    }

    /// Number of POINTS in `measurement`: the number of rows of
    /// `SELECT * FROM "measurement"` over all its series (a point is a
    /// distinct series+timestamp; rewriting one does not add a row).
    /// 0 when the measurement (or database) does not exist.
    pub async fn count(&self, db: &str, measurement: &str) -> u64 {
        match self
            .try_query(db, &format!("SELECT * FROM \"{measurement}\""))
            .await
        {
            Ok(value) => rows_of(&value).len() as u64,
            Err(e) if e.contains("database not found") => 0,
            Err(e) => panic!("influx count failed: {e}\nlog:\n{}", self.log()),
        }
    }

    /// `SELECT COUNT("field") FROM "measurement"`: points that carry `field`.
    pub async fn count_field(&self, db: &str, measurement: &str, field: &str) -> u64 {
        let rows = self
            .rows(
                db,
                &format!("SELECT COUNT(\"{field}\") FROM \"{measurement}\""),
            )
            .await;
        rows.first()
            .and_then(|row| row.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// `SELECT count(*)`: field name → number of points carrying that field.
    pub async fn count_per_field(&self, db: &str, measurement: &str) -> BTreeMap<String, u64> {
        let rows = self
            .rows(db, &format!("SELECT count(*) FROM \"{measurement}\""))
            .await;
        let mut counts = BTreeMap::new();
        if let Some(row) = rows.first() {
            for (column, value) in row {
                if let (Some(field), Some(n)) = (column.strip_prefix("count_"), value.as_u64()) {
                    counts.insert(field.to_string(), n);
                }
            }
        }
        counts
    }

    /// POST /write?db=..&precision=ms with a line-protocol body (admin
    /// credentials if auth is on). Returns (status, body); 204 is success.
    pub async fn write_lines(&self, db: &str, body: &str) -> (u16, String) {
        let request = self
            .client
            .post(format!("{}/write", self.url()))
            .query(&[("db", db), ("precision", "ms")])
            .body(body.to_string());
        let response = self
            .authed(request)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /write to influx: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub fn dir(&self) -> PathBuf {
        self.process.dir().to_path_buf()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Graceful stop (SIGTERM, up to 10 s, then SIGKILL); keeps the data.
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }

    /// SIGKILL (the WAL still holds acknowledged writes).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: a hung database (connections accepted by the kernel, no
    /// answers). [`Influx1::resume`] undoes it.
    pub fn pause(&mut self) {
        self.process.signal("STOP");
    }

    pub fn resume(&mut self) {
        self.process.signal("CONT");
    }

    /// Stops (if running) and starts again on the same ports with the same
    /// data and users. Retries for up to ~5 s.
    pub fn restart(&mut self) {
        self.stop();
        restart_with_retries("influxd", || self.spawn_once());
    }

    /// Starts a stopped server again (same ports and data).
    pub fn start_again(&mut self) {
        assert!(!self.process.is_running(), "influxd is already running");
        restart_with_retries("influxd", || self.spawn_once());
    }
}

/// Flattens an InfluxDB 1.x /query answer (first statement) into rows.
pub fn rows_of(value: &Value) -> Vec<serde_json::Map<String, Value>> {
    let mut rows = Vec::new();
    let series = value
        .pointer("/results/0/series")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in series {
        let columns: Vec<String> = s
            .get("columns")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let tags = s.get("tags").and_then(Value::as_object).cloned();
        for values in s
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let mut row = serde_json::Map::new();
            if let Some(tags) = &tags {
                row.extend(tags.clone());
            }
            if let Some(values) = values.as_array() {
                for (column, v) in columns.iter().zip(values) {
                    row.insert(column.clone(), v.clone());
                }
            }
            rows.push(row);
        }
    }
    rows
}
