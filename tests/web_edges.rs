//! The web server's edges under abuse: sockets that send nothing or too
//! slowly are closed by the timeouts, connections over the caps are refused
//! while signed-in screens keep working, and an event stream ends with its
//! session or token.

mod common;

use std::net::SocketAddr;

use campus_gateway::app::Gateway;
use campus_gateway::web::Role;
use common::{gateway, Mosquitto};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(web: &str) -> (Mosquitto, tempfile::TempDir, Gateway) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"gw-edges-{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n{web}\n",
        dir.path().display(),
        broker.url(),
        std::process::id(),
    ));
    let gw = gateway::start(cfg).await;
    for (name, role) in [("op1", Role::Operator), ("admin1", Role::Admin)] {
        gw.auth
            .set_user(name, role, &format!("{name}-password"))
            .expect("user");
    }
    (broker, dir, gw)
}

/// A TCP connection to the gateway from a given loopback address (127.0.0.x).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Reads until the server closes the connection (EOF or reset); false if
/// it is still open at the deadline.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A whole request on `s`, answered: the connection is usable.
async fn answers(s: &mut TcpStream) -> bool {
    let req = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(common::DEADLINE, s.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200")
    )
}

async fn sign_in(gw: &Gateway, user: &str) -> (reqwest::Client, String, String) {
    sign_in_with(common::http_client(), gw, user).await
}

async fn sign_in_with(
    client: reqwest::Client,
    gw: &Gateway,
    user: &str,
) -> (reqwest::Client, String, String) {
    let resp = client
        .post(format!("http://{}/api/login", gw.web_addr))
        .json(&json!({ "username": user, "password": format!("{user}-password") }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    let body: serde_json::Value = resp.json().await.expect("me");
    let csrf = body["csrf"].as_str().expect("csrf").to_owned();
    (client, cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_send_nothing_or_too_slowly_or_idle_are_closed() {
    let (_broker, _dir, gw) =
        start("first_request_timeout = \"1s\"\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"\n")
            .await;
    // Nothing at all.
    let mut silent = connect_from([127, 0, 0, 1], gw.web_addr).await;
    // Half a request's headers, then nothing.
    let mut slow = connect_from([127, 0, 0, 1], gw.web_addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        .await
        .expect("write");
    // One request answered, then the kept-alive connection idles.
    let mut kept = connect_from([127, 0, 0, 1], gw.web_addr).await;
    assert!(answers(&mut kept).await);
    assert!(
        closed_by_server(&mut silent).await,
        "a silent socket is held"
    );
    assert!(closed_by_server(&mut slow).await, "a slow request is held");
    assert!(
        closed_by_server(&mut kept).await,
        "an idle keep-alive is held"
    );
    eventually_zero_connections(&gw).await;
    gw.stop().await;
}

async fn eventually_zero_connections(gw: &Gateway) {
    common::eventually("the closed connections are given back", || async {
        gw.metrics.web.connections.get() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_refused_while_a_signed_in_screen_works() {
    let (_broker, _dir, gw) = start(
        "first_request_timeout = \"60s\"\nheader_timeout = \"60s\"\nmax_connections = 12\nmax_connections_per_address = 4\n",
    )
    .await;
    let base = format!("http://{}", gw.web_addr);
    // A screen that keeps its connection open (HTTP keep-alive).
    let keeps = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let (screen, cookie, _) = sign_in_with(keeps, &gw, "op1").await;
    let alarms = || {
        screen
            .get(format!("{base}/api/alarms"))
            .header("Cookie", &cookie)
            .send()
    };
    assert_eq!(alarms().await.expect("alarms").status(), 200);

    // One host opens five idle sockets: four are taken, one is closed at
    // once. Which one is the server's to pick (each accepted connection is
    // counted on its own task, so not always in the order they came).
    let mut five = Vec::new();
    for _ in 0..5 {
        five.push(connect_from([127, 0, 0, 2], gw.web_addr).await);
    }
    let mut held = Vec::new();
    for mut s in five {
        if answers(&mut s).await {
            held.push(s);
        }
    }
    assert_eq!(
        held.len(),
        4,
        "four taken and served, one over the per-address cap"
    );
    let fresh = common::http_client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(fresh.status(), 200, "a new connection from another address");

    // Up to the total from other hosts; then even a new one is refused,
    // while the screen's open connection keeps its answers.
    let mut host = 3u8;
    while gw.metrics.web.connections.get() < 12 {
        for _ in 0..4 {
            if gw.metrics.web.connections.get() >= 12 {
                break;
            }
            held.push(connect_from([127, 0, 0, host], gw.web_addr).await);
            let n = held.len();
            common::eventually("the connection is counted", || async {
                gw.metrics.web.connections.get() as usize >= n.min(12)
            })
            .await;
        }
        host += 1;
    }
    let mut over = connect_from([127, 0, 0, 100], gw.web_addr).await;
    assert!(closed_by_server(&mut over).await, "over the total cap");
    assert_eq!(
        alarms().await.expect("alarms").status(),
        200,
        "the signed-in screen's connection still works"
    );
    let text = gw.metrics.render();
    for reason in ["per_address", "total"] {
        assert!(
            !text.contains(&format!(
                "campusgw_http_connections_refused_total{{reason=\"{reason}\"}} 0"
            )),
            "{reason} refusals are counted: {text}"
        );
    }
    drop(held);
    gw.stop().await;
}

/// The next chunk of a streaming body as text, `None` once it has ended.
async fn next_chunk(resp: &mut reqwest::Response) -> Option<String> {
    match tokio::time::timeout(common::DEADLINE, resp.chunk()).await {
        Ok(Ok(Some(b))) => Some(String::from_utf8_lossy(&b).into_owned()),
        Ok(Err(e)) if e.is_timeout() => Some("(still open at the deadline)".into()),
        Ok(Ok(None) | Err(_)) => None,
        Err(_) => Some("(still open at the deadline)".into()),
    }
}

/// Reads a stream until it ends; false if it was still open at the deadline.
async fn ends(resp: &mut reqwest::Response) -> bool {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    while tokio::time::Instant::now() < deadline {
        match next_chunk(resp).await {
            None => return true,
            Some(c) if c.contains("still open at the deadline") => return false,
            Some(_) => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_with_its_session_or_token_and_is_capped_per_session() {
    // Short request timeouts: they bound waiting for a request, never an
    // answer that is still streaming.
    let (_broker, _dir, gw) = start(
        "max_streams_per_session = 2\nfirst_request_timeout = \"1s\"\nheader_timeout = \"1s\"\n",
    )
    .await;
    let base = format!("http://{}", gw.web_addr);
    // No overall request timeout: a stream is read for as long as it lasts.
    let streams = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (client, cookie, csrf) = sign_in_with(streams, &gw, "op1").await;
    let open = |auth: (&'static str, String)| {
        client
            .get(format!("{base}/api/stream"))
            .header(auth.0, auth.1)
            .send()
    };
    let mut first = open(("Cookie", cookie.clone())).await.expect("stream");
    assert_eq!(first.status(), 200);
    assert!(next_chunk(&mut first)
        .await
        .is_some_and(|c| c.contains("event: hello")));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        gw.metrics.web.streams.get(),
        1,
        "the stream outlives the header timeout"
    );
    let second = open(("Cookie", cookie.clone())).await.expect("stream");
    assert_eq!(second.status(), 200);
    let third = open(("Cookie", cookie.clone())).await.expect("stream");
    assert_eq!(third.status(), 429, "a third stream on one session");
    drop(second);

    // Sign-out ends the session's streams.
    let resp = client
        .post(format!("{base}/api/logout"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), 204);
    assert!(ends(&mut first).await, "the stream outlived its session");

    // A deleted token's stream ends too.
    let (admin, admin_cookie, admin_csrf) = sign_in(&gw, "admin1").await;
    let resp = admin
        .post(format!("{base}/api/tokens"))
        .header("Cookie", &admin_cookie)
        .header("X-CSRF-Token", &admin_csrf)
        .json(&json!({ "name": "wall", "role": "viewer" }))
        .send()
        .await
        .expect("token");
    let body: serde_json::Value = resp.json().await.expect("token body");
    let token = body["token"].as_str().expect("token").to_owned();
    let mut by_token = open(("Authorization", format!("Bearer {token}")))
        .await
        .expect("stream");
    assert_eq!(by_token.status(), 200);
    assert!(next_chunk(&mut by_token)
        .await
        .is_some_and(|c| c.contains("event: hello")));
    let id = gw
        .auth
        .tokens()
        .expect("tokens")
        .into_iter()
        .find(|t| t.name == "wall")
        .expect("the token")
        .id;
    let resp = admin
        .delete(format!("{base}/api/tokens/{id}"))
        .header("Cookie", &admin_cookie)
        .header("X-CSRF-Token", &admin_csrf)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    assert!(ends(&mut by_token).await, "the stream outlived its token");
    assert!(gw.metrics.web.streams_revoked.get() >= 2);
    gw.stop().await;
}
