//! Recorded-trace generator: a bus driving a route of the route file the
//! way a real one does (slowing for zones, standing at stops with the door
//! open, GPS noise), with the faults the checks must find added on purpose
//! (a detour, speeding, overload, the door open while moving, a skipped
//! stop, the signal lost, impossible fixes). Deterministic for a seed. The
//! tests, the fixtures (`tests/fixtures/bus/`), the demo and the benchmark
//! drive buses with it.

use geo::Coord;
use rand::{Rng, SeedableRng};

use super::check::Fix;
use super::routes::{Network, Route};

/// What to do to a trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Uniform noise within this many metres of the true position.
    Jitter(f64),
    /// Leave the route between these metres along it, up to `depth` metres off.
    Detour {
        /// From (metres along).
        from: f64,
        /// To.
        to: f64,
        /// How far off at most.
        depth: f64,
    },
    /// Drive at `kmh` for `secs` from `at` metres along.
    Speed {
        /// Where it starts.
        at: f64,
        /// How fast.
        kmh: f64,
        /// How long.
        secs: f64,
    },
    /// This many pupils aboard from the stop with this index on.
    Passengers {
        /// Stop index.
        from_stop: usize,
        /// Pupils.
        n: i64,
    },
    /// The door open while driving between these metres along.
    DoorOpen {
        /// From.
        from: f64,
        /// To.
        to: f64,
    },
    /// Drive past the stop with this index without stopping.
    SkipStop(usize),
    /// No fixes from `at` seconds after departure for `secs`.
    SignalLost {
        /// Seconds after departure.
        at: f64,
        /// For how long.
        secs: f64,
    },
    /// One fix `km` away, `at` seconds after departure.
    Teleport {
        /// Seconds after departure.
        at: f64,
        /// How far.
        km: f64,
    },
    /// One fix at (0, 0), `at` seconds after departure.
    Zero {
        /// Seconds after departure.
        at: f64,
    },
}

/// How a trace is made.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpec {
    /// The route.
    pub route: String,
    /// Departure, epoch ms.
    pub depart: i64,
    /// Seconds between fixes.
    pub interval_s: f64,
    /// Cruising speed, km/h.
    pub cruise_kmh: f64,
    /// Seconds standing at each stop.
    pub dwell_s: f64,
    /// Pupils aboard.
    pub passengers: i64,
    /// Standing still at the first stop this long before departing.
    pub lead_s: f64,
    /// What goes wrong.
    pub faults: Vec<Fault>,
    /// The noise's seed.
    pub seed: u64,
}

impl TraceSpec {
    /// A compliant run of `route` departing at `depart`.
    pub fn new(route: &str, depart: i64) -> Self {
        Self {
            route: route.to_owned(),
            depart,
            interval_s: 5.0,
            cruise_kmh: 36.0,
            dwell_s: 20.0,
            passengers: 20,
            lead_s: 30.0,
            faults: Vec::new(),
            seed: 7,
        }
    }

    /// With a fault.
    pub fn with(mut self, f: Fault) -> Self {
        self.faults.push(f);
        self
    }
}

/// Makes the trace; `None` for a route the file does not have.
pub fn generate(net: &Network, spec: &TraceSpec) -> Option<Vec<Fix>> {
    let route = net.route(&spec.route)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut out = Vec::new();
    let step = 1.0; // seconds of simulation
    let mut t = -spec.lead_s;
    let mut s = 0.0_f64;
    let mut next_fix = t;
    let mut stop_i = 1; // the first stop is the departure
    let mut standing_until: Option<f64> = None;
    let mut speeding: Option<(f64, f64)> = None; // (kmh, until)
    let mut passengers = spec.passengers;
    let end = route.length_m;
    let jitter = spec.faults.iter().find_map(|f| match f {
        Fault::Jitter(m) => Some(*m),
        _ => None,
    });
    let skip = |i: usize| spec.faults.contains(&Fault::SkipStop(i));
    let mut done = false;
    let mut at_last = 0;
    while !done && t < 6.0 * 3600.0 {
        // Speed at this moment.
        let mut door = false;
        let v = if t < 0.0 {
            0.0
        } else if let Some(u) = standing_until {
            if t >= u {
                standing_until = None;
                stop_i += 1;
            }
            door = standing_until.is_some();
            0.0
        } else {
            let here = net.plane.unproject(point_at(route, s));
            let p = net.plane.project(here.0, here.1);
            let (limit, _) = net.limit_at(route, p);
            let mut v = spec.cruise_kmh.min(limit * 0.75);
            // Slow down into the next stop.
            if let Some(st) = route.stops.get(stop_i) {
                let to = st.along_m - s;
                if !skip(stop_i) && to < 60.0 {
                    v = v.min((to.max(0.0) / 60.0 * v).max(8.0));
                }
            }
            for f in &spec.faults {
                if let Fault::Speed { at, kmh, secs } = f {
                    if speeding.is_none() && s >= *at && s < *at + 50.0 {
                        speeding = Some((*kmh, t + secs));
                    }
                }
                if let Fault::DoorOpen { from, to } = f {
                    if s >= *from && s <= *to {
                        door = true;
                    }
                }
            }
            if let Some((kmh, until)) = speeding {
                if t < until {
                    v = kmh;
                }
            }
            v
        };
        if t >= next_fix {
            next_fix += spec.interval_s;
            let lost = spec
                .faults
                .iter()
                .any(|f| matches!(f, Fault::SignalLost { at, secs } if t >= *at && t < at + secs));
            let mut c = point_at(route, s);
            for f in &spec.faults {
                if let Fault::Detour { from, to, depth } = f {
                    if s > *from && s < *to {
                        let ramp = 150.0_f64;
                        let k = ((s - from).min(to - s) / ramp).min(1.0);
                        let n = normal_at(route, s);
                        c.x += n.x * depth * k;
                        c.y += n.y * depth * k;
                    }
                }
            }
            if let Some(j) = jitter {
                let r = j * rng.gen::<f64>().sqrt();
                let a = rng.gen::<f64>() * std::f64::consts::TAU;
                c.x += r * a.cos();
                c.y += r * a.sin();
            }
            for f in &spec.faults {
                if let Fault::Passengers { from_stop, n } = f {
                    if stop_i > *from_stop || (stop_i == *from_stop && standing_until.is_some()) {
                        passengers = *n;
                    }
                }
            }
            // At the last stop the pupils get off.
            if at_last > 0 {
                passengers = 0;
            }
            if standing_until.is_some() && stop_i + 1 == route.stops.len() {
                at_last += 1;
            }
            let (lon, lat) = net.plane.unproject(c);
            let ts = spec.depart + (t * 1000.0) as i64;
            if !lost {
                out.push(Fix {
                    ts,
                    lat,
                    lon,
                    speed_kmh: v,
                    passengers: Some(passengers),
                    door_open: door || t < 0.0 && t > -spec.lead_s + 5.0,
                });
            }
            for f in &spec.faults {
                match f {
                    Fault::Teleport { at, km } if (t - at).abs() < spec.interval_s / 2.0 => {
                        out.push(Fix {
                            ts: ts + 1000,
                            lat: lat + km / 111.0,
                            lon,
                            speed_kmh: v,
                            passengers: Some(passengers),
                            door_open: false,
                        });
                    }
                    Fault::Zero { at } if (t - at).abs() < spec.interval_s / 2.0 => {
                        out.push(Fix {
                            ts: ts + 2000,
                            lat: 0.0,
                            lon: 0.0,
                            speed_kmh: 0.0,
                            passengers: Some(passengers),
                            door_open: false,
                        });
                    }
                    _ => {}
                }
            }
            if s >= end {
                done = true;
            }
        }
        // Move.
        s += v / 3.6 * step;
        if let Some(st) = route.stops.get(stop_i) {
            if standing_until.is_none() && s >= st.along_m {
                if skip(stop_i) {
                    stop_i += 1;
                } else {
                    s = st.along_m;
                    let last = stop_i + 1 == route.stops.len();
                    standing_until = Some(
                        t + if last {
                            spec.interval_s * 3.0
                        } else {
                            spec.dwell_s
                        },
                    );
                }
            }
        }
        if s > end {
            s = end;
        }
        t += step;
        if stop_i >= route.stops.len() && standing_until.is_none() {
            done = true;
        }
    }
    Some(out)
}

/// The point `along` metres along the route, on the plane.
pub fn point_at(route: &Route, along: f64) -> Coord {
    route.point_at(along).0
}

/// The unit normal (to the right, outside a counter-clockwise loop) at `along`.
fn normal_at(route: &Route, along: f64) -> Coord {
    let d = route.point_at(along).1;
    Coord { x: d.y, y: -d.x }
}
