//! The `campusgw` binary as an installer uses it: `check` on good and broken
//! files, and `run` against a database that refuses its credentials.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Mosquitto, Victoria};

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");

fn check(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .env_remove("CAMPUSGW__INFLUX__URL")
        .output()
        .expect("run campusgw check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_configuration() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/campus.example.toml");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn check_names_every_problem_with_key_path_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[mqtt]\nurl = \"http://broker\"\n\n[[mqtt.topics]]\npattern = \"campus/{site}/{kind}\"\nqos = 2\n\n[influx]\nurl = \"http://127.0.0.1:8086\"\napi = \"v1\"\nbatch_size = 0\n",
    )
    .expect("write config");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    for (key, line) in [
        ("mqtt.url", "line 2"),
        ("mqtt.topics[0].pattern", "line 5"),
        ("mqtt.topics[0].qos", "line 6"),
        ("influx.database", "line 8"),
        ("influx.batch_size", "line 11"),
    ] {
        let hit = stderr.lines().find(|l| l.contains(key));
        assert!(
            hit.is_some_and(|l| l.contains(line)),
            "{key} at {line} in:\n{stderr}"
        );
    }

    std::fs::write(
        &path,
        "[mqtt]\nurl = \"mqtt://a:1\"\n[web]\nlisten = \"127.0.0.1:0\"\nlisten_port = 3\n",
    )
    .expect("write");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown field `listen_port`") && stderr.contains("line 5"),
        "{stderr}"
    );

    let (code, _, stderr) = check(&dir.path().join("missing.toml"));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the file"), "{stderr}");
}

/// Runs `campusgw run` until `done(stderr so far)` or 60 s; returns the stderr.
fn run_until(
    config: &std::path::Path,
    env: &[(&str, &str)],
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let mut child = Command::new(BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start campusgw run");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + common::DEADLINE;
    while Instant::now() < deadline && !done(&log) {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for campusgw");
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        status.success(),
        "campusgw run should stop cleanly on SIGTERM: {status}\n{log}"
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_influxdb_token_is_a_clear_error_in_the_log_and_healthz() {
    let broker = Mosquitto::start();
    let vm = Victoria::start_with_auth("school", "right-password");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let path = dir.path().join("campus.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
[influx]
url = "{}"
org = "yazhong"
bucket = "campus"
token = {{ env = "TEST_INFLUX_TOKEN" }}
flush_interval = "100ms"
[web]
listen = "127.0.0.1:{port}"
"#,
            dir.path().join("data").display(),
            broker.url(),
            vm.url()
        ),
    )
    .expect("write config");

    // Something must be written for the database to refuse it.
    let publisher = common::Publisher::connect(&broker.url()).await;
    let url = broker.url();
    let feeder = tokio::spawn(async move {
        for n in 0..600u64 {
            let (t, p) = common::feed::message("smoke", "yazhong", "a3-301", common::now_ms(), n);
            publisher.publish(&t, p, common::QoS::AtMostOnce).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(url);
    });

    let healthz = tokio::task::spawn_blocking(move || {
        let mut seen = None;
        let log = run_until(&path, &[("TEST_INFLUX_TOKEN", "wrong-token")], |log| {
            if seen.is_none() && log.contains("InfluxDB refuses our writes") {
                seen = common::http_sync(port, "GET", "/healthz", None, None).ok();
            }
            seen.is_some()
        });
        (log, seen)
    })
    .await
    .expect("runner thread");
    feeder.abort();
    let (log, seen) = healthz;
    assert!(log.contains("InfluxDB answered 401"), "{log}");
    assert!(
        log.contains("check influx.token"),
        "the log says what to fix: {log}"
    );
    let (status, body) = seen.unwrap_or_else(|| panic!("no /healthz answer; log:\n{log}"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("401") && body.contains("influx.token"),
        "{body}"
    );
}

#[test]
fn demo_runs_with_nothing_installed() {
    let (web, mqtt) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--web-port",
            &web.to_string(),
            "--mqtt-port",
            &mqtt.to_string(),
        ])
        .env_remove("CAMPUSGW__INFLUX__URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start campusgw demo");
    let mut readings = 0.0;
    let mut polled = 0.0;
    let deadline = Instant::now() + common::DEADLINE;
    while Instant::now() < deadline && (readings < 20.0 || polled < 2.0) {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok((200, text)) = common::http_sync(web, "GET", "/metrics", None, None) {
            let sum = |prefix: &str| -> f64 {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            };
            readings = sum("campusgw_readings_total");
            // Both simulated Modbus devices answered at least once.
            polled = ["hood-3", "chem-3"]
                .iter()
                .filter(|d| sum(&format!("campusgw_modbus_polls_total{{device=\"{d}\"}}")) > 0.0)
                .count() as f64;
        }
    }
    let health = common::http_sync(web, "GET", "/healthz", None, None);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for the demo");
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    assert!(
        readings >= 20.0,
        "the simulated campus feeds the gateway: {readings} readings"
    );
    let (code, body) = health.expect("/healthz answers");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"disabled\""),
        "no database configured is said plainly: {body}"
    );
    assert_eq!(polled, 2.0, "the demo's Modbus hood and cabinet are polled");
    assert!(
        body.contains("\"modbus/hood-3\"") && body.contains("\"modbus/chem-3\""),
        "{body}"
    );
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{web}/")),
        "the demo prints its address: {stdout}"
    );
    assert!(stdout.contains("CAMPUSGW__INFLUX__URL"), "{stdout}");
    assert!(status.success(), "Ctrl-C stops the demo cleanly: {status}");
}
