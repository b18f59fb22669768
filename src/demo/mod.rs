//! `campusgw demo`: the whole gateway on a machine with nothing installed.
//!
//! An embedded MQTT broker (rumqttd) on loopback, a simulated campus
//! publishing the reference feed for every device of
//! `config/campus.example.toml`, its Modbus TCP devices (a kitchen hood and a
//! chemical cabinet) served in-process on their register maps and polled
//! like real ones, and the gateway consuming it all exactly as `run` does.
//! InfluxDB is used when `CAMPUSGW__INFLUX__URL` is set.

pub mod broker;
pub mod modbus;
pub mod sim;

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::Gateway;
use crate::config::{Config, ModbusTransport};

/// The annotated example configuration, embedded at build time.
pub const EXAMPLE_CONFIG: &str = include_str!("../../config/campus.example.toml");

/// Demo settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Port of the HTTP server.
    pub web_port: u16,
    /// Port of the embedded broker; 0 or a busy port picks a free one.
    pub mqtt_port: u16,
}

/// The example configuration adapted to the demo: the embedded broker, a
/// private data directory, InfluxDB only when the environment names one.
pub fn config(
    mqtt_addr: SocketAddr,
    web_port: u16,
    data_dir: &std::path::Path,
) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let influx_from_env = env.iter().any(|(k, _)| k == "CAMPUSGW__INFLUX__URL");
    let mut cfg = Config::from_toml(EXAMPLE_CONFIG, env)
        .context("the embedded example configuration")?
        .config;
    cfg.mqtt.url = format!("mqtt://{mqtt_addr}");
    cfg.mqtt.username = None;
    cfg.mqtt.password = None;
    cfg.mqtt.tls = None;
    cfg.mqtt.client_id = "campusgw-demo".into();
    cfg.gateway.data_dir = data_dir.to_owned();
    cfg.web.listen = SocketAddr::from(([127, 0, 0, 1], web_port));
    if !influx_from_env {
        cfg.influx.url = None;
    }
    // A demo machine has no RS-485 adapter: only the TCP devices are simulated.
    cfg.modbus
        .devices
        .retain(|d| d.transport == ModbusTransport::Tcp);
    cfg.modbus.lines.clear();
    Ok(cfg)
}

/// Serves every Modbus TCP device of `cfg` in-process and points the
/// configuration at them.
async fn simulate_modbus(cfg: &mut Config, stop: &CancellationToken) -> anyhow::Result<()> {
    let specs = crate::sources::modbus::device_specs(cfg)
        .context("the example configuration's Modbus devices")?;
    // `device_specs` keeps the order of `[[modbus.devices]]`.
    for (i, (spec, d)) in specs.into_iter().zip(&mut cfg.modbus.devices).enumerate() {
        let sim = modbus::serve(spec.kind, spec.plan, i as u64 + 7, stop.child_token())
            .await
            .context("cannot start a simulated Modbus device")?;
        info!(device = %spec.id, address = %sim.addr, "Simulated Modbus device listening.");
        d.address = Some(sim.addr.to_string());
    }
    Ok(())
}

/// Runs the demo until `shutdown`.
pub async fn run(opts: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mqtt_addr =
        broker::start(opts.mqtt_port).context("cannot start the embedded MQTT broker")?;
    let data_dir = std::env::temp_dir().join("campusgw-demo");
    let mut cfg = config(mqtt_addr, opts.web_port, &data_dir)?;
    let sim_stop = shutdown.child_token();
    simulate_modbus(&mut cfg, &sim_stop).await?;
    // Devices polled over Modbus do not also publish over MQTT.
    let polled: Vec<String> = cfg
        .modbus
        .devices
        .iter()
        .filter_map(|d| cfg.modbus_identity(d).map(|w| w.id))
        .collect();
    let devices: Vec<_> = cfg
        .devices
        .iter()
        .filter(|d| !polled.contains(&d.id))
        .cloned()
        .collect();
    let modbus_count = polled.len();
    let stored = cfg.influx.url.clone();
    let gw = Gateway::start(cfg).await?;
    // No default password: a fresh random one for the demo's operator, every run.
    let password = crate::web::auth::random_password();
    gw.auth
        .set_user("operator", crate::web::Role::Operator, &password)
        .context("creating the demo operator")?;

    let sim = tokio::spawn(sim::run(mqtt_addr, devices, sim_stop));

    println!();
    println!("  Campus Gateway demo is running.");
    println!(
        "  Page:     http://{}/   sign in as operator / {password}",
        gw.web_addr
    );
    println!(
        "  Status:   http://{}/healthz   metrics: http://{}/metrics",
        gw.web_addr, gw.web_addr
    );
    println!(
        "  MQTT:     mqtt://{mqtt_addr}  (try: mosquitto_sub -h {} -p {} -t 'campus/#' -v)",
        mqtt_addr.ip(),
        mqtt_addr.port()
    );
    println!("  Modbus:   {modbus_count} simulated TCP devices, polled like real ones (see modbus/… in /healthz)");
    match stored {
        Some(url) => println!("  InfluxDB: {}", crate::telemetry::redact_urls(&url)),
        None => println!(
            "  InfluxDB: none configured; readings are kept in the spool under {} and written once CAMPUSGW__INFLUX__URL is set",
            data_dir.display()
        ),
    }
    println!("  Stop with Ctrl-C.");
    println!();
    info!(web = %gw.web_addr, mqtt = %mqtt_addr, "Demo running.");

    let token = gw.shutdown_token();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = token.cancelled() => {}
    }
    let _ = sim.await;
    gw.stop().await;
    Ok(())
}
