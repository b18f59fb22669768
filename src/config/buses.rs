//! `[buses]`: the school buses' route file, the vehicles and the timetable,
//! and the settings of the route checks (`bus::check`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::bus::routes::Crs;

/// `[buses]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusesConfig {
    /// The GeoJSON route file (routes, stops, speed zones), relative to the
    /// configuration file. Without it the buses are shown but not checked.
    pub routes_file: Option<PathBuf>,
    /// The datum the route file was drawn in: `wgs84`, `gcj02` (AMap, Tencent) or `bd09` (Baidu).
    #[serde(default)]
    pub routes_crs: Crs,
    /// The buses: each a declared `bus` device.
    #[serde(default)]
    pub vehicles: Vec<VehicleConfig>,
    /// The timetable.
    #[serde(default)]
    pub trips: Vec<TripConfig>,
    /// Consecutive fixes beyond the corridor before a bus is off its route…
    #[serde(default = "default_off_route_fixes")]
    pub off_route_fixes: u32,
    /// …and for at least this long.
    #[serde(default = "default_off_route_after", with = "humantime_serde")]
    pub off_route_after: Duration,
    /// How long a bus must be above the limit before it is speeding.
    #[serde(default = "default_overspeed_after", with = "humantime_serde")]
    pub overspeed_after: Duration,
    /// The limit everywhere while an operator has bad weather switched on
    /// (fog, rain, snow, ice: 20 km/h by the regulation).
    #[serde(default = "default_bad_weather")]
    pub bad_weather_limit_kmh: f64,
    /// A fix implying a faster jump from the last one is impossible (dropped).
    #[serde(default = "default_max_jump")]
    pub max_jump_kmh: f64,
    /// How long (wall clock) each fix waits before it is checked, so that
    /// fixes arriving out of order within it are sorted; a fix older than
    /// one already checked is dropped (`late`).
    #[serde(default = "default_reorder", with = "humantime_serde")]
    pub reorder_window: Duration,
    /// No fix for longer than this during a trip is an episode (`no_fix`).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// No fix for longer than this ends the trip.
    #[serde(default = "default_trip_gap", with = "humantime_serde")]
    pub trip_gap: Duration,
    /// A stop reached later than this after its planned time is an episode (`stop_late`).
    #[serde(default = "default_late_after", with = "humantime_serde")]
    pub late_after: Duration,
    /// Above this speed a bus is moving (door open while moving, trip start).
    #[serde(default = "default_moving")]
    pub moving_kmh: f64,
    /// How long a bus must stand within a stop's radius for the stop to count as served.
    #[serde(default = "default_dwell", with = "humantime_serde")]
    pub stop_dwell: Duration,
    /// A trip may start this long before its departure…
    #[serde(default = "default_early", with = "humantime_serde")]
    pub start_early: Duration,
    /// …and this long after it; a trip not at its last stop this long after
    /// its last planned stop is ended. Driving outside those hours is an episode (`outside_hours`).
    #[serde(default = "default_late_start", with = "humantime_serde")]
    pub start_late: Duration,
}

impl Default for BusesConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every key has a default"))
    }
}

fn default_off_route_fixes() -> u32 {
    3
}
fn default_off_route_after() -> Duration {
    Duration::from_secs(20)
}
fn default_overspeed_after() -> Duration {
    Duration::from_secs(10)
}
fn default_bad_weather() -> f64 {
    20.0
}
fn default_max_jump() -> f64 {
    200.0
}
fn default_reorder() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}
fn default_trip_gap() -> Duration {
    Duration::from_secs(600)
}
fn default_late_after() -> Duration {
    Duration::from_secs(300)
}
fn default_moving() -> f64 {
    5.0
}
fn default_dwell() -> Duration {
    Duration::from_secs(10)
}
fn default_early() -> Duration {
    Duration::from_secs(900)
}
fn default_late_start() -> Duration {
    Duration::from_secs(1800)
}

/// `[[buses.vehicles]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleConfig {
    /// The bus's device id (a declared `bus` device).
    pub id: String,
    /// Its approved seats: more pupils aboard is overload.
    pub capacity: u32,
    /// The route it is assigned to (its limits hold outside trips too).
    pub route: String,
    /// The number plate, for the report.
    #[serde(default)]
    pub plate: String,
}

/// `[[buses.trips]]`: one departure of the timetable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripConfig {
    /// The route.
    pub route: String,
    /// The bus (none: every bus assigned to the route).
    pub vehicle: Option<String>,
    /// Local departure time, `HH:MM`.
    pub depart: String,
    /// A `[calendars.<name>]` whose days the trip runs on (none: every day).
    pub calendar: Option<String>,
}
