//! A real mosquitto 2.0 broker as a child process.
//!
//! ```ignore
//! let broker = Mosquitto::start();                       // anonymous, plain TCP
//! let broker = Mosquitto::builder().user("gw", "pw").start();
//! let broker = Mosquitto::builder().tls().require_client_cert().start();
//! let mut broker = Mosquitto::builder().persistence().max_queued_messages(0).start();
//! broker.restart();                                      // same port, same data
//! ```
//!
//! Always set: `user root` (as root mosquitto otherwise drops to the user
//! `mosquitto`, which cannot read root's 0600 files in the temp dir),
//! `set_tcp_nodelay true` (Nagle adds tens of ms towards quiet clients),
//! `log_dest stderr` (into the log file), `connection_messages true`.
//!
//! Traps seen with mosquitto 2.0.11 + rumqttc 0.25:
//! - A wrong password (and an anonymous client when anonymous is off) is
//!   refused with CONNACK code 5 `NotAuthorized`, not 4 `BadUserNamePassword`.
//! - With `require_certificate true` a client without a certificate still
//!   completes the TLS 1.3 handshake; it fails on its first read with
//!   "received fatal alert: CertificateRequired" (an `MqttState` error, not
//!   a `Tls` one). A server cert from another CA fails as a `TLS:` error
//!   ("invalid peer certificate: UnknownIssuer").
//! - Persistence is written on a graceful stop (SIGTERM, [`Mosquitto::stop`],
//!   [`Mosquitto::restart`]) and every `autosave_interval`; after
//!   [`Mosquitto::kill`] without autosave, queued messages are gone.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::mqtt::MqttClientConfig;
use super::process::{require_executable, restart_with_retries, start_with_retries, ServerProcess};
use super::tls::{TestPki, TlsFiles};
use super::{free_port, tcp_accepts, START_DEADLINE};

const INSTALL_HINT: &str =
    "run scripts/test.sh (it installs it) or apt-get install -y mosquitto mosquitto-clients";

/// How to configure the broker; [`MosquittoOptions::start`] starts it.
#[derive(Clone, Debug, Default)]
pub struct MosquittoOptions {
    /// `persistence true` with `persistence_location` in the temp dir: a
    /// graceful [`Mosquitto::stop`]/[`Mosquitto::restart`] keeps retained
    /// messages, persistent sessions and their queued QoS 1/2 messages.
    pub persistence: bool,
    /// `autosave_interval` seconds (with persistence): also saves while
    /// running, so even [`Mosquitto::kill`] loses at most that much.
    pub autosave_interval_secs: Option<u32>,
    /// `max_queued_messages` per client (mosquitto: 0 = no limit; default 1000).
    pub max_queued_messages: Option<u64>,
    /// `max_inflight_messages` per client (default 20).
    pub max_inflight_messages: Option<u32>,
    /// Password users; non-empty → `allow_anonymous false` + `password_file`.
    pub users: Vec<(String, String)>,
    /// TLS listener (instead of plain TCP) with a generated CA and certs.
    pub tls: bool,
    /// With TLS: `require_certificate true` (clients need the client cert).
    pub require_client_cert: bool,
    /// `log_type all`: logs every packet (noisy under load).
    pub verbose_log: bool,
    /// Extra raw config lines, appended after the listener block.
    pub extra_config: Vec<String>,
}

impl MosquittoOptions {
    pub fn persistence(mut self) -> Self {
        self.persistence = true;
        self
    }
    pub fn autosave_interval_secs(mut self, secs: u32) -> Self {
        self.autosave_interval_secs = Some(secs);
        self
    }
    pub fn max_queued_messages(mut self, n: u64) -> Self {
        self.max_queued_messages = Some(n);
        self
    }
    pub fn max_inflight_messages(mut self, n: u32) -> Self {
        self.max_inflight_messages = Some(n);
        self
    }
    /// What `deploy/mosquitto-gateway.conf` sets for the gateway's session:
    /// no queue limit, and an in-flight window of 1,000 (with acknowledge
    /// after persist, mosquitto's default of 20 would throttle the gateway).
    pub fn for_gateway(self) -> Self {
        self.max_queued_messages(0).max_inflight_messages(1000)
    }
    /// Adds a password user (call again for more users).
    pub fn user(mut self, username: &str, password: &str) -> Self {
        self.users
            .push((username.to_string(), password.to_string()));
        self
    }
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    /// Implies [`MosquittoOptions::tls`].
    pub fn require_client_cert(mut self) -> Self {
        self.tls = true;
        self.require_client_cert = true;
        self
    }
    pub fn verbose_log(mut self) -> Self {
        self.verbose_log = true;
        self
    }
    pub fn extra_config(mut self, line: &str) -> Self {
        self.extra_config.push(line.to_string());
        self
    }
    pub fn start(self) -> Mosquitto {
        Mosquitto::start_with(self)
    }
}

/// A running (or stopped, restartable) mosquitto broker.
pub struct Mosquitto {
    options: MosquittoOptions,
    port: u16,
    config_path: PathBuf,
    tls: Option<(TestPki, TlsFiles)>,
    process: ServerProcess,
}

impl Mosquitto {
    /// Anonymous, plain TCP, no persistence, TCP_NODELAY.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(MosquittoOptions::default())
    }

    pub fn builder() -> MosquittoOptions {
        MosquittoOptions::default()
    }

    pub fn start_with(options: MosquittoOptions) -> Mosquitto {
        let program = require_executable("mosquitto", INSTALL_HINT);
        let process = ServerProcess::new("mosquitto", program);
        let dir = process.dir().to_path_buf();

        if !options.users.is_empty() {
            let passwd = require_executable("mosquitto_passwd", INSTALL_HINT);
            let file = dir.join("passwd");
            for (i, (user, pass)) in options.users.iter().enumerate() {
                let mut cmd = Command::new(&passwd);
                if i == 0 {
                    cmd.arg("-c");
                }
                let output = cmd
                    .arg("-b")
                    .arg(&file)
                    .arg(user)
                    .arg(pass)
                    .output()
                    .unwrap_or_else(|e| panic!("run mosquitto_passwd: {e}"));
                assert!(
                    output.status.success(),
                    "mosquitto_passwd -b {} {user} failed: {}{}",
                    file.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }

        let tls = options.tls.then(|| {
            let pki = TestPki::generate();
            let files = pki.write_to(&dir);
            (pki, files)
        });
        if options.persistence {
            std::fs::create_dir_all(dir.join("data")).expect("create mosquitto data dir");
        }

        let mut broker = Mosquitto {
            config_path: dir.join("mosquitto.conf"),
            options,
            port: 0,
            tls,
            process,
        };
        start_with_retries("mosquitto", || {
            broker.port = free_port();
            broker.write_config();
            broker.spawn_once()
        });
        broker
    }

    fn write_config(&self) {
        let dir = self.process.dir();
        let o = &self.options;
        let mut c = vec![
            "# written by tests/common/mosquitto.rs".to_string(),
            "user root".to_string(),
            "log_dest stderr".to_string(),
            "log_timestamp true".to_string(),
            "connection_messages true".to_string(),
            "set_tcp_nodelay true".to_string(),
        ];
        if o.verbose_log {
            c.push("log_type all".to_string());
        }
        if o.persistence {
            c.push("persistence true".to_string());
            c.push(format!(
                "persistence_location {}/",
                dir.join("data").display()
            ));
            if let Some(secs) = o.autosave_interval_secs {
                c.push(format!("autosave_interval {secs}"));
            }
        } else {
            c.push("persistence false".to_string());
        }
        if let Some(n) = o.max_queued_messages {
            c.push(format!("max_queued_messages {n}"));
        }
        if let Some(n) = o.max_inflight_messages {
            c.push(format!("max_inflight_messages {n}"));
        }
        if o.users.is_empty() {
            c.push("allow_anonymous true".to_string());
        } else {
            c.push("allow_anonymous false".to_string());
            c.push(format!("password_file {}", dir.join("passwd").display()));
        }
        c.push(format!("listener {} 127.0.0.1", self.port));
        if let Some((_, files)) = &self.tls {
            c.push(format!("cafile {}", files.ca_cert.display()));
            c.push(format!("certfile {}", files.server_cert.display()));
            c.push(format!("keyfile {}", files.server_key.display()));
            c.push(format!("require_certificate {}", o.require_client_cert));
        }
        c.extend(o.extra_config.iter().cloned());
        c.push(String::new());
        std::fs::write(&self.config_path, c.join("\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config_path.display()));
    }

    fn spawn_once(&mut self) -> Result<(), String> {
        let port = self.port;
        let args = vec!["-c".to_string(), self.config_path.display().to_string()];
        self.process.spawn_and_wait(&args, START_DEADLINE, |log| {
            // "running" is logged only after every listener is bound.
            log.contains(&format!("listen socket on port {port}"))
                && log.contains(" running")
                && tcp_accepts(port)
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (for CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `mqtt://127.0.0.1:PORT`, or `mqtts://localhost:PORT` with TLS (the
    /// server cert's SAN covers both `localhost` and `127.0.0.1`).
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            format!("mqtts://localhost:{}", self.port)
        } else {
            format!("mqtt://127.0.0.1:{}", self.port)
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The options it was started with.
    pub fn options(&self) -> &MosquittoOptions {
        &self.options
    }

    /// A client config for this broker: URL, the CA (TLS), the client cert
    /// (only when the broker requires one) and the first user's password.
    pub fn client_config(&self) -> MqttClientConfig {
        let mut config = MqttClientConfig::new(&self.url());
        if let Some((pki, _)) = &self.tls {
            config = config.ca_pem(pki.ca_cert_pem.as_bytes());
            if self.options.require_client_cert {
                config = config.client_auth(
                    pki.client_cert_pem.as_bytes(),
                    pki.client_key_pem.as_bytes(),
                );
            }
        }
        if let Some((user, pass)) = self.options.users.first() {
            config = config.credentials(user, pass);
        }
        config
    }

    /// The generated PKI (TLS brokers only).
    pub fn pki(&self) -> Option<&TestPki> {
        self.tls.as_ref().map(|(pki, _)| pki)
    }

    /// The PEM file paths (TLS brokers only).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|(_, files)| files)
    }

    fn files(&self) -> &TlsFiles {
        self.tls_files()
            .expect("this Mosquitto has no TLS listener: start it with .tls()")
    }

    /// The CA certificate (PEM) to trust. Panics on a non-TLS broker.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.files().ca_cert.clone()
    }

    /// A client certificate signed by the CA (generated for every TLS
    /// broker, whether or not it requires one). Panics on a non-TLS broker.
    pub fn client_cert_path(&self) -> PathBuf {
        self.files().client_cert.clone()
    }

    /// The client certificate's key (PKCS#8 PEM). Panics on a non-TLS broker.
    pub fn client_key_path(&self) -> PathBuf {
        self.files().client_key.clone()
    }

    /// Path of the generated `mosquitto.conf`.
    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    /// The temp dir (config, certs, passwd, data/, log).
    pub fn dir(&self) -> PathBuf {
        self.process.dir().to_path_buf()
    }

    /// The broker's log (all runs).
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Graceful stop (SIGTERM, up to 10 s, then SIGKILL): with persistence
    /// the broker saves its database. Keeps the temp dir for `restart()`.
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }

    /// Crash: SIGKILL, no chance to save anything. Keeps the temp dir.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is
    /// answered, like a hung broker. [`Mosquitto::resume`] undoes it.
    pub fn pause(&mut self) {
        self.process.signal("STOP");
    }

    pub fn resume(&mut self) {
        self.process.signal("CONT");
    }

    /// Stops (gracefully, if running) and starts again on the SAME port with
    /// the same config and data dir. Retries binding for up to ~5 s.
    pub fn restart(&mut self) {
        self.stop();
        restart_with_retries("mosquitto", || self.spawn_once());
    }

    /// Starts a stopped broker again (same port/config/data).
    pub fn start_again(&mut self) {
        assert!(!self.process.is_running(), "mosquitto is already running");
        restart_with_retries("mosquitto", || self.spawn_once());
    }
}
