//! The page in a real browser (Debian's headless Chromium driven through
//! chromedriver): sign in, a smoke alarm published through a real mosquitto
//! appears without a reload, is acknowledged, and its state changes; the
//! Chinese page shows Chinese labels. A screenshot of the alarm list is saved
//! as `target/test-artifacts/alarm-list.png`.

mod common;

use std::time::{Duration, Instant};

use campus_gateway::web::Role;
use common::process::{require_executable, ServerProcess};
use common::{feed, free_port, Mosquitto, Publisher, QoS};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const HINT: &str =
    "run scripts/test.sh (it installs them) or apt-get install -y chromium chromium-driver";

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    _process: ServerProcess,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        require_executable("chromium", HINT);
        let exe = require_executable("chromedriver", HINT);
        let port = free_port();
        let mut process = ServerProcess::new("chromedriver", exe);
        // No --allowed-ips: with it chromedriver listens on every interface.
        process.spawn(&[format!("--port={port}")]);
        let deadline = Instant::now() + common::START_DEADLINE;
        while !common::tcp_accepts(port) {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            _process: process,
            port,
        }
    }

    async fn browser(&self, lang: &str) -> Client {
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1600,1000",
                    format!("--lang={lang}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": { "intl.accept_languages": lang },
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session from chromedriver")
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_for(c: &Client, what: &str, css: &str) -> fantoccini::elements::Element {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.is_displayed().await.unwrap_or(false) {
                return e;
            }
        }
        if Instant::now() > deadline {
            let shown = text_of(c, "body").await;
            panic!("timed out waiting for {what} ({css}); the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(base).await.expect("open the page");
    wait_for(c, "the sign-in form", "[data-testid=login-form]").await;
    c.find(Locator::Css("[data-testid=login-username]"))
        .await
        .expect("user field")
        .send_keys(user)
        .await
        .expect("type");
    c.find(Locator::Css("[data-testid=login-password]"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type");
    c.find(Locator::Css("[data-testid=login-submit]"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    wait_for(c, "the signed-in page", "[data-testid=device-panel]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_appears_live_and_is_acknowledged_in_the_browser() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = common::gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
[web]
listen = "127.0.0.1:0"
[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"
building = "A3"
floor = "3"
room = "301"
name = "教学楼A3 三楼301教室"
{}"#,
        dir.path().display(),
        broker.url(),
        common::gateway::smoke_rule("烟感报警 Smoke alarm at {location}")
    ));
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let base = format!("http://{}/", gw.web_addr);
    let driver = Driver::start();

    // English: sign in, then a fire.
    let c = driver.browser("en-US").await;
    sign_in(&c, &base, "duty", "duty-room-password").await;
    assert!(text_of(&c, "[data-testid=user-name]")
        .await
        .contains("duty"));
    let publisher = Publisher::connect(&broker.url()).await;
    let mut p = feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = json!(true);
    let published = Instant::now();
    publisher
        .publish(
            "campus/yazhong/smoke/a3-301",
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    let row = wait_for(
        &c,
        "the alarm row, without a reload",
        "[data-testid=alarm-row][data-state=unacked]",
    )
    .await;
    eprintln!(
        "alarm on the page {:?} after publishing (not asserted: shared machine)",
        published.elapsed()
    );
    let row_text = row.text().await.unwrap_or_default();
    assert!(
        row_text.contains("教学楼A3 三楼301教室"),
        "the place in words: {row_text}"
    );
    assert_eq!(
        row.attr("data-severity").await.ok().flatten().as_deref(),
        Some("critical")
    );

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts.join("alarm-list.png"), png).expect("save screenshot");

    // Acknowledge it with a comment; the row changes state in place.
    row.find(Locator::Css("[data-testid=ack-button]"))
        .await
        .expect("ack button")
        .click()
        .await
        .expect("click");
    wait_for(&c, "the acknowledge dialog", "[data-testid=ack-dialog]").await;
    c.find(Locator::Css("[data-testid=ack-comment]"))
        .await
        .expect("comment")
        .send_keys("checked the room")
        .await
        .expect("type");
    c.find(Locator::Css("[data-testid=ack-confirm]"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click");
    wait_for(
        &c,
        "the acknowledged row",
        "[data-testid=alarm-row][data-state=acked]",
    )
    .await;
    let stored = gw.rules.open.read().expect("snapshot").clone();
    assert_eq!(
        stored[0].acked_by.as_deref(),
        Some("duty"),
        "stored with the operator's name"
    );
    c.close().await.expect("close");

    // The same page in Chinese.
    let c = driver.browser("zh-CN").await;
    sign_in(&c, &base, "duty", "duty-room-password").await;
    let body = text_of(&c, "body").await;
    for label in ["报警", "设备", "校车"] {
        assert!(
            body.contains(label),
            "Chinese label {label} on the page:\n{body}"
        );
    }
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts.join("alarm-list-zh.png"), png).expect("save screenshot");
    c.close().await.expect("close");
    gw.stop().await;
}
