//! [`Robots`]: `robot_receiver.py` on a free port — WeCom, DingTalk and
//! Feishu robots, an SMS provider and a webhook receiver in one Python
//! process that verifies each request's signature with Python's own `hmac`
//! and answers as the real peer does. Every request is a JSON line in its log.

use std::path::PathBuf;

use super::process::{require_executable, ServerProcess};
use super::{free_port, tcp_accepts, START_DEADLINE};

const SCRIPT: &str = include_str!("robot_receiver.py");

/// The secrets the receiver expects.
pub const DINGTALK_SECRET: &str = "SECtest-dingtalk-secret";
pub const FEISHU_SECRET: &str = "feishu-test-secret";
pub const WEBHOOK_SECRET: &str = "webhook-test-secret";
pub const WECOM_KEY: &str = "wecom-test-key";

/// The running receiver, killed on drop.
pub struct Robots {
    process: ServerProcess,
    log: PathBuf,
    mode: PathBuf,
    pub port: u16,
}

impl Robots {
    pub fn start() -> Self {
        let python = require_executable("python3", "apt-get install -y python3");
        let mut process = ServerProcess::new("robots", python);
        let script = process.dir().join("robot_receiver.py");
        std::fs::write(&script, SCRIPT).expect("write robot_receiver.py");
        let log = process.dir().join("requests.jsonl");
        let mode = process.dir().join("mode.json");
        let port = free_port();
        process.spawn(&[
            "-u".into(),
            script.display().to_string(),
            port.to_string(),
            log.display().to_string(),
            "--dingtalk-secret".into(),
            DINGTALK_SECRET.into(),
            "--feishu-secret".into(),
            FEISHU_SECRET.into(),
            "--webhook-secret".into(),
            WEBHOOK_SECRET.into(),
            "--wecom-key".into(),
            WECOM_KEY.into(),
            "--mode".into(),
            mode.display().to_string(),
        ]);
        let deadline = std::time::Instant::now() + START_DEADLINE;
        while !tcp_accepts(port) {
            assert!(
                std::time::Instant::now() < deadline,
                "robot_receiver.py did not start:\n{}",
                process.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            process,
            log,
            mode,
            port,
        }
    }

    /// Every later request is answered with this HTTP status (a peer that is
    /// down); `None`: normal again.
    pub fn answer_with(&self, status: Option<u16>) {
        let text = match status {
            Some(s) => format!("{{\"status\": {s}}}"),
            None => "{}".to_owned(),
        };
        std::fs::write(&self.mode, text).expect("write mode.json");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The receiver's own output (tracebacks).
    pub fn log(&self) -> String {
        self.process.log()
    }
}
