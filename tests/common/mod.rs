//! Integration-test harness: real servers as child processes, an MQTT
//! publisher/subscriber, the reference feed and polling helpers.
//!
//! Include it from a test file with `mod common;`. Every server runs in its
//! own `tempfile::TempDir`, logs into a file inside it (`log()` reads it) and
//! is killed and reaped on `Drop`. Starting blocks (plain `std::thread::sleep`
//! polling, ~10 s deadline) until the server answers, so it works from sync
//! and async tests alike; the data helpers (`query`, `export`, ...) are async
//! and use reqwest.
//!
//! Never skips: a missing executable panics with the way to install it.
//!
//! Submodules:
//! - [`process`]: the generic child-process wrapper ([`process::ServerProcess`]).
//! - [`mosquitto`]: [`Mosquitto`] broker (plain, password, TLS, persistence).
//! - [`influx`]: [`Influx1`], InfluxDB 1.6 (v1 `/write` + `/query`).
//! - [`victoria`]: [`Victoria`], VictoriaMetrics (the InfluxDB v2 write API).
//! - [`tls`]: a throw-away PKI made with rcgen (CA, server, client certs).
//! - [`mqtt`]: [`Publisher`] / [`Subscriber`] on rumqttc 0.25.
//! - [`feed`]: reference-feed messages per `shared/docs/FEED.md`.
//! - [`campus`]: the benchmarks' campus shape (alarm-worthy messages, five threshold rules).
//! - [`modbus`]: [`PyModbus`], pymodbus's server (TCP, or RTU over a
//!   [`SerialPair`] from socat) serving the reference register maps.
//! - [`load`]: a steady QoS 1 load and counting its points back.
//! - [`gwproc`]: the `campusgw` binary as a child (kill -9, restart, RSS).
//! - [`robots`]: [`robots::Robots`], a Python server standing in for the chat
//!   robots, an SMS provider and a webhook, checking their signatures itself.
#![allow(dead_code, unused_imports)]

pub mod campus;
pub mod feed;
pub mod gateway;
pub mod gwproc;
pub mod influx;
pub mod load;
pub mod modbus;
pub mod mosquitto;
pub mod mqtt;
pub mod process;
pub mod robots;
pub mod smtp;
pub mod tls;
pub mod victoria;

pub use influx::{Influx1, Influx1Options};
pub use modbus::{PyModbus, SerialPair};
pub use mosquitto::{Mosquitto, MosquittoOptions};
pub use mqtt::{MqttClientConfig, Publisher, QoS, Received, Subscriber};
pub use victoria::{Victoria, VictoriaOptions};

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The generous deadline of [`eventually`]: long enough never to fail a
/// healthy but slow run, short enough to fail instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long a server gets to become ready after its process started.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// Polling period of [`wait_until`] / [`eventually`].
pub const POLL: Duration = Duration::from_millis(100);

/// A free TCP port on 127.0.0.1: binds port 0, reads the port, closes.
/// Another process may take it before the server binds it; the starters
/// retry with a new port when the server exits early.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of the port-probe listener")
        .port()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("system clock before 1970")
        .as_millis() as i64
}

/// Polls `cond` every 100 ms until it returns true (→ `true`) or `timeout`
/// passes (→ `false`, after one last try at the deadline).
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] with the 60 s [`DEADLINE`]; panics naming `what` on timeout.
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !wait_until(DEADLINE, cond).await {
        panic!("timed out after {DEADLINE:?} waiting for: {what}");
    }
}

/// Like [`eventually`], but on timeout the panic message also carries
/// `diagnostics()` (e.g. `|| broker.log()`).
pub async fn eventually_with<F, Fut, D>(what: &str, cond: F, diagnostics: D)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
    D: FnOnce() -> String,
{
    if !wait_until(DEADLINE, cond).await {
        panic!(
            "timed out after {DEADLINE:?} waiting for: {what}\n--- diagnostics ---\n{}",
            diagnostics()
        );
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn tcp_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// A tiny blocking HTTP/1.0 client for readiness probes and setup calls made
/// before any async runtime is needed. Returns (status, body).
pub fn http_sync(
    port: u16,
    method: &str,
    path_and_query: &str,
    basic_auth: Option<(&str, &str)>,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<(u16, String)> {
    let authorization = basic_auth
        .map(|(user, pass)| format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())));
    http_sync_authorized(port, method, path_and_query, authorization.as_deref(), body)
}

/// [`http_sync`] with a bearer token (a gateway's API token).
pub fn http_sync_bearer(
    port: u16,
    path_and_query: &str,
    token: &str,
) -> std::io::Result<(u16, String)> {
    http_sync_authorized(
        port,
        "GET",
        path_and_query,
        Some(&format!("Bearer {token}")),
        None,
    )
}

fn http_sync_authorized(
    port: u16,
    method: &str,
    path_and_query: &str,
    authorization: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    );
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body_bytes: &[u8] = match body {
        Some((content_type, bytes)) => {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
            bytes
        }
        None => &[],
    };
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body_bytes.len()));
    stream.write_all(request.as_bytes())?;
    stream.write_all(body_bytes)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {text:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Standard base64 with padding (for Basic auth headers).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A reqwest 0.11 client for talking to the test servers on loopback
/// (no proxy from the environment, 30 s timeout, and no idle-connection
/// reuse: a pooled keep-alive connection to a server that was restarted
/// fails with "connection closed before message completed").
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client for the test servers")
}
