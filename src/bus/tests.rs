//! The checker against generated traces of the example routes: every case
//! the issue lists, and the invariants as property tests.

use proptest::prelude::*;

use super::check::{Checker, Ctx, DropReason, Fix, Out};
use super::trace::{generate, Fault, TraceSpec};
use super::trip::{EpisodeType, Trip};
use super::Plan;

/// The example school's routes with two buses and a timetable.
pub(crate) fn plan() -> Plan {
    let dir = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        r#"[mqtt]
url = "mqtt://127.0.0.1:1883"
[calendars.school_hours]
weekdays = ["mon", "tue", "wed", "thu", "fri"]
times = ["06:30-21:30"]
[[devices]]
id = "bus-07"
kind = "bus"
site = "yazhong"
[[devices]]
id = "bus-12"
kind = "bus"
site = "yazhong"
[buses]
routes_file = "{dir}/config/routes.example.geojson"
[[buses.vehicles]]
id = "bus-07"
capacity = 35
route = "R1"
[[buses.vehicles]]
id = "bus-12"
capacity = 35
route = "R2"
[[buses.trips]]
route = "R1"
depart = "07:00"
calendar = "school_hours"
[[buses.trips]]
route = "R2"
depart = "07:10"
calendar = "school_hours"
"#
    );
    let cfg = crate::config::Config::from_toml(&text, Vec::new())
        .expect("config")
        .config;
    Plan::new(&cfg).expect("valid").expect("a plan")
}

/// Monday 30 November 2026, 07:00 in China (UTC+8).
pub(crate) const MONDAY_0700: i64 = 1_795_993_200_000;

/// What a run gave: every trip, every answer.
struct Run {
    trips: Vec<Trip>,
    out: Vec<Out>,
}

impl Run {
    fn episodes(&self) -> Vec<&super::trip::Episode> {
        self.trips.iter().flat_map(|t| &t.episodes).collect()
    }
    fn kinds(&self) -> Vec<EpisodeType> {
        self.episodes().iter().map(|e| e.kind).collect()
    }
    fn dropped(&self, r: DropReason) -> usize {
        self.out.iter().filter(|o| **o == Out::Dropped(r)).count()
    }
    fn trip(&self) -> &Trip {
        self.trips
            .iter()
            .find(|t| !t.unscheduled())
            .expect("a scheduled trip")
    }
}

/// Feeds the fixes as they would arrive live (one second after they were
/// taken, the clock ticking every second), then lets a minute pass.
fn run_batches(plan: &Plan, vehicle: &str, batches: &[Vec<Fix>], arrive: &[i64]) -> Run {
    let mut c = Checker::new(vehicle);
    let ctx = Ctx { plan, weather: &[] };
    let mut out = Vec::new();
    let mut now = arrive.first().copied().unwrap_or(0);
    for (b, at) in batches.iter().zip(arrive) {
        while now < *at {
            now += 1000;
            c.tick(now, &ctx, &mut out);
        }
        for f in b {
            c.push(*f, now, &ctx, &mut out);
        }
    }
    for _ in 0..60 {
        now += 1000;
        c.tick(now, &ctx, &mut out);
    }
    let mut trips = std::mem::take(&mut c.finished);
    trips.extend(c.trip.take());
    trips.extend(c.extra.take());
    Run { trips, out }
}

fn run(plan: &Plan, vehicle: &str, fixes: &[Fix]) -> Run {
    let batches: Vec<Vec<Fix>> = fixes.iter().map(|f| vec![*f]).collect();
    let arrive: Vec<i64> = fixes.iter().map(|f| f.ts + 1000).collect();
    run_batches(plan, vehicle, &batches, &arrive)
}

fn trace(plan: &Plan, spec: &TraceSpec) -> Vec<Fix> {
    generate(&plan.network, spec).expect("route")
}

fn r1() -> TraceSpec {
    TraceSpec::new("R1", MONDAY_0700)
}

#[test]
fn a_compliant_trip_has_no_episode_and_a_clean_report() {
    let plan = plan();
    for route in ["R1", "R2"] {
        let bus = if route == "R1" { "bus-07" } else { "bus-12" };
        let depart = if route == "R1" {
            MONDAY_0700
        } else {
            MONDAY_0700 + 600_000
        };
        let r = run(&plan, bus, &trace(&plan, &TraceSpec::new(route, depart)));
        assert_eq!(r.trips.len(), 1, "{route}: {:#?}", r.trips);
        let t = r.trip();
        assert!(r.kinds().is_empty(), "{route}: {:#?}", r.episodes());
        assert!(t.ended_at.is_some(), "{route}: ended at the last stop");
        assert!(
            t.stops.iter().all(|s| s.actual.is_some() && !s.skipped),
            "{route}: {:#?}",
            t.stops
        );
        assert!(t.stops.iter().all(|s| s.late_s().is_some_and(|l| l < 300)));
        assert_eq!(t.dropped_fixes, 0);
        assert!(t.fixes > 50, "{}", t.fixes);
        assert_eq!(t.depart_planned, Some(depart));
    }
}

#[test]
fn gps_jitter_of_30_m_raises_nothing() {
    let plan = plan();
    for seed in 1..=5 {
        let mut spec = r1().with(Fault::Jitter(30.0));
        spec.seed = seed;
        let r = run(&plan, "bus-07", &trace(&plan, &spec));
        assert!(r.kinds().is_empty(), "seed {seed}: {:#?}", r.episodes());
        assert!(r.trip().stops.iter().all(|s| s.actual.is_some()));
    }
}

#[test]
fn a_400_m_detour_for_3_minutes_is_one_off_route_episode() {
    let plan = plan();
    let spec = r1().with(Fault::Detour {
        from: 600.0,
        to: 2400.0,
        depth: 400.0,
    });
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert_eq!(r.kinds(), [EpisodeType::OffRoute], "{:#?}", r.episodes());
    let e = r.episodes()[0];
    let d = e.max_distance_m.expect("distance");
    assert!((d - 400.0).abs() < 5.0, "{d}");
    let secs = e.duration_s(0);
    assert!((120.0..200.0).contains(&secs), "{secs}");
    // Its start is the first fix beyond the corridor, not when it was confirmed.
    let began = r.out.iter().find_map(|o| match o {
        Out::Began { episode, .. } => Some(episode.start),
        _ => None,
    });
    assert_eq!(began, Some(e.start));
}

#[test]
fn seventy_two_on_a_sixty_section_for_20_s_is_one_overspeed_with_peak_72() {
    let plan = plan();
    let spec = r1().with(Fault::Speed {
        at: 1000.0,
        kmh: 72.0,
        secs: 20.0,
    });
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert_eq!(r.kinds(), [EpisodeType::Overspeed], "{:#?}", r.episodes());
    let e = r.episodes()[0];
    assert_eq!(
        (e.peak_kmh, e.limit_kmh, e.zone.as_deref()),
        (Some(72.0), Some(60.0), None)
    );
    assert!(
        (15.0..=25.0).contains(&e.duration_s(0)),
        "{}",
        e.duration_s(0)
    );
}

#[test]
fn thirty_five_in_the_gate_zone_is_overspeed_on_20() {
    let plan = plan();
    let spec = r1().with(Fault::Speed {
        at: 0.0,
        kmh: 35.0,
        secs: 18.0,
    });
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert_eq!(r.kinds(), [EpisodeType::Overspeed], "{:#?}", r.episodes());
    let e = r.episodes()[0];
    assert_eq!((e.peak_kmh, e.limit_kmh), (Some(35.0), Some(20.0)));
    assert_eq!(e.zone.as_deref(), Some("校门 School gate"));
}

#[test]
fn bad_weather_lowers_every_limit_to_20_from_its_switch_on() {
    let plan = plan();
    let fixes = trace(&plan, &r1());
    let mut c = Checker::new("bus-07");
    // Switched on five minutes into the trip.
    let weather = [(MONDAY_0700 + 300_000, true)];
    let ctx = Ctx {
        plan: &plan,
        weather: &weather,
    };
    let mut out = Vec::new();
    for f in &fixes {
        c.push(*f, f.ts + 1000, &ctx, &mut out);
        c.tick(f.ts + 1000, &ctx, &mut out);
    }
    c.tick(fixes.last().expect("fixes").ts + 60_000, &ctx, &mut out);
    let t = c.finished.first().expect("trip");
    let e = t.episodes.first().expect("overspeed in bad weather");
    assert_eq!(e.kind, EpisodeType::Overspeed);
    assert_eq!(
        (e.limit_kmh, e.zone.as_deref()),
        (Some(20.0), Some("bad_weather"))
    );
    assert!(e.start >= MONDAY_0700 + 300_000);
}

#[test]
fn more_pupils_than_seats_is_overload() {
    let plan = plan();
    let spec = r1().with(Fault::Passengers {
        from_stop: 2,
        n: 41,
    });
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    let t = r.trip();
    assert_eq!(t.episodes.len(), 1, "{:#?}", t.episodes);
    assert_eq!(t.episodes[0].kind, EpisodeType::Overload);
    assert_eq!(t.episodes[0].passengers, Some(41));
    // Still overloaded at the last stop after the trip: that is on the day's record.
    assert!(r.kinds().iter().all(|k| *k == EpisodeType::Overload));
}

#[test]
fn the_door_open_at_30_km_h_is_an_episode() {
    let plan = plan();
    let mut spec = r1().with(Fault::DoorOpen {
        from: 1200.0,
        to: 1400.0,
    });
    spec.cruise_kmh = 30.0;
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert_eq!(
        r.kinds(),
        [EpisodeType::DoorOpenMoving],
        "{:#?}",
        r.episodes()
    );
    assert_eq!(r.episodes()[0].peak_kmh, Some(30.0));
}

#[test]
fn a_skipped_stop_is_one_episode_naming_it() {
    let plan = plan();
    let r = run(
        &plan,
        "bus-07",
        &trace(&plan, &r1().with(Fault::SkipStop(2))),
    );
    assert_eq!(r.kinds(), [EpisodeType::StopSkipped], "{:#?}", r.episodes());
    assert_eq!(r.episodes()[0].stop.as_deref(), Some("龙岗村 Longgang"));
    let t = r.trip();
    assert!(t.stops[2].skipped && t.stops[2].actual.is_none());
    assert!(t.stops[3].actual.is_some() && t.stops[4].actual.is_some());
}

#[test]
fn losing_the_signal_for_2_minutes_is_one_no_fix_episode() {
    let plan = plan();
    let spec = r1().with(Fault::SignalLost {
        at: 200.0,
        secs: 120.0,
    });
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert_eq!(r.kinds(), [EpisodeType::NoFix], "{:#?}", r.episodes());
    let secs = r.episodes()[0].duration_s(0);
    assert!((120.0..=130.0).contains(&secs), "{secs}");
    // Raised live, while the signal was gone; cleared when it came back.
    let began = r.out.iter().position(
        |o| matches!(o, Out::Began { episode, .. } if episode.kind == EpisodeType::NoFix),
    );
    let ended = r.out.iter().position(|o| {
        matches!(
            o,
            Out::Ended {
                kind: EpisodeType::NoFix,
                episode: Some(_),
                ..
            }
        )
    });
    assert!(began < ended && began.is_some());
    assert_eq!(r.trips.len(), 1, "the trip goes on");
}

#[test]
fn a_teleport_and_a_zero_fix_are_dropped_counted_and_raise_nothing() {
    let plan = plan();
    let spec = r1()
        .with(Fault::Teleport { at: 300.0, km: 5.0 })
        .with(Fault::Zero { at: 400.0 });
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert!(r.kinds().is_empty(), "{:#?}", r.episodes());
    assert_eq!(r.dropped(DropReason::Jump), 1);
    assert_eq!(r.dropped(DropReason::Zero), 1);
    assert_eq!(r.trip().dropped_fixes, 2);
}

#[test]
fn a_backlog_delivered_late_and_shuffled_gives_the_same_report() {
    let plan = plan();
    let spec = r1()
        .with(Fault::Speed {
            at: 1000.0,
            kmh: 72.0,
            secs: 20.0,
        })
        .with(Fault::SkipStop(3));
    let fixes = trace(&plan, &spec);
    let live = run(&plan, "bus-07", &fixes);
    // Batches of 12 fixes (a minute), each reversed, each arriving in one
    // burst three minutes late.
    let batches: Vec<Vec<Fix>> = fixes
        .chunks(12)
        .map(|c| c.iter().rev().copied().collect())
        .collect();
    let arrive: Vec<i64> = batches
        .iter()
        .map(|b| b.iter().map(|f| f.ts).max().unwrap_or(0) + 180_000)
        .collect();
    let late = run_batches(&plan, "bus-07", &batches, &arrive);
    assert_eq!(live.trips, late.trips);
    assert_eq!(
        live.kinds(),
        [EpisodeType::Overspeed, EpisodeType::StopSkipped]
    );
    // A duplicate is dropped and counted.
    let mut dup = batches.clone();
    let again = dup[3][0];
    dup[3].push(again);
    let d = run_batches(&plan, "bus-07", &dup, &arrive);
    assert_eq!(d.dropped(DropReason::Duplicate), 1);
}

#[test]
fn a_fix_older_than_one_already_checked_is_dropped_as_late() {
    let plan = plan();
    let fixes = trace(&plan, &r1());
    let mut batches: Vec<Vec<Fix>> = fixes.iter().map(|f| vec![*f]).collect();
    let mut arrive: Vec<i64> = fixes.iter().map(|f| f.ts + 1000).collect();
    // Fix 50 again, a minute later.
    batches.insert(62, vec![fixes[50]]);
    arrive.insert(62, arrive[61]);
    batches[62][0].ts -= 1;
    let r = run_batches(&plan, "bus-07", &batches, &arrive);
    assert_eq!(r.dropped(DropReason::Late), 1);
    assert!(r.kinds().is_empty());
}

#[test]
fn driving_outside_the_timetable_is_an_outside_hours_episode() {
    let plan = plan();
    // The same route at 13:00: no trip then.
    let spec = TraceSpec::new("R1", MONDAY_0700 + 6 * 3_600_000);
    let r = run(&plan, "bus-07", &trace(&plan, &spec));
    assert!(r.trips.iter().all(Trip::unscheduled), "{:#?}", r.trips);
    assert!(
        r.kinds().contains(&EpisodeType::OutsideHours),
        "{:#?}",
        r.episodes()
    );
}

#[test]
fn a_restart_mid_trip_continues_it() {
    let plan = plan();
    let fixes = trace(&plan, &r1().with(Fault::SkipStop(3)));
    let whole = run(&plan, "bus-07", &fixes);
    let ctx = Ctx {
        plan: &plan,
        weather: &[],
    };
    let mut c = Checker::new("bus-07");
    let mut out = Vec::new();
    let (a, b) = fixes.split_at(fixes.len() / 2);
    for f in a {
        c.push(*f, f.ts + 1000, &ctx, &mut out);
        c.tick(f.ts + 1000, &ctx, &mut out);
    }
    let saved = serde_json::to_string(&c).expect("json");
    let mut c: Checker = serde_json::from_str(&saved).expect("json");
    for f in b {
        c.push(*f, f.ts + 1000, &ctx, &mut out);
        c.tick(f.ts + 1000, &ctx, &mut out);
    }
    c.tick(fixes.last().expect("fix").ts + 60_000, &ctx, &mut out);
    assert_eq!(c.finished, whole.trips);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_fix_sequence_makes_the_checker_panic(
        fixes in prop::collection::vec(
            (0i64..4_000_000, -100.0f64..100.0, -200.0f64..200.0, -10.0f64..500.0,
             prop::option::of(-5i64..100), any::<bool>(), 0i64..200_000),
            0..200,
        )
    ) {
        let plan = plan();
        let ctx = Ctx { plan: &plan, weather: &[(MONDAY_0700 + 1000, true)] };
        let mut c = Checker::new("bus-07");
        let mut out = Vec::new();
        let mut now = MONDAY_0700;
        for (dt, lat, lon, v, p, door, wait) in fixes {
            // Half of them near the school, so the route checks run too.
            let (lat, lon) = if dt % 2 == 0 { (29.98 + lat / 1e4, 103.0 + lon / 1e4) } else { (lat, lon) };
            now += wait;
            let f = Fix { ts: MONDAY_0700 - 1_000_000 + dt, lat, lon, speed_kmh: v, passengers: p, door_open: door };
            c.push(f, now, &ctx, &mut out);
            c.tick(now, &ctx, &mut out);
        }
        c.tick(now + 3_600_000, &ctx, &mut out);
    }

    #[test]
    fn shifting_a_compliant_trace_by_less_than_the_corridor_raises_nothing(
        east in -55.0f64..55.0, north in -55.0f64..55.0,
    ) {
        prop_assume!((east * east + north * north).sqrt() < 55.0);
        let plan = plan();
        let fixes: Vec<Fix> = trace(&plan, &r1())
            .into_iter()
            .map(|mut f| {
                let c = plan.network.plane.project(f.lon, f.lat);
                let (lon, lat) = plan.network.plane.unproject(geo::Coord { x: c.x + east, y: c.y + north });
                f.lon = lon;
                f.lat = lat;
                f
            })
            .collect();
        let r = run(&plan, "bus-07", &fixes);
        prop_assert!(r.kinds().is_empty(), "{:?}", r.episodes());
    }
}

/// The recorded traces under `tests/fixtures/bus/`: what the generator
/// makes of the example routes for every case above, one fix per line (the
/// MQTT payload a terminal sends). `BUS_FIXTURES_WRITE=1 cargo nextest run
/// -E 'test(fixtures)'` writes them again after a change of the generator.
#[test]
fn the_fixtures_are_the_generators_traces() {
    let plan = plan();
    let cases: Vec<(&str, TraceSpec)> = vec![
        ("compliant", r1()),
        ("jitter-30m", r1().with(Fault::Jitter(30.0))),
        (
            "detour-400m",
            r1().with(Fault::Detour {
                from: 600.0,
                to: 2400.0,
                depth: 400.0,
            }),
        ),
        (
            "overspeed-72-on-60",
            r1().with(Fault::Speed {
                at: 1000.0,
                kmh: 72.0,
                secs: 20.0,
            }),
        ),
        (
            "overspeed-35-in-gate-zone",
            r1().with(Fault::Speed {
                at: 0.0,
                kmh: 35.0,
                secs: 18.0,
            }),
        ),
        (
            "overload",
            r1().with(Fault::Passengers {
                from_stop: 2,
                n: 41,
            }),
        ),
        ("door-open-moving", {
            let mut s = r1().with(Fault::DoorOpen {
                from: 1200.0,
                to: 1400.0,
            });
            s.cruise_kmh = 30.0;
            s
        }),
        ("stop-skipped", r1().with(Fault::SkipStop(2))),
        (
            "signal-lost-2min",
            r1().with(Fault::SignalLost {
                at: 200.0,
                secs: 120.0,
            }),
        ),
        (
            "teleport-and-zero",
            r1().with(Fault::Teleport { at: 300.0, km: 5.0 })
                .with(Fault::Zero { at: 400.0 }),
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bus");
    let write = std::env::var_os("BUS_FIXTURES_WRITE").is_some();
    for (name, spec) in cases {
        let mut text = String::new();
        for f in trace(&plan, &spec) {
            let line = serde_json::json!({
                "ts": f.ts, "lat": f.lat, "lon": f.lon, "speed_kmh": f.speed_kmh,
                "heading_deg": 0.0, "passengers": f.passengers, "door_open": f.door_open,
                "route_id": "R1",
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let file = dir.join(format!("{name}.jsonl"));
        if write {
            std::fs::write(&file, &text).expect("write fixture");
        }
        let stored = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            stored == text,
            "{} is not the generator's trace (BUS_FIXTURES_WRITE=1 writes it)",
            file.display()
        );
    }
}
