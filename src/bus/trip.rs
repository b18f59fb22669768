//! A trip and what happened on it: its fixes, its stops with planned and
//! actual times, and its episodes. The checker writes them; the store keeps
//! them (as JSON, so a restart mid-trip continues it); the report reads them.
//! All times are the bus's own (the fixes' timestamps), epoch ms.

use serde::{Deserialize, Serialize};

/// What kind of episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeType {
    /// Farther than the corridor from the route.
    OffRoute,
    /// Above the limit in force.
    Overspeed,
    /// More pupils aboard than seats.
    Overload,
    /// The door open while moving.
    DoorOpenMoving,
    /// A stop passed without stopping.
    StopSkipped,
    /// A stop reached later than allowed.
    StopLate,
    /// No fix for longer than the heartbeat during a trip.
    NoFix,
    /// Driving outside the timetable's hours.
    OutsideHours,
}

impl EpisodeType {
    /// Every type.
    pub const ALL: [EpisodeType; 8] = [
        EpisodeType::OffRoute,
        EpisodeType::Overspeed,
        EpisodeType::Overload,
        EpisodeType::DoorOpenMoving,
        EpisodeType::StopSkipped,
        EpisodeType::StopLate,
        EpisodeType::NoFix,
        EpisodeType::OutsideHours,
    ];

    /// Its name in the report (`off_route`).
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeType::OffRoute => "off_route",
            EpisodeType::Overspeed => "overspeed",
            EpisodeType::Overload => "overload",
            EpisodeType::DoorOpenMoving => "door_open_moving",
            EpisodeType::StopSkipped => "stop_skipped",
            EpisodeType::StopLate => "stop_late",
            EpisodeType::NoFix => "no_fix",
            EpisodeType::OutsideHours => "outside_hours",
        }
    }

    /// Its alarm's rule id (`bus-off_route`).
    pub fn rule(self) -> String {
        format!("bus-{}", self.as_str())
    }

    /// Chinese and English names.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            EpisodeType::OffRoute => ("偏离路线", "off route"),
            EpisodeType::Overspeed => ("超速", "speeding"),
            EpisodeType::Overload => ("超员", "overloaded"),
            EpisodeType::DoorOpenMoving => ("行驶中开门", "door open while moving"),
            EpisodeType::StopSkipped => ("漏站", "stop skipped"),
            EpisodeType::StopLate => ("到站晚点", "late at a stop"),
            EpisodeType::NoFix => ("定位中断", "no position fix"),
            EpisodeType::OutsideHours => ("非运营时段行驶", "driving outside trip hours"),
        }
    }
}

/// One episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: EpisodeType,
    /// When it began, epoch ms.
    pub start: i64,
    /// When it ended (none: still going on).
    pub end: Option<i64>,
    /// Fastest speed (overspeed), km/h.
    pub peak_kmh: Option<f64>,
    /// The limit in force (overspeed), km/h.
    pub limit_kmh: Option<f64>,
    /// The speed zone that set the limit.
    pub zone: Option<String>,
    /// Farthest from the route (off route), metres.
    pub max_distance_m: Option<f64>,
    /// The stop (skipped, late).
    pub stop: Option<String>,
    /// Most pupils aboard (overload).
    pub passengers: Option<i64>,
}

impl Episode {
    /// A new episode of `kind` from `start`.
    pub fn new(kind: EpisodeType, start: i64) -> Self {
        Self {
            kind,
            start,
            end: None,
            peak_kmh: None,
            limit_kmh: None,
            zone: None,
            max_distance_m: None,
            stop: None,
            passengers: None,
        }
    }

    /// Seconds from start to end (to `now` while it goes on).
    pub fn duration_s(&self, now: i64) -> f64 {
        (self.end.unwrap_or(now) - self.start).max(0) as f64 / 1000.0
    }

    /// The figure its alarm carries (peak speed, farthest distance, pupils, lateness).
    pub fn value(&self) -> Option<f64> {
        self.peak_kmh
            .or(self.max_distance_m)
            .or(self.passengers.map(|p| p as f64))
            .or_else(|| {
                (self.kind == EpisodeType::StopLate || self.kind == EpisodeType::NoFix)
                    .then(|| self.duration_s(self.start))
            })
    }
}

/// A stop of a trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopVisit {
    /// Its name.
    pub stop: String,
    /// Planned, epoch ms (none on an unscheduled run).
    pub planned: Option<i64>,
    /// When the bus stood there (its arrival), epoch ms.
    pub actual: Option<i64>,
    /// Passed without stopping.
    pub skipped: bool,
    /// Standing within the radius since (the dwell being timed).
    #[serde(default)]
    pub dwell_since: Option<i64>,
}

impl StopVisit {
    /// Seconds late (negative: early).
    pub fn late_s(&self) -> Option<i64> {
        Some((self.actual? - self.planned?) / 1000)
    }

    /// Whether it is still to come.
    pub fn pending(&self) -> bool {
        self.actual.is_none() && !self.skipped
    }
}

/// A trip (or, with no `depart_planned`, the bus's driving outside the
/// timetable on that day, kept so its episodes are reported too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    /// `<vehicle>/<date>/<HH:MM>` (`-` for the unscheduled record).
    pub id: String,
    /// The bus.
    pub vehicle: String,
    /// The route.
    pub route: String,
    /// The local date of departure, `YYYY-MM-DD`.
    pub date: String,
    /// The planned departure, epoch ms.
    pub depart_planned: Option<i64>,
    /// The first fix of the trip.
    pub started_at: i64,
    /// The last fix, once the trip is over.
    pub ended_at: Option<i64>,
    /// Fixes checked.
    pub fixes: u64,
    /// Fixes dropped as impossible.
    pub dropped_fixes: u64,
    /// Its stops in order.
    pub stops: Vec<StopVisit>,
    /// What happened.
    pub episodes: Vec<Episode>,
    /// Metres along the route of the last fix.
    #[serde(default)]
    pub progress_m: f64,
    /// The last fix's time.
    #[serde(default)]
    pub last_fix: i64,
}

impl Trip {
    /// Whether this is the record of driving outside the timetable.
    pub fn unscheduled(&self) -> bool {
        self.depart_planned.is_none()
    }
}
