//! [`Smtp`]: a real SMTP server (aiosmtpd from PyPI, pinned in
//! scripts/test.sh) on a free port, started by `smtp_receiver.py`; every
//! message it takes is parsed by Python's own `email` package and kept as a
//! JSON line: the envelope, the headers as sent, the decoded subject and body.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::ServerProcess;
use super::{free_port, tcp_accepts, START_DEADLINE};

const SCRIPT: &str = include_str!("smtp_receiver.py");
const HINT: &str = "run scripts/test.sh (its venv target/pyvenv gets aiosmtpd), or: target/pyvenv/bin/python -m pip install aiosmtpd==1.4.6 (or set CAMPUSGW_TEST_PYTHON to a python that has it)";

/// The running server, killed on drop.
pub struct Smtp {
    process: ServerProcess,
    log: PathBuf,
    mode: PathBuf,
    pub port: u16,
}

/// A python that has aiosmtpd, or a panic saying how to get one.
fn python() -> PathBuf {
    let candidate = std::env::var_os("CAMPUSGW_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    match Command::new(&candidate)
        .args(["-c", "import aiosmtpd"])
        .output()
    {
        Ok(o) if o.status.success() => candidate,
        Ok(o) => panic!(
            "{} cannot import aiosmtpd ({}): {HINT}",
            candidate.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("{} not usable ({e}): {HINT}", candidate.display()),
    }
}

impl Smtp {
    /// Without authentication (a campus relay taking mail from this machine).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// `Some((user, password))`: AUTH required, those credentials accepted.
    pub fn start_with(auth: Option<(&str, &str)>) -> Self {
        let mut process = ServerProcess::new("smtp", python());
        let script = process.dir().join("smtp_receiver.py");
        std::fs::write(&script, SCRIPT).expect("write smtp_receiver.py");
        let log = process.dir().join("messages.jsonl");
        let mode = process.dir().join("mode.json");
        let port = free_port();
        let mut args = vec![
            "-u".to_owned(),
            script.display().to_string(),
            port.to_string(),
            log.display().to_string(),
            mode.display().to_string(),
        ];
        if let Some((u, p)) = auth {
            args.extend(["--user".into(), u.into(), "--password".into(), p.into()]);
        }
        process.spawn(&args);
        let deadline = std::time::Instant::now() + START_DEADLINE;
        while !tcp_accepts(port) {
            assert!(
                std::time::Instant::now() < deadline,
                "smtp_receiver.py did not start:\n{}",
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

    /// Every later DATA is answered with this reply line (`451 4.3.0 try
    /// later`, `550 5.1.1 no such user`); `None`: accepted again.
    pub fn reply_with(&self, reply: Option<&str>) {
        let text = match reply {
            Some(r) => serde_json::json!({ "reply": r }).to_string(),
            None => "{}".to_owned(),
        };
        std::fs::write(&self.mode, text).expect("write mode.json");
    }

    /// Every message so far (accepted or refused), oldest first.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The messages the server accepted.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["refused"].is_null())
            .collect()
    }

    /// The server's own output (tracebacks).
    pub fn log(&self) -> String {
        self.process.log()
    }
}
