//! Starting the gateway under test in-process, on port 0, with logs on.

use campus_gateway::app::Gateway;
use campus_gateway::config::Config;
use campus_gateway::telemetry::{init_logging, LogFormat, Status};
use campus_gateway::web::Role;

/// Parses a test configuration (no environment overrides), panicking with every problem.
pub fn config(text: &str) -> Config {
    Config::from_toml(text, Vec::new())
        .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
        .config
}

/// The rule most tests need, as configuration text: a smoke detector
/// reporting `alarm = true` raises a critical alarm `smoke-alarm` with
/// `message` (a template: `{device}`, `{location}`, …).
pub fn smoke_rule(message: &str) -> String {
    format!(
        "[[rules]]\nid = \"smoke-alarm\"\nseverity = \"critical\"\nkinds = [\"smoke\"]\nmessage = \"{message}\"\ncondition = {{ type = \"equals\", field = \"alarm\", value = true }}\n"
    )
}

/// Starts a gateway with logs on stderr (nextest shows them for failed tests).
pub async fn start(cfg: Config) -> Gateway {
    init_logging(LogFormat::Human);
    Gateway::start(cfg).await.expect("the gateway starts")
}

/// Waits until the gateway's subscriptions are acknowledged: messages
/// published before that would go to no one on a fresh session.
pub async fn wait_subscribed(gw: &Gateway) {
    super::eventually("the gateway subscribed to the broker", || async {
        gw.health.status("mqtt") == Some(Status::Ok)
    })
    .await;
}

/// A viewer's API token for `gw`, made once per gateway: `/healthz` shows
/// its details only to a signed-in user or a token.
pub fn viewer_token(gw: &Gateway) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static TOKENS: OnceLock<Mutex<HashMap<std::net::SocketAddr, String>>> = OnceLock::new();
    let mut tokens = TOKENS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    tokens
        .entry(gw.web_addr)
        .or_insert_with(|| {
            gw.auth
                .set_user("test-reader", Role::Viewer, "test-reader-password")
                .expect("the test reader");
            gw.auth
                .create_token("test-reader", Role::Viewer, "test-reader", None)
                .expect("the test reader's token")
        })
        .clone()
}

/// GET a path of the gateway's HTTP server as a viewer's token: (status, body).
pub async fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let resp = super::http_client()
        .get(format!("http://{}{path}", gw.web_addr))
        .bearer_auth(viewer_token(gw))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The value of one sample line of `/metrics`, e.g.
/// `campusgw_messages_rejected_total{reason="malformed_json"}`; 0 when absent.
pub async fn metric(gw: &Gateway, series: &str) -> f64 {
    let (_, text) = get(gw, "/metrics").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
