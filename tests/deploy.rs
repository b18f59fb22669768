//! What an installer runs at a school besides the daemon: `campusgw simulate`
//! against a real broker, `campusgw backup` of a running gateway's stores.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::feed::{fields, FieldType};
use common::{Mosquitto, MqttClientConfig, QoS, Subscriber};

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");

/// Runs `campusgw` with `args` (blocking, off the runtime's threads).
async fn campusgw(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"))
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// "published N messages, M acknowledged by the broker" → (N, M).
fn report(stdout: &str) -> (u64, u64) {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let n = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count in {stdout:?}"))
    };
    assert_eq!(words.first(), Some(&"published"), "{stdout}");
    (n(1), n(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_publishes_the_reference_feed_of_n_devices_to_a_real_broker() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(&broker.url(), "campus/#").await;
    let out = campusgw(args(&[
        "simulate",
        "--broker",
        &broker.url(),
        "--devices",
        "10",
        "--rate",
        "200",
        "--duration",
        "3s",
        "--site",
        "yz",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (published, acked) = report(&stdout);
    assert_eq!(published, acked, "{stdout}");
    assert!(published >= 10, "at least one message per device: {stdout}");
    // Paced by the clock: never more than the rate allows (an upper bound only).
    assert!(published <= 200 * 4, "{stdout}");

    let messages = sub.collect(published as usize).await;
    let mut devices = BTreeSet::new();
    let decoder = campus_gateway::sources::decode::Decoder::new(
        &toml::from_str("").expect("the default topic layout"),
    )
    .expect("decoder");
    let limits = campus_gateway::sources::decode::Limits {
        max_payload_bytes: 65_536,
        max_past_ms: 3_600_000,
        max_future_ms: 3_600_000,
        max_fields: 64,
        max_string_bytes: 256,
    };
    for m in &messages {
        let levels: Vec<&str> = m.topic.split('/').collect();
        assert_eq!(levels.len(), 4, "{}", m.topic);
        assert_eq!(&levels[..2], ["campus", "yz"], "{}", m.topic);
        let kind = levels[2];
        assert!(
            levels[3].starts_with(&format!("sim-{kind}-")),
            "{}",
            m.topic
        );
        devices.insert(levels[3].to_owned());
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", m.topic, m.payload_str()));
        assert!(v["ts"].is_i64(), "{}", m.payload_str());
        for (name, ty) in fields(kind) {
            // A card id comes with an opening only (FEED.md).
            if *name == "card_id" && kind == "labcab" {
                continue;
            }
            let x = &v[*name];
            let ok = match ty {
                FieldType::F64 => x.is_number(),
                FieldType::I64 => x.is_i64(),
                FieldType::Bool => x.is_boolean(),
                FieldType::Str => x.is_string(),
            };
            assert!(ok, "{kind}.{name} in {}", m.payload_str());
        }
        // And the gateway's own decoder takes it whole.
        let now = chrono::Utc::now().timestamp_millis();
        let reading = decoder
            .decode(&m.topic, &m.payload, now, &limits)
            .expect("the default layout matches")
            .unwrap_or_else(|e| panic!("{}: {e:?}", m.payload_str()));
        assert_eq!(reading.device.as_ref(), levels[3]);
    }
    assert_eq!(devices.len(), 10, "{devices:?}");
    let kinds: BTreeSet<_> = devices.iter().filter_map(|d| d.split('-').nth(1)).collect();
    assert_eq!(kinds.len(), 5, "all five kinds by default: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_signs_in_with_a_password_file_and_says_when_the_broker_refuses_it() {
    let broker = Mosquitto::builder()
        .user("reader", "reader-pw")
        .user("installer", "right-pw")
        .start();
    let dir = tempfile::tempdir().expect("tempdir");
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, "right-pw\n").expect("write");
    std::fs::write(&wrong, "wrong-pw\n").expect("write");
    let mut sub = Subscriber::connect_with(
        MqttClientConfig::new(&broker.url()).credentials("reader", "reader-pw"),
        &["campus/#"],
        QoS::AtLeastOnce,
    )
    .await;
    let run = |file: &std::path::Path| {
        args(&[
            "simulate",
            "--broker",
            &broker.url(),
            "--devices",
            "2",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--kinds",
            "gate,bus",
            "--username",
            "installer",
            "--password-file",
            &file.display().to_string(),
        ])
    };
    let refused = campusgw(run(&wrong)).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        !stderr.contains("wrong-pw"),
        "the password is never shown: {stderr}"
    );

    let ok = campusgw(run(&right)).await;
    let stdout = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (published, acked) = report(&stdout);
    assert_eq!(published, acked);
    let messages = sub.collect(published as usize).await;
    assert!(
        messages
            .iter()
            .all(|m| m.topic.starts_with("campus/sim/gate/")
                || m.topic.starts_with("campus/sim/bus/"))
    );
}

/// `SELECT` rows of a store as strings, opened read-only beside the running gateway.
fn rows(db: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    c.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("query")
    .collect::<Result<Vec<_>, _>>()
    .expect("rows")
}

/// Kills (SIGTERM) and reaps a child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn backup_while_2000_msg_per_s_flow_restores_every_alarm_and_user_into_a_fresh_gateway() {
    use common::gwproc::GatewayProcess;
    let broker = Mosquitto::builder().for_gateway().start();
    let mut live = GatewayProcess::new();
    let data = live.data_dir();
    // The users, made as an installer does, before the gateway starts.
    for i in 0..5 {
        let mut child = Command::new(BIN)
            .args(["user", "add", &format!("user-{i}"), "--role"])
            .arg(if i == 0 { "admin" } else { "operator" })
            .args([
                "--data-dir",
                &data.display().to_string(),
                "--password-stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("user add");
        use std::io::Write as _;
        writeln!(child.stdin.take().expect("stdin"), "password-of-user-{i}").expect("write");
        assert!(child.wait().expect("wait").success());
    }
    // A duct rule the simulated hoods cross every few seconds: alarms are
    // raised and cleared (ledger rows written) all through the backup.
    let config = |data: &std::path::Path, id: &str| {
        format!(
            r#"
[gateway]
data_dir = "{}"
shutdown_timeout = "2s"
[mqtt]
url = "{}"
client_id = "{id}"
[[rules]]
id = "duct-hot"
severity = "high"
kinds = ["kitchen"]
message = "duct {{value}}"
condition = {{ type = "above", field = "duct_temp_c", value = 60.0, clear = 58.0 }}
"#,
            data.display(),
            broker.url()
        )
    };
    live.start(&config(&data, "gw-backup-live"));
    let _load = Child(
        Command::new(BIN)
            .args(["simulate", "--broker", &broker.url(), "--site", "yz"])
            .args(["--devices", "50", "--rate", "2000", "--duration", "10m"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("simulate"),
    );
    let alarms_db = data.join("alarms.db");
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while rows(&alarms_db, "SELECT id FROM alarms").len() < 5
        || rows(&alarms_db, "SELECT id FROM events").len() < 20
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no alarms under load:\n{}",
            live.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let raised_before: BTreeSet<Vec<String>> = rows(&alarms_db, "SELECT id FROM alarms")
        .into_iter()
        .collect();
    let received_before = live.metric("campusgw_messages_received_total{source=\"mqtt\"}");

    let backup = tempfile::tempdir().expect("tempdir");
    let to = backup.path().join("campusgw-backup");
    let out = Command::new(BIN)
        .args(["backup", "--data-dir", &data.display().to_string()])
        .args(["--to", &to.display().to_string()])
        .output()
        .expect("backup");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("alarms.db") && stdout.contains("gateway.db"),
        "{stdout}"
    );
    // The feed went on through it (the copy was taken from a store in use).
    let received_after = live.metric("campusgw_messages_received_total{source=\"mqtt\"}");
    assert!(
        received_after > received_before,
        "{received_before} → {received_after}"
    );
    drop(_load);
    live.stop();

    // One snapshot: the copy's ledger is a prefix of the live one, row for
    // row, and every alarm it mentions is in it.
    let events =
        "SELECT id, alarm_id, at, action, from_state, to_state, value FROM events ORDER BY id";
    let copied_events = rows(&to.join("alarms.db"), events);
    let live_events = rows(&alarms_db, events);
    assert!(copied_events.len() >= 20);
    assert_eq!(copied_events[..], live_events[..copied_events.len()]);
    let copied_alarms: BTreeSet<Vec<String>> = rows(&to.join("alarms.db"), "SELECT id FROM alarms")
        .into_iter()
        .collect();
    assert!(raised_before.is_subset(&copied_alarms));
    let mentioned: BTreeSet<Vec<String>> = rows(
        &to.join("alarms.db"),
        "SELECT DISTINCT alarm_id FROM events",
    )
    .into_iter()
    .collect();
    assert!(mentioned.is_subset(&copied_alarms));

    // Restore into a fresh gateway's data directory, as the README says.
    let mut restored = GatewayProcess::new();
    let fresh = restored.data_dir();
    std::fs::create_dir_all(&fresh).expect("mkdir");
    for name in ["alarms.db", "gateway.db"] {
        std::fs::copy(to.join(name), fresh.join(name)).expect("copy back");
    }
    let token = campus_gateway::web::AuthStore::open(&fresh)
        .expect("the restored user store opens")
        .create_token(
            "restore-check",
            campus_gateway::web::Role::Admin,
            "user-0",
            None,
        )
        .expect("token");
    restored.start(&config(&fresh, "gw-backup-restored"));
    let (status, body) = common::http_sync_bearer(
        restored.web_port(),
        "/api/alarms?state=all&limit=5000",
        &token,
    )
    .expect("GET /api/alarms");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let shown: BTreeSet<Vec<String>> = v["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|a| vec![format!("Integer({})", a["id"])])
        .collect();
    assert_eq!(
        shown, copied_alarms,
        "every alarm of the copy is on the restored page"
    );
    let (status, body) = common::http_sync_bearer(restored.web_port(), "/api/users", &token)
        .expect("GET /api/users");
    assert_eq!(status, 200, "{body}");
    for i in 0..5 {
        assert!(body.contains(&format!("\"user-{i}\"")), "user-{i}: {body}");
    }
    let auth = campus_gateway::web::AuthStore::open(&fresh).expect("open");
    assert!(
        auth.login("user-3", "password-of-user-3")
            .expect("login")
            .is_some(),
        "a restored user signs in with their password"
    );
    restored.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_on_a_ready_gateway_and_1_when_it_cannot_be_reached() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = common::gateway::start(common::gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display(),
        broker.url()
    )))
    .await;
    common::gateway::wait_subscribed(&gw).await;
    let url = format!("http://{}/healthz", gw.web_addr);
    let ok = campusgw(args(&["health", "--url", &url])).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(stdout.starts_with("200 "), "{stdout}");
    gw.stop().await;
    let down = campusgw(args(&["health", "--url", &url])).await;
    assert_eq!(down.status.code(), Some(1));
}
