//! The demo's broker: the gateway's own built-in broker (`crate::broker`)
//! on a loopback port, open to anonymous clients (loopback only).

use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;

use crate::config::BrokerConfig;

/// The `[mqtt.embedded_broker]` of the demo: anonymous on a loopback
/// `port` (a free one if `port` is 0 or busy), and generous with rates: the
/// simulated campus publishes over one connection.
pub fn config(port: u16) -> anyhow::Result<BrokerConfig> {
    let addr = pick_port(port)?;
    let text = format!("listen = \"{addr}\"\nallow_anonymous = true\nmax_publish_rate = 100000\n");
    toml::from_str(&text).context("the demo's broker configuration")
}

fn pick_port(port: u16) -> anyhow::Result<SocketAddr> {
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    if port != 0 && TcpListener::bind(want).is_ok() {
        return Ok(want);
    }
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).context("no free port")?;
    let addr = l.local_addr()?;
    if port != 0 {
        tracing::warn!(
            wanted = port,
            using = addr.port(),
            "MQTT port busy; the demo's broker uses another."
        );
    }
    Ok(addr)
}
