//! The day's route-compliance report (`GET /api/reports/bus`): JSON in the
//! shape INTERFACE.md fixes, and CSV (one row per episode, or per trip
//! without one) for the education bureau's spreadsheet, its cells
//! neutralised like the alarm ledger's.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::trip::Trip;

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The local date of departure.
    pub date: String,
    /// Its trips.
    pub trips: Vec<TripReport>,
}

/// One trip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TripReport {
    /// The bus.
    pub vehicle: String,
    /// The route.
    pub route: String,
    /// Planned departure (null: driving outside the timetable).
    pub depart_planned: Option<String>,
    /// First fix.
    pub started_at: String,
    /// Last fix (null: still running).
    pub ended_at: Option<String>,
    /// Fixes checked.
    pub fixes: u64,
    /// Fixes dropped as impossible.
    pub dropped_fixes: u64,
    /// Stops.
    pub stops: Vec<StopReport>,
    /// Episodes.
    pub episodes: Vec<EpisodeReport>,
}

/// One stop.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopReport {
    /// Its name.
    pub stop: String,
    /// Planned time.
    pub planned: Option<String>,
    /// Arrival.
    pub actual: Option<String>,
    /// Seconds late (negative: early).
    pub late_s: Option<i64>,
    /// Passed without stopping.
    pub skipped: bool,
}

/// One episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeReport {
    /// `off_route`, `overspeed`, …
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Began.
    pub start: String,
    /// Ended (null: going on).
    pub end: Option<String>,
    /// Seconds.
    pub duration_s: f64,
    /// Fastest (overspeed, door open while moving).
    pub peak_kmh: Option<f64>,
    /// The limit in force (overspeed).
    pub limit_kmh: Option<f64>,
    /// The zone that set it.
    pub zone: Option<String>,
    /// Farthest from the route (off route).
    pub max_distance_m: Option<f64>,
    /// The stop (skipped, late).
    pub stop: Option<String>,
}

/// RFC 3339 UTC, milliseconds.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Report {
    /// The report of `trips` (already those of `date`). `now` is the end of
    /// episodes still going on.
    pub fn new(date: &str, trips: &[Trip], now: i64) -> Self {
        Self {
            date: date.to_owned(),
            trips: trips
                .iter()
                .map(|t| TripReport {
                    vehicle: t.vehicle.clone(),
                    route: t.route.clone(),
                    depart_planned: t.depart_planned.map(rfc3339),
                    started_at: rfc3339(t.started_at),
                    ended_at: t.ended_at.map(rfc3339),
                    fixes: t.fixes,
                    dropped_fixes: t.dropped_fixes,
                    stops: t
                        .stops
                        .iter()
                        .map(|s| StopReport {
                            stop: s.stop.clone(),
                            planned: s.planned.map(rfc3339),
                            actual: s.actual.map(rfc3339),
                            late_s: s.late_s(),
                            skipped: s.skipped,
                        })
                        .collect(),
                    episodes: t
                        .episodes
                        .iter()
                        .map(|e| EpisodeReport {
                            kind: e.kind.as_str(),
                            start: rfc3339(e.start),
                            end: e.end.map(rfc3339),
                            duration_s: e.duration_s(now),
                            peak_kmh: e.peak_kmh,
                            limit_kmh: e.limit_kmh,
                            zone: e.zone.clone(),
                            max_distance_m: e.max_distance_m,
                            stop: e.stop.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The CSV: one row per episode (a trip without any has one row with
    /// the episode columns empty), with the trip's figures on each row.
    pub fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "date",
            "vehicle",
            "route",
            "depart_planned",
            "started_at",
            "ended_at",
            "fixes",
            "dropped_fixes",
            "stops_planned",
            "stops_served",
            "stops_skipped",
            "episode",
            "start",
            "end",
            "duration_s",
            "peak_kmh",
            "limit_kmh",
            "zone",
            "max_distance_m",
            "stop",
        ])?;
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for t in &self.trips {
            let head = [
                self.date.clone(),
                t.vehicle.clone(),
                t.route.clone(),
                opt(&t.depart_planned),
                t.started_at.clone(),
                opt(&t.ended_at),
                t.fixes.to_string(),
                t.dropped_fixes.to_string(),
                t.stops.len().to_string(),
                t.stops
                    .iter()
                    .filter(|s| s.actual.is_some())
                    .count()
                    .to_string(),
                t.stops.iter().filter(|s| s.skipped).count().to_string(),
            ];
            let rows: Vec<[String; 9]> = if t.episodes.is_empty() {
                vec![Default::default()]
            } else {
                t.episodes
                    .iter()
                    .map(|e| {
                        [
                            e.kind.to_owned(),
                            e.start.clone(),
                            opt(&e.end),
                            e.duration_s.to_string(),
                            num(e.peak_kmh),
                            num(e.limit_kmh),
                            opt(&e.zone),
                            num(e.max_distance_m),
                            opt(&e.stop),
                        ]
                    })
                    .collect()
            };
            for r in rows {
                w.write_record(
                    head.iter()
                        .chain(r.iter())
                        .map(|c| crate::alarms::ledger::cell(c)),
                )?;
            }
        }
        w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    }
}
