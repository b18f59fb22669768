//! The built-in broker in production mode ([mqtt.embedded_broker]), checked
//! with mosquitto's own clients: a device with its password publishes and
//! its readings reach InfluxDB; a wrong password, an anonymous client on a
//! listener open to the network, a device writing under another site or on
//! `campusgw/…`, and a display subscribing beyond its grant are refused; TLS
//! with a certificate made here; QoS 1 messages survive a kill -9.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::gateway::{self, metric};
use common::gwproc::GatewayProcess;
use common::influx::Influx1;
use common::tls::TestPki;
use common::{eventually, feed, now_ms};

const SITE_PASSWORD: &str = "yazhong-device-secret";
const DISPLAY_PASSWORD: &str = "corridor-display-secret";

/// Runs `cmd` with `stdin` written to it (closed when `None`) and its
/// output captured.
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (apt-get install mosquitto-clients, or run scripts/test.sh)")
        });
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write to stdin");
    }
    child.wait_with_output().expect("the command ends")
}

/// `campusgw broker user add` with the password on stdin.
fn add_user(users: &Path, name: &str, args: &[&str], password: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_campusgw"));
    cmd.args(["broker", "user", "add", name, "--users-file"])
        .arg(users)
        .args(args)
        .arg("--password-stdin");
    let out = run(cmd, Some(&format!("{password}\n")));
    assert!(
        out.status.success(),
        "broker user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The users file of the tests: the devices of site yazhong, and a display.
fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("broker-users.toml");
    add_user(&users, "yazhong", &["--site", "yazhong"], SITE_PASSWORD);
    add_user(
        &users,
        "display",
        &["--subscribe", "campusgw/#"],
        DISPLAY_PASSWORD,
    );
    let text = std::fs::read_to_string(&users).expect("read the users file");
    assert!(
        !text.contains(SITE_PASSWORD) && text.contains("$argon2id$"),
        "only hashes in the file:\n{text}"
    );
    users
}

/// A mosquitto client (`mosquitto_pub` or `mosquitto_sub`) against the
/// broker on `port` (TLS when `args` names a CA), as `user` if given.
fn client(
    program: &str,
    port: u16,
    user: Option<(&str, &str)>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let host = if args.contains(&"--cafile") {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let mut cmd = Command::new(program);
    cmd.args(["-h", host, "-p", &port.to_string()]);
    if let Some((u, p)) = user {
        cmd.args(["-u", u, "-P", p]);
    }
    cmd.args(args);
    run(cmd, stdin)
}

fn publish(port: u16, user: Option<(&str, &str)>, topic: &str, payload: &str) -> Output {
    client(
        "mosquitto_pub",
        port,
        user,
        &["-q", "1", "-t", topic, "-m", payload],
        None,
    )
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}; stdout: {}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config(dir: &Path, users: &Path, influx: &Influx1, pki: Option<&Path>) -> String {
    let tls = pki.map_or_else(String::new, |p| {
        format!(
            "[mqtt.embedded_broker.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            p.join("server.pem").display(),
            p.join("server.key").display()
        )
    });
    format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
client_id = "campusgw"
[mqtt.embedded_broker]
listen = "0.0.0.0:0"
users_file = "{}"
max_publish_rate = 5000
{tls}
[influx]
url = "{}"
api = "v1"
database = "campus"
flush_interval = "200ms"
[web]
listen = "127.0.0.1:0"
{}
"#,
        dir.join("data").display(),
        users.display(),
        influx.url(),
        gateway::smoke_rule("Smoke at {device}"),
    )
}

/// A gateway with the built-in broker (TLS too when `tls`), its InfluxDB
/// and the test's accounts; `edit` changes the configuration text first.
struct Campus {
    influx: Influx1,
    dir: tempfile::TempDir,
    users: PathBuf,
    gw: campus_gateway::app::Gateway,
    /// The plain listener's port.
    port: u16,
    /// The TLS listener's port.
    tls_port: Option<u16>,
}

async fn campus(tls: bool, edit: impl FnOnce(String) -> String) -> Campus {
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let users = users_file(dir.path());
    let pki_dir = dir.path().join("pki");
    if tls {
        let pki = TestPki::generate();
        std::fs::create_dir_all(&pki_dir).expect("pki dir");
        for (name, pem) in [
            ("ca.pem", &pki.ca_cert_pem),
            ("server.pem", &pki.server_cert_pem),
            ("server.key", &pki.server_key_pem),
        ] {
            std::fs::write(pki_dir.join(name), pem).expect("write a PEM file");
        }
    }
    let text = edit(config(
        dir.path(),
        &users,
        &influx,
        tls.then_some(pki_dir.as_path()),
    ));
    let gw = gateway::start(gateway::config(&text)).await;
    gateway::wait_subscribed(&gw).await;
    let Some((Some(plain), tls_addr)) = gw.broker_addrs() else {
        panic!("the broker's listeners: {:?}", gw.broker_addrs())
    };
    assert!(plain.ip().is_unspecified(), "bound to every interface");
    Campus {
        influx,
        dir,
        users,
        gw,
        port: plain.port(),
        tls_port: tls_addr.map(|a| a.port()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_publish_with_their_password_under_their_site_and_nothing_else_gets_in() {
    let Campus {
        influx,
        dir,
        gw,
        port,
        tls_port,
        ..
    } = campus(true, |t| t).await;
    let pki_dir = dir.path().join("pki");

    // A display that may read the alarms, waiting for the first one.
    let display = tokio::task::spawn_blocking(move || {
        client(
            "mosquitto_sub",
            port,
            Some(("display", DISPLAY_PASSWORD)),
            &["-q", "1", "-t", "campusgw/#", "-C", "1", "-W", "60", "-v"],
            None,
        )
    });

    // The right password, under its own site: stored.
    let (topic, payload) = feed::message("gate", "yazhong", "east-1", now_ms(), 1);
    let out = publish(port, Some(("yazhong", SITE_PASSWORD)), &topic, &payload);
    assert!(out.status.success(), "{}", text(&out));
    eventually("the gate reading in InfluxDB", || async {
        influx.count("campus", "gate").await == 1
    })
    .await;

    // A message over max_payload_bytes: acknowledged (the device does not
    // send it for ever), skipped unbuffered, counted; the next one arrives.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    let out = publish(port, Some(("yazhong", SITE_PASSWORD)), &topic, &huge);
    assert!(
        out.status.success(),
        "{}",
        text(&out).chars().take(300).collect::<String>()
    );
    assert_eq!(
        metric(
            &gw,
            "campusgw_broker_refused_total{reason=\"payload_too_large\"}"
        )
        .await,
        1.0
    );
    let (_, next) = feed::message("gate", "yazhong", "east-1", now_ms() + 1, 4);
    let out = publish(port, Some(("yazhong", SITE_PASSWORD)), &topic, &next);
    assert!(out.status.success(), "{}", text(&out));
    eventually(
        "the gate reading after the huge one in InfluxDB",
        || async { influx.count("campus", "gate").await == 2 },
    )
    .await;

    // A wrong password, and no user at all on a listener open to the network.
    let out = publish(
        port,
        Some(("yazhong", "guessed-password")),
        &topic,
        &payload,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let out = publish(port, None, &topic, &payload);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        metric(
            &gw,
            "campusgw_broker_refused_total{reason=\"bad_credentials\"}"
        )
        .await
            >= 1.0
    );
    assert!(metric(&gw, "campusgw_broker_refused_total{reason=\"anonymous\"}").await >= 1.0);

    // Another site's topic and the gateway's alarm topic: acknowledged (MQTT
    // 3.1.1 has no other answer) but dropped and counted.
    let (evil_topic, evil) = feed::message("gate", "evil", "east-1", now_ms(), 2);
    let out = publish(port, Some(("yazhong", SITE_PASSWORD)), &evil_topic, &evil);
    assert!(out.status.success(), "{}", text(&out));
    let out = publish(
        port,
        Some(("yazhong", SITE_PASSWORD)),
        "campusgw/alarms/forged",
        "{\"severity\":\"critical\",\"message\":\"forged\"}",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        metric(
            &gw,
            "campusgw_broker_refused_total{reason=\"publish_denied\"}"
        )
        .await,
        2.0
    );

    // A device cannot take the gateway's client id (nor its session).
    let out = client(
        "mosquitto_pub",
        port,
        Some(("yazhong", SITE_PASSWORD)),
        &["-i", "campusgw", "-q", "1", "-t", &topic, "-m", &payload],
        None,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(metric(&gw, "campusgw_broker_refused_total{reason=\"client_id\"}").await >= 1.0);
    gateway::wait_subscribed(&gw).await;

    // A display asking for the whole feed gets nothing.
    let out = client(
        "mosquitto_sub",
        port,
        Some(("display", DISPLAY_PASSWORD)),
        &["-t", "campus/#", "-C", "1", "-W", "3"],
        None,
    );
    // mosquitto_sub says so and exits 0.
    assert!(
        out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{}",
        text(&out)
    );
    assert!(
        metric(
            &gw,
            "campusgw_broker_refused_total{reason=\"subscribe_denied\"}"
        )
        .await
            >= 1.0
    );

    // Over TLS, checked against the test's own CA: a smoke alarm, which the
    // gateway announces on campusgw/… to the display.
    let ca = pki_dir.join("ca.pem").display().to_string();
    let (smoke_topic, _) = feed::message("smoke", "yazhong", "a3-301", now_ms(), 3);
    let alarm = format!(
        "{{\"ts\":{},\"alarm\":true,\"obscuration_pct_m\":4.0}}",
        now_ms()
    );
    let out = client(
        "mosquitto_pub",
        tls_port.expect("the TLS listener"),
        Some(("yazhong", SITE_PASSWORD)),
        &["--cafile", &ca, "-q", "1", "-t", &smoke_topic, "-m", &alarm],
        None,
    );
    assert!(out.status.success(), "TLS: {}", text(&out));
    eventually("the smoke reading over TLS in InfluxDB", || async {
        influx.count("campus", "smoke").await == 1
    })
    .await;
    let seen = display.await.expect("the display's client");
    let shown = String::from_utf8_lossy(&seen.stdout).to_string();
    assert!(seen.status.success(), "{}", text(&seen));
    assert!(
        shown.starts_with("campusgw/") && shown.contains("a3-301") && !shown.contains("forged"),
        "the display saw the gateway's alarm: {shown}"
    );
    // Nothing of site evil reached the gateway.
    assert!(gw
        .registry
        .devices(now_ms())
        .iter()
        .all(|d| &*d.site != "evil"));
    gw.stop().await;
}

#[test]
fn check_refuses_anonymous_access_on_a_listener_open_to_the_network() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("campus.toml");
    let mut file = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt.embedded_broker]\nlisten = \"0.0.0.0:1883\"\nallow_anonymous = true\n",
        dir.path().display()
    );
    std::fs::write(&path, &file).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("campusgw check");
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("mqtt.embedded_broker.allow_anonymous"),
        "{err}"
    );

    // On loopback it is the demo's way, and fine.
    file = file.replace("0.0.0.0:1883", "127.0.0.1:1883");
    std::fs::write(&path, &file).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("campusgw check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_messages_survive_a_kill_of_the_gateway() {
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let mut gw = GatewayProcess::new();
    let dir = gw.data_dir().parent().expect("the process dir").to_owned();
    let users = users_file(&dir);
    add_user(
        &users,
        "archive",
        &["--subscribe", "campus/#"],
        "archive-secret-1",
    );
    let port = common::free_port();
    let text_cfg = config(&dir, &users, &influx, None)
        .replace("0.0.0.0:0", &format!("0.0.0.0:{port}"))
        .replace("[web]\nlisten = \"127.0.0.1:0\"\n", "");
    gw.start(&text_cfg);
    let archive = move |count: &str, wait: &str| {
        client(
            "mosquitto_sub",
            port,
            Some(("archive", "archive-secret-1")),
            &[
                "-i",
                "archive-1",
                "-c",
                "-q",
                "1",
                "-t",
                "campus/#",
                "-C",
                count,
                "-W",
                wait,
            ],
            None,
        )
    };
    // An archive with a persistent session, away while the devices publish.
    let out = archive("1", "1");
    assert!(out.stdout.is_empty(), "nothing yet: {}", text(&out));

    let n = 500;
    let base = now_ms() - 60_000;
    let lines: String = (0..n)
        .map(|i| feed::payload("smoke", base + i, i as u64).to_string() + "\n")
        .collect();
    let out = client(
        "mosquitto_pub",
        port,
        Some(("yazhong", SITE_PASSWORD)),
        &["-q", "1", "-t", "campus/yazhong/smoke/a3-301", "-l"],
        Some(&lines),
    );
    assert!(out.status.success(), "{}", text(&out));
    // Every message was acknowledged to the publisher: now the power goes.
    gw.kill();
    gw.start_again();

    eventually(
        "every acknowledged message in InfluxDB after the restart",
        || async { influx.count("campus", "smoke").await == n as u64 },
    )
    .await;
    let out = tokio::task::spawn_blocking(move || archive(&n.to_string(), "30"))
        .await
        .expect("the archive client");
    assert!(
        out.status.success(),
        "the archive got them all: {}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        n as usize
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_publisher_is_slowed_not_dropped_and_connections_are_capped_per_address() {
    // `_dir` keeps the temporary directory until the test ends.
    let Campus {
        influx,
        dir: _dir,
        gw,
        port,
        ..
    } = campus(false, |t| {
        t.replace(
            "max_publish_rate = 5000",
            "max_publish_rate = 50\nmax_connections_per_address = 3",
        )
    })
    .await;

    // 300 messages at once from one connection allowed 50 a second: all
    // acknowledged, all stored, the connection paused on the way.
    let n = 300;
    let base = now_ms() - 60_000;
    let lines: String = (0..n)
        .map(|i| feed::payload("smoke", base + i, i as u64).to_string() + "\n")
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        client(
            "mosquitto_pub",
            port,
            Some(("yazhong", SITE_PASSWORD)),
            &["-q", "1", "-t", "campus/yazhong/smoke/a3-301", "-l"],
            Some(&lines),
        )
    })
    .await
    .expect("the publisher");
    assert!(out.status.success(), "{}", text(&out));
    eventually("all 300 in InfluxDB", || async {
        influx.count("campus", "smoke").await == n as u64
    })
    .await;
    assert!(metric(&gw, "campusgw_broker_throttled_total").await >= 1.0);

    // Three connections from 127.0.0.1 held open; the fourth is refused.
    let holders: Vec<_> = (0..3)
        .map(|_| {
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-u", "display", "-P", DISPLAY_PASSWORD, "-t", "campusgw/#"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_sub")
        })
        .collect();
    eventually("three displays connected", || async {
        metric(&gw, "campusgw_broker_connections").await == 3.0
    })
    .await;
    let (topic, payload) = feed::message("gate", "yazhong", "east-1", now_ms(), 1);
    let out = publish(port, Some(("yazhong", SITE_PASSWORD)), &topic, &payload);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        metric(
            &gw,
            "campusgw_broker_refused_total{reason=\"connections_per_address\"}"
        )
        .await
            >= 1.0
    );
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_the_users_file_takes_a_changed_password_at_once() {
    use common::mqtt::{MqttClientConfig, Publisher};
    let Campus {
        influx,
        dir: _dir,
        users,
        gw,
        port,
        ..
    } = campus(false, |t| t).await;
    let url = format!("mqtt://127.0.0.1:{port}");
    // A device connected with the old password.
    let device =
        Publisher::connect_with(MqttClientConfig::new(&url).credentials("yazhong", SITE_PASSWORD))
            .await;

    // Its password changes (a device stolen, say), and the file is reloaded.
    let new_password = "yazhong-rotated-secret";
    add_user(&users, "yazhong", &["--site", "yazhong"], new_password);
    let accounts = gw.reload_broker_users().await;
    assert!(
        matches!(accounts, Some(Ok(2))),
        "two accounts: {accounts:?}"
    );
    eventually(
        "the old connection is closed and not let back in",
        || async {
            !device.is_connected()
                && device
                    .last_error()
                    .is_some_and(|e| e.contains("BadUserNamePassword"))
        },
    )
    .await;
    let (topic, payload) = feed::message("gate", "yazhong", "east-1", now_ms(), 1);
    let out = publish(port, Some(("yazhong", SITE_PASSWORD)), &topic, &payload);
    assert!(!out.status.success(), "old password: {}", text(&out));
    let out = publish(port, Some(("yazhong", new_password)), &topic, &payload);
    assert!(out.status.success(), "new password: {}", text(&out));
    eventually("the reading with the new password", || async {
        influx.count("campus", "gate").await == 1
    })
    .await;

    // A broken file changes nothing.
    std::fs::write(&users, "[[users]]\nname = \"x\"\n").expect("break the file");
    assert!(matches!(gw.reload_broker_users().await, Some(Err(_))));
    let out = publish(port, Some(("yazhong", new_password)), &topic, &payload);
    assert!(out.status.success(), "still: {}", text(&out));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installers_simulator_feeds_the_built_in_broker_with_a_site_account() {
    let Campus {
        influx,
        dir,
        gw,
        port,
        ..
    } = campus(false, |t| t).await;
    let password = dir.path().join("yazhong.password");
    std::fs::write(&password, format!("{SITE_PASSWORD}\n")).expect("write the password file");
    let broker = format!("mqtt://127.0.0.1:{port}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args([
            "simulate",
            "--broker",
            &broker,
            "--devices",
            "5",
            "--rate",
            "20",
        ])
        .args(["--duration", "2s", "--kinds", "gate", "--site", "yazhong"])
        .args(["--username", "yazhong", "--password-file"])
        .arg(&password)
        .output()
        .await
        .expect("campusgw simulate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the simulated gates in InfluxDB", || async {
        influx.count("campus", "gate").await >= 5
    })
    .await;
    // /healthz names the broker and where it listens.
    let (_, health) = gateway::get(&gw, "/healthz").await;
    assert!(
        health.contains("\"broker\"") && health.contains(&format!(":{port}")),
        "{health}"
    );
    gw.stop().await;
}
