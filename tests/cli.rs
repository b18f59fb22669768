//! The `campusgw` binary as an installer uses it: `check` on good and broken
//! files, and `run` against a database that refuses its credentials.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Mosquitto, Victoria};

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");

fn check(path: &std::path::Path) -> (i32, String, String) {
    check_with(path, &[])
}

/// `campusgw check` with these environment variables set.
fn check_with(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .env_remove("CAMPUSGW__INFLUX__URL")
        .envs(env.iter().copied())
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
    // The secrets it names, as deploy/campusgw.env would set them.
    let (code, stdout, stderr) = check_with(
        &path,
        &[
            ("CAMPUSGW_MQTT_PASSWORD", "mqtt-secret"),
            ("CAMPUSGW_INFLUX_TOKEN", "influx-secret"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn check_and_run_refuse_a_secret_that_is_not_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("campus.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nusername = \"gw\"\npassword = {{ env = \"CAMPUSGW_TEST_NO_SUCH_SECRET\" }}\n[influx]\nurl = \"http://127.0.0.1:1\"\norg = \"o\"\nbucket = \"b\"\ntoken = {{ file = \"{}\" }}\n[web]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display(),
            dir.path().join("no-such-token").display()
        ),
    )
    .expect("write config");
    let expect = |stderr: &str| {
        for (key, what, line) in [
            (
                "mqtt.password",
                "CAMPUSGW_TEST_NO_SUCH_SECRET is not set",
                "line 6",
            ),
            ("influx.token", "no-such-token", "line 11"),
        ] {
            let hit = stderr.lines().find(|l| l.contains(key));
            assert!(
                hit.is_some_and(|l| l.contains(what) && l.contains(line)),
                "{key}: {what} at {line} in:\n{stderr}"
            );
        }
    };
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    expect(&stderr);
    // An empty value (the shipped campusgw.env's) is no better.
    let (code, _, stderr) = check_with(&path, &[("CAMPUSGW_TEST_NO_SUCH_SECRET", "")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CAMPUSGW_TEST_NO_SUCH_SECRET is empty"),
        "{stderr}"
    );

    // `run` refuses to start with the same problems and EX_CONFIG, which
    // the unit does not restart on.
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("CAMPUSGW_TEST_NO_SUCH_SECRET")
        .output()
        .expect("campusgw run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    expect(&stderr);
    let unit = include_str!("../deploy/campusgw.service");
    assert!(unit.contains("RestartPreventExitStatus=78"), "{unit}");
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

#[test]
fn check_names_five_mistakes_in_five_sections_in_one_run_with_suggestions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("campus.toml");
    std::fs::write(
        &path,
        r#"[gateway]
data_dri = "/var/lib/campusgw"

[mqtt]
url = "mqtt://127.0.0.1:1883"
keep_alive = "0s"

[influx]
flush_interval = "5 parsecs"

[web]
lisen = "127.0.0.1:8080"

[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"

[[devices]]
id = "a3-302"
kind = "smoke"
site = "yazhong"
heartbeat = 90

[[modbus.devices]]
id = "cab-1"
kind = "labcap"
site = "yazhong"
transport = "tcp"
address = "127.0.0.1:5020"
map = "ref-chem-cabinet"
"#,
    )
    .expect("write config");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    for (key, says, line) in [
        ("gateway.data_dri", "did you mean `data_dir`?", "line 2"),
        ("mqtt.keep_alive", "must be above zero", "line 6"),
        (
            "influx.flush_interval",
            r#"expected a duration such as "30s", "5m" or "1h 30m""#,
            "line 9",
        ),
        ("web.lisen", "did you mean `listen`?", "line 12"),
        ("devices[1].heartbeat", "such as \"30s\"", "line 23"),
        (
            "modbus.devices[0].kind",
            "did you mean `labcab`?",
            "line 27",
        ),
    ] {
        let hit = stderr.lines().find(|l| l.contains(key));
        assert!(
            hit.is_some_and(|l| l.contains(says) && l.contains(line)),
            "{key}: {says} at {line} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("has 6 problem(s)"), "{stderr}");
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

    // The details of /healthz are for a signed-in user or a token.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let auth = campus_gateway::web::AuthStore::open(&data).expect("auth store");
    auth.set_user(
        "reader",
        campus_gateway::web::Role::Viewer,
        "reader-password",
    )
    .expect("reader");
    let token = auth
        .create_token("monitor", campus_gateway::web::Role::Viewer, "reader", None)
        .expect("token");
    drop(auth);
    let healthz = tokio::task::spawn_blocking(move || {
        let mut seen = None;
        let log = run_until(&path, &[("TEST_INFLUX_TOKEN", "wrong-token")], |log| {
            if seen.is_none() && log.contains("InfluxDB refuses our writes") {
                seen = common::http_sync_bearer(port, "/healthz", &token).ok();
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
    let mut published = 0.0;
    let mut polled = 0.0;
    let deadline = Instant::now() + common::DEADLINE;
    while Instant::now() < deadline && (readings < 20.0 || published < 20.0 || polled < 2.0) {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok((200, text)) = common::http_sync(web, "GET", "/metrics", None, None) {
            let sum = |prefix: &str| -> f64 {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            };
            readings = sum("campusgw_readings_total");
            // Through the demo's broker, not only polled.
            published = sum("campusgw_messages_received_total{source=\"mqtt\"}");
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
        readings >= 20.0 && published >= 20.0,
        "the simulated campus feeds the gateway: {readings} readings, {published} over MQTT"
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
    assert!(
        stdout.contains("sign in as operator / "),
        "the demo prints its login: {stdout}"
    );
    assert!(status.success(), "Ctrl-C stops the demo cleanly: {status}");
}

/// `campusgw run` with its log in a file, stopped (SIGTERM) on drop.
struct Running {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Running {
    fn start(config: &std::path::Path, log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start campusgw run");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signal("-TERM");
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_refuses_a_broken_file() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:{port}\"\n",
        dir.path().join("data").display(),
        broker.url()
    );
    let smoke_rule = common::gateway::smoke_rule("smoke");
    let gate_rule = "[[rules]]\nid = \"gate-forced\"\nseverity = \"high\"\nkinds = [\"gate\"]\nmessage = \"forced\"\ncondition = { type = \"equals\", field = \"event\", value = \"forced_open\" }\n";
    let path = dir.path().join("campus.toml");
    std::fs::write(&path, format!("{base}{smoke_rule}")).expect("write config");
    let gw = Running::start(&path, dir.path().join("gw.log"));
    common::eventually("the gateway subscribed", || async {
        common::http_sync(port, "GET", "/healthz", None, None).is_ok_and(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v["components"]["mqtt"]["status"] == "ok")
        })
    })
    .await;
    let mut alarms = common::Subscriber::connect(&broker.url(), "campusgw/+/alarm/#").await;
    let publisher = common::Publisher::connect(&broker.url()).await;

    // A broken file is refused; the running rules stay.
    std::fs::write(
        &path,
        format!("{base}{smoke_rule}[[rules]]\nid = \"x\"\nseverity = \"urgent\"\n"),
    )
    .expect("write");
    gw.signal("-HUP");
    common::eventually("the refusal is logged", || async {
        gw.log().contains("the running rules stay")
    })
    .await;
    let mut p = common::feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = serde_json::json!(true);
    publisher
        .publish(
            "campus/yazhong/smoke/a3-301",
            p.to_string(),
            common::QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        alarms.recv().await.topic,
        "campusgw/yazhong/alarm/a3-301/smoke-alarm"
    );

    // A good file adds a rule without a restart.
    std::fs::write(&path, format!("{base}{smoke_rule}{gate_rule}")).expect("write");
    gw.signal("-HUP");
    common::eventually("the reload is logged", || async {
        gw.log().contains("Rules reloaded on SIGHUP")
    })
    .await;
    let mut g = common::feed::payload("gate", common::now_ms(), 2);
    g["event"] = serde_json::json!("forced_open");
    publisher
        .publish(
            "campus/yazhong/gate/east-1",
            g.to_string(),
            common::QoS::AtLeastOnce,
        )
        .await;
    let msg = alarms.recv().await;
    assert_eq!(
        msg.topic,
        "campusgw/yazhong/alarm/east-1/gate-forced",
        "{}",
        gw.log()
    );
    assert_eq!(msg.json()["state"], "unacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_then_sign_in_over_tls() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "user",
            "add",
            "zhang",
            "--role",
            "operator",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("campusgw user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long enough password\n")
        .expect("write password");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Weak passwords and names that do not show as themselves are refused with a reason.
    for (name, password, reason) in [
        ("li", "short", "at least 10 characters"),
        ("li", "          ", "only spaces"),
        ("li", "xxxxxxxxxxxxxxxx", "one character repeated"),
        ("li.na-2024", "li.na-2024", "the user name"),
        (
            "admin\u{202e}nimda",
            "a long enough password",
            "a name has 1 to 32",
        ),
        ("😀😀😀", "a long enough password", "a name has 1 to 32"),
    ] {
        let mut child = Command::new(BIN)
            .args([
                "user",
                "add",
                name,
                "--role",
                "admin",
                "--password-stdin",
                "--data-dir",
            ])
            .arg(&data)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("campusgw user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name:?} / {password:?} accepted");
        assert!(stderr.contains(reason), "{name:?} / {password:?}: {stderr}");
    }

    // The page over HTTPS with a certificate made here; zhang signs in.
    let pki = common::tls::TestPki::generate();
    let files = pki.write_to(dir.path());
    let broker = Mosquitto::start();
    let cfg = common::gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n[web.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        data.display(),
        broker.url(),
        files.server_cert.display(),
        files.server_key.display()
    ));
    let gw = common::gateway::start(cfg).await;
    let ca = reqwest::Certificate::from_pem(pki.ca_cert_pem.as_bytes()).expect("CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let url = format!("https://localhost:{}", gw.web_addr.port());
    let resp = client
        .post(format!("{url}/api/login"))
        .json(&serde_json::json!({ "username": "zhang", "password": "a long enough password" }))
        .send()
        .await
        .expect("login over TLS");
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let plain = common::http_client()
        .get(format!("http://localhost:{}/healthz", gw.web_addr.port()))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "no plain HTTP on a TLS port"
    );
    gw.stop().await;
}

/// `campusgw roster` on the example: the weekly pattern on a school night,
/// the roster file on a holiday, and a gap printed as such.
#[test]
fn roster_prints_who_is_on_duty() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(config.join("campus.example.toml")).expect("example");
    let text = text.replace(
        "# roster_file = \"roster.csv\"",
        "roster_file = \"roster.csv\"",
    );
    assert!(
        text.contains("\nroster_file = "),
        "the example names a roster file"
    );
    std::fs::write(dir.path().join("campus.toml"), text).expect("write");
    std::fs::copy(
        config.join("roster.example.csv"),
        dir.path().join("roster.csv"),
    )
    .expect("copy");
    std::fs::copy(
        config.join("routes.example.geojson"),
        dir.path().join("routes.example.geojson"),
    )
    .expect("copy");
    let path = dir.path().join("campus.toml");
    let roster = |at: &str| {
        let out = Command::new(BIN)
            .args(["roster", "--config"])
            .arg(&path)
            .args(["--at", at])
            .output()
            .expect("run campusgw roster");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let night = roster("2026-12-02 03:00");
    let line = |text: &str, team: &str| {
        text.lines()
            .find(|l| l.contains(team))
            .unwrap_or_else(|| panic!("no {team} in {text}"))
            .to_owned()
    };
    assert!(
        line(&night, "(security)").contains("李娜 13800000002"),
        "{night}"
    );
    assert!(
        line(&night, "(security)").contains("weekly shifts"),
        "{night}"
    );
    assert!(
        line(&night, "(canteen)").contains("NOBODY ON DUTY"),
        "{night}"
    );
    // New Year's Day comes from the roster file, past midnight too.
    let holiday = roster("2027-01-01 23:30");
    assert!(line(&holiday, "(security)").contains("王强"), "{holiday}");
    assert!(
        line(&holiday, "(security)").contains("roster file"),
        "{holiday}"
    );
    let out = Command::new(BIN)
        .args(["roster", "--config"])
        .arg(&path)
        .args(["--at", "tomorrow 3am"])
        .output()
        .expect("run campusgw roster");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a local time"));
}

/// `campusgw user add <name> --role <role> --password-stdin --data-dir <data>`.
fn user_add(
    data: &std::path::Path,
    name: &str,
    role: &str,
    password: &str,
) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args([
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("campusgw user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    child.wait_with_output().expect("wait for user add")
}

/// Signs in on the page at `port`: (client, session cookie, CSRF token).
async fn sign_in(port: u16, user: &str, password: &str) -> (reqwest::Client, String, String) {
    let client = common::http_client();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .expect("sign-in request");
    assert_eq!(resp.status(), 200, "{user} signs in");
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie value")
        .to_owned();
    let body: serde_json::Value = resp.json().await.expect("login body");
    let csrf = body["csrf"].as_str().expect("csrf").to_owned();
    (client, cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_endpoint_replaces_the_rules_and_refuses_a_broken_file() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let data = dir.path().join("data");
    let base = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:{port}\"\n",
        data.display(),
        broker.url()
    );
    let smoke_rule = common::gateway::smoke_rule("smoke");
    let gate_rule = "[[rules]]\nid = \"gate-forced\"\nseverity = \"high\"\nkinds = [\"gate\"]\nmessage = \"forced\"\ncondition = { type = \"equals\", field = \"event\", value = \"forced_open\" }\n";
    let path = dir.path().join("campus.toml");
    std::fs::write(&path, format!("{base}{smoke_rule}")).expect("write config");
    let gw = Running::start(&path, dir.path().join("gw.log"));
    common::eventually("the gateway subscribed", || async {
        common::http_sync(port, "GET", "/healthz", None, None)
            // Without a session /healthz shows states only: `ok` once subscribed.
            .is_ok_and(|(_, body)| {
                serde_json::from_str::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["components"]["mqtt"]["status"] == "ok")
            })
    })
    .await;
    // An admin added while the daemon runs.
    let out = user_add(&data, "admin1", "admin", "admin1-password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (client, cookie, csrf) = sign_in(port, "admin1", "admin1-password").await;
    let reload = || {
        client
            .post(format!("http://127.0.0.1:{port}/api/admin/reload"))
            .header("Cookie", &cookie)
            .header("X-CSRF-Token", &csrf)
            .send()
    };
    let mut alarms = common::Subscriber::connect(&broker.url(), "campusgw/+/alarm/#").await;
    let publisher = common::Publisher::connect(&broker.url()).await;

    // The smoke rule is replaced by the gate rule.
    std::fs::write(&path, format!("{base}{gate_rule}")).expect("write");
    let resp = reload().await.expect("reload request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body}\n{}", gw.log());
    assert!(body.contains("\"rules\":1"), "{body}");

    // A broken file: 422 with every problem, and the gate rule still runs.
    std::fs::write(
        &path,
        format!("{base}[[rules]]\nid = \"x\"\nseverity = \"urgent\"\nkinds = [\"smoke\"]\nmesage = \"m\"\ncondition = {{ type = \"equals\", field = \"alarm\", value = true }}\n"),
    )
    .expect("write");
    let resp = reload().await.expect("reload request");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert_eq!(status, 422, "{body}");
    let problems = body["problems"].to_string();
    assert!(problems.contains("rules[0].mesage"), "{body}");
    assert!(problems.contains("rules[0].severity"), "{body}");
    // Without the CSRF token the reload is refused.
    let resp = client
        .post(format!("http://127.0.0.1:{port}/api/admin/reload"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("reload request");
    assert_eq!(resp.status(), 403);

    let mut p = common::feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = serde_json::json!(true);
    publisher
        .publish(
            "campus/yazhong/smoke/a3-301",
            p.to_string(),
            common::QoS::AtLeastOnce,
        )
        .await;
    let mut g = common::feed::payload("gate", common::now_ms(), 2);
    g["event"] = serde_json::json!("forced_open");
    publisher
        .publish(
            "campus/yazhong/gate/east-1",
            g.to_string(),
            common::QoS::AtLeastOnce,
        )
        .await;
    // The smoke message, published first, raised nothing: the first alarm is the gate's.
    let msg = alarms.recv().await;
    assert_eq!(
        msg.topic,
        "campusgw/yazhong/alarm/east-1/gate-forced",
        "{}",
        gw.log()
    );
    let audit = client
        .get(format!("http://127.0.0.1:{port}/api/audit"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        audit.contains("reload_refused") && audit.contains("\"reload\""),
        "{audit}"
    );
}
