//! The `campusgw` binary under test as a child process (`campusgw run`), so
//! that it can be killed with SIGKILL and restarted on the same data, and its
//! own memory read from `/proc`.
//!
//! ```ignore
//! let mut gw = GatewayProcess::new();
//! gw.start(&format!("[gateway]\ndata_dir = \"{}\"\n[mqtt]\n...", gw.data_dir().display()));
//! gw.kill();            // kill -9
//! gw.start_again();     // same config, same data_dir, same web port
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::process::ServerProcess;
use super::{free_port, http_sync};

/// A `campusgw run` process with its temp dir (config, data, log).
pub struct GatewayProcess {
    process: ServerProcess,
    web_port: u16,
    config_path: PathBuf,
}

impl Default for GatewayProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayProcess {
    /// Creates the temp dir and picks the web port; starts nothing yet.
    pub fn new() -> Self {
        let process = ServerProcess::new("campusgw", PathBuf::from(env!("CARGO_BIN_EXE_campusgw")));
        let config_path = process.dir().join("campus.toml");
        GatewayProcess {
            process,
            web_port: free_port(),
            config_path,
        }
    }

    /// `gateway.data_dir` to put in the configuration.
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir().join("data")
    }

    pub fn web_port(&self) -> u16 {
        self.web_port
    }

    /// Writes `config` plus `[web] listen` and starts the gateway; returns
    /// once `/healthz` shows the MQTT subscriptions acknowledged.
    pub fn start(&mut self, config: &str) {
        let text = format!(
            "{config}\n[web]\nlisten = \"127.0.0.1:{}\"\n",
            self.web_port
        );
        std::fs::write(&self.config_path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config_path.display()));
        self.start_again();
    }

    /// Starts the gateway again with the same configuration and data.
    pub fn start_again(&mut self) {
        let args = vec![
            "run".to_string(),
            "--log-format".to_string(),
            "json".to_string(),
            "--config".to_string(),
            self.config_path.display().to_string(),
        ];
        let port = self.web_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The port of a killed process may be busy for a moment.
            match self
                .process
                .spawn_and_wait(&args, Duration::from_secs(30), |_| subscribed(port))
            {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("campusgw did not start, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => panic!("campusgw did not start: {e}"),
            }
        }
    }

    /// SIGKILL: a crash or a power cut, as far as the gateway knows.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait (up to 30 s): the ordered shutdown.
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(30));
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// GET `path` on the gateway: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_sync(self.web_port, "GET", path, None, None)
            .unwrap_or_else(|e| panic!("GET {path} on campusgw: {e}\nlog:\n{}", self.log()))
    }

    /// One sample of `/metrics`, e.g. `campusgw_spool_points`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .filter(|rest| rest.starts_with(' '))
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Resident memory now, MB (VmRSS).
    pub fn rss_mb(&self) -> f64 {
        super::process::rss_mb(self.process.pid().expect("campusgw is running"))
    }

    /// The whole log (all runs).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Whether the gateway on `port` answers and its MQTT subscriptions are acknowledged.
fn subscribed(port: u16) -> bool {
    let Ok((_, body)) = http_sync(port, "GET", "/healthz", None, None) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/components/mqtt/status")
                .and_then(|s| s.as_str().map(|s| s == "ok"))
        })
        .unwrap_or(false)
}
