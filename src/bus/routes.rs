//! The route file: a GeoJSON FeatureCollection of routes (`LineString`),
//! their stops (`Point`) and speed zones (`Polygon`), loaded and validated
//! once, converted to WGS-84 if it was drawn on a Chinese web map (GCJ-02,
//! BD-09), and projected onto a local plane in metres for the per-fix checks.
//!
//! Distances: a campus's routes span a few kilometres, so every coordinate is
//! projected once onto a plane tangent at the file's centre, scaled by the
//! WGS-84 ellipsoid's radii of curvature there. At 10 km from the centre the
//! error against the geodesic is a few centimetres per hundred metres — far
//! below GPS noise — and closest points, containment and lengths are then
//! geo's plane algorithms (a test holds it against geo's `Geodesic`).

use geo::{
    Closest, ClosestPoint, Contains, Coord, Distance, Euclidean, Length, Line, LineLocatePoint,
    LineString, Point, Polygon,
};
use geojson::{FeatureCollection, GeometryValue};
use serde_json::Value as Json;

/// WGS-84 semi-major axis and first eccentricity squared.
const WGS84_A: f64 = 6_378_137.0;
const WGS84_E2: f64 = 0.006_694_379_990_14;

/// The datum the route file was drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Crs {
    /// GPS coordinates, as the buses report them.
    #[default]
    Wgs84,
    /// 国测局 GCJ-02 ("Mars" coordinates): AMap/高德, Tencent, Google in China.
    Gcj02,
    /// Baidu BD-09 (GCJ-02 shifted once more).
    Bd09,
}

/// The conversion between WGS-84 and GCJ-02/BD-09: the published,
/// well-known formula (the same in every open implementation). No crate of
/// it is well kept enough to depend on, and theirs invert GCJ-02 in one
/// step (1–2 m off); this one iterates to well under a centimetre.
pub mod china {
    use std::f64::consts::PI;

    const A: f64 = 6_378_245.0; // Krasovsky 1940
    const EE: f64 = 0.006_693_421_622_965_943;
    const X_PI: f64 = PI * 3000.0 / 180.0;

    fn lat_shift(x: f64, y: f64) -> f64 {
        let mut r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
        r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
        r += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
        r += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
        r
    }

    fn lon_shift(x: f64, y: f64) -> f64 {
        let mut r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
        r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
        r += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
        r += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
        r
    }

    /// Whether GCJ-02 applies (mainland China's rough box; outside it the
    /// two datums are the same).
    fn in_china(lon: f64, lat: f64) -> bool {
        (72.004..=137.8347).contains(&lon) && (0.8293..=55.8271).contains(&lat)
    }

    /// WGS-84 → GCJ-02, `(lon, lat)` in degrees.
    pub fn wgs84_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
        if !in_china(lon, lat) {
            return (lon, lat);
        }
        let dlat = lat_shift(lon - 105.0, lat - 35.0);
        let dlon = lon_shift(lon - 105.0, lat - 35.0);
        let rad = lat / 180.0 * PI;
        let magic = 1.0 - EE * rad.sin() * rad.sin();
        let sq = magic.sqrt();
        let dlat = (dlat * 180.0) / ((A * (1.0 - EE)) / (magic * sq) * PI);
        let dlon = (dlon * 180.0) / (A / sq * rad.cos() * PI);
        (lon + dlon, lat + dlat)
    }

    /// GCJ-02 → WGS-84, by fixed-point iteration of the forward formula.
    pub fn gcj02_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
        let (mut x, mut y) = (lon, lat);
        for _ in 0..10 {
            let (gx, gy) = wgs84_to_gcj02(x, y);
            let (ex, ey) = (gx - lon, gy - lat);
            x -= ex;
            y -= ey;
            if ex.abs() < 1e-10 && ey.abs() < 1e-10 {
                break;
            }
        }
        (x, y)
    }

    /// GCJ-02 → BD-09.
    pub fn gcj02_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
        let z = (lon * lon + lat * lat).sqrt() + 0.00002 * (lat * X_PI).sin();
        let t = lat.atan2(lon) + 0.000003 * (lon * X_PI).cos();
        (z * t.cos() + 0.0065, z * t.sin() + 0.006)
    }

    /// BD-09 → GCJ-02: the published approximate inverse, refined by
    /// fixed-point iteration of the forward formula.
    pub fn bd09_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
        let (mut x, mut y) = bd09_to_gcj02_approx(lon, lat);
        for _ in 0..10 {
            let (bx, by) = gcj02_to_bd09(x, y);
            let (ex, ey) = (bx - lon, by - lat);
            x -= ex;
            y -= ey;
            if ex.abs() < 1e-10 && ey.abs() < 1e-10 {
                break;
            }
        }
        (x, y)
    }

    /// The published one-step BD-09 → GCJ-02.
    pub fn bd09_to_gcj02_approx(lon: f64, lat: f64) -> (f64, f64) {
        let (x, y) = (lon - 0.0065, lat - 0.006);
        let z = (x * x + y * y).sqrt() - 0.00002 * (y * X_PI).sin();
        let t = y.atan2(x) - 0.000003 * (x * X_PI).cos();
        (z * t.cos(), z * t.sin())
    }
}

impl Crs {
    /// `(lon, lat)` in this datum → WGS-84.
    pub fn to_wgs84(self, lon: f64, lat: f64) -> (f64, f64) {
        match self {
            Crs::Wgs84 => (lon, lat),
            Crs::Gcj02 => china::gcj02_to_wgs84(lon, lat),
            Crs::Bd09 => {
                let (x, y) = china::bd09_to_gcj02(lon, lat);
                china::gcj02_to_wgs84(x, y)
            }
        }
    }
}

/// A local plane in metres, tangent at `origin`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plane {
    lon0: f64,
    lat0: f64,
    /// Metres per degree of longitude and of latitude at the origin.
    mx: f64,
    my: f64,
}

impl Plane {
    /// The plane tangent at `(lon, lat)`.
    pub fn at(lon: f64, lat: f64) -> Self {
        let phi = lat.to_radians();
        let w = 1.0 - WGS84_E2 * phi.sin().powi(2);
        let n = WGS84_A / w.sqrt();
        let m = WGS84_A * (1.0 - WGS84_E2) / w.powf(1.5);
        Self {
            lon0: lon,
            lat0: lat,
            mx: n * phi.cos() * std::f64::consts::PI / 180.0,
            my: m * std::f64::consts::PI / 180.0,
        }
    }

    /// WGS-84 `(lon, lat)` → metres east and north of the origin.
    pub fn project(&self, lon: f64, lat: f64) -> Coord {
        Coord {
            x: (lon - self.lon0) * self.mx,
            y: (lat - self.lat0) * self.my,
        }
    }

    /// Back to `(lon, lat)`.
    pub fn unproject(&self, c: Coord) -> (f64, f64) {
        (self.lon0 + c.x / self.mx, self.lat0 + c.y / self.my)
    }
}

/// A stop of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// Its name (`stop`).
    pub name: String,
    /// Seconds after the trip's departure it is planned at.
    pub planned_offset_s: i64,
    /// WGS-84.
    pub lon: f64,
    /// WGS-84.
    pub lat: f64,
    /// Within this many metres the bus is at the stop.
    pub radius_m: f64,
    /// How far along the route it is, metres.
    pub along_m: f64,
    /// On the plane.
    pub xy: Coord,
}

/// A route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `route_id`.
    pub id: String,
    /// How far from the line a bus may be, metres.
    pub corridor_m: f64,
    /// The default limit on the route, km/h.
    pub speed_limit_kmh: f64,
    /// The line, WGS-84 `(lon, lat)`.
    pub coords: Vec<(f64, f64)>,
    /// The line on the plane.
    line: LineString<f64>,
    /// Metres along the route at each vertex.
    cum: Vec<f64>,
    /// Its length, metres.
    pub length_m: f64,
    /// Its stops, in the order of `planned_offset_s`.
    pub stops: Vec<Stop>,
}

/// Where a point is against a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    /// Metres from the route's line.
    pub distance_m: f64,
    /// Metres along the route of the closest point.
    pub along_m: f64,
}

impl Route {
    /// The closest point of the route to `p` among the parts that overlap
    /// `[from, to]` metres along it (all of it: `0..=f64::MAX`). A loop
    /// route passes the same place twice; the window says which pass.
    pub fn locate(&self, p: Coord, from: f64, to: f64) -> Option<Located> {
        let pt = Point::from(p);
        let mut best: Option<Located> = None;
        for (i, seg) in self.line.lines().enumerate() {
            let (a, b) = (self.cum[i], self.cum[i + 1]);
            if b < from || a > to {
                continue;
            }
            let d = match seg.closest_point(&pt) {
                Closest::Intersection(c) | Closest::SinglePoint(c) => Euclidean.distance(c, pt),
                Closest::Indeterminate => Euclidean.distance(Point::from(seg.start), pt),
            };
            if best.is_none_or(|x| d < x.distance_m) {
                let f = seg.line_locate_point(&pt).unwrap_or(0.0);
                best = Some(Located {
                    distance_m: d,
                    along_m: a + f * (b - a),
                });
            }
        }
        best
    }

    /// The point `along` metres along the route (clamped to it) and the
    /// unit direction of travel there.
    pub fn point_at(&self, along: f64) -> (Coord, Coord) {
        let along = along.clamp(0.0, self.length_m);
        let i = self
            .cum
            .partition_point(|c| *c < along)
            .clamp(1, self.cum.len() - 1);
        let (a, b) = (self.line.0[i - 1], self.line.0[i]);
        let len = self.cum[i] - self.cum[i - 1];
        let f = if len > 0.0 {
            (along - self.cum[i - 1]) / len
        } else {
            0.0
        };
        let dir = if len > 0.0 {
            Coord {
                x: (b.x - a.x) / len,
                y: (b.y - a.y) / len,
            }
        } else {
            Coord { x: 1.0, y: 0.0 }
        };
        (
            Coord {
                x: a.x + f * (b.x - a.x),
                y: a.y + f * (b.y - a.y),
            },
            dir,
        )
    }

    /// The closest point of the whole route.
    pub fn nearest(&self, p: Coord) -> Located {
        self.locate(p, 0.0, f64::MAX).unwrap_or(Located {
            distance_m: f64::INFINITY,
            along_m: 0.0,
        })
    }
}

/// A speed zone (a bridge, a steep slope, the school gate).
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// `zone`.
    pub name: String,
    /// Its limit, km/h.
    pub speed_limit_kmh: f64,
    /// The route it holds for (none: every route).
    pub route: Option<String>,
    /// The outer ring, WGS-84 `(lon, lat)`.
    pub ring: Vec<(f64, f64)>,
    poly: Polygon<f64>,
}

impl Zone {
    /// Whether it holds for `route`.
    pub fn applies_to(&self, route: &str) -> bool {
        self.route.as_deref().is_none_or(|r| r == route)
    }
}

/// Every route, stop and zone of the file, on one plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// The plane every geometry is projected onto.
    pub plane: Plane,
    /// The routes.
    pub routes: Vec<Route>,
    /// The zones.
    pub zones: Vec<Zone>,
}

/// The smallest default radius of a stop without `radius_m` (else its route's corridor).
pub const STOP_RADIUS_M: f64 = 40.0;

/// The most features a route file may hold (a bound on memory and on the
/// work per fix).
const MAX_FEATURES: usize = 10_000;

fn prop_str(p: &serde_json::Map<String, Json>, key: &str) -> Option<String> {
    p.get(key).and_then(|v| match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn prop_f64(p: &serde_json::Map<String, Json>, key: &str) -> Option<f64> {
    p.get(key).and_then(Json::as_f64).filter(|v| v.is_finite())
}

fn lonlat(pos: &geojson::Position) -> Option<(f64, f64)> {
    match pos.as_slice() {
        [lon, lat, ..] if lon.is_finite() && lat.is_finite() => {
            ((-180.0..=180.0).contains(lon) && (-90.0..=90.0).contains(lat)).then_some((*lon, *lat))
        }
        _ => None,
    }
}

impl Network {
    /// Parses and checks a route file drawn in `crs`. The error lists every
    /// problem, each naming its feature (`features[3] (stop 北门): …`).
    pub fn parse(text: &str, crs: Crs) -> Result<Self, Vec<String>> {
        let fc: FeatureCollection = text
            .parse()
            .map_err(|e| vec![format!("not a GeoJSON FeatureCollection: {e}")])?;
        if fc.features.len() > MAX_FEATURES {
            return Err(vec![format!(
                "{} features: at most {MAX_FEATURES}",
                fc.features.len()
            )]);
        }
        let mut problems = Vec::new();
        struct RawStop {
            at: String,
            route: String,
            name: String,
            offset: i64,
            radius: Option<f64>,
            pos: (f64, f64),
        }
        struct RawZone {
            at: String,
            name: String,
            limit: f64,
            route: Option<String>,
            ring: Vec<(f64, f64)>,
        }
        // (where, id, corridor, limit, positions)
        type RawLine = (String, String, f64, f64, Vec<(f64, f64)>);
        let mut lines: Vec<RawLine> = Vec::new();
        let mut stops = Vec::new();
        let mut zones = Vec::new();
        for (i, f) in fc.features.iter().enumerate() {
            let empty = serde_json::Map::new();
            let p = f.properties.as_ref().unwrap_or(&empty);
            let label = prop_str(p, "stop")
                .map(|s| format!(" (stop {s})"))
                .or_else(|| prop_str(p, "zone").map(|z| format!(" (zone {z})")))
                .or_else(|| prop_str(p, "route_id").map(|r| format!(" (route {r})")))
                .unwrap_or_default();
            let at = format!("features[{i}]{label}");
            let mut bad = |m: String| problems.push(format!("{at}: {m}"));
            let Some(g) = &f.geometry else {
                bad("has no geometry".into());
                continue;
            };
            let conv = |pos: &geojson::Position| lonlat(pos).map(|(x, y)| crs.to_wgs84(x, y));
            match &g.value {
                GeometryValue::LineString { coordinates } => {
                    let Some(route) = prop_str(p, "route_id").filter(|r| !r.is_empty()) else {
                        bad("a route's LineString needs `route_id`".into());
                        continue;
                    };
                    let corridor = prop_f64(p, "corridor_m").unwrap_or(f64::NAN);
                    if !(corridor > 0.0 && corridor <= 5000.0) {
                        bad(
                            "`corridor_m` must be a number of metres, above 0 and at most 5000"
                                .into(),
                        );
                    }
                    let limit = prop_f64(p, "speed_limit_kmh").unwrap_or(f64::NAN);
                    if !(limit > 0.0 && limit <= 200.0) {
                        bad("`speed_limit_kmh` must be above 0 and at most 200".into());
                    }
                    let pts: Option<Vec<_>> = coordinates.iter().map(conv).collect();
                    match pts {
                        None => bad("a coordinate is not a longitude and latitude in range".into()),
                        Some(pts) if pts.len() < 2 => {
                            bad("a route needs at least two positions".into())
                        }
                        Some(pts) => lines.push((at.clone(), route, corridor, limit, pts)),
                    }
                }
                GeometryValue::Point { coordinates } => {
                    let route = prop_str(p, "route_id").unwrap_or_default();
                    let name = prop_str(p, "stop").filter(|s| !s.is_empty());
                    let offset = p.get("planned_offset_s").and_then(Json::as_i64);
                    if route.is_empty() {
                        bad("a stop needs the `route_id` it belongs to".into());
                    }
                    if name.is_none() {
                        bad("a stop needs its name in `stop`".into());
                    }
                    if offset.is_none_or(|o| !(0..=86_400).contains(&o)) {
                        bad(
                            "`planned_offset_s` must be whole seconds after departure, 0 to 86400"
                                .into(),
                        );
                    }
                    let radius = match p.get("radius_m") {
                        None => None,
                        Some(v) => match v.as_f64().filter(|r| *r > 0.0 && *r <= 1000.0) {
                            Some(r) => Some(r),
                            None => {
                                bad("`radius_m` must be above 0 and at most 1000".into());
                                None
                            }
                        },
                    };
                    let Some(pos) = conv(coordinates) else {
                        bad("the position is not a longitude and latitude in range".into());
                        continue;
                    };
                    if let (Some(name), Some(offset), false) = (name, offset, route.is_empty()) {
                        stops.push(RawStop {
                            at: at.clone(),
                            route,
                            name,
                            offset,
                            radius,
                            pos,
                        });
                    }
                }
                GeometryValue::Polygon { coordinates } => {
                    let name = prop_str(p, "zone").filter(|s| !s.is_empty());
                    let limit = prop_f64(p, "speed_limit_kmh").unwrap_or(f64::NAN);
                    if name.is_none() {
                        bad("a speed zone needs its name in `zone`".into());
                    }
                    if !(limit > 0.0 && limit <= 200.0) {
                        bad("`speed_limit_kmh` must be above 0 and at most 200".into());
                    }
                    let Some(outer) = coordinates.first() else {
                        bad("a zone needs a ring".into());
                        continue;
                    };
                    let ring: Option<Vec<_>> = outer.iter().map(conv).collect();
                    let Some(ring) = ring else {
                        bad("a coordinate is not a longitude and latitude in range".into());
                        continue;
                    };
                    if ring.len() < 4 || ring.first() != ring.last() {
                        bad("the zone is not a closed ring (at least four positions, the last the same as the first)".into());
                        continue;
                    }
                    if let Some(name) = name {
                        zones.push(RawZone {
                            at: at.clone(),
                            name,
                            limit,
                            route: prop_str(p, "route_id").filter(|r| !r.is_empty()),
                            ring,
                        });
                    }
                }
                other => bad(format!(
                    "a {} is none of a route (LineString), a stop (Point) or a zone (Polygon)",
                    other.type_name()
                )),
            }
        }
        let Some(first) = lines.first().and_then(|l| l.4.first()).copied() else {
            problems.push("the file has no route (a LineString with `route_id`)".into());
            return Err(problems);
        };
        // The centre of the routes' bounding box.
        let (mut x0, mut y0, mut x1, mut y1) = (first.0, first.1, first.0, first.1);
        for (x, y) in lines.iter().flat_map(|l| l.4.iter()) {
            (x0, y0, x1, y1) = (x0.min(*x), y0.min(*y), x1.max(*x), y1.max(*y));
        }
        let plane = Plane::at((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let mut routes: Vec<Route> = Vec::new();
        for (at, id, corridor, limit, pts) in lines {
            if routes.iter().any(|r| r.id == id) {
                problems.push(format!("{at}: route `{id}` is drawn twice"));
                continue;
            }
            let line: LineString<f64> = pts.iter().map(|(x, y)| plane.project(*x, *y)).collect();
            let mut cum = vec![0.0];
            for seg in line.lines() {
                let l: &Line<f64> = &seg;
                cum.push(cum.last().copied().unwrap_or(0.0) + Euclidean.length(l));
            }
            routes.push(Route {
                id,
                corridor_m: corridor,
                speed_limit_kmh: limit,
                coords: pts,
                length_m: cum.last().copied().unwrap_or(0.0),
                line,
                cum,
                stops: Vec::new(),
            });
        }
        for s in stops {
            let Some(r) = routes.iter_mut().find(|r| r.id == s.route) else {
                problems.push(format!("{}: no route `{}` in the file", s.at, s.route));
                continue;
            };
            let xy = plane.project(s.pos.0, s.pos.1);
            let loc = r.nearest(xy);
            if loc.distance_m > r.corridor_m {
                problems.push(format!(
                    "{}: {:.0} m from route {}, beyond its corridor of {} m",
                    s.at, loc.distance_m, r.id, r.corridor_m
                ));
                continue;
            }
            r.stops.push(Stop {
                name: s.name,
                planned_offset_s: s.offset,
                lon: s.pos.0,
                lat: s.pos.1,
                // A fix within the corridor of the stop is at it: a trace
                // shifted by less than the corridor still serves every stop.
                radius_m: s.radius.unwrap_or(r.corridor_m.max(STOP_RADIUS_M)),
                along_m: loc.along_m,
                xy,
            });
        }
        for r in &mut routes {
            r.stops.sort_by_key(|s| s.planned_offset_s);
            if r.stops.is_empty() {
                problems.push(format!("route {}: has no stops", r.id));
            }
            for w in r.stops.windows(2) {
                if w[0].name == w[1].name && w[0].planned_offset_s == w[1].planned_offset_s {
                    problems.push(format!(
                        "route {}: stop {} is listed twice",
                        r.id, w[0].name
                    ));
                }
            }
            // A loop passes its start again: the last stop's place along the
            // route is its end, not its start.
            if let Some(last) = r.stops.last().cloned() {
                if let Some(l) = r.locate(last.xy, r.length_m / 2.0, f64::MAX) {
                    if l.distance_m <= last.radius_m.max(r.corridor_m) {
                        if let Some(s) = r.stops.last_mut() {
                            s.along_m = l.along_m;
                        }
                    }
                }
            }
        }
        let mut out_zones = Vec::new();
        for z in zones {
            if let Some(route) = &z.route {
                if !routes.iter().any(|r| &r.id == route) {
                    problems.push(format!("{}: no route `{route}` in the file", z.at));
                    continue;
                }
            }
            let poly = Polygon::new(
                z.ring.iter().map(|(x, y)| plane.project(*x, *y)).collect(),
                Vec::new(),
            );
            out_zones.push(Zone {
                name: z.name,
                speed_limit_kmh: z.limit,
                route: z.route,
                ring: z.ring,
                poly,
            });
        }
        if problems.is_empty() {
            Ok(Self {
                plane,
                routes,
                zones: out_zones,
            })
        } else {
            Err(problems)
        }
    }

    /// The route with this id.
    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }

    /// The lowest limit in force at `p` on `route` and the zone that sets it
    /// (none: the route's own default).
    pub fn limit_at(&self, route: &Route, p: Coord) -> (f64, Option<&str>) {
        let mut best = (route.speed_limit_kmh, None);
        for z in &self.zones {
            if z.applies_to(&route.id)
                && z.speed_limit_kmh < best.0
                && z.poly.contains(&Point::from(p))
            {
                best = (z.speed_limit_kmh, Some(z.name.as_str()));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Geodesic;

    #[test]
    fn gcj02_and_bd09_match_published_reference_points() {
        // The reference values every open implementation (coordtransform) publishes.
        let (x, y) = china::wgs84_to_gcj02(116.404, 39.915);
        assert!((x - 116.410_244_499_169_38).abs() < 1e-9, "{x}");
        assert!((y - 39.916_404_281_501_64).abs() < 1e-9, "{y}");
        let (x, y) = china::gcj02_to_bd09(116.404, 39.915);
        assert!((x - 116.410_369_493_710_29).abs() < 1e-9, "{x}");
        assert!((y - 39.921_336_993_510_21).abs() < 1e-9, "{y}");
        let (x, y) = china::bd09_to_gcj02_approx(116.404, 39.915);
        assert!((x - 116.397_627_291_193_15).abs() < 1e-9, "{x}");
        assert!((y - 39.908_656_739_576_31).abs() < 1e-9, "{y}");
        // The inverse is exact to well under a centimetre (1e-7° ≈ 1 cm).
        for (lon, lat) in [(103.0011, 29.9812), (116.404, 39.915), (121.47, 31.23)] {
            let (g, h) = china::wgs84_to_gcj02(lon, lat);
            let (a, b) = Crs::Gcj02.to_wgs84(g, h);
            assert!((a - lon).abs() < 1e-8 && (b - lat).abs() < 1e-8);
            let (g2, h2) = china::gcj02_to_bd09(g, h);
            let (a, b) = Crs::Bd09.to_wgs84(g2, h2);
            assert!((a - lon).abs() < 1e-8 && (b - lat).abs() < 1e-8);
        }
        // Outside China nothing moves.
        assert_eq!(china::wgs84_to_gcj02(2.35, 48.85), (2.35, 48.85));
    }

    #[test]
    fn the_plane_is_within_a_metre_of_the_geodesic_at_campus_scale() {
        let plane = Plane::at(103.0, 29.98);
        for (a, b) in [
            ((103.0, 29.98), (103.03, 30.0)),
            ((102.96, 29.95), (103.04, 30.02)),
            ((103.001, 29.981), (103.0014, 29.9813)),
        ] {
            let g = Geodesic.distance(Point::new(a.0, a.1), Point::new(b.0, b.1));
            let p = Euclidean.distance(plane.project(a.0, a.1), plane.project(b.0, b.1));
            assert!(
                (g - p).abs() < 1.0 && (g - p).abs() / g < 1e-4,
                "{g} vs {p}"
            );
        }
    }

    fn file(features: &str) -> String {
        format!(r#"{{"type":"FeatureCollection","features":[{features}]}}"#)
    }

    const ROUTE: &str = r#"{"type":"Feature","properties":{"route_id":"R1","corridor_m":50,"speed_limit_kmh":60},
        "geometry":{"type":"LineString","coordinates":[[103.0,29.98],[103.01,29.98],[103.01,29.99]]}}"#;

    fn stop(name: &str, lon: f64, lat: f64, offset: i64) -> String {
        format!(
            r#"{{"type":"Feature","properties":{{"route_id":"R1","stop":"{name}","planned_offset_s":{offset}}},
            "geometry":{{"type":"Point","coordinates":[{lon},{lat}]}}}}"#
        )
    }

    #[test]
    fn a_valid_file_loads_with_stops_along_and_zone_limits() {
        let zone = r#"{"type":"Feature","properties":{"zone":"gate","speed_limit_kmh":20},
            "geometry":{"type":"Polygon","coordinates":[[[102.999,29.979],[103.002,29.979],[103.002,29.981],[102.999,29.981],[102.999,29.979]]]}}"#;
        let text = file(
            &[
                ROUTE.to_owned(),
                stop("A", 103.0, 29.98, 0),
                stop("B", 103.01, 29.9801, 120),
                stop("C", 103.01, 29.99, 300),
                zone.to_owned(),
            ]
            .join(","),
        );
        let n = Network::parse(&text, Crs::Wgs84).expect("valid");
        let r = n.route("R1").expect("R1");
        assert_eq!(r.stops.len(), 3);
        // 0.01° of longitude at 29.98° N is about 964 m, of latitude about 1109 m.
        assert!((r.length_m - 2073.0).abs() < 5.0, "{}", r.length_m);
        // B is 11 m up the second leg from the corner.
        assert!(
            (r.stops[1].along_m - 976.0).abs() < 3.0,
            "{}",
            r.stops[1].along_m
        );
        let (limit, zone) = n.limit_at(r, n.plane.project(103.0005, 29.98));
        assert_eq!((limit, zone), (20.0, Some("gate")));
        let (limit, zone) = n.limit_at(r, n.plane.project(103.005, 29.98));
        assert_eq!((limit, zone), (60.0, None));
        let off = r.nearest(n.plane.project(103.005, 29.9836));
        assert!((off.distance_m - 399.0).abs() < 2.0, "{}", off.distance_m);
    }

    #[test]
    fn every_problem_names_its_feature() {
        let open_zone = r#"{"type":"Feature","properties":{"zone":"bridge","speed_limit_kmh":20},
            "geometry":{"type":"Polygon","coordinates":[[[103.0,29.98],[103.001,29.98],[103.001,29.981],[103.0,29.981]]]}}"#;
        let r2 = r#"{"type":"Feature","properties":{"route_id":"R2","corridor_m":50,"speed_limit_kmh":60},
            "geometry":{"type":"LineString","coordinates":[[103.0,29.97],[103.01,29.97]]}}"#;
        let text = file(&[
            ROUTE.to_owned(),
            stop("far", 103.005, 29.985, 60),
            open_zone.to_owned(),
            r2.to_owned(),
            r#"{"type":"Feature","properties":{"route_id":"R9","stop":"x","planned_offset_s":5},"geometry":{"type":"Point","coordinates":[103.0,29.98]}}"#.to_owned(),
        ]
        .join(","));
        let problems = Network::parse(&text, Crs::Wgs84).expect_err("invalid");
        let all = problems.join("\n");
        assert!(
            all.contains("features[1] (stop far): 483 m from route R1"),
            "{all}"
        );
        assert!(all.contains("beyond its corridor of 50 m"), "{all}");
        assert!(
            all.contains("features[2] (zone bridge): the zone is not a closed ring"),
            "{all}"
        );
        assert!(all.contains("features[4] (stop x): no route `R9`"), "{all}");
        assert!(all.contains("route R2: has no stops"), "{all}");
        assert!(all.contains("route R1: has no stops"), "{all}");
    }

    #[test]
    fn a_gcj02_file_is_converted_once_at_load() {
        let (gx, gy) = china::wgs84_to_gcj02(103.0, 29.98);
        let (hx, hy) = china::wgs84_to_gcj02(103.01, 29.98);
        let text = file(&[
            format!(r#"{{"type":"Feature","properties":{{"route_id":"R1","corridor_m":50,"speed_limit_kmh":60}},
            "geometry":{{"type":"LineString","coordinates":[[{gx},{gy}],[{hx},{hy}]]}}}}"#),
            stop("A", gx, gy, 0),
        ]
        .join(","));
        let n = Network::parse(&text, Crs::Gcj02).expect("valid");
        let r = n.route("R1").expect("R1");
        assert!((r.coords[0].0 - 103.0).abs() < 1e-8 && (r.coords[0].1 - 29.98).abs() < 1e-8);
        // Read as WGS-84 it would be some 500 m off the true road.
        let raw = Network::parse(&text, Crs::Wgs84).expect("valid");
        let p = raw.plane.project(103.005, 29.98);
        assert!(raw.route("R1").expect("R1").nearest(p).distance_m > 200.0);
        assert!(r.nearest(n.plane.project(103.005, 29.98)).distance_m < 0.5);
    }
}
