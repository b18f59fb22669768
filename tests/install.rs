//! The gateway as a school installs it: a core source that cannot start is
//! shown as down, stores owned by the service's user, one process per data
//! directory, demos side by side.

mod common;

use campus_gateway::config::Secret;
use common::{gateway, Mosquitto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_source_that_cannot_start_makes_healthz_503_with_mqtt_down() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display(),
        broker.url()
    ));
    // What `check` refuses, reaching the gateway anyway (a secret file
    // removed after the check): the source cannot build its credentials.
    cfg.mqtt.username = Some("gw".into());
    cfg.mqtt.password = Some(Secret::Env {
        env: "CAMPUSGW_TEST_SECRET_NOBODY_SET".into(),
    });
    let gw = gateway::start(cfg).await;
    common::eventually("the MQTT source is shown as down", || async {
        gw.health.status("mqtt") == Some(campus_gateway::telemetry::Status::Down)
    })
    .await;
    let (status, body) = gateway::get(&gw, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "down", "{body}");
    assert_eq!(v["components"]["mqtt"]["status"], "down", "{body}");
    let detail = v["components"]["mqtt"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains("CAMPUSGW_TEST_SECRET_NOBODY_SET"),
        "the reason is shown: {body}"
    );
    gw.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");

/// A child process killed (and reaped) on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn owner(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// A configuration for `campusgw run` on `data` and `port`.
fn run_config(
    dir: &std::path::Path,
    data: &std::path::Path,
    broker: &str,
    port: u16,
) -> std::path::PathBuf {
    let path = dir.join(format!("campus-{port}.toml"));
    std::fs::write(
        &path,
        format!(
            "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{broker}\"\nclient_id = \"gw-{port}\"\n[web]\nlisten = \"127.0.0.1:{port}\"\n",
            data.display()
        ),
    )
    .expect("write config");
    path
}

fn user_add(data: &std::path::Path, name: &str, password: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(BIN)
        .args([
            "user",
            "add",
            name,
            "--role",
            "operator",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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

async fn wait_for_web(port: u16, child: &mut std::process::Child) {
    common::eventually("the gateway answers", || async {
        common::http_sync(port, "GET", "/healthz", None, None).is_ok()
    })
    .await;
    assert!(
        child.try_wait().ok().flatten().is_none(),
        "the gateway runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_as_root_leaves_the_store_to_the_service_user_who_then_signs_people_in() {
    if !is_root() {
        // The situation needs root (the installer's sudo); say so rather than pass.
        panic!("this test needs to run as root, as the installer's `sudo campusgw user add` does");
    }
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // nobody must reach the configuration and the data directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let nobody = 65534;
    std::os::unix::fs::chown(&data, Some(nobody), Some(nobody)).expect("chown data dir");

    // The installer, as root, before the first start.
    let out = user_add(&data, "zhang", "a long enough password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for entry in std::fs::read_dir(&data).expect("read data dir") {
        let path = entry.expect("entry").path();
        assert_eq!(
            owner(&path),
            nobody,
            "{} belongs to the directory's owner",
            path.display()
        );
    }
    assert_eq!(owner(&data.join("gateway.db")), nobody);

    // The service, as its own user, signs zhang in.
    let port = common::free_port();
    let config = run_config(dir.path(), &data, &broker.url(), port);
    let mut gw = Child(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                BIN,
                "run",
                "--config",
            ])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("campusgw run as nobody"),
    );
    wait_for_web(port, &mut gw.0).await;
    let resp = common::http_client()
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&serde_json::json!({ "username": "zhang", "password": "a long enough password" }))
        .send()
        .await
        .expect("sign-in");
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap_or_default());

    // A second user added by root while the service runs: also usable, files still nobody's.
    let out = user_add(&data, "li", "another long password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = common::http_client()
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&serde_json::json!({ "username": "li", "password": "another long password" }))
        .send()
        .await
        .expect("sign-in");
    assert_eq!(resp.status(), 200);
    for entry in std::fs::read_dir(&data).expect("read data dir") {
        let path = entry.expect("entry").path();
        assert_eq!(owner(&path), nobody, "{}", path.display());
    }

    // Root may not start the gateway itself in the service's directory.
    drop(gw);
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("campusgw run as root");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("sudo -u campusgw campusgw run"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_data_dir_refuses_to_start() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (first_port, second_port) = (common::free_port(), common::free_port());
    let first_config = run_config(dir.path(), &data, &broker.url(), first_port);
    let mut first = Child(
        std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(&first_config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("first campusgw run"),
    );
    wait_for_web(first_port, &mut first.0).await;

    let second_config = run_config(dir.path(), &data, &broker.url(), second_port);
    let mut second = Child(
        std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(&second_config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("second campusgw run"),
    );
    // It must stop by itself; one that keeps running shares the spool.
    let stopped = common::wait_until(common::DEADLINE, || {
        let exited = second.0.try_wait().ok().flatten().is_some();
        async move { exited }
    })
    .await;
    assert!(stopped, "the second gateway on one data_dir keeps running");
    let mut stderr = String::new();
    if let Some(mut e) = second.0.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        stderr.contains("in use by another campusgw") && stderr.contains(&first.0.id().to_string()),
        "{stderr}"
    );
    assert!(!common::tcp_accepts(second_port), "the second never served");
    assert!(
        first.0.try_wait().ok().flatten().is_none()
            && common::http_sync(first_port, "GET", "/healthz", None, None).is_ok(),
        "the first one runs on"
    );
}

/// `campusgw demo` on `web`, with any free MQTT port; returns it once it
/// printed its sign-in line, with that password and its data directory.
fn demo(web: u16) -> (Child, String, std::path::PathBuf) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(BIN)
        .args(["demo", "--web-port", &web.to_string(), "--mqtt-port", "0"])
        .env_remove("CAMPUSGW__INFLUX__URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("campusgw demo");
    let stdout = child.stdout.take().expect("stdout");
    let child = Child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut password, mut data) = (None, None);
    while password.is_none() || data.is_none() {
        let line = rx
            .recv_timeout(common::DEADLINE)
            .expect("the demo prints its sign-in and its data directory");
        if let Some((_, pw)) = line.split_once("sign in as operator / ") {
            password = Some(pw.trim().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("Data:") {
            data = rest.split_whitespace().next().map(std::path::PathBuf::from);
        }
    }
    (
        child,
        password.unwrap_or_default(),
        data.unwrap_or_default(),
    )
}

async fn sign_in(port: u16, password: &str) -> u16 {
    common::http_client()
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&serde_json::json!({ "username": "operator", "password": password }))
        .send()
        .await
        .expect("sign-in")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demos_side_by_side_each_sign_in_with_their_own_password() {
    use std::os::unix::fs::PermissionsExt as _;
    let (web_a, web_b) = (common::free_port(), common::free_port());
    let (a, password_a, data_a) = demo(web_a);
    let (b, password_b, data_b) = demo(web_b);
    assert_ne!(data_a, data_b, "each demo has its own directory");
    for d in [&data_a, &data_b] {
        let mode = std::fs::metadata(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{} is private", d.display());
    }
    // The second demo did not reset the first one's operator.
    assert_eq!(sign_in(web_a, &password_a).await, 200);
    assert_eq!(sign_in(web_b, &password_b).await, 200);
    assert_eq!(sign_in(web_a, &password_b).await, 401);
    // A fresh directory goes with its demo.
    drop(a);
    drop(b);
    assert!(!data_a.exists() && !data_b.exists(), "removed at exit");
}
