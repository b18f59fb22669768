//! The running part of the bus checks: bus readings from the router in, one
//! [`Checker`] per bus, every episode out as an alarm through the rules
//! task (`Command::Device`, so it has the usual lifecycle, ledger and duty
//! alerts), as a `bus_episode` point for InfluxDB, and into `buses.db`.
//!
//! The checkers are saved once a second (those that changed, in one
//! transaction) and at shutdown; a restart continues every trip from there.
//! What arrived in the second before a crash is checked again only if the
//! broker sends it again; the time series and the alarm store have their
//! own acknowledgement path, this store does not hold messages back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::check::{Checker, Ctx, Fix, Out};
use super::store::{BusStore, BusStoreError};
use super::trip::{Episode, EpisodeType, Trip};
use super::Plan;
use crate::alarms::{Command, DeviceAlarm, Severity, Text};
use crate::reading::{now_ms, Reading, Value};
use crate::rules::task::CommandRequest;
use crate::telemetry::{LogLimiter, Metrics};

/// A finished episode for InfluxDB's `bus_episode` measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodePoint {
    /// Site.
    pub site: String,
    /// The bus.
    pub vehicle: String,
    /// Its route.
    pub route: String,
    /// The trip.
    pub trip: String,
    /// The episode (ended).
    pub episode: Episode,
}

/// A bus as the page sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveBus {
    /// The bus.
    pub vehicle: String,
    /// Its number plate.
    pub plate: String,
    /// Its seats.
    pub capacity: u32,
    /// Its assigned route.
    pub route: String,
    /// The last fix checked.
    pub fix: Option<Fix>,
    /// The running trip (stops, episodes so far).
    pub trip: Option<Trip>,
    /// Types of the episodes going on now.
    pub open: Vec<&'static str>,
}

/// A switch of the bad-weather limit: `(on, by)`, answered once stored.
pub type WeatherRequest = (bool, String, oneshot::Sender<Result<(), String>>);

/// What the web holds of the bus checks.
#[derive(Debug, Clone)]
pub struct BusHandle {
    /// The routes and timetable.
    pub plan: Arc<Plan>,
    /// The buses now, refreshed once a second.
    pub live: Arc<RwLock<Vec<LiveBus>>>,
    /// The bad-weather switch: `(on, by)`; answered once stored.
    pub weather: mpsc::Sender<WeatherRequest>,
    /// Whether bad weather is switched on now.
    pub bad_weather: Arc<std::sync::atomic::AtomicBool>,
    /// `buses.db`, which the reports read.
    pub store: std::path::PathBuf,
}

/// Why the bus checks cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The store.
    #[error(transparent)]
    Store(#[from] BusStoreError),
    /// The `[buses]` section.
    #[error("[buses]: {0}")]
    Config(String),
}

/// The task.
pub struct BusTask {
    plan: Arc<Plan>,
    store: BusStore,
    checkers: BTreeMap<String, Checker>,
    dirty: BTreeSet<String>,
    weather: Vec<(i64, bool)>,
    weather_rx: mpsc::Receiver<WeatherRequest>,
    /// Bus readings; the router holds the other end.
    fixes: mpsc::Receiver<Arc<Reading>>,
    /// Alarm commands; the rules task holds the other end.
    commands: mpsc::Sender<CommandRequest>,
    /// Finished episodes; the sink holds the other end.
    points: mpsc::Sender<Arc<EpisodePoint>>,
    site: BTreeMap<String, String>,
    handle: BusHandle,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for BusTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusTask")
            .field("buses", &self.checkers.len())
            .finish()
    }
}

/// The most weather switches kept in memory (each fix looks its time up).
const WEATHER_KEPT: usize = 256;

impl BusTask {
    /// Builds the task from `[buses]`; `Ok(None)` when no route file is configured.
    pub fn new(
        cfg: &crate::config::Config,
        fixes: mpsc::Receiver<Arc<Reading>>,
        commands: mpsc::Sender<CommandRequest>,
        points: mpsc::Sender<Arc<EpisodePoint>>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<(Self, BusHandle)>, BusError> {
        let plan = match Plan::new(cfg) {
            Ok(Some(p)) => Arc::new(p),
            Ok(None) => return Ok(None),
            Err(p) => {
                return Err(BusError::Config(
                    p.iter()
                        .map(|(k, m)| format!("{k}: {m}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ))
            }
        };
        let file = super::store::path(&cfg.gateway.data_dir);
        let store = BusStore::open(&file)?;
        let mut checkers: BTreeMap<String, Checker> = plan
            .vehicles
            .keys()
            .map(|v| (v.clone(), Checker::new(v)))
            .collect();
        let mut restored = 0;
        for c in store.load_checkers()? {
            if let Some(slot) = checkers.get_mut(&c.vehicle) {
                restored += usize::from(c.trip.is_some());
                *slot = c;
            }
        }
        if restored > 0 {
            info!(
                trips = restored,
                "Running bus trips restored from the store."
            );
        }
        let weather = store.weather(WEATHER_KEPT)?;
        let site = cfg
            .devices
            .iter()
            .filter(|d| d.kind == crate::reading::Kind::Bus)
            .map(|d| (d.id.clone(), d.site.clone()))
            .collect();
        let (wtx, weather_rx) = mpsc::channel(8);
        let handle = BusHandle {
            plan: plan.clone(),
            live: Arc::default(),
            weather: wtx,
            bad_weather: Arc::new(weather.last().is_some_and(|w| w.1).into()),
            store: file,
        };
        let task = Self {
            plan,
            store,
            checkers,
            dirty: BTreeSet::new(),
            weather,
            weather_rx,
            fixes,
            commands,
            points,
            site,
            handle: handle.clone(),
            metrics,
            clock: Arc::new(now_ms),
        };
        task.publish_live();
        Ok(Some((task, handle)))
    }

    /// Replaces the wall clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until `cancel`, or until the router drops its sender; saves at the end.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let log = LogLimiter::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                r = self.fixes.recv() => match r {
                    Some(r) => self.reading(&r, &log).await,
                    None => break,
                },
                Some((on, by, answer)) = self.weather_rx.recv() => {
                    let _ = answer.send(self.set_weather(on, &by));
                }
                _ = tick.tick() => self.tick().await,
            }
        }
        self.save();
    }

    fn set_weather(&mut self, on: bool, by: &str) -> Result<(), String> {
        let at = (self.clock)();
        self.store
            .set_weather(at, on, by)
            .map_err(|e| e.to_string())?;
        self.weather.push((at, on));
        if self.weather.len() > WEATHER_KEPT {
            self.weather.remove(0);
        }
        self.handle
            .bad_weather
            .store(on, std::sync::atomic::Ordering::Relaxed);
        info!(on, by, "Bad-weather speed limit switched.");
        Ok(())
    }

    async fn reading(&mut self, r: &Reading, log: &LogLimiter) {
        let Some(checker) = self.checkers.get_mut(&*r.device) else {
            // A bus not in [[buses.vehicles]]: shown, not checked.
            self.metrics.bus_unchecked.inc();
            if let Some(held) = log.check("unchecked") {
                warn!(device = %r.device, held_back = held, "A bus that is not in [[buses.vehicles]] reports: it is not checked.");
            }
            return;
        };
        let f = |n: &str| r.field(n).and_then(Value::as_f64);
        let fix = Fix {
            ts: r.ts_ms,
            lat: f("lat").unwrap_or(f64::NAN),
            lon: f("lon").unwrap_or(f64::NAN),
            speed_kmh: f("speed_kmh").unwrap_or(0.0),
            passengers: r.field("passengers").and_then(|v| match v {
                Value::I64(n) => Some(*n),
                Value::F64(x) => Some(*x as i64),
                _ => None,
            }),
            door_open: matches!(r.field("door_open"), Some(Value::Bool(true))),
        };
        let now = (self.clock)();
        let ctx = Ctx {
            plan: &self.plan,
            weather: &self.weather,
        };
        let mut out = Vec::new();
        checker.push(fix, now, &ctx, &mut out);
        let vehicle = r.device.to_string();
        self.dirty.insert(vehicle.clone());
        self.emit(&vehicle, out).await;
    }

    async fn tick(&mut self) {
        let now = (self.clock)();
        let ctx = Ctx {
            plan: &self.plan,
            weather: &self.weather,
        };
        let mut all = Vec::new();
        for (v, c) in &mut self.checkers {
            let mut out = Vec::new();
            c.tick(now, &ctx, &mut out);
            if !out.is_empty() {
                self.dirty.insert(v.clone());
                all.push((v.clone(), out));
            }
        }
        for (v, out) in all {
            self.emit(&v, out).await;
        }
        self.save();
        self.publish_live();
    }

    /// Saves the changed checkers; their finished trips are then in the store.
    fn save(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let list: Vec<&Checker> = self
            .dirty
            .iter()
            .filter_map(|v| self.checkers.get(v))
            .collect();
        match self.store.save(&list) {
            Ok(()) => {
                for v in std::mem::take(&mut self.dirty) {
                    if let Some(c) = self.checkers.get_mut(&v) {
                        c.finished.clear();
                    }
                }
            }
            // Kept dirty: tried again next second, the state stays in memory.
            Err(e) => {
                self.metrics.bus_store_errors.inc();
                error!(error = %e, "Cannot save the bus trips; trying again.");
            }
        }
    }

    fn publish_live(&self) {
        let live: Vec<LiveBus> = self
            .checkers
            .values()
            .map(|c| {
                let v = self.plan.vehicles.get(&c.vehicle);
                let open = c
                    .trip
                    .iter()
                    .chain(&c.extra)
                    .flat_map(|t| &t.episodes)
                    .filter(|e| e.end.is_none())
                    .map(|e| e.kind.as_str())
                    .collect();
                LiveBus {
                    vehicle: c.vehicle.clone(),
                    plate: v.map(|v| v.plate.clone()).unwrap_or_default(),
                    capacity: v.map_or(0, |v| v.capacity),
                    route: v.map(|v| v.route.clone()).unwrap_or_default(),
                    fix: c.last_fix().copied(),
                    trip: c.trip.clone(),
                    open,
                }
            })
            .collect();
        if let Ok(mut l) = self.handle.live.write() {
            *l = live;
        }
    }

    /// Turns the checker's answers into alarms, points and counts.
    async fn emit(&mut self, vehicle: &str, out: Vec<Out>) {
        let site = self.site.get(vehicle).cloned().unwrap_or_default();
        let route = self
            .checkers
            .get(vehicle)
            .and_then(|c| c.trip.as_ref().or(c.extra.as_ref()))
            .map(|t| t.route.clone())
            .or_else(|| self.plan.vehicles.get(vehicle).map(|v| v.route.clone()))
            .unwrap_or_default();
        for o in out {
            let (alarm, point) = match o {
                Out::Dropped(reason) => {
                    self.metrics.bus_fix_dropped(reason);
                    continue;
                }
                Out::Began { trip, episode } => (
                    alarm(&site, vehicle, &trip, &episode, true, episode.start),
                    None,
                ),
                Out::Ended { kind, at, episode } => {
                    let e = episode.clone().unwrap_or_else(|| Episode::new(kind, at));
                    let point = episode.map(|e| EpisodePoint {
                        site: site.clone(),
                        vehicle: vehicle.to_owned(),
                        route: route.clone(),
                        trip: String::new(),
                        episode: e,
                    });
                    (alarm(&site, vehicle, "", &e, false, at), point)
                }
            };
            let (tx, _rx) = oneshot::channel();
            // The rules task persists it before anyone hears of it; a full
            // queue makes this bus's checks wait, never drops an alarm.
            if self
                .commands
                .send((Command::Device(alarm), tx))
                .await
                .is_err()
            {
                warn!("The alarm engine is gone; a bus alarm was not raised.");
            }
            if let Some(p) = point {
                let _ = self.points.send(Arc::new(p)).await;
            }
        }
    }
}

/// The alarm of an episode.
fn alarm(site: &str, vehicle: &str, trip: &str, e: &Episode, active: bool, at: i64) -> DeviceAlarm {
    let (zh, en) = e.kind.names();
    let severity = match e.kind {
        EpisodeType::Overspeed | EpisodeType::Overload => Severity::High,
        EpisodeType::DoorOpenMoving | EpisodeType::OffRoute | EpisodeType::NoFix => {
            Severity::Medium
        }
        _ => Severity::Low,
    };
    let mut zh_more = String::new();
    let mut en_more = String::new();
    if let (Some(p), Some(l)) = (e.peak_kmh, e.limit_kmh) {
        let zone = e
            .zone
            .as_deref()
            .map(|z| format!(" ({z})"))
            .unwrap_or_default();
        zh_more = format!("：{p:.0} km/h，限速 {l:.0} km/h{zone}");
        en_more = format!(": {p:.0} km/h on a {l:.0} km/h limit{zone}");
    } else if let Some(d) = e.max_distance_m {
        zh_more = format!("：偏离 {d:.0} 米");
        en_more = format!(": {d:.0} m from the route");
    } else if let Some(n) = e.passengers {
        zh_more = format!("：车上 {n} 人");
        en_more = format!(": {n} aboard");
    } else if let Some(s) = &e.stop {
        zh_more = format!("：{s}");
        en_more = format!(": {s}");
    }
    let mut detail = vec![("type".to_owned(), e.kind.as_str().to_owned())];
    if !trip.is_empty() {
        detail.push(("trip".into(), trip.to_owned()));
    }
    if let Some(s) = &e.stop {
        detail.push(("stop".into(), s.clone()));
    }
    if let Some(z) = &e.zone {
        detail.push(("zone".into(), z.clone()));
    }
    DeviceAlarm {
        rule: e.kind.rule(),
        site: site.to_owned(),
        device: vehicle.to_owned(),
        active,
        severity,
        name: Text::two(format!("校车{zh}"), format!("School bus {en}")),
        message: Text::two(
            format!("校车 {vehicle} {zh}{zh_more}"),
            format!("School bus {vehicle}: {en}{en_more}"),
        ),
        value: e.value(),
        at,
        detail,
    }
}
