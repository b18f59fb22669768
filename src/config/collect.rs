//! Every type and unknown-key error of a file in one run.
//!
//! serde stops at the first error, so a file that fails to deserialize is
//! checked again piece by piece: each top-level section, each element of the
//! arrays that hold many entries (`devices`, `rules`, `mqtt.topics`,
//! `modbus.devices`) and each `modbus.maps` entry is a unit of its own. Within
//! a unit, the key that failed is noted and taken out, and the unit is tried
//! again, until it deserializes or a required key is missing. Unknown keys
//! and names get a "did you mean" from the names serde expected.
//!
//! What is left after taking the bad keys out is the file's repaired table:
//! when every unit came through, the semantic checks run on it too, so one
//! `check` names a type error in one section and a zero `keep_alive` in another.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::{AlarmsConfig, Calendars, RuleConfig};
use super::{
    DeviceConfig, GatewayConfig, InfluxConfig, ModbusConfig, ModbusDeviceConfig, MqttConfig,
    RegisterMapConfig, TopicConfig, WebConfig,
};

/// The top-level keys of the file: `Config`'s fields (a test keeps them equal).
pub(super) const SECTIONS: &[&str] = &[
    "gateway",
    "mqtt",
    "influx",
    "web",
    "devices",
    "devices_file",
    "alarms",
    "calendars",
    "rules",
    "modbus",
    "notify",
    "buses",
];

/// Most errors noted in one unit before giving up on it (a bound on the work
/// a hostile file can cause: each round deserializes the unit again).
const MAX_PER_UNIT: usize = 100;

/// What checking a file piece by piece found.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// (key path, message) of every type and unknown-key error.
    pub problems: Vec<(String, String)>,
    /// The sections that had one (their semantic findings would follow from
    /// the repair, not from the file, so they are not shown).
    pub bad_sections: BTreeSet<String>,
    /// Whether the rest of the file can be checked: every unit deserialized
    /// once its bad keys were taken out, or only sections that others do not
    /// refer to could not be repaired (they are taken out of the table).
    pub repaired: bool,
}

/// Sections other sections refer to (devices by id, calendars by name) or
/// that are required: without them the semantic checks of the rest would
/// report what follows from the repair.
const REFERRED: &[&str] = &["mqtt", "devices", "calendars"];

/// Checks every unit of `table`, taking the keys that fail out of it.
pub(super) fn check(table: &mut toml::Table) -> Collected {
    let mut c = Collected {
        repaired: true,
        ..Collected::default()
    };
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        if !SECTIONS.contains(&key.as_str()) {
            let message = with_hint(
                &key,
                SECTIONS.iter().copied(),
                format!("unknown section or key `{key}`"),
            );
            c.problems.push((key.clone(), message));
            table.remove(&key);
            continue;
        }
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        let before = c.problems.len();
        let ok = check_section(&key, value, &mut c.problems);
        if !ok {
            if REFERRED.contains(&key.as_str()) {
                c.repaired = false;
            } else {
                // Checked as far as it goes; the rest of the file goes on without it.
                table.remove(&key);
            }
        }
        if c.problems.len() > before {
            c.bad_sections.insert(key);
        }
    }
    if !table.contains_key("mqtt") {
        c.problems.push((
            "mqtt".into(),
            "is missing: the [mqtt] section with the broker's url is needed".into(),
        ));
        c.repaired = false;
    }
    c
}

fn check_section(key: &str, value: &mut toml::Value, out: &mut Vec<(String, String)>) -> bool {
    match key {
        "gateway" => unit::<GatewayConfig>(value, key, out),
        "mqtt" => with_array(
            value,
            key,
            "topics",
            out,
            unit::<TopicConfig>,
            unit::<MqttConfig>,
        ),
        "influx" => unit::<InfluxConfig>(value, key, out),
        "web" => unit::<WebConfig>(value, key, out),
        "devices" => elements(value, key, out, unit::<DeviceConfig>),
        "devices_file" => unit::<std::path::PathBuf>(value, key, out),
        "alarms" => unit::<AlarmsConfig>(value, key, out),
        "calendars" => unit::<Calendars>(value, key, out),
        "rules" => elements(value, key, out, unit::<RuleConfig>),
        "modbus" => {
            // Each named map on its own, then the devices, then the rest.
            let mut ok = true;
            let maps = value.as_table_mut().and_then(|t| t.remove("maps"));
            let maps = match maps {
                Some(toml::Value::Table(mut maps)) => {
                    for (name, map) in maps.iter_mut() {
                        ok &= unit::<RegisterMapConfig>(map, &format!("modbus.maps.{name}"), out);
                    }
                    Some(toml::Value::Table(maps))
                }
                other => other,
            };
            if let (Some(t), Some(m)) = (value.as_table_mut(), maps) {
                t.insert("maps".into(), m);
            }
            ok &= with_array(
                value,
                key,
                "devices",
                out,
                unit::<ModbusDeviceConfig>,
                |v: &mut toml::Value, p: &str, o: &mut Vec<(String, String)>| {
                    // The maps were checked above; here only the other keys.
                    let maps = v.as_table_mut().and_then(|t| t.remove("maps"));
                    let ok = unit::<ModbusConfig>(v, p, o);
                    if let (Some(t), Some(m)) = (v.as_table_mut(), maps) {
                        t.insert("maps".into(), m);
                    }
                    ok
                },
            );
            ok
        }
        "notify" => unit::<super::NotifyConfig>(value, key, out),
        "buses" => unit::<super::BusesConfig>(value, key, out),
        // Not reached: the caller checks `SECTIONS`.
        _ => true,
    }
}

type Check = fn(&mut toml::Value, &str, &mut Vec<(String, String)>) -> bool;

/// An array of entries: each one a unit (`<prefix>[i]`).
fn elements(
    value: &mut toml::Value,
    prefix: &str,
    out: &mut Vec<(String, String)>,
    each: Check,
) -> bool {
    match value {
        toml::Value::Array(items) => {
            let mut ok = true;
            for (i, item) in items.iter_mut().enumerate() {
                ok &= each(item, &format!("{prefix}[{i}]"), out);
            }
            ok
        }
        other => {
            out.push((
                prefix.to_owned(),
                format!(
                    "must be a list of entries ([[{prefix}]]), not a {}",
                    other.type_str()
                ),
            ));
            false
        }
    }
}

/// A section with an array of entries under `key`: the entries, then the rest.
fn with_array(
    value: &mut toml::Value,
    prefix: &str,
    key: &str,
    out: &mut Vec<(String, String)>,
    each: Check,
    rest: impl FnOnce(&mut toml::Value, &str, &mut Vec<(String, String)>) -> bool,
) -> bool {
    let taken = value.as_table_mut().and_then(|t| t.remove(key));
    match taken {
        Some(mut items @ toml::Value::Array(_)) => {
            let ok = elements(&mut items, &format!("{prefix}.{key}"), out, each);
            let ok = rest(value, prefix, out) && ok;
            if let Some(t) = value.as_table_mut() {
                t.insert(key.to_owned(), items);
            }
            ok
        }
        other => {
            // Not an array (serde says what it should be), or absent.
            if let (Some(t), Some(v)) = (value.as_table_mut(), other) {
                t.insert(key.to_owned(), v);
            }
            rest(value, prefix, out)
        }
    }
}

/// Deserializes one unit as `T` again and again, noting each error and
/// taking its key out, until it passes (true) or cannot be repaired (false).
fn unit<T: DeserializeOwned>(
    value: &mut toml::Value,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) -> bool {
    // Keys taken out here: their "missing field" is no news.
    let mut removed: BTreeSet<String> = BTreeSet::new();
    for _ in 0..MAX_PER_UNIT {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(_) => return true,
            Err(e) => e,
        };
        let mut segments: Vec<Segment> = e.path().iter().cloned().collect();
        let message = e.inner().message().trim().to_owned();
        if let Some(field) = quoted_after(&message, "unknown field `") {
            // The path may end with the unknown key itself, or at its table.
            if matches!(segments.last(), Some(Segment::Map { key }) if key == field) {
                segments.pop();
            }
            let key = join(&join(prefix, &render(&segments)), field);
            let hint = with_hint(
                field,
                expected(&message),
                format!("unknown field `{field}`"),
            );
            // Without a suggestion, the list of what is allowed helps more.
            let message = if hint.contains("did you mean") {
                hint
            } else {
                message.clone()
            };
            out.push((key.clone(), message));
            removed.insert(key);
            if !take_out(value, &segments, Some(field)) {
                return false;
            }
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            let at = join(prefix, &render(&segments));
            if !removed.contains(&join(&at, field)) {
                out.push((at, format!("`{field}` is needed")));
            }
            return false;
        } else {
            let at = join(prefix, &render(&segments));
            let message = match quoted_after(&message, "unknown variant `") {
                Some(word) => with_hint(word, expected(&message), message.clone()),
                None => improve(&message),
            };
            out.push((at.clone(), message));
            removed.insert(at);
            if !take_out(value, &segments, None) {
                return false;
            }
        }
    }
    false
}

/// Takes the value at `path` (or its key `field`) out of `value`. An array
/// element is not taken out (the later ones would change index): false.
fn take_out(value: &mut toml::Value, path: &[Segment], field: Option<&str>) -> bool {
    let (parent, last): (&[Segment], Option<&Segment>) = match field {
        Some(_) => (path, None),
        None => match path.split_last() {
            Some((last, parent)) => (parent, Some(last)),
            None => return false,
        },
    };
    let mut here = value;
    for s in parent {
        let next = match (s, here) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get_mut(key),
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index),
            _ => None,
        };
        match next {
            Some(n) => here = n,
            None => return false,
        }
    }
    match (field, last, here) {
        (Some(f), _, toml::Value::Table(t)) => t.remove(f).is_some(),
        (None, Some(Segment::Map { key }), toml::Value::Table(t)) => t.remove(key).is_some(),
        _ => false,
    }
}

/// A path as `a.b[2].c`.
fn render(segments: &[Segment]) -> String {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Segment::Map { key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    s
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// The word in backticks right after `lead`.
fn quoted_after<'a>(message: &'a str, lead: &str) -> Option<&'a str> {
    let start = message.find(lead)? + lead.len();
    message[start..].split('`').next()
}

/// The names serde lists after "expected" (`a`, `b` or `c`).
fn expected(message: &str) -> impl Iterator<Item = &str> {
    let list = message.split_once("expected").map_or("", |(_, l)| l);
    list.split('`').skip(1).step_by(2)
}

/// `base`, with "did you mean `x`?" when one of `names` is close to `word`.
pub(super) fn with_hint<'a>(
    word: &str,
    names: impl Iterator<Item = &'a str>,
    base: String,
) -> String {
    let best = names
        .map(|n| (strsim::damerau_levenshtein(&word.to_lowercase(), n), n))
        .min_by_key(|(d, _)| *d);
    match best {
        // Close: one or two edits, and not most of a short word.
        Some((d, name)) if d > 0 && d <= 2 && d * 3 <= name.len().max(word.len()) => {
            format!("{base}; did you mean `{name}`?")
        }
        Some((0, name)) if name != word => format!("{base}; did you mean `{name}`?"),
        _ => base,
    }
}

/// serde's messages, with examples where the expected form is not obvious.
fn improve(message: &str) -> String {
    if message.ends_with("expected a duration") {
        format!("{message} such as \"30s\", \"5m\" or \"1h 30m\"")
    } else {
        message.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_the_fields_of_config() {
        let e = toml::from_str::<super::super::Config>("zzz = 1")
            .expect_err("unknown field")
            .message()
            .to_owned();
        let fields: Vec<&str> = expected(&e).collect();
        assert_eq!(fields, SECTIONS, "{e}");
    }

    #[test]
    fn hints() {
        let names = ["listen", "tls"];
        assert!(
            with_hint("lisen", names.into_iter(), "x".into()).ends_with("did you mean `listen`?")
        );
        assert_eq!(with_hint("listen_port", names.into_iter(), "x".into()), "x");
        assert_eq!(with_hint("tl", ["url"].into_iter(), "x".into()), "x");
        assert!(with_hint("Smoke", ["smoke", "gate"].into_iter(), "x".into()).contains("`smoke`"));
    }
}
