//! The demo's embedded MQTT broker: rumqttd on loopback, anonymous.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;

/// Starts the broker on `port` (a free one if `port` is 0 or busy) and returns its address.
pub fn start(port: u16) -> anyhow::Result<SocketAddr> {
    let addr = pick_port(port)?;
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 10485760
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 65536
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).context("broker configuration")?;
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "The embedded MQTT broker stopped.");
            }
        })
        .context("spawning the broker thread")?;
    wait_listening(addr)?;
    Ok(addr)
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
            "MQTT port busy; the embedded broker uses another."
        );
    }
    Ok(addr)
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("the embedded broker did not start listening on {addr}")
}
