//! InfluxDB line protocol: the only place that knows its escaping rules.
//!
//! A reading becomes `kind,tags fields ts` with tags sorted by key (InfluxDB
//! indexes sorted tags fastest) and the timestamp in milliseconds.

use crate::reading::{Reading, Value};

/// Appends one line for `r` to `out`.
pub fn encode(r: &Reading, out: &mut String) {
    out.push_str(r.kind.as_str());
    let loc = r.location.as_deref();
    let tags = [
        ("building", loc.and_then(|l| l.building.as_deref())),
        ("device", Some(&*r.device)),
        ("floor", loc.and_then(|l| l.floor.as_deref())),
        ("room", loc.and_then(|l| l.room.as_deref())),
        ("site", Some(&*r.site)),
    ];
    for (key, value) in tags {
        // InfluxDB refuses empty tag values; an absent part is simply no tag.
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_key(v, out);
        }
    }
    write_fields(r.fields.iter().map(|(n, v)| (&**n, v)), out);
    push_ts(r.ts_ms, out);
}

/// Appends ` <ts>` and the newline.
fn push_ts(ts_ms: i64, out: &mut String) {
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(ts_ms));
    out.push('\n');
}

/// Appends one point of the `alarm` measurement for an alarm change:
/// tags `device`, `rule`, `severity`, `site`; fields `state`, `value`, `action`.
pub fn encode_alarm(c: &crate::alarms::Change, out: &mut String) {
    let a = &c.alarm;
    out.push_str("alarm");
    for (key, value) in [
        ("device", a.device.as_str()),
        ("rule", a.rule.as_str()),
        ("severity", a.severity.as_str()),
        ("site", a.site.as_str()),
    ] {
        if !value.is_empty() {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_key(value, out);
        }
    }
    let state = Value::Str(a.state.as_str().into());
    let action = Value::Str(c.event.action.as_str().into());
    let value = a.value.filter(|v| v.is_finite()).map(Value::F64);
    let fields = [
        ("state", Some(&state)),
        ("action", Some(&action)),
        ("value", value.as_ref()),
    ];
    write_fields(fields.into_iter().filter_map(|(n, v)| Some((n, v?))), out);
    push_ts(c.event.at, out);
}

/// Appends one point of the `bus_episode` measurement for a finished bus
/// episode: tags `device`, `route`, `site`, `type`; fields `duration_s`,
/// `peak_kmh`, `limit_kmh`, `max_distance_m`, `passengers`, `zone`, `stop`;
/// at the episode's start.
pub fn encode_bus_episode(p: &crate::bus::task::EpisodePoint, out: &mut String) {
    let e = &p.episode;
    out.push_str("bus_episode");
    for (key, value) in [
        ("device", p.vehicle.as_str()),
        ("route", p.route.as_str()),
        ("site", p.site.as_str()),
        ("type", e.kind.as_str()),
    ] {
        if !value.is_empty() {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_key(value, out);
        }
    }
    let f = |v: Option<f64>| v.filter(|x| x.is_finite()).map(Value::F64);
    let duration = Value::F64(e.duration_s(e.start));
    let (peak, limit, dist) = (f(e.peak_kmh), f(e.limit_kmh), f(e.max_distance_m));
    let passengers = e.passengers.map(Value::I64);
    let zone = e.zone.as_deref().map(|z| Value::Str(z.into()));
    let stop = e.stop.as_deref().map(|z| Value::Str(z.into()));
    let fields = [
        ("duration_s", Some(&duration)),
        ("peak_kmh", peak.as_ref()),
        ("limit_kmh", limit.as_ref()),
        ("max_distance_m", dist.as_ref()),
        ("passengers", passengers.as_ref()),
        ("zone", zone.as_ref()),
        ("stop", stop.as_ref()),
    ];
    write_fields(fields.into_iter().filter_map(|(n, v)| Some((n, v?))), out);
    push_ts(e.start, out);
}

/// Appends ` name=value,…` for the fields.
pub fn write_fields<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>, out: &mut String) {
    let mut sep = ' ';
    for (name, value) in fields {
        out.push(sep);
        sep = ',';
        escape_key(name, out);
        out.push('=');
        match value {
            // ryu keeps a decimal point or an exponent, so the type stays float.
            Value::F64(f) => out.push_str(ryu::Buffer::new().format(*f)),
            Value::I64(i) => {
                out.push_str(itoa::Buffer::new().format(*i));
                out.push('i');
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        // A raw newline would end the line.
                        '\n' | '\r' => out.push(' '),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
        }
    }
}

/// Escapes a measurement, tag key, tag value or field key.
pub fn escape_key(s: &str, out: &mut String) {
    // Ids and field names almost never need it: copy them whole.
    if !s
        .bytes()
        .any(|b| matches!(b, b',' | b'=' | b' ' | b'\\' | b'\n' | b'\r'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // Line protocol cannot carry a line break in a name at all; an
            // escaped space keeps the line whole. (The decoder and the
            // configuration refuse such names: this is the last defence.)
            '\n' | '\r' => out.push_str("\\ "),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Kind, Location, Source};
    use std::sync::Arc;

    fn line(r: &Reading) -> String {
        let mut s = String::new();
        encode(r, &mut s);
        s
    }

    #[test]
    fn reading_with_location() {
        let mut r = Reading::new(
            Arc::from("yazhong"),
            Arc::from("a3-301"),
            Kind::Smoke,
            1_764_380_000_123,
            vec![
                ("temp_c".into(), Value::F64(24.0)),
                ("alarm".into(), Value::Bool(false)),
                ("note".into(), Value::Str("say \"hi\"\\\n".into())),
                ("n".into(), Value::I64(-3)),
            ],
            Source::Mqtt,
        );
        r.location = Some(Arc::new(Location {
            building: Some("A 3".into()),
            floor: Some("3".into()),
            room: None,
            name: Some("ignored".into()),
        }));
        assert_eq!(
            line(&r),
            "smoke,building=A\\ 3,device=a3-301,floor=3,site=yazhong temp_c=24.0,alarm=false,note=\"say \\\"hi\\\"\\\\ \",n=-3i 1764380000123\n"
        );
    }

    #[test]
    fn a_line_break_in_a_name_cannot_break_the_line() {
        let mut s = String::new();
        escape_key("bad\nname", &mut s);
        assert_eq!(s, "bad\\ name");
    }

    #[test]
    fn floats_keep_their_type() {
        let mut s = String::new();
        write_fields(
            [
                ("x", &Value::F64(1e300)),
                ("y", &Value::F64(0.1)),
                ("z", &Value::F64(-7.0)),
                ("w", &Value::F64(2.5e-8)),
            ]
            .into_iter(),
            &mut s,
        );
        assert_eq!(s, " x=1e300,y=0.1,z=-7.0,w=2.5e-8");
    }
}
