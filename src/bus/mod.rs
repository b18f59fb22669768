//! School-bus route compliance (校车): the bus fixes of the feed checked
//! against the approved routes, speed limits, stops and timetable.
//!
//! - `routes` — the GeoJSON route file: load, validation, GCJ-02/BD-09 → WGS-84, the local plane.
//! - `trip`   — a trip, its stops and episodes (the report's and the store's shape).
//! - `check`  — the per-bus checker: a pure state machine on the fixes' own
//!   timestamps (reordering, impossible fixes, every episode type, trips).
//! - `store`  — `buses.db` under `data_dir`: trips, checker states, the bad-weather switch.
//! - `report` — `GET /api/reports/bus` as JSON and CSV.
//! - `task`   — the running part: fixes from the router in, alarms to the
//!   rules task (as `Command::Device`), episodes to InfluxDB (`bus_episode`).
//!
//! [`Plan`] is the compiled `[buses]` section with its route file; `check`
//! and the page read it, nobody changes it while the gateway runs.

pub mod check;
pub mod report;
pub mod routes;
pub mod store;
pub mod task;
pub mod trace;
pub mod trip;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{NaiveTime, Timelike};

use crate::config::Config;
use crate::rules::calendar::{Calendar, LocalTime};
use routes::Network;

/// One departure of a vehicle's timetable.
#[derive(Debug, Clone, PartialEq)]
pub struct TripPlan {
    /// The route.
    pub route: String,
    /// `HH:MM`, local.
    pub depart: String,
    /// Minutes after local midnight.
    pub depart_min: u32,
    /// The days it runs (none: every day).
    pub calendar: Option<Calendar>,
}

/// A bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    /// Device id.
    pub id: String,
    /// Seats.
    pub capacity: u32,
    /// Its route.
    pub route: String,
    /// Number plate.
    pub plate: String,
    /// Its departures, by time of day.
    pub trips: Vec<TripPlan>,
}

/// The compiled `[buses]` section.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The routes, stops and zones.
    pub network: Network,
    /// The buses by id.
    pub vehicles: BTreeMap<String, Vehicle>,
    /// The checks' settings.
    pub settings: crate::config::BusesConfig,
    /// Local time and holidays (`[alarms]`).
    pub local: LocalTime,
}

impl Plan {
    /// Compiles `[buses]`, reading its route file; `Ok(None)` without one.
    /// The error lists every problem with its key path.
    pub fn new(cfg: &Config) -> Result<Option<Self>, Vec<(String, String)>> {
        let b = &cfg.buses;
        let mut problems = Vec::new();
        let mut p = |k: String, m: String| problems.push((k, m));
        let Some(file) = &b.routes_file else {
            if !b.vehicles.is_empty() || !b.trips.is_empty() {
                p(
                    "buses.routes_file".into(),
                    "is needed for [[buses.vehicles]] and [[buses.trips]]".into(),
                );
                return Err(problems);
            }
            return Ok(None);
        };
        let network = match std::fs::read_to_string(file) {
            Err(e) => {
                p(
                    "buses.routes_file".into(),
                    format!("cannot read {}: {e}", file.display()),
                );
                None
            }
            Ok(text) if text.len() > 64 << 20 => {
                p("buses.routes_file".into(), "is larger than 64 MiB".into());
                None
            }
            Ok(text) => match Network::parse(&text, b.routes_crs) {
                Ok(n) => Some(n),
                Err(list) => {
                    for m in list {
                        p(
                            "buses.routes_file".into(),
                            format!("{}: {m}", file.display()),
                        );
                    }
                    None
                }
            },
        };
        for (k, v) in [
            ("bad_weather_limit_kmh", b.bad_weather_limit_kmh),
            ("max_jump_kmh", b.max_jump_kmh),
            ("moving_kmh", b.moving_kmh),
        ] {
            if !(v > 0.0 && v <= 1000.0) {
                p(
                    format!("buses.{k}"),
                    "must be above 0 and at most 1000".into(),
                );
            }
        }
        if b.off_route_fixes == 0 {
            p("buses.off_route_fixes".into(), "must be at least 1".into());
        }
        for (k, d) in [
            ("reorder_window", b.reorder_window),
            ("heartbeat", b.heartbeat),
            ("trip_gap", b.trip_gap),
        ] {
            if d.is_zero() {
                p(format!("buses.{k}"), "must be above zero".into());
            }
        }
        if b.reorder_window > std::time::Duration::from_secs(300) {
            p(
                "buses.reorder_window".into(),
                "must be at most 5m: every check waits for it".into(),
            );
        }
        if b.trip_gap <= b.heartbeat {
            p(
                "buses.trip_gap".into(),
                "must be longer than buses.heartbeat".into(),
            );
        }
        let buses: std::collections::HashSet<&str> = cfg
            .devices
            .iter()
            .filter(|d| d.kind == crate::reading::Kind::Bus)
            .map(|d| d.id.as_str())
            .collect();
        let route_known = |r: &str| network.as_ref().is_none_or(|n| n.route(r).is_some());
        let mut vehicles = BTreeMap::new();
        for (i, v) in b.vehicles.iter().enumerate() {
            let at = |k: &str| format!("buses.vehicles[{i}].{k}");
            if !buses.contains(v.id.as_str()) {
                p(
                    at("id"),
                    format!(
                        "`{}` is not a declared bus device ([[devices]] with kind = \"bus\")",
                        v.id
                    ),
                );
            }
            if v.capacity == 0 || v.capacity > 200 {
                p(at("capacity"), "must be 1 to 200 seats".into());
            }
            if !route_known(&v.route) {
                p(
                    at("route"),
                    format!("no route `{}` in the route file", v.route),
                );
            }
            let vehicle = Vehicle {
                id: v.id.clone(),
                capacity: v.capacity,
                route: v.route.clone(),
                plate: v.plate.clone(),
                trips: Vec::new(),
            };
            if vehicles.insert(v.id.clone(), vehicle).is_some() {
                p(at("id"), format!("`{}` is listed twice", v.id));
            }
        }
        for (i, t) in b.trips.iter().enumerate() {
            let at = |k: &str| format!("buses.trips[{i}].{k}");
            if !route_known(&t.route) {
                p(
                    at("route"),
                    format!("no route `{}` in the route file", t.route),
                );
            }
            let depart = NaiveTime::parse_from_str(t.depart.trim(), "%H:%M");
            let Ok(depart) = depart else {
                p(
                    at("depart"),
                    format!("`{}` is not a local time HH:MM", t.depart),
                );
                continue;
            };
            let calendar = match &t.calendar {
                None => None,
                Some(name) => match cfg.calendars.get(name).map(Calendar::new) {
                    None => {
                        p(at("calendar"), format!("no [calendars.{name}]"));
                        continue;
                    }
                    // Its own problems are reported under calendars.
                    Some(Err(_)) => continue,
                    Some(Ok(c)) => Some(c),
                },
            };
            let plan = TripPlan {
                route: t.route.clone(),
                depart: format!("{:02}:{:02}", depart.hour(), depart.minute()),
                depart_min: depart.hour() * 60 + depart.minute(),
                calendar,
            };
            let mut matched = false;
            for v in vehicles.values_mut() {
                let for_it = match &t.vehicle {
                    Some(id) => *id == v.id,
                    None => v.route == t.route,
                };
                if for_it {
                    v.trips.push(plan.clone());
                    matched = true;
                }
            }
            if !matched {
                match &t.vehicle {
                    Some(id) => p(at("vehicle"), format!("no [[buses.vehicles]] `{id}`")),
                    None => p(
                        at("route"),
                        format!("no [[buses.vehicles]] is assigned to route `{}`", t.route),
                    ),
                }
            }
        }
        for v in vehicles.values_mut() {
            v.trips.sort_by_key(|t| t.depart_min);
        }
        let local = LocalTime::new(&cfg.alarms);
        match (network, local, problems.is_empty()) {
            (Some(network), Ok(local), true) => Ok(Some(Self {
                network,
                vehicles,
                settings: b.clone(),
                local,
            })),
            // A bad [alarms] is reported there.
            _ => Err(problems),
        }
    }
}

/// The `[buses]` problems of a configuration, for `check`.
pub fn problems(cfg: &Config) -> Vec<(String, String)> {
    Plan::new(cfg).err().unwrap_or_default()
}
