//! `campusgw demo`: the whole gateway on a machine with nothing installed.
//!
//! The gateway's built-in MQTT broker on loopback (anonymous there), a simulated campus
//! publishing the reference feed for every device of
//! `config/campus.example.toml`, its Modbus TCP devices (a kitchen hood and a
//! chemical cabinet) served in-process on their register maps and polled
//! like real ones, and the gateway consuming it all exactly as `run` does.
//! Its duty alerts go to a receiver inside the demo (`duty`), which logs
//! each message it would have sent.
//! InfluxDB is used when `CAMPUSGW__INFLUX__URL` is set. Each demo has its
//! own private data directory (or the `--data-dir` it is given), so demos
//! run side by side on different ports without touching each other.

pub mod broker;
pub mod duty;
pub mod modbus;
pub mod sim;
pub mod simulate;

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::Gateway;
use crate::config::{Config, ModbusTransport};

/// The annotated example configuration, embedded at build time.
pub const EXAMPLE_CONFIG: &str = include_str!("../../config/campus.example.toml");

/// The example's bus routes (its `[buses] routes_file`), embedded too.
pub const EXAMPLE_ROUTES: &str = include_str!("../../config/routes.example.geojson");

/// The example configuration with its route file written into `dir` (the
/// file names it relative to itself, and the embedded text has no place).
pub fn example_with_routes(dir: &std::path::Path) -> std::io::Result<String> {
    let routes = dir.join("routes.example.geojson");
    std::fs::write(&routes, EXAMPLE_ROUTES)?;
    let path = toml::Value::String(routes.display().to_string()).to_string();
    Ok(EXAMPLE_CONFIG.replace(
        "routes_file = \"routes.example.geojson\"",
        &format!("routes_file = {path}"),
    ))
}

/// Demo settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Port of the HTTP server.
    pub web_port: u16,
    /// Port of the demo's broker; 0 or a busy port picks a free one.
    pub mqtt_port: u16,
}

/// Where a demo keeps its state.
#[derive(Debug)]
enum DataDir {
    /// A fresh private directory (mode 0700), removed when the demo ends:
    /// two demos never share a user store or a spool.
    Fresh(tempfile::TempDir),
    /// The one given with `--data-dir`, kept.
    Kept(std::path::PathBuf),
}

impl DataDir {
    fn path(&self) -> &std::path::Path {
        match self {
            DataDir::Fresh(t) => t.path(),
            DataDir::Kept(p) => p,
        }
    }
}

/// The example configuration adapted to the demo: the built-in broker on
/// `mqtt_port`, a private data directory, InfluxDB only when the
/// environment names one.
pub fn config(mqtt_port: u16, web_port: u16, data_dir: &std::path::Path) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let influx_from_env = env.iter().any(|(k, _)| k == "CAMPUSGW__INFLUX__URL");
    let text = example_with_routes(data_dir).context("cannot write the example bus routes")?;
    let mut cfg = Config::from_toml(&text, env)
        .context("the embedded example configuration")?
        .config;
    cfg.mqtt.url = String::new();
    cfg.mqtt.embedded_broker = Some(broker::config(mqtt_port)?);
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

/// The demo runs at any hour: each bus departs every 20 minutes (bus-07 on
/// the hour, bus-12 ten minutes later), and the simulated buses drive to it.
fn demo_timetable(cfg: &mut Config) {
    let mut trips = Vec::new();
    for (i, v) in cfg.buses.vehicles.iter().enumerate() {
        for h in 0..24 {
            for m in (0..60).step_by(sim::BUS_CYCLE_MIN as usize) {
                let m = m + (i as u32 * 10) % sim::BUS_CYCLE_MIN;
                trips.push(crate::config::TripConfig {
                    route: v.route.clone(),
                    vehicle: Some(v.id.clone()),
                    depart: format!("{h:02}:{m:02}"),
                    calendar: None,
                });
            }
        }
    }
    cfg.buses.trips = trips;
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

/// A fresh directory under `$TMPDIR` that only this user can enter (it
/// holds the demo's users and sessions).
fn private_tempdir() -> std::io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("campusgw-demo-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        b.permissions(std::fs::Permissions::from_mode(0o700));
    }
    b.tempdir()
}

/// Runs the demo until `shutdown`, in `data_dir` (kept), or in a fresh
/// private directory removed at the end.
pub async fn run(
    opts: Options,
    data_dir: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Dropped (and so removed, when fresh) at the end of this function,
    // after the gateway has stopped.
    let dir = match data_dir {
        Some(p) => DataDir::Kept(p),
        None => {
            DataDir::Fresh(private_tempdir().context("cannot create the demo's data directory")?)
        }
    };
    let data_dir = dir.path().to_owned();
    // The links in duty messages need the page's port before it is bound.
    let web_port = match opts.web_port {
        0 => std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("cannot pick a port for the page")?,
        p => p,
    };
    let mut cfg = config(opts.mqtt_port, web_port, &data_dir)?;
    let receiver = duty::start(
        &mut cfg,
        format!("http://127.0.0.1:{web_port}"),
        shutdown.child_token(),
    )
    .await?;
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
    demo_timetable(&mut cfg);
    let plan = crate::bus::Plan::new(&cfg)
        .map_err(|p| anyhow::anyhow!("the example bus routes: {p:?}"))?
        .map(std::sync::Arc::new);
    let gw = Gateway::start(cfg).await?;
    let Some((Some(mqtt_addr), _)) = gw.broker_addrs() else {
        anyhow::bail!("the demo's broker has no listener");
    };
    // No default password: a fresh random one for the demo's operator, every run.
    let password = crate::web::auth::random_password();
    gw.auth
        .set_user("operator", crate::web::Role::Operator, &password)
        .context("creating the demo operator")?;

    let sim = tokio::spawn(sim::run(mqtt_addr, devices, plan, sim_stop));

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
    println!(
        "  Duty:     messages to the duty staff go to the demo's receiver (logged; the last {} at http://{receiver}/messages); tap the link in one to acknowledge",
        duty::KEEP
    );
    println!("  Modbus:   {modbus_count} simulated TCP devices, polled like real ones (see modbus/… in /healthz)");
    match stored {
        Some(url) => println!("  InfluxDB: {}", crate::telemetry::redact_urls(&url)),
        // A fresh directory goes at exit, and its spool with it.
        None => match &dir {
            DataDir::Fresh(_) => println!(
                "  InfluxDB: none configured; readings are not stored (set CAMPUSGW__INFLUX__URL; with --data-dir the spool is kept for a later run)"
            ),
            DataDir::Kept(_) => println!(
                "  InfluxDB: none configured; readings are kept in the spool under {} and written once CAMPUSGW__INFLUX__URL is set",
                data_dir.display()
            ),
        },
    }
    match &dir {
        DataDir::Fresh(_) => println!(
            "  Data:     {} (private; removed when the demo stops)",
            data_dir.display()
        ),
        DataDir::Kept(_) => println!("  Data:     {} (kept)", data_dir.display()),
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
    drop(dir);
    Ok(())
}
