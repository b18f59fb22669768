//! Alarm rules: which devices a rule watches, its condition and its
//! calendar (`condition`, `calendar`, pure), and the engine that turns
//! readings and time into alarm transitions (`engine`, pure) run by the rules
//! task (`task`), which persists them and tells the rest of the gateway.

pub mod calendar;
pub mod condition;
pub mod engine;
pub mod task;

use std::collections::{BTreeMap, HashSet};

use crate::alarms::Severity;
use crate::config::{Config, RuleConfig};
use crate::reading::{Kind, Location, Reading, Value};
use calendar::{Calendar, LocalTime};
use condition::Condition;

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Severity of its alarms.
    pub severity: Severity,
    /// Message template.
    pub message: String,
    kinds: Vec<Kind>,
    devices: HashSet<String>,
    building: Option<String>,
    floor: Option<String>,
    /// Calendar name, and whether the rule runs inside (true) or outside it.
    calendar: Option<(String, bool)>,
    /// The condition.
    pub condition: Condition,
    /// `for`, ms.
    pub for_ms: i64,
    /// `clear_for`, ms.
    pub clear_for_ms: i64,
}

/// Every rule with the calendars they use.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The enabled rules.
    pub rules: Vec<Rule>,
    calendars: BTreeMap<String, Calendar>,
    local: LocalTime,
}

impl Rule {
    /// Whether the rule watches this device.
    pub fn applies(&self, kind: Kind, device: &str, location: Option<&Location>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.devices.is_empty() || self.devices.contains(device))
            && self
                .building
                .as_ref()
                .is_none_or(|b| location.and_then(|l| l.building.as_ref()) == Some(b))
            && self
                .floor
                .as_ref()
                .is_none_or(|f| location.and_then(|l| l.floor.as_ref()) == Some(f))
    }

    /// The alarm text for a reading (or, for offline, the last known fields).
    pub fn render(
        &self,
        device: &str,
        site: &str,
        location: Option<&Location>,
        fields: &[(crate::reading::FieldName, Value)],
        value: Option<f64>,
    ) -> String {
        let place = location.map(describe_location).unwrap_or_default();
        let mut out = String::with_capacity(self.message.len() + 32);
        let mut rest = self.message.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let key = &rest[start + 1..start + len];
            let sub = match key {
                "device" => Some(device.to_owned()),
                "site" => Some(site.to_owned()),
                "location" => Some(if place.is_empty() {
                    device.to_owned()
                } else {
                    place.clone()
                }),
                "rule" => Some(self.name.clone()),
                "value" => value.map(fmt_num),
                k => fields.iter().find(|(n, _)| n == k).map(|(_, v)| match v {
                    Value::F64(f) => fmt_num(*f),
                    Value::I64(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Str(s) => s.to_string(),
                }),
            };
            match sub {
                Some(s) => out.push_str(&s),
                None => out.push_str(&rest[start..=start + len]),
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn fmt_num(f: f64) -> String {
    let r = (f * 100.0).round() / 100.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// A place in words: the name if given, else building / floor / room.
pub fn describe_location(l: &Location) -> String {
    if let Some(n) = &l.name {
        return n.clone();
    }
    [l.building.as_deref(), l.floor.as_deref(), l.room.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ")
}

impl RuleSet {
    /// Compiles the rules of a configuration: `Err` lists (key path, problem).
    pub fn compile(cfg: &Config) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let local = LocalTime::new(&cfg.alarms).map_err(|e| vec![("alarms".to_owned(), e)]);
        let mut calendars = BTreeMap::new();
        for (name, c) in &cfg.calendars {
            match Calendar::new(c) {
                Ok(cal) => {
                    calendars.insert(name.clone(), cal);
                }
                Err(e) => errors.push((format!("calendars.{name}"), e)),
            }
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let at = |k: &str| format!("rules[{i}].{k}");
            if !crate::config::is_valid_id(&r.id) {
                errors.push((at("id"), format!("`{}` {}", r.id, crate::config::ID_RULE)));
            }
            if !seen.insert(r.id.as_str()) {
                errors.push((at("id"), format!("rule `{}` is defined twice", r.id)));
            }
            let calendar = match (&r.active_during, &r.active_outside) {
                (Some(_), Some(_)) => {
                    errors.push((
                        at("active_outside"),
                        "use either active_during or active_outside".into(),
                    ));
                    None
                }
                (Some(c), None) => Some((c.clone(), true)),
                (None, Some(c)) => Some((c.clone(), false)),
                (None, None) => None,
            };
            if let Some((c, _)) = &calendar {
                if !cfg.calendars.contains_key(c) {
                    errors.push((
                        at(if r.active_during.is_some() {
                            "active_during"
                        } else {
                            "active_outside"
                        }),
                        format!("no calendar `{c}` in [calendars]"),
                    ));
                }
            }
            match Condition::compile(&r.condition) {
                Ok((condition, for_ms, clear_for_ms)) => {
                    if r.enabled {
                        rules.push(compile_rule(r, condition, for_ms, clear_for_ms, calendar));
                    }
                }
                Err(e) => errors.push((at("condition"), e)),
            }
        }
        match (local, errors.is_empty()) {
            (Ok(local), true) => Ok(Self {
                rules,
                calendars,
                local,
            }),
            (Err(mut e), _) => {
                e.extend(errors);
                Err(e)
            }
            (Ok(_), false) => Err(errors),
        }
    }

    /// Whether a rule runs at `now_ms` (its calendar holds, or it has none).
    pub fn in_schedule(&self, rule: &Rule, now_ms: i64) -> bool {
        match &rule.calendar {
            None => true,
            Some((name, inside)) => {
                let holds = self
                    .calendars
                    .get(name)
                    .is_some_and(|c| c.holds(&self.local, now_ms));
                holds == *inside
            }
        }
    }

    /// The rules that watch this reading's device.
    pub fn matching<'a>(&'a self, r: &'a Reading) -> impl Iterator<Item = (usize, &'a Rule)> + 'a {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, rule)| rule.applies(r.kind, &r.device, r.location.as_deref()))
    }
}

fn compile_rule(
    r: &RuleConfig,
    condition: Condition,
    for_ms: i64,
    clear_for_ms: i64,
    calendar: Option<(String, bool)>,
) -> Rule {
    Rule {
        id: r.id.clone(),
        name: r.name.clone().unwrap_or_else(|| r.id.clone()),
        severity: r.severity,
        message: r.message.clone(),
        kinds: r.kinds.clone(),
        devices: r.devices.iter().cloned().collect(),
        building: r.building.clone(),
        floor: r.floor.clone(),
        calendar,
        condition,
        for_ms,
        clear_for_ms,
    }
}

/// What is usable but probably wrong: a field that none of the rule's
/// kinds has is almost always a typo (though a mapped custom field is legal).
pub fn warnings(cfg: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, r) in cfg.rules.iter().enumerate() {
        let Ok((condition, _, _)) = Condition::compile(&r.condition) else {
            continue;
        };
        if let Some(field) = condition.field() {
            if !r.kinds.is_empty() && !r.kinds.iter().any(|k| k.field_type(field).is_some()) {
                let kinds: Vec<&str> = r.kinds.iter().map(|k| k.as_str()).collect();
                out.push((
                    format!("rules[{i}].condition.field"),
                    format!(
                        "`{field}` is not a field of {} (a mapped custom field?)",
                        kinds.join(", ")
                    ),
                ));
            }
        }
    }
    out
}
