//! The Modbus source: polls kitchen-hood and chemical-cabinet controllers
//! over Modbus TCP and Modbus RTU, and turns every complete poll into one
//! `Reading` (`source = modbus`) sent into the same bounded channel as MQTT's.
//!
//! Tasks: one per TCP device (it owns its connection, keeps it open between
//! polls and reopens it with capped backoff), and one per serial line (it
//! owns the port and polls its units strictly one after the other: RS-485 is
//! half-duplex, two requests at once would collide). A device's trouble stays
//! its own: a TCP device that hangs only stalls its own task; on a serial
//! line a silent unit costs the others at most its `timeout` per poll once it
//! is offline (it then gets one attempt per poll instead of `1 + retries`).
//!
//! A poll is all or nothing: a reading only when every request was answered,
//! so a reading never mixes fresh and missing values. Failures are counted
//! by device and reason (`timeout`, `exception`, `transport`, `decode`); after
//! `offline_after_failures` consecutive ones the device's health component
//! `modbus/<id>` goes `down`, and the next good poll brings it back.
//!
//! `map` is pure (register maps → read plans → fields); `transport` is the wire.

pub mod map;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::slave::SlaveContext as _;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Config, ModbusTransport, Parity, PollTimings};
use crate::reading::{FieldName, Kind, Reading, Source, Value};
use crate::telemetry::health::MODBUS_PREFIX;
use crate::telemetry::{Health, Metrics, ModbusDeviceMetrics, ModbusFailure, Status};
use map::{Limits, ReadPlan};
use transport::Failure;

/// Why the Modbus source could not be set up (validation catches these first).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A device's configuration cannot be used.
    #[error("modbus.devices[{index}]: {message}")]
    Device {
        /// Its index in `[[modbus.devices]]`.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Where a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP at `host:port`.
    Tcp(String),
    /// Modbus RTU on the named serial line.
    Rtu(String),
}

/// A polled device, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device id.
    pub id: Arc<str>,
    /// Site.
    pub site: Arc<str>,
    /// Kind.
    pub kind: Kind,
    /// How it is reached.
    pub endpoint: Endpoint,
    /// Unit (slave) id.
    pub unit: u8,
    /// What to read and how to decode it.
    pub plan: ReadPlan,
    /// Poll interval, timeout, retries, failures before offline.
    pub timings: PollTimings,
}

impl DeviceSpec {
    fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(a) => format!("tcp {a} unit {}", self.unit),
            Endpoint::Rtu(l) => format!("rtu line {l} unit {}", self.unit),
        }
    }
}

/// A serial line, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct LineSpec {
    /// Its name in `[modbus.lines]`.
    pub name: String,
    /// The serial device.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits.
    pub data_bits: u8,
    /// Stop bits.
    pub stop_bits: u8,
    /// Silence before each request.
    pub request_gap: Duration,
}

/// Every `[[modbus.devices]]` entry resolved: identity, endpoint, read plan, timings.
pub fn device_specs(cfg: &Config) -> Result<Vec<DeviceSpec>, SourceError> {
    let m = &cfg.modbus;
    let mut out = Vec::with_capacity(m.devices.len());
    for (index, d) in m.devices.iter().enumerate() {
        let fail = |message: &str| SourceError::Device {
            index,
            message: message.to_owned(),
        };
        let who = cfg
            .modbus_identity(d)
            .ok_or_else(|| fail("no identity: set `device`, or `id`, `kind` and `site`"))?;
        let registers = cfg
            .modbus_registers(d)
            .ok_or_else(|| fail("its map is not in [modbus.maps]"))?;
        let limits = Limits {
            max_gap: d.max_gap.unwrap_or(m.max_gap),
            max_registers: m.max_registers_per_request,
            max_bits: m.max_bits_per_request,
        };
        let plan =
            ReadPlan::build(who.kind, registers, limits).map_err(|e| fail(&e.to_string()))?;
        let endpoint = match d.transport {
            ModbusTransport::Tcp => Endpoint::Tcp(transport::with_default_port(
                d.address
                    .as_deref()
                    .ok_or_else(|| fail("tcp needs `address`"))?,
            )),
            ModbusTransport::Rtu => Endpoint::Rtu(
                d.line
                    .clone()
                    .filter(|l| m.lines.contains_key(l))
                    .ok_or_else(|| fail("rtu needs a `line` from [modbus.lines]"))?,
            ),
        };
        out.push(DeviceSpec {
            id: Arc::from(who.id.as_str()),
            site: Arc::from(who.site.as_str()),
            kind: who.kind,
            endpoint,
            unit: d.unit,
            plan,
            timings: m.timings(d),
        });
    }
    Ok(out)
}

/// What every device task shares.
#[derive(Debug)]
struct Shared {
    /// Into the router, which holds the receiving end.
    tx: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    received: Counter,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

/// The configured Modbus devices, ready to be polled.
#[derive(Debug)]
pub struct ModbusSource {
    tcp: Vec<DeviceSpec>,
    lines: Vec<(LineSpec, Vec<DeviceSpec>)>,
    shared: Arc<Shared>,
}

impl ModbusSource {
    /// Prepares the tasks; `tx` is held by the router on its other end.
    /// Every device's health component and metric series exist from here on.
    pub fn new(
        cfg: &Config,
        tx: mpsc::Sender<Reading>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, SourceError> {
        let mut tcp = Vec::new();
        let mut lines: Vec<(LineSpec, Vec<DeviceSpec>)> = Vec::new();
        for spec in device_specs(cfg)? {
            health.set(
                &component(&spec.id),
                Status::Starting,
                Some(format!("not polled yet ({})", spec.describe())),
            );
            let _ = metrics.modbus_device(&spec.id);
            match &spec.endpoint {
                Endpoint::Tcp(_) => tcp.push(spec),
                Endpoint::Rtu(name) => match lines.iter_mut().find(|(l, _)| &l.name == name) {
                    Some((_, devices)) => devices.push(spec),
                    None => {
                        let Some(l) = cfg.modbus.lines.get(name) else {
                            continue;
                        };
                        let line = LineSpec {
                            name: name.clone(),
                            path: l.path.clone(),
                            baud: l.baud,
                            parity: l.parity,
                            data_bits: l.data_bits,
                            stop_bits: l.stop_bits,
                            request_gap: l.request_gap,
                        };
                        lines.push((line, vec![spec]));
                    }
                },
            }
        }
        let received = metrics.messages_in(Source::Modbus);
        Ok(Self {
            tcp,
            lines,
            shared: Arc::new(Shared {
                tx,
                metrics,
                health,
                received,
                reconnect_min: cfg.modbus.reconnect_min,
                reconnect_max: cfg.modbus.reconnect_max,
            }),
        })
    }

    /// Whether there is nothing to poll.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.lines.is_empty()
    }

    /// Starts one task per TCP device and one per serial line on `tracker`;
    /// they stop when `cancel` fires (or the pipeline closes).
    pub fn spawn(self, tracker: &TaskTracker, cancel: &CancellationToken) {
        let n = self.tcp.len().max(1) as u32;
        for (i, spec) in self.tcp.into_iter().enumerate() {
            // Spread the first polls over one interval, so hundreds of devices
            // are not all polled in the same millisecond.
            let stagger = spec.timings.poll_interval / n * i as u32;
            let device = Device::new(spec, self.shared.clone());
            tracker.spawn(run_tcp(device, stagger, cancel.clone()));
        }
        for (line, specs) in self.lines {
            info!(line = %line.name, path = %line.path.display(), units = specs.len(), "Polling a Modbus serial line.");
            let devices = specs
                .into_iter()
                .map(|s| Device::new(s, self.shared.clone()))
                .collect();
            tracker.spawn(run_line(line, devices, self.shared.clone(), cancel.clone()));
        }
    }
}

/// The health component of a device.
pub fn component(device: &str) -> String {
    format!("{MODBUS_PREFIX}{device}")
}

/// Consecutive failures and the online state they imply. Pure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FailureState {
    consecutive: u32,
    offline: bool,
}

/// What a poll's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Nothing worth a log line.
    None,
    /// It was offline and answered.
    Recovered,
    /// It just reached the failure threshold.
    WentOffline,
}

impl FailureState {
    fn success(&mut self) -> Change {
        let was_offline = self.offline;
        *self = Self::default();
        if was_offline {
            Change::Recovered
        } else {
            Change::None
        }
    }

    fn failure(&mut self, offline_after: u32) -> Change {
        self.consecutive = self.consecutive.saturating_add(1);
        if !self.offline && self.consecutive >= offline_after {
            self.offline = true;
            Change::WentOffline
        } else {
            Change::None
        }
    }
}

/// A doubling delay between `min` and `max`. Pure.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// One device at run time: its spec, its failure state, its metric handles.
struct Device {
    spec: DeviceSpec,
    component: String,
    state: FailureState,
    shown: Option<Status>,
    metrics: ModbusDeviceMetrics,
    shared: Arc<Shared>,
}

impl Device {
    fn new(spec: DeviceSpec, shared: Arc<Shared>) -> Self {
        let metrics = shared.metrics.modbus_device(&spec.id);
        metrics.online.set(0);
        Self {
            component: component(&spec.id),
            spec,
            state: FailureState::default(),
            shown: None,
            metrics,
            shared,
        }
    }

    /// Attempts per poll: an offline device gets one, so it costs little until it answers.
    fn attempts(&self) -> u32 {
        if self.state.offline {
            1
        } else {
            1 + self.spec.timings.retries
        }
    }

    /// Records a good poll and sends its reading; false when the pipeline is closed.
    async fn succeed(&mut self, fields: Vec<(FieldName, Value)>, started: Instant) -> bool {
        self.metrics.polls.inc();
        self.shared.received.inc();
        self.shared
            .metrics
            .modbus_poll_seconds
            .observe(started.elapsed().as_secs_f64());
        if self.state.success() == Change::Recovered {
            info!(device = %self.spec.id, "Modbus device answers again.");
        }
        if self.shown != Some(Status::Ok) {
            self.metrics.online.set(1);
            self.shared.health.set(
                &self.component,
                Status::Ok,
                Some(format!(
                    "{}, polled every {:?}",
                    self.spec.describe(),
                    self.spec.timings.poll_interval
                )),
            );
            self.shown = Some(Status::Ok);
        }
        // A poll is not a message: nothing to acknowledge.
        let reading = Reading::new(
            self.spec.site.clone(),
            self.spec.id.clone(),
            self.spec.kind,
            crate::reading::now_ms(),
            fields,
            Source::Modbus,
        );
        self.shared.tx.send(reading).await.is_ok()
    }

    /// Records a failed poll.
    fn fail(&mut self, f: &Failure) {
        self.metrics.fail(f.reason);
        let change = self.state.failure(self.spec.timings.offline_after);
        let n = self.state.consecutive;
        let (status, detail) = if self.state.offline {
            (
                Status::Down,
                format!("offline: {n} failed polls in a row, the last: {}", f.detail),
            )
        } else {
            (
                Status::Degraded,
                format!("{n} failed poll(s) in a row, the last: {}", f.detail),
            )
        };
        if change == Change::WentOffline {
            self.metrics.online.set(0);
            warn!(device = %self.spec.id, reason = f.reason.as_str(), failures = n, error = %f.detail, "Modbus device offline.");
        } else {
            debug!(device = %self.spec.id, reason = f.reason.as_str(), error = %f.detail, "Modbus poll failed.");
        }
        self.shared
            .health
            .set(&self.component, status, Some(detail));
        self.shown = Some(status);
    }
}

/// One TCP device: poll on every tick, keep the connection, reopen it with backoff.
async fn run_tcp(mut dev: Device, stagger: Duration, cancel: CancellationToken) {
    let Endpoint::Tcp(address) = dev.spec.endpoint.clone() else {
        return;
    };
    let mut ticker =
        tokio::time::interval_at(Instant::now() + stagger, dev.spec.timings.poll_interval);
    // A late poll is not made up for with a burst: the device gets its rate, not more.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(dev.shared.reconnect_min, dev.shared.reconnect_max);
    let mut link: Option<Context> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if link.is_none() && retry_at.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            () = cancel.cancelled() => break,
            o = poll(&dev, &mut link, Duration::ZERO, || {
                transport::connect_tcp(&address, dev.spec.unit, dev.spec.timings.timeout)
            }) => o,
        };
        match outcome {
            Ok(fields) => {
                backoff.reset();
                retry_at = None;
                let sent = tokio::select! {
                    () = cancel.cancelled() => break,
                    ok = dev.succeed(fields, started) => ok,
                };
                if !sent {
                    break;
                }
            }
            Err(f) => {
                dev.fail(&f);
                if link.is_none() {
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
            }
        }
    }
    if let Some(mut l) = link {
        let _ = tokio::time::timeout(Duration::from_millis(200), l.disconnect()).await;
    }
}

/// One poll with its retries: open the link when there is none (`open`),
/// read the device's plan, decode. A broken link (timeout, garbled frame,
/// closed connection) is dropped and the poll tried again on a new one —
/// for a serial line that also discards a late answer still on its way; a
/// refusal is final, since asking again gets the same answer.
async fn poll<F, Fut>(
    dev: &Device,
    link: &mut Option<Context>,
    request_gap: Duration,
    mut open: F,
) -> Result<Vec<(FieldName, Value)>, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Context, Failure>>,
{
    let spec = &dev.spec;
    let mut last = None;
    for _ in 0..dev.attempts() {
        let ctx = match link {
            Some(c) => c,
            None => match open().await {
                Ok(c) => link.insert(c),
                Err(f) => {
                    last = Some(f);
                    continue;
                }
            },
        };
        // A serial line carries several units.
        ctx.set_slave(Slave(spec.unit));
        match transport::read_all(ctx, &spec.plan, spec.timings.timeout, request_gap).await {
            Ok(answers) => return decode(&spec.plan, &answers),
            Err(f) if !f.link_broken => return Err(f),
            Err(f) => {
                *link = None;
                last = Some(f);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        Failure::new(ModbusFailure::Transport, "no attempt was made".into(), true)
    }))
}

fn decode(plan: &ReadPlan, answers: &[map::Answer]) -> Result<Vec<(FieldName, Value)>, Failure> {
    plan.decode(answers)
        .map_err(|e| Failure::new(ModbusFailure::Decode, e.to_string(), false))
}

/// One serial line: its units polled one after the other, each on its own schedule.
async fn run_line(
    line: LineSpec,
    mut devices: Vec<Device>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    if devices.is_empty() {
        return;
    }
    let start = Instant::now();
    let mut due: Vec<Instant> = vec![start; devices.len()];
    let mut backoff = Backoff::new(shared.reconnect_min, shared.reconnect_max);
    let mut port: Option<Context> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        // The unit due first; ties go to the lower index, so polling is round-robin under load.
        let Some((i, at)) = due.iter().copied().enumerate().min_by_key(|(_, t)| *t) else {
            return;
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(at) => {}
        }
        let now = Instant::now();
        due[i] = next_due(at, devices[i].spec.timings.poll_interval, now);
        if port.is_none() {
            if retry_at.is_some_and(|t| now < t) {
                continue;
            }
            match transport::open_serial(&line) {
                Ok(p) => port = Some(p),
                Err(f) => {
                    // No line, no unit answers: every one of them has failed.
                    for d in &mut devices {
                        d.fail(&f);
                    }
                    retry_at = Some(now + backoff.next_delay());
                    continue;
                }
            }
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            () = cancel.cancelled() => break,
            o = poll(&devices[i], &mut port, line.request_gap, || {
                std::future::ready(transport::open_serial(&line))
            }) => o,
        };
        match outcome {
            Ok(fields) => {
                backoff.reset();
                retry_at = None;
                let sent = tokio::select! {
                    () = cancel.cancelled() => break,
                    ok = devices[i].succeed(fields, started) => ok,
                };
                if !sent {
                    break;
                }
            }
            Err(f) => devices[i].fail(&f),
        }
    }
}

/// When a unit polled (due at `at`) is due next: on schedule, or a whole
/// interval from `now` when the line fell behind (no burst to catch up).
fn next_due(at: Instant, interval: Duration, now: Instant) -> Instant {
    if at + interval > now {
        at + interval
    } else {
        now + interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_after_n_failures_and_back() {
        let mut s = FailureState::default();
        assert_eq!(s.failure(3), Change::None);
        assert_eq!(s.failure(3), Change::None);
        assert!(!s.offline);
        assert_eq!(s.failure(3), Change::WentOffline);
        assert!(s.offline);
        assert_eq!(s.failure(3), Change::None, "offline is reported once");
        assert_eq!(s.success(), Change::Recovered);
        assert_eq!(s, FailureState::default());
        assert_eq!(s.success(), Change::None);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_line_skips_ahead_instead_of_bursting() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(
            next_due(t0, second, t0 + Duration::from_millis(300)),
            t0 + second
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert_eq!(next_due(t0, second, now), now + second);
    }

    fn config(extra: &str) -> Config {
        let text = format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{extra}");
        Config::from_toml(&text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    #[test]
    fn specs_resolve_identity_maps_and_defaults() {
        let cfg = config(
            r#"
[[devices]]
id = "hood-1"
kind = "kitchen"
site = "yz"

[modbus]
poll_interval = "2s"
[modbus.lines.bus1]
path = "/dev/ttyUSB0"
[modbus.maps.hood]
kind = "kitchen"
registers = [{ field = "duct_temp_c", table = "input", address = 0, type = "i16", scale = 0.1 }]

[[modbus.devices]]
device = "hood-1"
transport = "tcp"
address = "10.0.0.9"
map = "hood"

[[modbus.devices]]
id = "cab-9"
kind = "labcab"
site = "yz"
transport = "rtu"
line = "bus1"
unit = 7
poll_interval = "500ms"
registers = [{ field = "door_open", table = "discrete_input", address = 0, type = "bool" }]
"#,
        );
        let specs = device_specs(&cfg).expect("specs");
        assert_eq!(specs.len(), 2);
        assert_eq!(&*specs[0].id, "hood-1");
        assert_eq!(specs[0].kind, Kind::Kitchen);
        assert_eq!(specs[0].endpoint, Endpoint::Tcp("10.0.0.9:502".into()));
        assert_eq!(specs[0].timings.poll_interval, Duration::from_secs(2));
        assert_eq!(specs[1].endpoint, Endpoint::Rtu("bus1".into()));
        assert_eq!(specs[1].unit, 7);
        assert_eq!(specs[1].timings.poll_interval, Duration::from_millis(500));
        assert_eq!(specs[1].plan.requests().len(), 1);
    }
}
