//! The page in a real browser (Debian's headless Chromium driven through
//! chromedriver): sign in, a smoke alarm published through a real mosquitto
//! appears without a reload, is acknowledged, and its state changes; the
//! Chinese page shows Chinese labels. The page cannot be missed: burning
//! alarms above cleared ones with the first alarm (首警) pinned, a banner
//! for a new one, a sound that repeats until acknowledged, the site and the
//! undeclared mark, history on every state, and a plain notice when the
//! browser blocks sound. Alarm events (flood groups, covered alarms) are
//! applied as they come, with no refetch of the list. Screenshots go to
//! `target/test-artifacts/`.

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
        self.browser_with(lang, &[]).await
    }

    /// A browser with extra command-line flags, e.g. the wall screen's
    /// `--autoplay-policy=no-user-gesture-required`.
    async fn browser_with(&self, lang: &str, extra: &[&str]) -> Client {
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let mut args: Vec<serde_json::Value> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,1000",
        ]
        .iter()
        .chain(extra)
        .map(|a| json!(a))
        .collect();
        args.push(json!(format!("--lang={lang}")));
        args.push(json!(format!("--user-data-dir={}", profile.display())));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": args,
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

/// Polls `script` (a JavaScript expression) until it is true.
async fn wait_js(c: &Client, what: &str, script: &str) -> serde_json::Value {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let v = c
            .execute(&format!("return {script};"), Vec::new())
            .await
            .unwrap_or(serde_json::Value::Null);
        if v.as_bool() == Some(true) {
            return v;
        }
        if Instant::now() > deadline {
            let hook = c
                .execute("return window.__campusgwSound || null;", Vec::new())
                .await
                .unwrap_or_default();
            let shown = text_of(c, "body").await;
            panic!("timed out waiting for {what} ({script}); sound hook {hook}; the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a JavaScript expression on the page.
async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(&format!("return {script};"), Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

fn base_url(gw: &campus_gateway::app::Gateway) -> String {
    format!("http://{}/", gw.web_addr)
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

/// Publishes a smoke detector's `alarm` and waits until the engine has the
/// alarm in `state`; returns its id.
async fn smoke(
    publisher: &Publisher,
    gw: &campus_gateway::app::Gateway,
    site: &str,
    device: &str,
    alarm: bool,
    state: &str,
) -> i64 {
    let mut p = feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = json!(alarm);
    publisher
        .publish(
            &format!("campus/{site}/smoke/{device}"),
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    let find = || {
        gw.rules
            .open
            .read()
            .expect("snapshot")
            .iter()
            .find(|a| a.device == device && a.state.as_str() == state)
            .map(|a| a.id)
    };
    common::eventually(&format!("{device}'s alarm {state}"), || async {
        find().is_some()
    })
    .await;
    find().expect("the alarm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cannot_be_missed() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut devices = String::new();
    for room in ["301", "302", "303"] {
        devices.push_str(&format!(
            "[[devices]]\nid = \"a3-{room}\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"A3\"\nfloor = \"3\"\nroom = \"{room}\"\n"
        ));
    }
    // Who is on duty, for the top bar: the security room all day, the
    // canteen never (a gap the screen must show).
    let roster = "[[notify.people]]\nid = \"zhang\"\nname = \"张伟\"\n[notify.teams.security]\nname = \"保卫处\"\nmembers = [\"zhang\"]\n[notify.teams.canteen]\nname = \"食堂\"\n[[notify.shifts]]\nteam = \"security\"\npeople = [\"zhang\"]\n";
    let cfg = common::gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n{devices}{}{roster}",
        dir.path().display(),
        broker.url(),
        common::gateway::smoke_rule("Smoke at {location}")
    ));
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;

    // 301 burns first; 302 trips and clears (the newest, but over); 303 burns.
    let first = smoke(&publisher, &gw, "yazhong", "a3-301", true, "unacked").await;
    smoke(&publisher, &gw, "yazhong", "a3-302", true, "unacked").await;
    let cleared = smoke(
        &publisher,
        &gw,
        "yazhong",
        "a3-302",
        false,
        "cleared_unacked",
    )
    .await;
    let burning = smoke(&publisher, &gw, "yazhong", "a3-303", true, "unacked").await;

    // The wall screen's browser: sound without a click.
    let driver = Driver::start();
    let base = format!("http://{}/", gw.web_addr);
    let c = driver
        .browser_with("en-US", &["--autoplay-policy=no-user-gesture-required"])
        .await;
    sign_in(&c, &base, "duty", "duty-room-password").await;
    wait_for(
        &c,
        "the first alarm",
        "[data-testid=alarm-row][data-first=true]",
    )
    .await;

    // Burning above cleared, the first alarm pinned on top with its label.
    let order = js(
        &c,
        "[...document.querySelectorAll('#alarm-list > [data-testid=alarm-row]')].map((r) => Number(r.dataset.alarmId))",
    )
    .await;
    assert_eq!(order, json!([first, burning, cleared]), "the list's order");
    let label = text_of(&c, "[data-first=true] [data-testid=first-alarm-tag]").await;
    assert_eq!(label, "First alarm");
    assert_eq!(
        text_of(&c, "[data-first=true] [data-testid=alarm-site]").await,
        "yazhong",
        "the site is shown"
    );

    // The top bar says who is on duty, and marks a team with nobody.
    wait_for(
        &c,
        "the duty roster in the top bar",
        "[data-testid=duty-team][data-team=security]",
    )
    .await;
    assert_eq!(
        text_of(&c, "[data-testid=duty-team][data-team=security]").await,
        "保卫处：张伟"
    );
    assert_eq!(
        text_of(&c, "[data-testid=duty-team][data-team=canteen].gap").await,
        "食堂：nobody on duty"
    );

    // History opens on every state: the open alarms are in it.
    wait_for(
        &c,
        "an open alarm in the history",
        "[data-testid=history-row][data-state=unacked]",
    )
    .await;

    // Unacknowledged critical alarms: the sound repeats.
    wait_js(
        &c,
        "the critical pattern to repeat",
        "window.__campusgwSound.pattern === 'critical' && window.__campusgwSound.plays > 1",
    )
    .await;
    assert_eq!(
        js(&c, "window.__campusgwSound.audio").await,
        json!("running"),
        "the kiosk flag lets the page sound without a click"
    );
    assert!(
        !c.find(Locator::Css("[data-testid=sound-blocked]"))
            .await
            .expect("the notice")
            .is_displayed()
            .await
            .unwrap_or(true),
        "no blocked-sound notice when sound works"
    );

    // Scrolled down to the history, a message under another site's code
    // from a device nobody declared: the banner says what, where, when.
    c.execute(
        "window.scrollTo(0, document.body.scrollHeight);",
        Vec::new(),
    )
    .await
    .expect("scroll");
    let ghost = smoke(&publisher, &gw, "evilsite", "east-1", true, "unacked").await;
    let banner = wait_for(
        &c,
        "the banner for the new alarm",
        &format!("[data-testid=alarm-banner][data-alarm-id=\"{ghost}\"]"),
    )
    .await;
    let banner_text = banner.text().await.unwrap_or_default();
    assert!(
        banner_text.contains("Smoke at") && banner_text.contains("evilsite"),
        "what and where: {banner_text}"
    );
    let top = js(
        &c,
        "document.querySelector('[data-testid=alarm-banner]').getBoundingClientRect().top",
    )
    .await;
    assert!(
        top.as_f64().is_some_and(|t| (0.0..200.0).contains(&t)),
        "the banner is in view while scrolled: top {top}"
    );
    // The device list marks the undeclared device, and so does its alarm.
    wait_for(
        &c,
        "the undeclared device's mark",
        "[data-testid=undeclared-device][data-device-id=east-1][data-site=evilsite] [data-testid=undeclared-tag]",
    )
    .await;
    wait_for(
        &c,
        "the undeclared alarm's mark",
        &format!("[data-testid=alarm-row][data-alarm-id=\"{ghost}\"][data-undeclared=true] [data-testid=undeclared-tag]"),
    )
    .await;
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts.join("alarm-banner.png"), png).expect("save screenshot");

    // Acknowledged one by one from the banner, which shows the next until none is left.
    for _ in 0..4 {
        wait_for(&c, "the banner", "[data-testid=alarm-banner]").await;
        c.find(Locator::Css("[data-testid=alarm-banner-ack]"))
            .await
            .expect("ack in the banner")
            .click()
            .await
            .expect("click");
        wait_for(&c, "the acknowledge dialog", "[data-testid=ack-dialog]").await;
        c.find(Locator::Css("[data-testid=ack-confirm]"))
            .await
            .expect("confirm")
            .click()
            .await
            .expect("click");
        wait_js(
            &c,
            "the dialog to close",
            "!document.querySelector('[data-testid=ack-dialog]').open",
        )
        .await;
    }
    wait_js(
        &c,
        "the sound to stop being wanted",
        "window.__campusgwSound.pattern === null && document.querySelector('[data-testid=alarm-banner]').hidden",
    )
    .await;
    let plays = js(&c, "window.__campusgwSound.plays").await;
    // Longer than the critical pattern's period: no new start in it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        js(&c, "window.__campusgwSound.plays").await,
        plays,
        "no sound after acknowledgement"
    );
    let stored = gw.rules.open.read().expect("snapshot").clone();
    assert!(
        stored.iter().all(|a| a.acked_by.as_deref() == Some("duty")),
        "every alarm acknowledged by the operator: {stored:?}"
    );

    // A drill zone is chosen from the devices' buildings and floors, not typed.
    c.find(Locator::Css("[data-testid=drill-button]"))
        .await
        .expect("drill button")
        .click()
        .await
        .expect("click");
    wait_js(
        &c,
        "the buildings to choose from",
        "JSON.stringify([...document.querySelectorAll('#drill-building option')].map((o) => o.value)) === '[\"A3\"]' && [...document.querySelectorAll('#drill-floor option')].some((o) => o.value === '3')",
    )
    .await;
    c.find(Locator::Css("#drill-dialog [data-role=cancel]"))
        .await
        .expect("cancel")
        .click()
        .await
        .expect("click");
    let wall = c;

    // A desk PC's browser that keeps audio locked: the page says so and how to allow it.
    let c = driver
        .browser_with(
            "zh-CN",
            &["--autoplay-policy=document-user-activation-required"],
        )
        .await;
    sign_in(&c, &base, "duty", "duty-room-password").await;
    // Signing in was a click, which allows sound; a reload (signed in by the
    // cookie, nobody at the keyboard) is not.
    c.refresh().await.expect("reload");
    let notice = wait_for(
        &c,
        "the blocked-sound notice",
        "[data-testid=sound-blocked]",
    )
    .await;
    let text = notice.text().await.unwrap_or_default();
    assert!(
        text.contains("浏览器阻止了报警声音")
            && text.contains("--autoplay-policy=no-user-gesture-required"),
        "{text}"
    );
    c.find(Locator::Css("[data-testid=sound-hint]"))
        .await
        .expect("enable sound")
        .click()
        .await
        .expect("click");
    wait_js(
        &c,
        "the notice to go once sound is allowed",
        "document.querySelector('[data-testid=sound-blocked]').hidden",
    )
    .await;
    c.close().await.expect("close");

    // The gateway goes away: the wall screen can no longer see new alarms,
    // says so and sounds its third pattern, again and again.
    gw.stop().await;
    wait_for(
        &wall,
        "the connection banner",
        "[data-testid=connection-banner]",
    )
    .await;
    let before = js(&wall, "window.__campusgwSound.plays")
        .await
        .as_u64()
        .unwrap_or(0);
    wait_js(
        &wall,
        "the lost-connection pattern to repeat",
        &format!(
            "window.__campusgwSound.pattern === 'connection' && window.__campusgwSound.last === 'connection' && window.__campusgwSound.plays > {}",
            before + 1
        ),
    )
    .await;
    wall.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_joining_a_flood_group_is_announced_even_when_muted() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut devices = String::new();
    for n in 1..=11 {
        devices.push_str(&format!(
            "[[devices]]\nid = \"b1-{n:02}\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"B1\"\nfloor = \"1\"\nroom = \"1{n:02}\"\n"
        ));
    }
    let cfg = common::gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n{devices}{}",
        dir.path().display(),
        broker.url(),
        common::gateway::smoke_rule("Smoke at {location}")
    ));
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let driver = Driver::start();
    let c = driver
        .browser_with("en-US", &["--autoplay-policy=no-user-gesture-required"])
        .await;
    sign_in(&c, &base_url(&gw), "duty", "duty-room-password").await;

    // Ten detectors at once: one flood group (the default threshold).
    let publisher = Publisher::connect(&broker.url()).await;
    for n in 1..=10 {
        let mut p = feed::payload("smoke", common::now_ms(), 1);
        p["alarm"] = json!(true);
        publisher
            .publish(
                &format!("campus/yazhong/smoke/b1-{n:02}"),
                p.to_string(),
                QoS::AtLeastOnce,
            )
            .await;
    }
    wait_for(
        &c,
        "the flood group",
        "[data-testid=alarm-row][data-group=true]",
    )
    .await;
    wait_for(&c, "the banner", "[data-testid=alarm-banner]").await;

    // The operator closes the banner and mutes the sound for the known alarms.
    c.find(Locator::Css("[data-testid=alarm-banner-dismiss]"))
        .await
        .expect("dismiss")
        .click()
        .await
        .expect("click");
    c.find(Locator::Css("[data-testid=mute-toggle]"))
        .await
        .expect("mute")
        .click()
        .await
        .expect("click");
    wait_js(
        &c,
        "banner closed and sound muted",
        "document.querySelector('[data-testid=alarm-banner]').hidden && window.__campusgwSound.muted",
    )
    .await;
    let plays = js(&c, "window.__campusgwSound.plays")
        .await
        .as_u64()
        .unwrap_or(0);

    // One more detector joins the group: announced like a new alarm.
    let joined = smoke(&publisher, &gw, "yazhong", "b1-11", true, "unacked").await;
    let banner = wait_for(
        &c,
        "the banner for the new member",
        &format!("[data-testid=alarm-banner][data-alarm-id=\"{joined}\"]"),
    )
    .await;
    let text = banner.text().await.unwrap_or_default();
    assert!(text.contains("B1 / 1 / 111"), "where: {text}");
    wait_js(
        &c,
        "the mute to end and the sound to start",
        &format!(
            "!window.__campusgwSound.muted && window.__campusgwSound.pattern === 'critical' && window.__campusgwSound.plays > {plays}"
        ),
    )
    .await;
    let grouped = gw
        .rules
        .open
        .read()
        .expect("snapshot")
        .iter()
        .any(|a| a.id == joined && a.group.is_some());
    eprintln!("the new detector's alarm joined the flood group: {grouped}");
    c.close().await.expect("close");
    gw.stop().await;
}

/// The number of `/api/alarms?state=active` requests the page made, the
/// refetches it had a reason for (boot, stream opened, lagged, slow poll),
/// and the alarm events it took from the stream.
async fn list_fetches(c: &Client) -> (u64, u64, u64) {
    let v = js(
        c,
        "[(window.__campusgwFetches || {})['/api/alarms?state=active'] || 0, \
          Object.values(window.__campusgwRefetches || {}).reduce((a, b) => a + b, 0), \
          (window.__campusgwStream || {}).alarm || 0]",
    )
    .await;
    let n = |i: usize| v[i].as_u64().unwrap_or(0);
    (n(0), n(1), n(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alarm_event_is_applied_once_without_refetching_the_list() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut devices = String::new();
    for n in 1..=11 {
        devices.push_str(&format!(
            "[[devices]]\nid = \"d1-{n:02}\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"D1\"\nfloor = \"1\"\nroom = \"1{n:02}\"\n"
        ));
    }
    // A long flood window: the detectors are published one at a time.
    let cfg = common::gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n[alarms]\nflood_window = \"10m\"\n{devices}{}",
        dir.path().display(),
        broker.url(),
        common::gateway::smoke_rule("Smoke at {location}")
    ));
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    sign_in(&c, &base_url(&gw), "duty", "duty-room-password").await;
    // Booted: the list fetched at sign-in and again when the stream opened.
    wait_js(
        &c,
        "the boot fetches",
        "(window.__campusgwFetches || {})['/api/alarms?state=active'] >= 2 && !document.querySelector('[data-testid=alarm-empty]').hidden",
    )
    .await;
    let (fetched, reasons, events) = list_fetches(&c).await;

    // Nine detectors, each shown as it comes.
    let publisher = Publisher::connect(&broker.url()).await;
    let mut ids = Vec::new();
    for n in 1..=9 {
        let id = smoke(
            &publisher,
            &gw,
            "yazhong",
            &format!("d1-{n:02}"),
            true,
            "unacked",
        )
        .await;
        wait_for(
            &c,
            "the new alarm's row",
            &format!("#alarm-list [data-testid=alarm-row][data-alarm-id=\"{id}\"]"),
        )
        .await;
        ids.push(id);
    }
    // The tenth makes a flood group: one row holding the ten.
    smoke(&publisher, &gw, "yazhong", "d1-10", true, "unacked").await;
    wait_for(
        &c,
        "the flood group's row with its ten",
        "#alarm-list > [data-testid=alarm-row][data-group=true]",
    )
    .await;
    wait_js(
        &c,
        "the members folded into the group",
        "document.querySelectorAll('#alarm-list > [data-testid=alarm-row]:not([data-first])').length === 1 \
         && document.querySelector('#alarm-list > [data-group=true]').textContent.includes('10 alarms')",
    )
    .await;
    // Read from the page: the row itself is rebuilt as the group changes.
    let group_id = js(
        &c,
        "document.querySelector('#alarm-list > [data-group=true]').dataset.alarmId",
    )
    .await;
    let group_id = group_id.as_str().expect("the group's id").to_owned();
    c.find(Locator::Css(
        "#alarm-list > [data-group=true] [data-testid=group-toggle]",
    ))
    .await
    .expect("the group's toggle")
    .click()
    .await
    .expect("click");
    let members = "#alarm-list [data-testid=group-members] [data-testid=alarm-row]";
    wait_js(
        &c,
        "the ten members",
        &format!("document.querySelectorAll('{members}').length === 10"),
    )
    .await;

    // An eleventh joins: the group's row counts it and lists it.
    let joined = smoke(&publisher, &gw, "yazhong", "d1-11", true, "unacked").await;
    wait_js(
        &c,
        "the group's row to count the new member",
        &format!(
            "document.querySelector('#alarm-list > [data-group=true]').textContent.includes('11 alarms') \
             && document.querySelectorAll('{members}').length === 11 \
             && !!document.querySelector('{members}[data-alarm-id=\"{joined}\"]')"
        ),
    )
    .await;
    // The first detector goes quiet: its member row says so.
    smoke(
        &publisher,
        &gw,
        "yazhong",
        "d1-01",
        false,
        "cleared_unacked",
    )
    .await;
    wait_for(
        &c,
        "the cleared member",
        &format!("#alarm-list [data-testid=group-members] [data-alarm-id=\"{}\"][data-state=cleared_unacked]", ids[0]),
    )
    .await;

    // Acknowledged from the group's row: the members follow, the cleared one leaves.
    c.find(Locator::Css(&format!(
        "#alarm-list > [data-alarm-id=\"{group_id}\"] [data-testid=ack-button]"
    )))
    .await
    .expect("the group's ack button")
    .click()
    .await
    .expect("click");
    wait_for(&c, "the acknowledge dialog", "[data-testid=ack-dialog]").await;
    c.find(Locator::Css("[data-testid=ack-confirm]"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click");
    wait_js(
        &c,
        "every member acknowledged, the cleared one gone",
        &format!(
            "document.querySelectorAll('{members}').length === 10 \
             && [...document.querySelectorAll('{members}')].every((r) => r.dataset.state === 'acked') \
             && !document.querySelector('#alarm-list [data-alarm-id=\"{}\"]')",
            ids[0]
        ),
    )
    .await;

    let (fetched_after, reasons_after, events_after) = list_fetches(&c).await;
    eprintln!(
        "{} alarm events; list fetched {} times for {} reasons (boot, stream opened, lagged, poll)",
        events_after - events,
        fetched_after - fetched,
        reasons_after - reasons
    );
    // A refetch only for a reason (the stream reopened or lagged, the slow
    // poll): none for an event or an action.
    assert!(
        fetched_after - fetched <= reasons_after - reasons,
        "the list was fetched {} times across {} alarm events, with {} reasons",
        fetched_after - fetched,
        events_after - events,
        reasons_after - reasons
    );
    assert!(
        events_after - events >= 20,
        "the page took {} alarm events",
        events_after - events
    );
    c.close().await.expect("close");
    gw.stop().await;
}

/// The open alarm of `rule` in `state`, once the engine has it.
async fn alarm_of(gw: &campus_gateway::app::Gateway, rule: &str, state: &str) -> i64 {
    let find = || {
        gw.rules
            .open
            .read()
            .expect("snapshot")
            .iter()
            .find(|a| a.rule == rule && a.state.as_str() == state)
            .map(|a| a.id)
    };
    common::eventually(&format!("{rule}'s alarm {state}"), || async {
        find().is_some()
    })
    .await;
    find().expect("the alarm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_covered_alarm_moves_under_its_cover_and_back_without_a_refetch() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // The detector's own alarm covers the obscuration alarm of the same event.
    let cfg = common::gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
[web]
listen = "127.0.0.1:0"
[[devices]]
id = "e1-01"
kind = "smoke"
site = "yazhong"
building = "E1"
floor = "1"
room = "101"
[[rules]]
id = "smoke-alarm"
severity = "critical"
flood = false
inhibits = ["smoke-obscuration"]
kinds = ["smoke"]
message = "Smoke at {{location}}"
condition = {{ type = "equals", field = "alarm", value = true }}
[[rules]]
id = "smoke-obscuration"
name = {{ zh = "烟雾浓度高", en = "Smoke obscuration high" }}
severity = "high"
flood = false
kinds = ["smoke"]
message = "Obscuration at {{location}}"
condition = {{ type = "above", field = "obscuration_pct_m", value = 3.0, clear = 2.0 }}
"#,
        dir.path().display(),
        broker.url(),
    ));
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    sign_in(&c, &base_url(&gw), "duty", "duty-room-password").await;
    wait_js(
        &c,
        "the boot fetches",
        "(window.__campusgwFetches || {})['/api/alarms?state=active'] >= 2 && !document.querySelector('[data-testid=alarm-empty]').hidden",
    )
    .await;
    let (fetched, reasons, _) = list_fetches(&c).await;

    let publisher = Publisher::connect(&broker.url()).await;
    let mut seq = 0;
    let mut send = |obscuration: f64, alarm: bool| {
        seq += 1;
        let mut p = feed::payload("smoke", common::now_ms(), seq);
        p["obscuration_pct_m"] = json!(obscuration);
        p["alarm"] = json!(alarm);
        p.to_string()
    };
    let topic = "campus/yazhong/smoke/e1-01";

    // Smoke builds up: the obscuration alarm has a row of its own.
    publisher
        .publish(topic, send(5.0, false), QoS::AtLeastOnce)
        .await;
    let covered = alarm_of(&gw, "smoke-obscuration", "unacked").await;
    let row = |id: i64| format!("#alarm-list > [data-testid=alarm-row][data-alarm-id=\"{id}\"]");
    wait_for(&c, "the obscuration alarm's row", &row(covered)).await;

    // The detector alarms: one row, the obscuration alarm named in it.
    publisher
        .publish(topic, send(5.0, true), QoS::AtLeastOnce)
        .await;
    let cover = alarm_of(&gw, "smoke-alarm", "unacked").await;
    let covers = wait_for(
        &c,
        "the cover's row naming the covered alarm",
        &format!("{} [data-testid=alarm-covers]", row(cover)),
    )
    .await;
    assert!(
        covers
            .text()
            .await
            .unwrap_or_default()
            .contains("Smoke obscuration high"),
        "the covered alarm's name in the row"
    );
    wait_js(
        &c,
        "the covered alarm's own row gone",
        &format!("!document.querySelector('{}')", row(covered)),
    )
    .await;

    // Acknowledged together from the one row.
    c.find(Locator::Css(&format!(
        "{} [data-testid=ack-button]",
        row(cover)
    )))
    .await
    .expect("the ack button")
    .click()
    .await
    .expect("click");
    wait_for(&c, "the acknowledge dialog", "[data-testid=ack-dialog]").await;
    c.find(Locator::Css("[data-testid=ack-confirm]"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click");
    wait_for(
        &c,
        "the acknowledged cover",
        &format!("{}[data-state=acked]", row(cover)),
    )
    .await;
    alarm_of(&gw, "smoke-obscuration", "acked").await;

    // The detector is quiet again while the smoke stays: its alarm closes
    // and the obscuration alarm stands on its own again (no event names it).
    publisher
        .publish(topic, send(5.0, false), QoS::AtLeastOnce)
        .await;
    wait_for(
        &c,
        "the covered alarm on its own again",
        &format!("{}[data-state=acked]", row(covered)),
    )
    .await;
    wait_js(
        &c,
        "the closed cover gone",
        &format!("!document.querySelector('{}')", row(cover)),
    )
    .await;

    // The smoke clears: nothing is left.
    publisher
        .publish(topic, send(0.0, false), QoS::AtLeastOnce)
        .await;
    wait_for(&c, "the empty list", "[data-testid=alarm-empty]").await;

    let (fetched_after, reasons_after, _) = list_fetches(&c).await;
    assert!(
        fetched_after - fetched <= reasons_after - reasons,
        "the list was fetched {} times, with {} reasons",
        fetched_after - fetched,
        reasons_after - reasons
    );
    c.close().await.expect("close");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_alarm_under_a_reused_id_is_shown_after_the_gateway_restarts_with_a_wiped_store() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A fixed port, so the open page reconnects to the restarted gateway.
    let text = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:{}\"\n\
         [[devices]]\nid = \"f1-01\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"F1\"\nfloor = \"1\"\nroom = \"101\"\n{}",
        dir.path().display(),
        broker.url(),
        free_port(),
        common::gateway::smoke_rule("Smoke at {location}")
    );
    let gw = common::gateway::start(common::gateway::config(&text)).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    sign_in(&c, &base_url(&gw), "duty", "duty-room-password").await;
    let publisher = Publisher::connect(&broker.url()).await;

    // An alarm raised, acknowledged and cleared: closed, gone from the page.
    let old = smoke(&publisher, &gw, "yazhong", "f1-01", true, "unacked").await;
    let row = |id: i64| format!("#alarm-list > [data-testid=alarm-row][data-alarm-id=\"{id}\"]");
    c.find(Locator::Css(&format!(
        "{} [data-testid=ack-button]",
        row(old)
    )))
    .await
    .expect("the ack button")
    .click()
    .await
    .expect("click");
    wait_for(&c, "the acknowledge dialog", "[data-testid=ack-dialog]").await;
    c.find(Locator::Css("[data-testid=ack-confirm]"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click");
    wait_for(
        &c,
        "the acknowledged row",
        &format!("{}[data-state=acked]", row(old)),
    )
    .await;
    let mut p = feed::payload("smoke", common::now_ms(), 2);
    p["alarm"] = json!(false);
    publisher
        .publish(
            "campus/yazhong/smoke/f1-01",
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    wait_for(&c, "the empty list", "[data-testid=alarm-empty]").await;
    let opened = js(&c, "window.__campusgwStream.opened")
        .await
        .as_u64()
        .unwrap_or(0);

    // The gateway comes back with its alarm store wiped (the sign-ins kept):
    // it numbers its alarms from the start again, and the page reconnects.
    gw.stop().await;
    for name in ["alarms.db", "alarms.db-wal", "alarms.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let gw = common::gateway::start(common::gateway::config(&text)).await;
    common::gateway::wait_subscribed(&gw).await;
    wait_js(
        &c,
        "the stream to reopen",
        &format!("window.__campusgwStream.opened > {opened} && !document.querySelector('[data-testid=alarm-empty]').hidden"),
    )
    .await;
    let new = smoke(&publisher, &gw, "yazhong", "f1-01", true, "unacked").await;
    assert_eq!(
        new, old,
        "the restarted gateway reuses the id (else this proves nothing)"
    );
    wait_for(
        &c,
        "the new alarm under the closed one's id",
        &format!("{}[data-state=unacked]", row(new)),
    )
    .await;
    c.close().await.expect("close");
    gw.stop().await;
}

/// Acknowledging from the phone: the link the robot receiver got opens in a
/// phone's browser (no sign-in), shows the alarm, and the tap on confirm
/// acknowledges it as the person — the security room's page, signed in
/// meanwhile, shows the alarm acknowledged by that person's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_link_from_a_message_acknowledges_in_the_browser() {
    use common::robots::{self, Robots};
    let robots = Robots::start();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A fixed port of our own, so the links in messages point at this gateway.
    let port = free_port();
    let cfg = common::gateway::config(&format!(
        r#"
[gateway]
data_dir = "{data}"
[mqtt]
url = "{mqtt}"
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"
building = "A3"
floor = "3"
room = "301"
{rule}
[notify]
group_wait = "0s"
[[notify.people]]
id = "zhang"
name = "张伟"
user = "zhangwei"
[notify.teams.security]
members = ["zhang"]
[[notify.shifts]]
team = "security"
people = ["zhang"]
[notify.channels.hook]
type = "webhook"
url = "{base}/webhook"
secret = "{secret}"
[notify.policies.fire]
steps = [{{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }}]
ack_links = true
[[notify.routes]]
policy = "fire"
"#,
        data = dir.path().display(),
        mqtt = broker.url(),
        rule = common::gateway::smoke_rule("Smoke at {location}"),
        base = robots.url(),
        secret = robots::WEBHOOK_SECRET,
    ));
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let driver = Driver::start();
    let room = driver.browser("zh-CN").await;
    sign_in(&room, &base_url(&gw), "duty", "duty-room-password").await;

    let publisher = Publisher::connect(&broker.url()).await;
    smoke(&publisher, &gw, "yazhong", "a3-301", true, "unacked").await;
    wait_for(
        &room,
        "the alarm on the room's page",
        "[data-testid=alarm-row][data-state=unacked]",
    )
    .await;
    common::eventually("the message at the receiver", || async {
        robots.requests().iter().any(|r| r["verified"] == true)
    })
    .await;
    let text = robots
        .requests()
        .into_iter()
        .find_map(|r| r["json"]["text"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let link = text
        .split_whitespace()
        .flat_map(|w| w.split('：'))
        .find(|w| w.starts_with("http://") && w.contains("/ack/"))
        .unwrap_or_else(|| panic!("no ack link in {text}"))
        .to_owned();

    // The phone: the link, the alarm, the tap.
    let phone = driver.browser("zh-CN").await;
    phone.goto(&link).await.expect("open the link");
    let body = wait_for(&phone, "the ack page", "#confirm").await;
    let shown = text_of(&phone, "body").await;
    assert!(
        shown.contains("A3 / 3 / 301") && shown.contains("张伟"),
        "{shown}"
    );
    assert_eq!(
        gw.rules.open.read().expect("snapshot")[0].state.as_str(),
        "unacked",
        "opening the link changes nothing"
    );
    body.click().await.expect("tap confirm");
    let done = wait_for(&phone, "the acknowledged page", "#done").await;
    assert!(
        done.text().await.unwrap_or_default().contains("张伟"),
        "{}",
        text_of(&phone, "body").await
    );
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let png = phone.screenshot().await.expect("screenshot");
    std::fs::write(artifacts.join("ack-link-done.png"), png).expect("save screenshot");

    // The room's page: acknowledged by the person's user.
    let row = wait_for(
        &room,
        "the row acknowledged from the link",
        "[data-testid=alarm-row][data-state=acked]",
    )
    .await;
    let row_text = row.text().await.unwrap_or_default();
    assert!(row_text.contains("zhangwei"), "{row_text}");
    // Its detail lists the message the link came in: delivered by the robot channel.
    room.find(Locator::Css(
        "[data-testid=alarm-row][data-state=acked] [data-testid=alarm-open]",
    ))
    .await
    .expect("the row's open button")
    .click()
    .await
    .expect("open the detail");
    let told = wait_for(
        &room,
        "the detail's notifications",
        "[data-testid=detail-notification][data-state=sent]",
    )
    .await;
    let told_text = told.text().await.unwrap_or_default();
    assert!(told_text.contains("已送达"), "{told_text}");

    // The link again (the back button, a second tap): refused, clearly.
    phone.goto(&link).await.expect("open the link again");
    let again = text_of(&phone, "body").await;
    assert!(again.contains("链接已使用"), "{again}");
    phone.close().await.expect("close");
    room.close().await.expect("close");
    gw.stop().await;
}

/// The bus panel: the routes of the route file drawn with their stops and
/// speed zones, a bus's position live, and the day's report with the trip
/// and its episode (a skipped stop), in English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_panel_draws_the_routes_and_shows_the_days_report() {
    use campus_gateway::bus::trace::{generate, Fault, TraceSpec};
    use chrono::{Timelike, Utc};
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A trip that departed twenty minutes ago, so its whole trace is in the past.
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("offset");
    let depart = (Utc::now() - chrono::Duration::minutes(20)).with_timezone(&offset);
    let depart = depart
        .with_second(0)
        .and_then(|d| d.with_nanosecond(0))
        .expect("minute");
    let routes = concat!(env!("CARGO_MANIFEST_DIR"), "/config/routes.example.geojson");
    let cfg = common::gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
[web]
listen = "127.0.0.1:0"
[[devices]]
id = "bus-07"
kind = "bus"
site = "yazhong"
name = "校车7号"
[buses]
routes_file = "{routes}"
reorder_window = "1s"
[[buses.vehicles]]
id = "bus-07"
capacity = 35
route = "R1"
[[buses.trips]]
route = "R1"
depart = "{}"
"#,
        dir.path().display(),
        broker.url(),
        depart.format("%H:%M"),
    ));
    let plan = campus_gateway::bus::Plan::new(&cfg)
        .expect("valid")
        .expect("plan");
    let gw = common::gateway::start(cfg).await;
    gw.auth
        .set_user("duty", Role::Operator, "duty-room-password")
        .expect("user");
    common::gateway::wait_subscribed(&gw).await;
    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    sign_in(&c, &base_url(&gw), "duty", "duty-room-password").await;

    // The route file, drawn: two routes, their nine stops, two zones.
    wait_js(
        &c,
        "the routes drawn",
        "document.querySelectorAll('#bus-map polyline.map-route').length === 2",
    )
    .await;
    assert_eq!(
        js(
            &c,
            "document.querySelectorAll('#bus-map [data-testid=map-stop]').length"
        )
        .await,
        json!(9)
    );
    assert_eq!(
        js(
            &c,
            "document.querySelectorAll('#bus-map polygon.map-zone').length"
        )
        .await,
        json!(2)
    );

    // A trip with a skipped stop, replayed.
    let spec = TraceSpec::new("R1", depart.timestamp_millis()).with(Fault::SkipStop(2));
    let fixes = generate(&plan.network, &spec).expect("trace");
    let publisher = Publisher::connect(&broker.url()).await;
    for f in &fixes {
        let body = json!({"ts": f.ts, "lat": f.lat, "lon": f.lon, "speed_kmh": f.speed_kmh,
            "heading_deg": 90.0, "passengers": f.passengers, "door_open": f.door_open, "route_id": "R1"});
        publisher
            .publish(
                "campus/yazhong/bus/bus-07",
                body.to_string(),
                QoS::AtLeastOnce,
            )
            .await;
    }
    // Its position, live from the stream, on the map.
    wait_for(
        &c,
        "the bus on the map",
        "#bus-map g.map-bus[data-bus-id=bus-07]",
    )
    .await;
    // The day's report, once the trip's alarm refreshed the panel.
    let today = Utc::now().with_timezone(&offset).date_naive();
    if depart.date_naive() == today {
        let row = wait_for(
            &c,
            "the trip in the day's report",
            "[data-testid=bus-report-trip]",
        )
        .await;
        let mut text = row.text().await.unwrap_or_default();
        let deadline = Instant::now() + common::DEADLINE;
        while !text.contains("stop skipped") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            text = text_of(&c, "[data-testid=bus-report-trip]").await;
        }
        assert!(
            text.contains("bus-07") && text.contains("stop skipped"),
            "{text}"
        );
        assert!(text.contains("4/5"), "four of five stops served: {text}");
        let csv = c
            .find(Locator::Css("[data-testid=bus-report-csv]"))
            .await
            .expect("the CSV link")
            .attr("href")
            .await
            .expect("href")
            .unwrap_or_default();
        assert!(csv.contains("format=csv"), "{csv}");
    }
    let _ = c.close().await;
    gw.stop().await;
}
