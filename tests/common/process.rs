//! A server child process living in its own temp dir, logging to a file in it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Finds `name` on `PATH` or in the sbin directories (`mosquitto` lives in
/// `/usr/sbin`, which a non-login `PATH` may lack).
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(
            ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Like [`find_executable`], but panics with `install_hint` when missing.
pub fn require_executable(name: &str, install_hint: &str) -> PathBuf {
    find_executable(name).unwrap_or_else(|| panic!("{name} not found: {install_hint}"))
}

/// One server process (restartable) with its temp dir and log file.
///
/// The child is killed with SIGKILL and reaped on drop; the temp dir goes
/// after it. [`ServerProcess::terminate`] stops it gracefully (SIGTERM, then
/// SIGKILL after a grace period) so servers can save their state.
pub struct ServerProcess {
    name: String,
    program: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    /// Byte offset of the log where the current (or last) run started.
    run_log_offset: u64,
    // Declared last: dropped after the child is gone.
    dir: TempDir,
}

impl ServerProcess {
    /// Creates the temp dir; does not start anything yet.
    pub fn new(name: &str, program: PathBuf) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("campusgw-test-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create temp dir for {name}: {e}"));
        let log_path = dir.path().join(format!("{name}.log"));
        File::create(&log_path)
            .unwrap_or_else(|e| panic!("create log file {}: {e}", log_path.display()));
        ServerProcess {
            name: name.to_string(),
            program,
            child: None,
            log_path,
            run_log_offset: 0,
            dir,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The temp dir holding config, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log (all runs), lossily decoded.
    pub fn log(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    /// The log of the current (or last) run only.
    pub fn run_log(&self) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let from = (self.run_log_offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the program with `args`, appending stdout and stderr to the
    /// log. Panics if a previous run is still alive.
    pub fn spawn(&mut self, args: &[String]) {
        assert!(
            !self.is_running(),
            "{}: spawn while the previous process is still running",
            self.name
        );
        let mut log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open log {}: {e}", self.log_path.display()));
        self.run_log_offset = log.seek(SeekFrom::End(0)).unwrap_or(0);
        let _ = writeln!(
            log,
            "=== harness: starting {} {} ===",
            self.program.display(),
            args.join(" ")
        );
        self.run_log_offset = log.seek(SeekFrom::End(0)).unwrap_or(self.run_log_offset);
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("clone log handle for {}: {e}", self.name));
        let child = Command::new(&self.program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// True while the child runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status if the child has exited, without blocking.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Spawns and polls `ready(run_log)` every 20 ms. Returns `Err` with the
    /// log when the process exits before it is ready (typically a port clash:
    /// the caller may retry), and panics when it is still not ready after
    /// `deadline` while running.
    pub fn spawn_and_wait(
        &mut self,
        args: &[String],
        deadline: Duration,
        mut ready: impl FnMut(&str) -> bool,
    ) -> Result<(), String> {
        self.spawn(args);
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                self.child = None;
                return Err(format!(
                    "{} exited early ({status}); its log:\n{}",
                    self.name,
                    self.run_log()
                ));
            }
            if ready(&self.run_log()) {
                // A probe can reach another process that holds the port we
                // lost; our server would then be exiting right now.
                thread::sleep(Duration::from_millis(50));
                if let Some(status) = self.exit_status() {
                    self.child = None;
                    return Err(format!(
                        "{} exited right after looking ready ({status}); its log:\n{}",
                        self.name,
                        self.run_log()
                    ));
                }
                return Ok(());
            }
            if started.elapsed() > deadline {
                self.kill();
                panic!(
                    "{} did not become ready within {deadline:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. "TERM", "STOP", "CONT") to the running child.
    pub fn signal(&mut self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new(find_executable("kill").unwrap_or_else(|| "kill".into()))
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(e) = status {
                panic!("send SIG{signal} to {} (pid {pid}): {e}", self.name);
            }
        }
    }

    /// Graceful stop: SIGTERM, wait up to `grace`, then SIGKILL. Reaps it.
    pub fn terminate(&mut self, grace: Duration) {
        if !self.is_running() {
            self.child = None;
            return;
        }
        self.signal("TERM");
        let started = Instant::now();
        while started.elapsed() < grace {
            if self.exit_status().is_some() {
                self.child = None;
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Hard stop: SIGKILL and reap (a crash, as far as the server knows).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Tries `attempt` up to 5 times (each attempt picks new ports); panics with
/// every attempt's error when all fail.
pub fn start_with_retries<T>(name: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let mut errors = Vec::new();
    for _ in 0..5 {
        match attempt() {
            Ok(started) => return started,
            Err(error) => errors.push(error),
        }
    }
    panic!(
        "{name} failed to start 5 times (port clashes?):\n{}",
        errors.join("\n----\n")
    );
}

/// Restarts on the same ports: retries `attempt` for up to ~5 s (a port can
/// stay busy for a moment after the old process died).
pub fn restart_with_retries(name: &str, mut attempt: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    let mut errors = Vec::new();
    loop {
        match attempt() {
            Ok(()) => return,
            Err(error) => errors.push(error),
        }
        if started.elapsed() > Duration::from_secs(5) {
            panic!(
                "{name} failed to restart on the same port:\n{}",
                errors.join("\n----\n")
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Resident memory of a process now, MB (`VmRSS`); 0 when it is gone.
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// (user+system CPU seconds, peak RSS in MB) of a process, from `/proc`.
pub fn cpu_and_peak_rss(pid: u32) -> (f64, f64) {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kb / 1024.0)
}

/// The machine in one line for benchmark reports: cores and CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

/// A child process (a benchmark's `campusgw run`) that is stopped when
/// dropped, also when the benchmark panics: a gateway left behind keeps
/// reconnecting, and on the next run's broker — free ports come round again
/// — it would take over the new gateway's client id.
pub struct ChildGuard(Child);

impl ChildGuard {
    /// `campusgw run --config CONFIG`, its JSON log filtered by `rust_log` on stderr.
    /// `BENCH_GATEWAY_BIN` runs another build instead (a copy of the one
    /// before a change, to measure both back to back on a shared machine).
    pub fn gateway(config: &Path, rust_log: &str) -> Self {
        let bin = std::env::var_os("BENCH_GATEWAY_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_campusgw")),
            PathBuf::from,
        );
        let child = Command::new(bin)
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start campusgw");
        ChildGuard(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, and wait for the graceful shutdown.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
