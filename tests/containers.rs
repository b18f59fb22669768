//! The container files (deploy/Dockerfile, deploy/compose.yaml, the compose
//! file's mosquitto configuration). No container engine runs here, so the
//! image is not built: the compose file is parsed by Debian's
//! `docker-compose config`, the Dockerfile gets a structural lint, and the
//! mosquitto configuration the compose file mounts is run by a real
//! mosquitto with its users and ACL.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{MqttClientConfig, Publisher, QoS, Subscriber};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn deploy(p: &str) -> std::path::PathBuf {
    Path::new(ROOT).join("deploy").join(p)
}

const SECRETS: [(&str, &str); 4] = [
    ("MQTT_PASSWORD", "test-mqtt"),
    ("INFLUX_ADMIN_PASSWORD", "test-influx-admin"),
    ("INFLUX_TOKEN", "test-influx-token"),
    ("GRAFANA_ADMIN_PASSWORD", "test-grafana"),
];

/// `docker-compose config` on deploy/compose.yaml with `env` (and no .env file).
fn compose_config(env: &[(&str, &str)]) -> std::process::Output {
    let empty = tempfile::NamedTempFile::new().expect("temp file");
    let mut c = Command::new("docker-compose");
    c.arg("--env-file")
        .arg(empty.path())
        .arg("-f")
        .arg(deploy("compose.yaml"))
        .arg("config");
    for (k, _) in SECRETS {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    c.output()
        .expect("docker-compose (apt install docker-compose; scripts/test.sh does)")
}

#[test]
fn the_compose_file_parses_with_every_service_and_refuses_to_run_without_its_secrets() {
    let out = compose_config(&SECRETS);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = {
        // The normalised YAML, read through its services' names and the gateway's settings.
        let services: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "services:")
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.is_empty())
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .map(|l| l.trim().trim_end_matches(':'))
            .collect();
        serde_json::json!(services)
    };
    for s in ["mosquitto", "influxdb", "grafana", "campusgw", "telegraf"] {
        assert!(
            v.as_array().is_some_and(|a| a.iter().any(|x| x == s)),
            "{s} in {v}"
        );
    }
    for needle in [
        "CAMPUSGW__MQTT__URL: mqtt://mosquitto:1883",
        "CAMPUSGW__INFLUX__URL: http://influxdb:8086",
        "campusgw-data:/var/lib/campusgw",
        "dockerfile: deploy/Dockerfile",
        "/etc/grafana/provisioning",
        "mosquitto.conf:/mosquitto/config/mosquitto.conf",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    // Every file the compose file mounts from the repository exists.
    for f in [
        "mosquitto/mosquitto.conf",
        "mosquitto-gateway.conf",
        "mosquitto-acl.conf",
        "telegraf.conf",
        "grafana/provisioning/datasources/influxdb.yaml",
        "grafana/provisioning/dashboards/campusgw.yaml",
        "grafana/dashboards/campusgw-flux.json",
        "grafana/dashboards/campusgw-influxql.json",
    ] {
        assert!(deploy(f).is_file(), "deploy/{f}");
    }
    // No default passwords: each secret left unset stops it, naming the variable.
    for (missing, _) in SECRETS {
        let rest: Vec<(&str, &str)> = SECRETS
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let out = compose_config(&rest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "runs without {missing}");
        assert!(stderr.contains(missing), "{missing}: {stderr}");
    }
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_with_a_volume_and_a_healthcheck_on_healthz() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).expect("deploy/Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    let runtime = &lines[last_from..];
    assert!(
        runtime[0].contains("debian:") && runtime[0].contains("-slim"),
        "Debian slim runtime: {}",
        runtime[0]
    );
    let after = |word: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|l| l.starts_with(word))
            .copied()
            .collect()
    };
    let user = after("USER ");
    assert_eq!(user.len(), 1, "{user:?}");
    assert!(
        !user[0].contains("root") && !user[0].contains(" 0"),
        "{user:?}"
    );
    let user_at = runtime
        .iter()
        .position(|l| l.starts_with("USER "))
        .expect("USER");
    let entry_at = runtime
        .iter()
        .position(|l| l.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(user_at < entry_at, "the entrypoint runs as the user");
    assert!(
        after("VOLUME")
            .iter()
            .any(|l| l.contains("/var/lib/campusgw")),
        "{runtime:?}"
    );
    let health = after("HEALTHCHECK");
    assert!(
        health.len() == 1 && health[0].contains("campusgw") && health[0].contains("/healthz"),
        "{health:?}"
    );
    assert!(
        !joined.contains("curl"),
        "the runtime has no curl: the binary checks"
    );
    // Every COPY from the build context names something in the repository.
    for l in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = l.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            assert!(Path::new(ROOT).join(src).exists(), "{l}: {src} is missing");
        }
    }
    // The build stage's binary is what the runtime copies.
    assert!(runtime
        .iter()
        .any(|l| l.starts_with("COPY --from=build") && l.contains("campusgw")));
    // The image's page listens beyond loopback (inside its own network).
    assert!(joined.contains("CAMPUSGW__WEB__LISTEN=0.0.0.0:8080"));
}

/// deploy/mosquitto/mosquitto.conf with the container's paths moved into `dir`.
fn local_mosquitto_conf(dir: &Path, port: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::copy(deploy("mosquitto-acl.conf"), dir.join("campusgw.acl")).expect("copy");
    let text = std::fs::read_to_string(deploy("mosquitto/mosquitto.conf"))
        .expect("mosquitto.conf")
        .replace("listener 1883", &format!("listener {port} 127.0.0.1"))
        .replace(
            "/mosquitto/data/",
            &format!("{}/", dir.join("data").display()),
        )
        .replace("/mosquitto/config/", &format!("{}/", dir.display()))
        // As root, mosquitto would drop to its own user, who cannot write the temp dir.
        .replace(
            "log_dest stdout",
            &format!("user root\nlog_dest file {}", dir.join("log").display()),
        );
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, text).expect("write");
    for (i, (user, pw)) in [
        ("campusgw", "gw-pw"),
        ("yz", "site-pw"),
        ("display", "display-pw"),
    ]
    .iter()
    .enumerate()
    {
        let mut c = Command::new("mosquitto_passwd");
        if i == 0 {
            c.arg("-c");
        }
        let st = c
            .args(["-b", &dir.join("passwd").display().to_string(), user, pw])
            .status()
            .expect("mosquitto_passwd");
        assert!(st.success());
    }
    path
}

#[test]
fn the_compose_mosquitto_has_every_setting_of_mosquitto_gateway_conf() {
    let settings = |p: &str| -> Vec<String> {
        std::fs::read_to_string(deploy(p))
            .expect(p)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            // The data path is the image's own.
            .filter(|l| !l.starts_with("persistence_location"))
            .map(str::to_owned)
            .collect()
    };
    let compose = settings("mosquitto/mosquitto.conf");
    for s in settings("mosquitto-gateway.conf") {
        assert!(
            compose.contains(&s),
            "deploy/mosquitto/mosquitto.conf lacks `{s}`"
        );
    }
    for s in [
        "allow_anonymous false",
        "password_file /mosquitto/config/passwd",
        "acl_file /mosquitto/config/campusgw.acl",
    ] {
        assert!(compose.iter().any(|l| l == s), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_mosquitto_admits_the_gateway_and_its_sites_by_password_and_acl_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let conf = local_mosquitto_conf(dir.path(), port);
    let _broker = Killed(
        std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .spawn()
            .expect("mosquitto"),
    );
    let log = dir.path().join("log");
    common::eventually("mosquitto listens", || async {
        common::tcp_accepts(port)
            && std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" running"))
    })
    .await;
    let url = format!("mqtt://127.0.0.1:{port}");
    let gw = Subscriber::connect_with(
        MqttClientConfig::new(&url).credentials("campusgw", "gw-pw"),
        &["campus/#"],
        QoS::AtLeastOnce,
    )
    .await;
    let mut gw = gw;
    // A corridor display reads the alarms: it must see none from a device.
    let mut display = Subscriber::connect_with(
        MqttClientConfig::new(&url).credentials("display", "display-pw"),
        &["campusgw/#"],
        QoS::AtLeastOnce,
    )
    .await;
    // Anonymous: refused.
    let anonymous = Publisher::try_connect(MqttClientConfig::new(&url)).await;
    assert!(anonymous.is_err(), "an anonymous client is let in");
    // A wrong password: refused.
    let wrong =
        Publisher::try_connect(MqttClientConfig::new(&url).credentials("yz", "not-it")).await;
    assert!(wrong.is_err(), "a wrong password is let in");
    // The site publishes under its own site; not under another, nor the alarms.
    let site =
        Publisher::connect_with(MqttClientConfig::new(&url).credentials("yz", "site-pw")).await;
    site.publish(
        "campus/other/gate/east-1",
        "{\"event\":\"forced_open\"}",
        QoS::AtLeastOnce,
    )
    .await;
    site.publish("campusgw/alarms/fake", "{}", QoS::AtLeastOnce)
        .await;
    site.publish(
        "campus/yz/gate/east-1",
        "{\"event\":\"closed\"}",
        QoS::AtLeastOnce,
    )
    .await;
    site.flush().await;
    let first = gw.recv().await;
    assert_eq!(
        first.topic, "campus/yz/gate/east-1",
        "the other site's message came first"
    );
    assert!(gw.recv_timeout(Duration::from_millis(500)).await.is_none());
    assert!(
        display.try_recv().is_none(),
        "a device published on campusgw/#"
    );
}

/// A child killed and reaped on drop (a failed assertion leaves no broker behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
