//! The HTTP API as the security room and integrators use it: sign-in,
//! roles, CSRF, API tokens, throttling, bad requests, the event stream, the
//! ledger — against a gateway fed through a real mosquitto.

mod common;

use campus_gateway::app::Gateway;
use campus_gateway::web::Role;
use common::gateway;
use common::{eventually, feed, Mosquitto, Publisher, QoS};
use serde_json::{json, Value};

struct Page {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Page {
    fn new(gw: &Gateway) -> Self {
        Self {
            base: format!("http://{}", gw.web_addr),
            client: common::http_client(),
            cookie: None,
            csrf: None,
        }
    }

    async fn login(gw: &Gateway, user: &str, password: &str) -> Self {
        let mut p = Self::new(gw);
        let (status, body) = p
            .post(
                "/api/login",
                json!({ "username": user, "password": password }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        p.csrf = body["csrf"].as_str().map(str::to_owned);
        p
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let req = match &self.cookie {
            Some(c) => req.header("Cookie", c),
            None => req,
        };
        let resp = req.send().await.expect("request");
        if let Some(c) = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
        {
            if !c.contains("Max-Age=0") {
                assert!(
                    c.contains("HttpOnly") && c.contains("SameSite=Strict"),
                    "cookie flags: {c}"
                );
            }
            self.cookie = c.split(';').next().map(str::to_owned);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&mut self, path: &str) -> (u16, Value) {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, body: Value) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = &self.csrf {
            req = req.header("X-CSRF-Token", t);
        }
        self.send(req).await
    }
}

async fn setup() -> (Mosquitto, tempfile::TempDir, Gateway) {
    setup_with("").await
}

/// `setup` with more `[web]` settings.
async fn setup_with(web: &str) -> (Mosquitto, tempfile::TempDir, Gateway) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"gw-web-{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n{web}\n[[devices]]\nid = \"a3-301\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"A3\"\nfloor = \"3\"\nroom = \"301\"\n{}",
        dir.path().display(),
        broker.url(),
        std::process::id(),
        gateway::smoke_rule("Smoke at {location}")
    ));
    let gw = gateway::start(cfg).await;
    for (name, role) in [
        ("viewer1", Role::Viewer),
        ("op1", Role::Operator),
        ("admin1", Role::Admin),
    ] {
        gw.auth
            .set_user(name, role, &format!("{name}-password"))
            .expect("user");
    }
    gateway::wait_subscribed(&gw).await;
    (broker, dir, gw)
}

async fn raise_smoke(broker: &Mosquitto, gw: &Gateway) -> i64 {
    let publisher = Publisher::connect(&broker.url()).await;
    let mut p = feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = json!(true);
    publisher
        .publish(
            "campus/yazhong/smoke/a3-301",
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    publisher.flush().await;
    eventually("the alarm is open", || async {
        !gw.rules.open.read().expect("snapshot").is_empty()
    })
    .await;
    gw.rules.open.read().expect("snapshot")[0].id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_csrf_and_the_operators_name() {
    let (broker, _dir, gw) = setup().await;
    let id = raise_smoke(&broker, &gw).await;

    // No session: the page and health are public, the API is not.
    let mut anon = Page::new(&gw);
    assert_eq!(anon.get("/api/alarms").await.0, 401);
    assert_eq!(
        anon.post(&format!("/api/alarms/{id}/ack"), json!({}))
            .await
            .0,
        401
    );
    assert_eq!(anon.get("/healthz").await.0, 200);
    assert_eq!(anon.get("/").await.0, 200);
    let (status, body) = anon
        .post(
            "/api/login",
            json!({ "username": "op1", "password": "nope-nope-nope" }),
        )
        .await;
    assert_eq!(
        (status, &body["error"], &body["code"]),
        (
            401,
            &json!("wrong user name or password"),
            &json!("login_failed")
        )
    );
    assert_eq!(anon.get("/api/alarms").await.1["code"], "unauthorized");

    // A viewer sees the alarm but cannot acknowledge it.
    let mut viewer = Page::login(&gw, "viewer1", "viewer1-password").await;
    let (status, body) = viewer.get("/api/alarms?state=active").await;
    assert_eq!(status, 200);
    assert_eq!(body["alarms"][0]["id"], id);
    assert_eq!(body["alarms"][0]["location"], "A3 / 3 / 301");
    assert_eq!(body["alarms"][0]["state"], "unacked");
    let (status, body) = viewer
        .post(&format!("/api/alarms/{id}/ack"), json!({}))
        .await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );

    // An operator without the CSRF token is refused; with it, the ack is stored with the name.
    let mut op = Page::login(&gw, "op1", "op1-password").await;
    let token = op.csrf.take();
    let (status, body) = op
        .post(
            &format!("/api/alarms/{id}/ack"),
            json!({ "comment": "steam from the kettle" }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("CSRF")));
    op.csrf = token;
    let (status, body) = op
        .post(
            &format!("/api/alarms/{id}/ack"),
            json!({ "comment": "steam from the kettle" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alarms"][0]["state"], "acked");
    assert_eq!(body["alarms"][0]["acked_by"], "op1");
    let (_, detail) = op.get(&format!("/api/alarms/{id}")).await;
    let ack = detail["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["action"] == "ack").cloned())
        .expect("ack entry");
    assert_eq!(
        (ack["user"].as_str(), ack["comment"].as_str()),
        (Some("op1"), Some("steam from the kettle"))
    );

    // Acknowledging twice is a conflict, not a crash; bad ids and bodies are
    // clear 4xx, each with a code the page translates.
    let (status, body) = op.post(&format!("/api/alarms/{id}/ack"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (&body["code"], &body["action"], &body["state"]),
        (&json!("not_allowed"), &json!("ack"), &json!("acked")),
        "{body}"
    );
    let (status, body) = op.post("/api/alarms/abc/ack", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("not an alarm id")));
    assert_eq!(body["code"], "bad_alarm_id");
    let (status, body) = op.post("/api/alarms/999999/ack", json!({})).await;
    assert_eq!(
        (status, &body["error"], &body["code"]),
        (
            404,
            &json!("no open alarm 999999"),
            &json!("alarm_not_found")
        )
    );
    let (status, body) = op
        .post(
            &format!("/api/alarms/{id}/shelve"),
            json!({ "minutes": "ten" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("bad JSON body")));
    assert_eq!(body["code"], "bad_json");
    let raw = op
        .client
        .post(format!("{}/api/alarms/{id}/comment", op.base))
        .header("Content-Type", "application/json")
        .header("X-CSRF-Token", op.csrf.clone().unwrap_or_default())
        .body("{\"text\": ");
    let (status, _) = op.send(raw).await;
    assert_eq!(status, 400);
    let (status, body) = op.get("/api/alarms?state=bogus").await;
    assert_eq!((status, &body["code"]), (400, &json!("bad_state")));
    let (status, body) = op.get("/api/alarms?since=yesterday&state=all").await;
    assert_eq!((status, &body["code"]), (400, &json!("bad_query")));
    let (status, body) = op.get("/api/nothing-here").await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")));
    assert_eq!(
        op.get("/api/users").await.0,
        403,
        "operators do not manage users"
    );

    // The admin sees the audit trail.
    let mut admin = Page::login(&gw, "admin1", "admin1-password").await;
    let (status, body) = admin.get("/api/audit").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = body["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"ack") && actions.contains(&"login") && actions.contains(&"login_failed"),
        "{actions:?}"
    );

    // Sign-out ends the session.
    assert_eq!(op.post("/api/logout", json!({})).await.0, 204);
    assert_eq!(op.get("/api/alarms").await.0, 401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_throttling_ledger_and_the_stream() {
    let (broker, _dir, gw) = setup().await;
    let mut admin = Page::login(&gw, "admin1", "admin1-password").await;

    // An integration's token: read-only, no CSRF needed, no ack allowed.
    let (status, body) = admin
        .post(
            "/api/tokens",
            json!({ "name": "district", "role": "viewer" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    let bearer =
        |req: reqwest::RequestBuilder| req.header("Authorization", format!("Bearer {token}"));
    let client = common::http_client();
    let base = format!("http://{}", gw.web_addr);

    // The event stream delivers a new alarm without polling, and the
    // detector coming online (one `devices` event per check).
    let mut stream = bearer(client.get(format!("{base}/api/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let id = raise_smoke(&broker, &gw).await;
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let want = format!("\"id\":{id}");
    let online = |seen: &str| {
        seen.split("event: devices\n")
            .skip(1)
            .any(|e| e.contains("\"id\":\"a3-301\"") && e.contains("\"online\":true"))
    };
    let complete =
        |seen: &str| seen.contains("event: alarm") && seen.contains(&want) && online(seen);
    while !complete(&seen) && std::time::Instant::now() < deadline {
        if let Some(c) = futures_chunk(&mut stream).await {
            seen.push_str(&c);
        }
    }
    assert!(
        seen.contains("event: alarm") && seen.contains(&want),
        "no alarm event on the stream: {seen}"
    );
    assert!(online(&seen), "no devices event with a3-301 online: {seen}");

    // A bus's position, live: the router sends buses only while a page
    // listens, and the stream takes them up within its 2-s check.
    let publisher = Publisher::connect(&broker.url()).await;
    let bus_event = |seen: &str| {
        seen.split("event: bus\n")
            .skip(1)
            .any(|e| e.contains("\"id\":\"bus-07\"") && e.contains("\"speed_kmh\":"))
    };
    let mut seen = String::new();
    let mut n = 0;
    while !bus_event(&seen) && std::time::Instant::now() < deadline {
        n += 1;
        let (topic, payload) = feed::message("bus", "yazhong", "bus-07", common::now_ms(), n);
        publisher.publish(&topic, payload, QoS::AtMostOnce).await;
        if let Some(c) = futures_chunk(&mut stream).await {
            seen.push_str(&c);
        }
    }
    assert!(bus_event(&seen), "no bus event for bus-07: {seen}");

    let resp = bearer(client.get(format!("{base}/api/alarms")))
        .send()
        .await
        .expect("alarms");
    assert_eq!(resp.status(), 200);
    let resp = bearer(
        client
            .post(format!("{base}/api/alarms/{id}/ack"))
            .json(&json!({})),
    )
    .send()
    .await
    .expect("ack");
    assert_eq!(resp.status(), 403, "a viewer token cannot acknowledge");
    let resp = client
        .get(format!("{base}/api/alarms"))
        .header("Authorization", "Bearer cgw_forged")
        .send()
        .await
        .expect("forged");
    assert_eq!(resp.status(), 401);

    // The ledger for inspections: CSV with a BOM for Excel, the alarm in it.
    let (status, _) = admin.get("/api/reports/ledger.csv").await;
    assert_eq!(status, 200);
    let resp = bearer(client.get(format!("{base}/api/reports/ledger.csv")))
        .send()
        .await
        .expect("ledger");
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .is_ok_and(|d| d.starts_with("attachment")));
    let bytes = resp.bytes().await.expect("csv");
    assert!(bytes.starts_with(b"\xef\xbb\xbf"), "a BOM first");
    let csv = String::from_utf8_lossy(&bytes);
    assert!(
        csv.contains("smoke-alarm") && csv.contains("Smoke at A3 / 3 / 301"),
        "{csv}"
    );

    // Guessing passwords: three failures, then 429 (for a growing while)
    // even with the right one, from that address.
    let mut guesser = Page::new(&gw);
    for _ in 0..3 {
        assert_eq!(
            guesser
                .post(
                    "/api/login",
                    json!({ "username": "op1", "password": "guess-guess-guess" })
                )
                .await
                .0,
            401
        );
    }
    let (status, body) = guesser
        .post(
            "/api/login",
            json!({ "username": "op1", "password": "op1-password" }),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "slow_down");
    assert!(body["retry_after_s"].as_u64().is_some_and(|s| s > 0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_zones_name_known_buildings_and_refusals_carry_codes() {
    let (broker, _dir, gw) = setup().await;
    let id = raise_smoke(&broker, &gw).await;
    let mut op = Page::login(&gw, "op1", "op1-password").await;

    // The page offers the devices' buildings with their floors.
    let (status, body) = op.get("/api/buildings").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["buildings"],
        json!([{ "building": "A3", "floors": ["3"] }])
    );

    // A display name, or a floor no device is on, would silence nothing: refused.
    let drill = |building: &str, floor: Option<&str>, minutes: u32| json!({ "building": building, "floor": floor, "minutes": minutes, "reason": "fire drill" });
    for (body, code) in [
        (drill("教学楼A3", None, 60), "unknown_building"),
        (drill("a3", None, 60), "unknown_building"),
        (drill("A3", Some("9"), 60), "unknown_floor"),
        (drill(" ", None, 60), "building_required"),
        (drill("A3", None, 0), "invalid_minutes"),
        (drill("A3", None, 1441), "invalid_minutes"),
        (
            json!({ "building": "A3", "minutes": 60, "reason": "  " }),
            "reason_required",
        ),
    ] {
        let (status, answer) = op.post("/api/suppressions", body.clone()).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{body} -> {answer}"
        );
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (_, list) = op.get("/api/suppressions").await;
    assert_eq!(list["suppressions"], json!([]), "nothing was suppressed");
    let (status, body) = op
        .post("/api/suppressions", drill("A3", Some("3"), 60))
        .await;
    assert_eq!(status, 204, "{body}");

    // The alarm commands' refusals, each with its own code.
    let long = "x".repeat(2001);
    for (verb, body, code) in [
        (
            "shelve",
            json!({ "minutes": 0, "reason": "noisy" }),
            "invalid_minutes",
        ),
        (
            "shelve",
            json!({ "minutes": 20000, "reason": "noisy" }),
            "invalid_minutes",
        ),
        (
            "shelve",
            json!({ "minutes": 30, "reason": "" }),
            "reason_required",
        ),
        (
            "shelve",
            json!({ "minutes": 30, "reason": long }),
            "reason_too_long",
        ),
        ("comment", json!({ "text": long }), "comment_too_long"),
        ("comment", json!({ "text": " " }), "comment_required"),
        ("ack", json!({ "comment": long }), "comment_too_long"),
    ] {
        let (status, answer) = op.post(&format!("/api/alarms/{id}/{verb}"), body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{verb} -> {answer}"
        );
    }
    let (status, answer) = op.post("/api/alarms/424242/unshelve", json!({})).await;
    assert_eq!((status, &answer["code"]), (404, &json!("alarm_not_found")));
    let (status, answer) = op
        .post(&format!("/api/alarms/{id}/unshelve"), json!({}))
        .await;
    assert_eq!(
        (status, &answer["code"], &answer["state"]),
        (409, &json!("not_allowed"), &json!("unacked")),
        "{answer}"
    );
    gw.stop().await;
}

/// The next chunk of a streaming body as text, or `None` after 200 ms.
async fn futures_chunk(resp: &mut reqwest::Response) -> Option<String> {
    match tokio::time::timeout(std::time::Duration::from_millis(200), resp.chunk()).await {
        Ok(Ok(Some(b))) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    }
}

/// The ledger as an inspector opens it: read back with Python's own `csv`
/// module (an independent reader), in local time with Chinese headers, an
/// operator's formula-looking reason neutralised, a comment with a line
/// break still one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reads_right_in_a_spreadsheet() {
    let python = common::process::require_executable("python3", "apt-get install -y python3");
    let (broker, dir, gw) = setup().await;
    let mut op = Page::login(&gw, "op1", "op1-password").await;
    let reason = "=HYPERLINK(\"http://evil.example/\",\"点击\")";
    let (status, body) = op
        .post(
            "/api/suppressions",
            json!({ "building": "A3", "minutes": 30, "reason": reason }),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let id = raise_smoke(&broker, &gw).await;
    let comment = "checked\r\n2026-01-01 00:00:00 admin1 确认: fake entry";
    let (status, body) = op
        .post(
            &format!("/api/alarms/{id}/ack"),
            json!({ "comment": comment }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let raised_at = gw.rules.open.read().expect("snapshot")[0].raised_at;

    let resp = common::http_client()
        .get(format!("http://{}/api/reports/ledger.csv", gw.web_addr))
        .header("Cookie", op.cookie.clone().expect("session"))
        .send()
        .await
        .expect("ledger");
    assert_eq!(resp.status(), 200);
    let file = dir.path().join("ledger.csv");
    std::fs::write(&file, resp.bytes().await.expect("csv")).expect("write");
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg("import csv, json, sys\nwith open(sys.argv[1], newline='', encoding='utf-8-sig') as f:\n    print(json.dumps(list(csv.reader(f))))")
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).expect("rows");
    assert_eq!(rows.len(), 2, "a header and one alarm: {rows:?}");
    let (header, row) = (&rows[0], &rows[1]);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let local = chrono::DateTime::from_timestamp_millis(raised_at)
        .expect("time")
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("offset"))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert_eq!(row[col("报警时间")], local, "local time, as on the page");
    assert_eq!(row[col("状态")], "已确认");
    assert_eq!(
        row[col("演练/维护")],
        format!("'{reason}"),
        "the formula neutralised"
    );
    let handling = &row[col("处置记录")];
    let entries: Vec<&str> = handling.lines().collect();
    assert_eq!(entries.len(), 2, "raise and ack, one line each: {handling}");
    assert!(
        entries[1].contains("op1 确认: checked↵2026-01-01"),
        "{handling}"
    );
    let (status, _) = op.get("/api/reports/ledger.csv?lang=en").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// `/healthz` is public: without a session or token it shows each
/// component's state, never an address or a credential; with a token it
/// shows the details, the InfluxDB URL's credentials hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_without_credentials_shows_states_not_addresses_or_passwords() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens there: InfluxDB shows as down, its URL in the detail.
    let closed = common::free_port();
    let text = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"gw-health-{}\"\n[influx]\nurl = \"http://school:s3cret-pw@127.0.0.1:{closed}\"\napi = \"v1\"\ndatabase = \"campus\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display(),
        broker.url(),
        std::process::id(),
    );
    let loaded = campus_gateway::config::Config::from_toml(&text, Vec::new()).expect("config");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "influx.url" && w.message.contains("credentials")),
        "`check` warns about credentials in the URL: {:?}",
        loaded.warnings
    );
    let gw = gateway::start(loaded.config).await;
    gateway::wait_subscribed(&gw).await;
    let mut anon = Page::new(&gw);
    let (_, body) = anon.get("/healthz").await;
    let text = body.to_string();
    assert_eq!(body["components"]["mqtt"]["status"], "ok", "{text}");
    for secret in ["127.0.0.1", "s3cret-pw", "school", "detail"] {
        assert!(!text.contains(secret), "`{secret}` in {text}");
    }
    let (_, details) = gateway::get(&gw, "/healthz").await;
    assert!(details.contains("\"detail\""), "{details}");
    assert!(
        details.contains(&format!("http://***@127.0.0.1:{closed}")),
        "{details}"
    );
    assert!(!details.contains("s3cret-pw"), "{details}");
    gw.stop().await;
}

/// Tokens belong to a user: they die with them, never act above their
/// owner's current role, and may expire; weak passwords and names that
/// hide bidi controls are refused by the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_of_a_deleted_admin_is_refused_and_weak_credentials_are_too() {
    let (_broker, _dir, gw) = setup().await;
    let mut admin = Page::login(&gw, "admin1", "admin1-password").await;
    let base = format!("http://{}", gw.web_addr);
    let client = common::http_client();

    // A second admin makes an admin token, then is deleted by the first.
    let (status, body) = admin
        .post(
            "/api/users",
            json!({ "name": "admin2", "role": "admin", "password": "admin2-password" }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let mut admin2 = Page::login(&gw, "admin2", "admin2-password").await;
    let (status, body) = admin2
        .post(
            "/api/tokens",
            json!({ "name": "integration", "role": "admin", "expires_in_days": 30 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    let as_token = |req: reqwest::RequestBuilder| req.bearer_auth(&token);
    let resp = as_token(client.get(format!("{base}/api/users")))
        .send()
        .await
        .expect("users");
    assert_eq!(resp.status(), 200, "the token works while its owner exists");

    // An operator makes no tokens (a token's role is capped by its owner's:
    // the store's own check is in web::auth's tests).
    let mut op = Page::login(&gw, "op1", "op1-password").await;
    assert_eq!(
        op.post("/api/tokens", json!({ "name": "x", "role": "admin" }))
            .await
            .0,
        403
    );

    let (status, body) = admin.get("/api/tokens").await;
    assert_eq!(status, 200);
    assert!(body["tokens"][0]["expires_at"].is_i64(), "{body}");
    let resp = client
        .delete(format!("{base}/api/users/admin2"))
        .header("Cookie", admin.cookie.clone().unwrap_or_default())
        .header("X-CSRF-Token", admin.csrf.clone().unwrap_or_default())
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    for (path, body) in [
        ("/api/users", None),
        (
            "/api/users",
            Some(json!({ "name": "mallory", "role": "admin", "password": "mallory-password" })),
        ),
    ] {
        let req = match &body {
            Some(b) => client.post(format!("{base}{path}")).json(b),
            None => client.get(format!("{base}{path}")),
        };
        let resp = as_token(req).send().await.expect("request");
        assert_eq!(resp.status(), 401, "{path} with the deleted admin's token");
    }
    let (_, body) = admin.get("/api/users").await;
    assert!(!body.to_string().contains("mallory"), "{body}");

    // Weak passwords and unusable names are refused with a reason.
    for (name, password, reason) in [
        ("wu", "          ", "only spaces"),
        ("wu", "aaaaaaaaaaaaaaa", "one character repeated"),
        ("wu.wei.2024", "wu.wei.2024", "the user name"),
        ("wu", "short", "at least 10"),
        (
            "admin\u{202e}1nimda",
            "a long enough password",
            "a name has",
        ),
        ("e\u{200b}", "a long enough password", "a name has"),
        (&"😀".repeat(64), "a long enough password", "a name has"),
    ] {
        let (status, body) = admin
            .post(
                "/api/users",
                json!({ "name": name, "role": "viewer", "password": password }),
            )
            .await;
        assert_eq!(status, 400, "{name:?} / {password:?}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{name:?} / {password:?}: {body}"
        );
    }
    // The same name rule at sign-in.
    let (status, body) = Page::new(&gw)
        .post(
            "/api/login",
            json!({ "username": "😀".repeat(64), "password": "a long enough password" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    gw.stop().await;
}

/// The resident memory of this process (the gateway runs in it), in MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// 150 simultaneous wrong guesses for `op1` from one address: each is
/// counted before it is checked, so only a handful are hashed; the real
/// operator at another screen still signs in, and a signed-in screen keeps
/// its answers. Behind a reverse proxy (`trusted_proxies`), addresses come
/// from X-Forwarded-For. Memory and latency are reported, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_is_counted_before_hashing_and_locks_no_one_out() {
    let (_broker, _dir, gw) = setup_with("trusted_proxies = [\"127.0.0.1\"]").await;
    let base = format!("http://{}", gw.web_addr);
    let from = |addr: &'static str| {
        let client = common::http_client();
        let base = base.clone();
        move |user: &str, password: &str| {
            client
                .post(format!("{base}/api/login"))
                .header("X-Forwarded-For", addr)
                .json(&json!({ "username": user, "password": password }))
                .send()
        }
    };
    // A wall screen signed in before the attack, on a kept-alive connection.
    let mut screen = Page::login(&gw, "viewer1", "viewer1-password").await;
    screen.client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    assert_eq!(screen.get("/api/alarms").await.0, 200);
    let checks_before = gw.metrics.web.login_checks.get();
    let rss_before = rss_mb();

    let attacker = from("203.0.113.66");
    let burst: Vec<_> = (0..150)
        .map(|_| tokio::spawn(attacker("op1", "guess-guess-guess")))
        .collect();
    let mut worst_ms = 0f64;
    let mut rss_peak = rss_before;
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    let mut pending = burst;
    while !pending.is_empty() {
        let started = std::time::Instant::now();
        assert_eq!(screen.get("/api/alarms").await.0, 200);
        worst_ms = worst_ms.max(started.elapsed().as_secs_f64() * 1000.0);
        rss_peak = rss_peak.max(rss_mb());
        let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|h| h.is_finished());
        pending = rest;
        for h in done {
            let resp = h.await.expect("task").expect("response");
            *codes.entry(resp.status().as_u16()).or_default() += 1;
        }
    }
    let checked = gw.metrics.web.login_checks.get() - checks_before;
    eprintln!(
        "burst of 150 guesses: answers {codes:?}, {checked} passwords checked; RSS {rss_before:.0} MB before, peak {rss_peak:.0} MB; a signed-in GET /api/alarms took at most {worst_ms:.1} ms during the burst"
    );
    assert!(
        checked <= 6,
        "{checked} guesses were hashed: they must be counted before"
    );
    assert_eq!(codes.values().sum::<usize>(), 150);
    assert_eq!(
        codes.get(&401).copied().unwrap_or(0) as u64,
        checked,
        "{codes:?}"
    );

    // The guesser is slowed even with the right password; op1 is not locked out.
    let resp = attacker("op1", "op1-password").await.expect("response");
    assert_eq!(resp.status(), 429);
    let resp = from("10.0.5.20")("op1", "op1-password")
        .await
        .expect("response");
    assert_eq!(resp.status(), 200, "the real operator signs in at once");
    assert!(gw
        .metrics
        .render()
        .contains("campusgw_login_refused_total{reason=\"throttled\"}"));
    let (_, audit) = Page::login(&gw, "admin1", "admin1-password")
        .await
        .get("/api/audit")
        .await;
    let failed_from_attacker = audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "login_failed" && e["addr"] == "203.0.113.66")
        .count();
    assert_eq!(
        failed_from_attacker as u64, checked,
        "the audit names the proxied address"
    );
    gw.stop().await;
}
