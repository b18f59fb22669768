//! VictoriaMetrics 1.79 (Debian `victoria-metrics`): the InfluxDB v2 write
//! API (`POST /api/v2/write?org=&bucket=&precision=`) for the v2 path.
//!
//! Started as `victoria-metrics -storageDataPath=DIR
//! -httpListenAddr=127.0.0.1:PORT -retentionPeriod=100y
//! -search.latencyOffset=0s` (+ `-httpAuth.username/password` on request).
//!
//! Traps (measured on this machine with 1.79.5):
//! - Auth: with `-httpAuth.*` set, VictoriaMetrics accepts ONLY HTTP Basic
//!   auth. `Authorization: Token xyz` — what the influxdb2 crate and every v2
//!   client send — is answered `401 Unauthorized` with
//!   `Www-Authenticate: Basic realm="VictoriaMetrics"` and an empty body
//!   (a newline), even when the token is the right `user:password`. No header
//!   and a wrong Basic password get the same 401. So: a wrong token → 401 is
//!   testable; a *right* token cannot be accepted by VM at all. Without
//!   `-httpAuth.*`, any `Authorization` header is ignored (204).
//!   `/health` needs no auth even then; `/internal/force_flush` and
//!   `/api/v1/export` do (the helpers here send Basic auth).
//! - A malformed line still gets 204 (only the log says `cannot unmarshal`).
//! - Names become `measurement_field{tags}`; bool fields are stored as 1/0,
//!   integers (`5i`) as numbers, and STRING fields become series with value 0
//!   (e.g. `gate_event`, `bus_route_id` all zeros).
//! - No deduplication by default: the same point written twice is TWO
//!   samples with the same timestamp (InfluxDB 1.x would merge them). A
//!   retried batch therefore double-counts in [`Victoria::count_samples`];
//!   use [`Victoria::count_distinct_samples`] when retries are allowed, or
//!   start with [`VictoriaOptions::dedup`].
//! - New series become visible only after a flush, sometimes seconds later:
//!   poll ([`super::eventually`]) around [`Victoria::count_samples`], which
//!   calls `/internal/force_flush` first.
//! - Timestamps as old as 1970 are kept (retention 100y).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::process::{require_executable, restart_with_retries, start_with_retries, ServerProcess};
use super::{free_port, http_client, http_sync, START_DEADLINE};

const INSTALL_HINT: &str =
    "run scripts/test.sh (it installs it) or apt-get install -y victoria-metrics";

/// How to configure VictoriaMetrics.
#[derive(Clone, Debug, Default)]
pub struct VictoriaOptions {
    /// `-httpAuth.username` / `-httpAuth.password` (Basic auth only!).
    pub basic_auth: Option<(String, String)>,
    /// `-dedup.minScrapeInterval=1ms`: samples of a series with the same
    /// timestamp collapse to one (at query/merge time).
    pub dedup: bool,
    /// Extra command-line flags.
    pub extra_args: Vec<String>,
}

impl VictoriaOptions {
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.to_string(), password.to_string()));
        self
    }
    pub fn dedup(mut self) -> Self {
        self.dedup = true;
        self
    }
    pub fn arg(mut self, flag: &str) -> Self {
        self.extra_args.push(flag.to_string());
        self
    }
    pub fn start(self) -> Victoria {
        Victoria::start_with(self)
    }
}

/// A running (or stopped, restartable) VictoriaMetrics.
pub struct Victoria {
    options: VictoriaOptions,
    port: u16,
    client: reqwest::Client,
    process: ServerProcess,
}

impl Victoria {
    pub fn start() -> Victoria {
        Victoria::start_with(VictoriaOptions::default())
    }

    /// With `-httpAuth.username=user -httpAuth.password=password`.
    pub fn start_with_auth(user: &str, password: &str) -> Victoria {
        Victoria::start_with(VictoriaOptions::default().basic_auth(user, password))
    }

    pub fn builder() -> VictoriaOptions {
        VictoriaOptions::default()
    }

    pub fn start_with(options: VictoriaOptions) -> Victoria {
        let program = require_executable("victoria-metrics", INSTALL_HINT);
        let process = ServerProcess::new("victoria-metrics", program);
        let mut vm = Victoria {
            options,
            port: 0,
            client: http_client(),
            process,
        };
        start_with_retries("victoria-metrics", || {
            vm.port = free_port();
            vm.spawn_once()
        });
        vm
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!(
                "-storageDataPath={}",
                self.process.dir().join("data").display()
            ),
            format!("-httpListenAddr=127.0.0.1:{}", self.port),
            "-retentionPeriod=100y".to_string(),
            "-search.latencyOffset=0s".to_string(),
        ];
        if let Some((user, pass)) = &self.options.basic_auth {
            args.push(format!("-httpAuth.username={user}"));
            args.push(format!("-httpAuth.password={pass}"));
        }
        if self.options.dedup {
            args.push("-dedup.minScrapeInterval=1ms".to_string());
        }
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    fn spawn_once(&mut self) -> Result<(), String> {
        let port = self.port;
        let args = self.args();
        self.process.spawn_and_wait(&args, START_DEADLINE, |log| {
            log.contains(&format!("starting http server at http://127.0.0.1:{port}/"))
                && matches!(
                    http_sync(port, "GET", "/health", None, None),
                    Ok((200, ref body)) if body.trim() == "OK"
                )
        })
    }

    /// The server's process id while it runs (for CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Basic-auth (user, password) it was started with.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        self.options
            .basic_auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.basic_auth() {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// GET /internal/force_flush: makes recently written data searchable.
    pub async fn force_flush(&self) {
        let response = self
            .authed(
                self.client
                    .get(format!("{}/internal/force_flush", self.url())),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /internal/force_flush: {e}"));
        assert!(
            response.status().is_success(),
            "/internal/force_flush answered {}",
            response.status()
        );
    }

    /// GET /api/v1/export?match[]=`match_expr`: one JSON object per series,
    /// `{"metric":{"__name__":..,tags..},"values":[..],"timestamps":[ms..]}`.
    /// Does NOT flush first (see [`Victoria::export_flushed`]).
    pub async fn export(&self, match_expr: &str) -> Vec<Value> {
        let response = self
            .authed(
                self.client
                    .get(format!("{}/api/v1/export", self.url()))
                    .query(&[("match[]", match_expr)]),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /api/v1/export {match_expr}: {e}"));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("read /api/v1/export answer: {e}"));
        assert!(
            status.is_success(),
            "/api/v1/export {match_expr} → {status}: {text}"
        );
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("/api/v1/export line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// [`Victoria::force_flush`] then [`Victoria::export`].
    pub async fn export_flushed(&self, match_expr: &str) -> Vec<Value> {
        self.force_flush().await;
        self.export(match_expr).await
    }

    /// Total number of samples (length of every series' `values`, summed)
    /// matching `match_expr`, after a force_flush. Duplicates (same series
    /// and timestamp) count each time. Poll it: new series can lag.
    pub async fn count_samples(&self, match_expr: &str) -> u64 {
        self.export_flushed(match_expr)
            .await
            .iter()
            .map(|series| {
                series
                    .get("values")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len) as u64
            })
            .sum()
    }

    /// Like [`Victoria::count_samples`] but each (series, timestamp) counts
    /// once: robust against retried (duplicated) writes.
    pub async fn count_distinct_samples(&self, match_expr: &str) -> u64 {
        self.export_flushed(match_expr)
            .await
            .iter()
            .map(|series| {
                series
                    .get("timestamps")
                    .and_then(Value::as_array)
                    .map_or(0, |ts| {
                        ts.iter()
                            .filter_map(Value::as_i64)
                            .collect::<BTreeSet<_>>()
                            .len()
                    }) as u64
            })
            .sum()
    }

    /// Number of series matching `match_expr`, after a force_flush.
    pub async fn count_series(&self, match_expr: &str) -> u64 {
        self.export_flushed(match_expr).await.len() as u64
    }

    /// POST /api/v2/write?org=o&bucket=b&precision=ms with a raw line-protocol
    /// body. `auth_header` is sent verbatim as `Authorization` when given
    /// (e.g. `"Token xyz"`); otherwise the server's Basic credentials are
    /// used if it has any. Returns (status, body).
    pub async fn write_v2(&self, body: &str, auth_header: Option<&str>) -> (u16, String) {
        let mut request = self
            .client
            .post(format!("{}/api/v2/write", self.url()))
            .query(&[("org", "o"), ("bucket", "b"), ("precision", "ms")])
            .body(body.to_string());
        request = match auth_header {
            Some(header) => request.header("Authorization", header),
            None => self.authed(request),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /api/v2/write to victoria-metrics: {e}"));
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

    /// Graceful stop (SIGTERM flushes in-memory data; 15 s, then SIGKILL).
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(15));
    }

    /// SIGKILL: the last ~second of unflushed writes may be lost.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: a hung server. [`Victoria::resume`] undoes it.
    pub fn pause(&mut self) {
        self.process.signal("STOP");
    }

    pub fn resume(&mut self) {
        self.process.signal("CONT");
    }

    /// Stops (if running) and starts again on the same port and data dir.
    pub fn restart(&mut self) {
        self.stop();
        restart_with_retries("victoria-metrics", || self.spawn_once());
    }

    /// Starts a stopped server again (same port and data).
    pub fn start_again(&mut self) {
        assert!(
            !self.process.is_running(),
            "victoria-metrics is already running"
        );
        restart_with_retries("victoria-metrics", || self.spawn_once());
    }
}
