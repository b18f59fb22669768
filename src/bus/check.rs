//! The per-bus checker: a pure state machine, fed the bus's fixes (with the
//! wall-clock time they arrived) and ticks of the wall clock, that answers
//! with what began, what ended and what was dropped. No I/O, no spawning.
//!
//! Every verdict is taken on the fix's own timestamp, so a replayed, late or
//! out-of-order batch (a terminal uploading its blind-area backlog) gives
//! the same trips and episodes as the same fixes live:
//!
//! - each fix waits `reorder_window` (wall clock) in a buffer kept in time
//!   order, so a burst delivered in any order (a backlog batch, a replay) is
//!   checked sorted; a fix older than the last one checked is dropped
//!   (`late`, or `duplicate` at the same time);
//! - (0,0), out of range and a jump faster than `max_jump_kmh` are dropped
//!   (a second fix that agrees with a dropped jump is believed: the bus was
//!   moved, the old position was the wrong one);
//! - the wall clock only decides when to stop waiting (the reorder buffer,
//!   a live `no_fix` alarm while the signal is gone, a trip given up).
//!
//! Debounced episodes (off route: `off_route_fixes` fixes and
//! `off_route_after`; overspeed: `overspeed_after`) begin at the first fix of
//! the condition, so their start is when it really began.

use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use geo::{Coord, Distance, Euclidean};
use serde::{Deserialize, Serialize};

use super::routes::Route;
use super::trip::{Episode, EpisodeType, StopVisit, Trip};
use super::{Plan, Vehicle};

/// One position report of a bus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// The bus's time, epoch ms.
    pub ts: i64,
    /// WGS-84.
    pub lat: f64,
    /// WGS-84.
    pub lon: f64,
    /// km/h.
    pub speed_kmh: f64,
    /// Pupils aboard, when the terminal counts them.
    pub passengers: Option<i64>,
    /// Whether the door is open.
    pub door_open: bool,
}

/// Why a fix was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DropReason {
    /// Latitude and longitude 0 (a terminal without a fix).
    Zero,
    /// Not a latitude/longitude, or a speed out of range.
    Range,
    /// Farther from the last fix than the bus can drive.
    Jump,
    /// The same time as a fix already seen.
    Duplicate,
    /// Older than the last fix checked, beyond the reorder window.
    Late,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 5] = [
        DropReason::Zero,
        DropReason::Range,
        DropReason::Jump,
        DropReason::Duplicate,
        DropReason::Late,
    ];

    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Zero => "zero",
            DropReason::Range => "range",
            DropReason::Jump => "jump",
            DropReason::Duplicate => "duplicate",
            DropReason::Late => "late",
        }
    }
}

/// What the checker tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// An episode began: its alarm is raised.
    Began {
        /// The trip holding it.
        trip: String,
        /// The episode so far.
        episode: Episode,
    },
    /// An episode ended (or, without `episode`, a live `no_fix` alarm is
    /// withdrawn because the missing fixes arrived after all): its alarm clears.
    Ended {
        /// Its type.
        kind: EpisodeType,
        /// When, the bus's time.
        at: i64,
        /// The finished episode.
        episode: Option<Episode>,
    },
    /// A fix was dropped.
    Dropped(DropReason),
}

/// What the checker works with besides the fixes.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The routes and the timetable.
    pub plan: &'a Plan,
    /// The bad-weather switch's changes, `(epoch ms, on)`, in time order.
    pub weather: &'a [(i64, bool)],
}

impl Ctx<'_> {
    fn bad_weather_at(&self, ts: i64) -> bool {
        self.weather
            .iter()
            .rev()
            .find(|(at, _)| *at <= ts)
            .is_some_and(|(_, on)| *on)
    }
}

/// A condition seen but not yet long enough to be an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Candidate {
    since: i64,
    n: u32,
    peak: f64,
    limit: f64,
    zone: Option<String>,
}

/// One debounced condition: its candidate, or the index of its open
/// episode in the holding trip.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Watch {
    cand: Option<Candidate>,
    open: Option<usize>,
}

/// Trips remembered as already run (so one is not started twice).
const STARTED_MAX: usize = 64;
/// Fixes held in the reorder buffer at most (a terminal dumping a huge
/// backlog in one burst is checked as it comes).
const PENDING_MAX: usize = 4096;
/// Metres a fix must move before a jump counts (GPS noise at a standstill).
const JUMP_MIN_M: f64 = 100.0;
/// Standing this long ends an `outside_hours` episode.
const PARKED_MS: i64 = 120_000;

/// One bus's checker; serialisable, so a restart continues where it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checker {
    /// The bus.
    pub vehicle: String,
    /// Fixes waiting to be checked, in time order, with their arrival.
    pending: Vec<(Fix, i64, Option<DropReason>)>,
    last_arrival: i64,
    last: Option<Fix>,
    jump: Option<Fix>,
    /// The running trip.
    pub trip: Option<Trip>,
    /// The day's record of driving outside the timetable (once something happened).
    pub extra: Option<Trip>,
    /// Trips that ended since the caller last took them.
    #[serde(default)]
    pub finished: Vec<Trip>,
    started: Vec<String>,
    off_route: Watch,
    overspeed: Watch,
    overload: Watch,
    door: Watch,
    outside: Watch,
    parked_since: Option<i64>,
    no_fix_open: Option<usize>,
}

fn local(plan: &Plan, ts: i64) -> DateTime<FixedOffset> {
    DateTime::<Utc>::from_timestamp_millis(ts)
        .unwrap_or_default()
        .with_timezone(&plan.local.offset())
}

/// The epoch ms of `minute` after local midnight of `ts`'s local date, `days` later.
fn local_minute(plan: &Plan, ts: i64, days: i64, minute: u32) -> i64 {
    let date = local(plan, ts).date_naive() + chrono::Duration::days(days);
    let t = NaiveTime::from_hms_opt(minute / 60, minute % 60, 0).unwrap_or_default();
    date.and_time(t)
        .and_local_timezone(plan.local.offset())
        .single()
        .map_or(ts, |d| d.timestamp_millis())
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Checker {
    /// A checker for `vehicle`.
    pub fn new(vehicle: &str) -> Self {
        Self {
            vehicle: vehicle.to_owned(),
            ..Self::default()
        }
    }

    /// Fixes waiting in the reorder buffer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The last fix checked.
    pub fn last_fix(&self) -> Option<&Fix> {
        self.last.as_ref()
    }

    /// Takes a fix that arrived at `now` (wall clock, epoch ms).
    pub fn push(&mut self, f: Fix, now: i64, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        self.last_arrival = now;
        // Duplicates and stragglers depend on arrival: judged now.
        if self.last.is_some_and(|l| f.ts == l.ts) || self.pending.iter().any(|p| p.0.ts == f.ts) {
            self.dropped(DropReason::Duplicate, out);
            return;
        }
        if self.last.is_some_and(|l| f.ts < l.ts) {
            self.dropped(DropReason::Late, out);
            return;
        }
        // An impossible fix is counted in its place in time (the trip it
        // falls in), like every other verdict.
        let invalid = if !(f.lat.is_finite() && f.lon.is_finite()) {
            Some(DropReason::Range)
        } else if f.lat.abs() < 1e-6 && f.lon.abs() < 1e-6 {
            Some(DropReason::Zero)
        } else if f.lat.abs() > 90.0 || f.lon.abs() > 180.0 || !(0.0..=400.0).contains(&f.speed_kmh)
        {
            Some(DropReason::Range)
        } else {
            None
        };
        let at = self.pending.partition_point(|p| p.0.ts < f.ts);
        self.pending.insert(at, (f, now, invalid));
        self.ripe(now, ctx, out);
    }

    /// Checks, in time order, the fixes that have waited `reorder_window`
    /// (and, past `PENDING_MAX`, the oldest regardless).
    fn ripe(&mut self, now: i64, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        let window = ms(ctx.plan.settings.reorder_window);
        // Everything up to the newest fix that is ripe: an older one that
        // arrived later is still sorted in before it.
        let n = self
            .pending
            .iter()
            .rposition(|(_, arrived, _)| now - arrived >= window)
            .map_or(0, |i| i + 1)
            .max(self.pending.len().saturating_sub(PENDING_MAX));
        let ready: Vec<_> = self.pending.drain(..n).collect();
        for (f, _, invalid) in ready {
            match invalid {
                Some(reason) => self.dropped(reason, out),
                None => self.process(f, ctx, out),
            }
        }
    }

    /// The wall clock moved on to `now`: checks what has waited long
    /// enough, and notices silence.
    pub fn tick(&mut self, now: i64, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        let s = &ctx.plan.settings;
        let quiet = now - self.last_arrival;
        self.ripe(now, ctx, out);
        let Some(last) = self.last else { return };
        if self.trip.is_none() || !self.pending.is_empty() {
            return;
        }
        if quiet > ms(s.trip_gap) {
            self.gap_ends_trip(last.ts, ctx, out);
        } else if quiet > ms(s.heartbeat) && self.no_fix_open.is_none() {
            // Live: the signal is gone now; the episode's end is the fix that comes back.
            let trip = self.trip.as_mut().map(|t| {
                t.episodes.push(Episode::new(EpisodeType::NoFix, last.ts));
                (t.id.clone(), t.episodes.len() - 1)
            });
            if let Some((id, i)) = trip {
                self.no_fix_open = Some(i);
                out.push(Out::Began {
                    trip: id,
                    episode: Episode::new(EpisodeType::NoFix, last.ts),
                });
            }
        }
    }

    fn dropped(&mut self, reason: DropReason, out: &mut Vec<Out>) {
        out.push(Out::Dropped(reason));
        if let Some(t) = self.trip.as_mut().or(self.extra.as_mut()) {
            t.dropped_fixes += 1;
        }
    }

    fn vehicle<'p>(&self, ctx: &Ctx<'p>) -> Option<&'p Vehicle> {
        ctx.plan.vehicles.get(&self.vehicle)
    }

    /// The trip holding episodes now: the running trip, else the day's extra record.
    fn holder(&mut self, ts: i64, ctx: &Ctx<'_>) -> &mut Trip {
        if self.trip.is_some() {
            return self.trip.get_or_insert_with(|| unreachable!());
        }
        let date = local(ctx.plan, ts).format("%Y-%m-%d").to_string();
        if self.extra.as_ref().is_some_and(|e| e.date != date) {
            if let Some(mut old) = self.extra.take() {
                old.ended_at = Some(old.last_fix);
                self.finished.push(old);
            }
        }
        let route = self
            .vehicle(ctx)
            .map(|v| v.route.clone())
            .unwrap_or_default();
        let vehicle = self.vehicle.clone();
        self.extra.get_or_insert_with(|| Trip {
            id: format!("{vehicle}/{date}/-"),
            vehicle,
            route,
            date,
            depart_planned: None,
            started_at: ts,
            ended_at: None,
            fixes: 0,
            dropped_fixes: 0,
            stops: Vec::new(),
            episodes: Vec::new(),
            progress_m: 0.0,
            last_fix: ts,
        })
    }

    /// Ends every open episode of the holding trip at `at` (a trip begins or ends).
    fn close_all(&mut self, at: i64, out: &mut Vec<Out>) {
        let watches = [
            self.off_route.open.take(),
            self.overspeed.open.take(),
            self.overload.open.take(),
            self.door.open.take(),
            self.outside.open.take(),
            self.no_fix_open.take(),
        ];
        for w in [
            &mut self.off_route,
            &mut self.overspeed,
            &mut self.overload,
            &mut self.door,
            &mut self.outside,
        ] {
            w.cand = None;
        }
        let Some(t) = self.trip.as_mut().or(self.extra.as_mut()) else {
            return;
        };
        for i in watches.into_iter().flatten() {
            if let Some(e) = t.episodes.get_mut(i) {
                if e.end.is_none() {
                    e.end = Some(at.max(e.start));
                    out.push(Out::Ended {
                        kind: e.kind,
                        at: at.max(e.start),
                        episode: Some(e.clone()),
                    });
                }
            }
        }
    }

    fn gap_ends_trip(&mut self, last_ts: i64, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        let end = last_ts + ms(ctx.plan.settings.trip_gap);
        match self.no_fix_open {
            Some(_) => {}
            None => {
                if let Some(t) = self.trip.as_mut() {
                    t.episodes.push(Episode::new(EpisodeType::NoFix, last_ts));
                    self.no_fix_open = Some(t.episodes.len() - 1);
                    out.push(Out::Began {
                        trip: t.id.clone(),
                        episode: Episode::new(EpisodeType::NoFix, last_ts),
                    });
                }
            }
        }
        self.end_trip(end, ctx, out);
    }

    fn end_trip(&mut self, at: i64, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        self.close_all(at, out);
        let Some(mut t) = self.trip.take() else {
            return;
        };
        for i in 0..t.stops.len() {
            if t.stops[i].pending() {
                t.stops[i].skipped = true;
                push_instant(&mut t, EpisodeType::StopSkipped, at, i, out);
            }
        }
        t.ended_at = Some(t.last_fix.max(t.started_at));
        self.started.push(t.id.clone());
        if self.started.len() > STARTED_MAX {
            self.started.remove(0);
        }
        let _ = ctx;
        self.finished.push(t);
    }

    /// The trip `f` may start, with its planned departure.
    fn due_trip(&self, f: &Fix, ctx: &Ctx<'_>) -> Option<(String, i64, String)> {
        let v = self.vehicle(ctx)?;
        let s = &ctx.plan.settings;
        let mut best: Option<(String, i64, String)> = None;
        for t in &v.trips {
            let depart = local_minute(ctx.plan, f.ts, 0, t.depart_min);
            if f.ts < depart - ms(s.start_early) || f.ts > depart + ms(s.start_late) {
                continue;
            }
            if t.calendar
                .as_ref()
                .is_some_and(|c| !c.holds(&ctx.plan.local, depart))
            {
                continue;
            }
            let date = local(ctx.plan, depart).format("%Y-%m-%d").to_string();
            let id = format!("{}/{date}/{}", v.id, t.depart);
            if self.started.contains(&id) {
                continue;
            }
            let Some(route) = ctx.plan.network.route(&t.route) else {
                continue;
            };
            let p = ctx.plan.network.plane.project(f.lon, f.lat);
            if route.nearest(p).distance_m > route.corridor_m {
                continue;
            }
            let off = (f.ts - depart).abs();
            if best.as_ref().is_none_or(|b| off < (f.ts - b.1).abs()) {
                best = Some((id, depart, t.route.clone()));
            }
        }
        best
    }

    /// Whether `ts` is within the hours of one of the bus's trips.
    fn in_hours(&self, ts: i64, ctx: &Ctx<'_>) -> bool {
        let Some(v) = self.vehicle(ctx) else {
            return true;
        };
        let s = &ctx.plan.settings;
        v.trips.iter().any(|t| {
            let last = ctx
                .plan
                .network
                .route(&t.route)
                .and_then(|r| r.stops.last())
                .map_or(0, |st| st.planned_offset_s * 1000);
            (-1..=0).any(|day| {
                let depart = local_minute(ctx.plan, ts, day, t.depart_min);
                let runs = t
                    .calendar
                    .as_ref()
                    .is_none_or(|c| c.holds(&ctx.plan.local, depart));
                runs && ts >= depart - ms(s.start_early) && ts <= depart + last + ms(s.start_late)
            })
        })
    }

    fn start_trip(&mut self, f: &Fix, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        let Some((id, depart, route_id)) = self.due_trip(f, ctx) else {
            return;
        };
        let Some(route) = ctx.plan.network.route(&route_id) else {
            return;
        };
        // What happened before belongs to the day's extra record.
        self.close_all(f.ts, out);
        let p = ctx.plan.network.plane.project(f.lon, f.lat);
        let progress = route
            .locate(p, 0.0, route.length_m / 2.0)
            .map_or(0.0, |l| l.along_m);
        let mut stops: Vec<StopVisit> = route
            .stops
            .iter()
            .map(|s| StopVisit {
                stop: s.name.clone(),
                planned: Some(depart + s.planned_offset_s * 1000),
                actual: None,
                skipped: false,
                dwell_since: None,
            })
            .collect();
        // Leaving the first stop is departing from it.
        let near_first = |x: &Fix| {
            route.stops.first().is_some_and(|s| {
                let q = ctx.plan.network.plane.project(x.lon, x.lat);
                Euclidean.distance(q, s.xy) <= s.radius_m.max(route.corridor_m)
            })
        };
        if near_first(f) || self.last.as_ref().is_some_and(near_first) {
            if let Some(first) = stops.first_mut() {
                first.actual = Some(f.ts);
            }
        }
        let date = local(ctx.plan, depart).format("%Y-%m-%d").to_string();
        let mut t = Trip {
            id,
            vehicle: self.vehicle.clone(),
            route: route_id,
            date,
            depart_planned: Some(depart),
            started_at: f.ts,
            ended_at: None,
            fixes: 0,
            dropped_fixes: 0,
            stops,
            episodes: Vec::new(),
            progress_m: progress,
            last_fix: f.ts,
        };
        let late = ms(ctx.plan.settings.late_after);
        if t.stops
            .first()
            .and_then(StopVisit::late_s)
            .is_some_and(|l| l * 1000 > late)
        {
            push_late(&mut t, 0, out);
        }
        self.trip = Some(t);
    }

    /// Checks one fix, in time order.
    fn process(&mut self, f: Fix, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        let plan = ctx.plan;
        let s = &plan.settings;
        let plane = plan.network.plane;
        let p = plane.project(f.lon, f.lat);
        if let Some(l) = self.last {
            if f.ts <= l.ts {
                self.dropped(DropReason::Late, out);
                return;
            }
            let implied = |a: &Fix| {
                let d = Euclidean.distance(plane.project(a.lon, a.lat), p);
                let dt = (f.ts - a.ts).max(1) as f64 / 1000.0;
                d > JUMP_MIN_M && d / dt * 3.6 > s.max_jump_kmh
            };
            if implied(&l) {
                let agrees = self.jump.is_some_and(|j| j.ts < f.ts && !implied(&j));
                if !agrees {
                    self.jump = Some(f);
                    self.dropped(DropReason::Jump, out);
                    return;
                }
            }
        }
        self.jump = None;
        if let (Some(l), true) = (self.last, self.trip.is_some()) {
            let gap = f.ts - l.ts;
            if gap > ms(s.trip_gap) {
                self.gap_ends_trip(l.ts, ctx, out);
            } else if gap > ms(s.heartbeat) {
                let i = match self.no_fix_open.take() {
                    Some(i) => Some(i),
                    None => self.trip.as_mut().map(|t| {
                        t.episodes.push(Episode::new(EpisodeType::NoFix, l.ts));
                        out.push(Out::Began {
                            trip: t.id.clone(),
                            episode: Episode::new(EpisodeType::NoFix, l.ts),
                        });
                        t.episodes.len() - 1
                    }),
                };
                if let Some(e) = i.and_then(|i| self.trip.as_mut()?.episodes.get_mut(i)) {
                    e.end = Some(f.ts);
                    out.push(Out::Ended {
                        kind: EpisodeType::NoFix,
                        at: f.ts,
                        episode: Some(e.clone()),
                    });
                }
            } else if let Some(i) = self.no_fix_open.take() {
                // The backlog filled the silence: the recorder has no gap.
                if let Some(t) = self.trip.as_mut() {
                    if i + 1 == t.episodes.len() {
                        t.episodes.pop();
                    }
                }
                out.push(Out::Ended {
                    kind: EpisodeType::NoFix,
                    at: f.ts,
                    episode: None,
                });
            }
        }
        let moving = f.speed_kmh > s.moving_kmh;
        if self.trip.is_none() && moving {
            self.start_trip(&f, ctx, out);
        }
        self.last = Some(f);
        let Some(v) = self.vehicle(ctx) else {
            return;
        };
        let route_id = self
            .trip
            .as_ref()
            .map_or(v.route.as_str(), |t| t.route.as_str());
        let Some(route) = plan.network.route(route_id) else {
            return;
        };
        let capacity = v.capacity;
        // The extra record exists only once something happened outside a trip.
        if let Some(h) = self.trip.as_mut().or(self.extra.as_mut()) {
            h.fixes += 1;
            h.last_fix = f.ts;
        }

        // Overspeed against the lowest limit in force.
        let (mut limit, zone) = plan.network.limit_at(route, p);
        let mut zone = zone.map(str::to_owned);
        if ctx.bad_weather_at(f.ts) && s.bad_weather_limit_kmh < limit {
            limit = s.bad_weather_limit_kmh;
            zone = Some("bad_weather".into());
        }
        let over = f.speed_kmh > limit;
        self.step(
            Kind::Overspeed,
            over,
            !over,
            &f,
            (f.speed_kmh, limit, zone),
            1,
            ms(s.overspeed_after),
            ctx,
            out,
        );
        let aboard = f.passengers.unwrap_or(0);
        let overloaded = aboard > i64::from(capacity);
        self.step(
            Kind::Overload,
            overloaded,
            !overloaded,
            &f,
            (aboard as f64, f64::from(capacity), None),
            1,
            0,
            ctx,
            out,
        );
        let door = f.door_open && moving;
        self.step(
            Kind::Door,
            door,
            !door,
            &f,
            (f.speed_kmh, s.moving_kmh, None),
            1,
            0,
            ctx,
            out,
        );

        if self.trip.is_some() {
            let d = route.nearest(p).distance_m;
            self.step(
                Kind::OffRoute,
                d > route.corridor_m,
                d <= 0.8 * route.corridor_m,
                &f,
                (d, route.corridor_m, None),
                s.off_route_fixes,
                ms(s.off_route_after),
                ctx,
                out,
            );
            self.stops(&f, p, route, ctx, out);
        } else {
            let outside = moving && !self.in_hours(f.ts, ctx);
            if moving {
                self.parked_since = None;
            } else {
                self.parked_since.get_or_insert(f.ts);
            }
            let parked = self.parked_since.is_some_and(|t| f.ts - t >= PARKED_MS);
            let back = self.in_hours(f.ts, ctx) || parked;
            self.step(
                Kind::Outside,
                outside,
                back,
                &f,
                (f.speed_kmh, 0.0, None),
                3,
                30_000,
                ctx,
                out,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        kind: Kind,
        on: bool,
        off: bool,
        f: &Fix,
        (value, limit, zone): (f64, f64, Option<String>),
        fixes: u32,
        after_ms: i64,
        ctx: &Ctx<'_>,
        out: &mut Vec<Out>,
    ) {
        let mut w = std::mem::take(self.watch(kind));
        if let Some(i) = w.open {
            let end = match kind {
                Kind::Outside => self.parked_since.filter(|_| off).unwrap_or(f.ts),
                _ => f.ts,
            };
            let t = self.holder(f.ts, ctx);
            match t.episodes.get_mut(i) {
                Some(e) if off => {
                    e.end = Some(end.max(e.start));
                    out.push(Out::Ended {
                        kind: e.kind,
                        at: end.max(e.start),
                        episode: Some(e.clone()),
                    });
                    w.open = None;
                }
                Some(e) => kind.update(e, value, limit, zone),
                None => w.open = None,
            }
        } else if on {
            let c = w.cand.get_or_insert(Candidate {
                since: f.ts,
                n: 0,
                peak: value,
                limit,
                zone: zone.clone(),
            });
            c.n += 1;
            if value > c.peak {
                c.peak = value;
            }
            if limit < c.limit {
                c.limit = limit;
                c.zone = zone;
            }
            if c.n >= fixes && f.ts - c.since >= after_ms {
                let c = w.cand.take().unwrap_or_else(|| unreachable!());
                let mut e = Episode::new(kind.episode(), c.since);
                kind.update(&mut e, c.peak, c.limit, c.zone);
                let t = self.holder(f.ts, ctx);
                t.episodes.push(e.clone());
                w.open = Some(t.episodes.len() - 1);
                out.push(Out::Began {
                    trip: t.id.clone(),
                    episode: e,
                });
            }
        } else {
            w.cand = None;
        }
        *self.watch(kind) = w;
    }

    fn watch(&mut self, kind: Kind) -> &mut Watch {
        match kind {
            Kind::OffRoute => &mut self.off_route,
            Kind::Overspeed => &mut self.overspeed,
            Kind::Overload => &mut self.overload,
            Kind::Door => &mut self.door,
            Kind::Outside => &mut self.outside,
        }
    }

    /// Progress along the route, stops reached and skipped, the trip's end.
    fn stops(&mut self, f: &Fix, p: Coord, route: &Route, ctx: &Ctx<'_>, out: &mut Vec<Out>) {
        let s = &ctx.plan.settings;
        let dwell = ms(s.stop_dwell);
        let late = ms(s.late_after);
        let Some(t) = self.trip.as_mut() else { return };
        let reach = 500.0_f64.max(s.max_jump_kmh / 3.6 * 60.0);
        if let Some(l) = route.locate(p, t.progress_m - 300.0, t.progress_m + reach) {
            if l.distance_m <= route.corridor_m && l.along_m > t.progress_m {
                t.progress_m = l.along_m;
            }
        }
        let standing = f.speed_kmh <= s.moving_kmh || f.door_open;
        let mut reached = None;
        for (i, (visit, stop)) in t.stops.iter_mut().zip(&route.stops).enumerate() {
            if !visit.pending() {
                continue;
            }
            let near_along = (stop.along_m - t.progress_m).abs() <= stop.radius_m + 200.0;
            let d = Euclidean.distance(p, stop.xy);
            if near_along && d <= stop.radius_m {
                if standing {
                    visit.dwell_since.get_or_insert(f.ts);
                }
                if let Some(since) = visit.dwell_since {
                    if f.door_open || f.ts - since >= dwell {
                        visit.actual = Some(since);
                        visit.dwell_since = None;
                        reached = Some(i);
                        break;
                    }
                }
            } else {
                visit.dwell_since = None;
            }
        }
        let mut skipped = Vec::new();
        for (i, (visit, stop)) in t.stops.iter_mut().zip(&route.stops).enumerate() {
            if !visit.pending() {
                continue;
            }
            let passed = t.progress_m > stop.along_m + (2.0 * stop.radius_m).max(150.0);
            if reached.is_some_and(|r| i < r) || (passed && visit.dwell_since.is_none()) {
                visit.skipped = true;
                skipped.push(i);
            }
        }
        for i in skipped {
            push_instant(t, EpisodeType::StopSkipped, f.ts, i, out);
        }
        if let Some(i) = reached {
            if t.stops[i].late_s().is_some_and(|l| l * 1000 > late) {
                push_late(t, i, out);
            }
        }
        let last = t.stops.len().saturating_sub(1);
        let done = reached == Some(last) || t.stops.iter().all(|v| !v.pending());
        let overdue = t
            .stops
            .last()
            .and_then(|v| v.planned)
            .is_some_and(|at| f.ts > at + ms(s.start_late));
        if done || overdue {
            self.end_trip(f.ts, ctx, out);
        }
    }
}

/// A stop passed without stopping: an episode that begins and ends at once.
fn push_instant(t: &mut Trip, kind: EpisodeType, at: i64, stop: usize, out: &mut Vec<Out>) {
    let mut e = Episode::new(kind, at);
    e.end = Some(at);
    e.stop = t.stops.get(stop).map(|s| s.stop.clone());
    t.episodes.push(e.clone());
    out.push(Out::Began {
        trip: t.id.clone(),
        episode: e.clone(),
    });
    out.push(Out::Ended {
        kind,
        at,
        episode: Some(e),
    });
}

/// A stop reached late: from the planned time to the arrival.
fn push_late(t: &mut Trip, stop: usize, out: &mut Vec<Out>) {
    let Some(v) = t.stops.get(stop) else { return };
    let (Some(planned), Some(actual)) = (v.planned, v.actual) else {
        return;
    };
    let mut e = Episode::new(EpisodeType::StopLate, planned);
    e.end = Some(actual);
    e.stop = Some(v.stop.clone());
    t.episodes.push(e.clone());
    out.push(Out::Began {
        trip: t.id.clone(),
        episode: e.clone(),
    });
    out.push(Out::Ended {
        kind: EpisodeType::StopLate,
        at: actual,
        episode: Some(e),
    });
}

/// The debounced conditions.
#[derive(Debug, Clone, Copy)]
enum Kind {
    OffRoute,
    Overspeed,
    Overload,
    Door,
    Outside,
}

impl Kind {
    fn episode(self) -> EpisodeType {
        match self {
            Kind::OffRoute => EpisodeType::OffRoute,
            Kind::Overspeed => EpisodeType::Overspeed,
            Kind::Overload => EpisodeType::Overload,
            Kind::Door => EpisodeType::DoorOpenMoving,
            Kind::Outside => EpisodeType::OutsideHours,
        }
    }

    /// Folds a fix's figure into the open episode.
    fn update(self, e: &mut Episode, value: f64, limit: f64, zone: Option<String>) {
        let max = |o: Option<f64>| Some(o.map_or(value, |x| x.max(value)));
        match self {
            Kind::OffRoute => {
                e.max_distance_m = max(e.max_distance_m).map(|d| (d * 10.0).round() / 10.0)
            }
            Kind::Overspeed | Kind::Door | Kind::Outside => {
                e.peak_kmh = max(e.peak_kmh);
                if matches!(self, Kind::Overspeed) && e.limit_kmh.is_none_or(|l| limit < l) {
                    e.limit_kmh = Some(limit);
                    e.zone = zone;
                }
            }
            Kind::Overload => {
                e.passengers = Some(e.passengers.map_or(value as i64, |p| p.max(value as i64)));
            }
        }
    }
}
