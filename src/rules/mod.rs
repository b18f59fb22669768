//! Alarm rules: which devices a rule watches, its condition and its
//! calendar (`condition`, `calendar`, pure), and the engine that turns
//! readings and time into alarm transitions (`engine`, pure) run by the rules
//! task (`task`), which persists them and tells the rest of the gateway.

pub mod calendar;
pub mod condition;
pub mod engine;
pub mod task;

use std::collections::{BTreeMap, HashSet};

use crate::alarms::{Lang, Severity, Text};
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
    pub name: Text,
    /// Severity of its alarms.
    pub severity: Severity,
    /// Message template, per language.
    pub message: Text,
    /// Whether its alarms may be grouped into a flood.
    pub flood: bool,
    /// Rules whose alarms on the same device its active alarm covers.
    pub inhibits: Vec<String>,
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

    /// The alarm text in both languages for a reading (or, for a timer or
    /// offline, the device's last known fields); `value` is the condition's
    /// field in the reading that made it true.
    pub fn render(
        &self,
        device: &str,
        site: &str,
        location: Option<&Location>,
        fields: &[(crate::reading::FieldName, Value)],
        value: Option<&Value>,
    ) -> Text {
        let place = location.map(Location::describe).unwrap_or_default();
        let sub = |key: &str, lang: Lang| -> Option<String> {
            match key {
                "device" => Some(device.to_owned()),
                "site" => Some(site.to_owned()),
                "location" => Some(if place.is_empty() {
                    device.to_owned()
                } else {
                    place.clone()
                }),
                "rule" => Some(self.name.get(lang).to_owned()),
                "value" => value.map(fmt_value),
                k => fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| fmt_value(v)),
            }
        };
        let text = |lang: Lang| fill(self.message.get(lang), |k| sub(k, lang));
        Text {
            zh: text(Lang::Zh),
            en: text(Lang::En),
        }
    }
}

/// The placeholders of a message template, `{name}`.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        let start = rest.find('{')?;
        let len = rest[start..].find('}')?;
        let key = &rest[start + 1..start + len];
        rest = &rest[start + len + 1..];
        Some(key)
    })
}

/// Fills a template's placeholders; one without a value (a field the
/// reading lacks) stays as written, so the text shows what is missing.
fn fill(template: &str, sub: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let key = &rest[start + 1..start + len];
        match sub(key) {
            Some(s) => out.push_str(&s),
            None => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::F64(f) => fmt_num(*f),
        Value::I64(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.to_string(),
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
        let names = Names::of(cfg);
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
            for (j, other) in r.inhibits.iter().enumerate() {
                if other == &r.id {
                    errors.push((
                        at(&format!("inhibits[{j}]")),
                        "a rule cannot inhibit itself".into(),
                    ));
                } else if !cfg.rules.iter().any(|x| &x.id == other) {
                    errors.push((at(&format!("inhibits[{j}]")), format!("no rule `{other}`")));
                }
            }
            errors.extend(names.problems(r).into_iter().map(|(k, m)| (at(&k), m)));
            match Condition::compile(&r.condition) {
                Ok((condition, for_ms, clear_for_ms)) => {
                    errors.extend(
                        names
                            .condition_problems(r, &condition)
                            .into_iter()
                            .map(|(k, m)| (at(&k), m)),
                    );
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
        name: r
            .name
            .as_ref()
            .map_or_else(|| Text::one(r.id.clone()), |n| n.texts()),
        severity: r.severity,
        message: r.message.texts(),
        flood: r.flood,
        inhibits: r.inhibits.clone(),
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

/// What the configuration declares, for the rules' references to be
/// checked against: a rule that names a device, a building or a field that
/// does not exist can never fire, which a safety rule must not do silently.
struct Names<'a> {
    devices: HashSet<String>,
    buildings: HashSet<String>,
    /// Fields that a topic mapping or a register map produces beyond the kinds' own.
    custom_fields: HashSet<&'a str>,
}

impl<'a> Names<'a> {
    fn of(cfg: &'a Config) -> Self {
        let known = cfg.known_devices();
        let mut custom_fields: HashSet<&str> = HashSet::new();
        for t in &cfg.mqtt.topics {
            custom_fields.extend(t.fields.keys().map(String::as_str));
        }
        for m in cfg.modbus.maps.values() {
            custom_fields.extend(m.registers.iter().map(|r| r.field.as_str()));
        }
        for d in &cfg.modbus.devices {
            custom_fields.extend(d.registers.iter().map(|r| r.field.as_str()));
        }
        Self {
            devices: known.iter().map(|k| k.config.id.clone()).collect(),
            buildings: known
                .iter()
                .filter_map(|k| k.config.building.clone())
                .collect(),
            custom_fields,
        }
    }

    fn is_field(&self, kinds: &[Kind], name: &str) -> bool {
        let kinds: &[Kind] = if kinds.is_empty() { &Kind::ALL } else { kinds };
        kinds.iter().any(|k| k.field_type(name).is_some()) || self.custom_fields.contains(name)
    }

    /// Devices, building and message placeholders.
    fn problems(&self, r: &RuleConfig) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (j, d) in r.devices.iter().enumerate() {
            if !self.devices.contains(d) {
                out.push((
                    format!("devices[{j}]"),
                    format!("no device `{d}` in [[devices]], devices_file or [[modbus.devices]]"),
                ));
            }
        }
        if let Some(b) = &r.building {
            if !self.buildings.contains(b) {
                out.push((
                    "building".into(),
                    format!("no declared device is in building `{b}` (the building as written in [[devices]])"),
                ));
            }
        }
        let has_value = matches!(
            r.condition,
            crate::config::ConditionConfig::Above { .. }
                | crate::config::ConditionConfig::Below { .. }
                | crate::config::ConditionConfig::Equals { .. }
                | crate::config::ConditionConfig::Rate { .. }
        );
        let texts = r.message.texts();
        for (lang, text) in [("zh", &texts.zh), ("en", &texts.en)] {
            for key in placeholders(text) {
                let known = matches!(key, "device" | "site" | "location" | "rule")
                    || (key == "value" && has_value)
                    || (key != "value" && self.is_field(&r.kinds, key));
                if !known {
                    let why = if key == "value" {
                        "this condition has no single field, so `{value}` names nothing".to_owned()
                    } else {
                        format!("`{{{key}}}` names nothing: not device, site, location, rule, value or a field of the rule's kinds")
                    };
                    let path = match r.message {
                        crate::config::TextConfig::One(_) => "message".to_owned(),
                        crate::config::TextConfig::Two { .. } => format!("message.{lang}"),
                    };
                    if !out.iter().any(|(p, m)| p == &path && m == &why) {
                        out.push((path, why));
                    }
                }
            }
        }
        out
    }

    /// The condition's field, and the devices an expression reads.
    fn condition_problems(&self, r: &RuleConfig, c: &Condition) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(field) = c.field() {
            if !self.is_field(&r.kinds, field) {
                let kinds: Vec<&str> = if r.kinds.is_empty() {
                    vec!["any kind"]
                } else {
                    r.kinds.iter().map(|k| k.as_str()).collect()
                };
                out.push((
                    "condition.field".into(),
                    format!(
                        "`{field}` is not a field of {}: the rule could never fire (a device's own field must be mapped in [mqtt.topics.fields] or a register map)",
                        kinds.join(", ")
                    ),
                ));
            }
        }
        if let Condition::Expr { with, .. } = c {
            for (j, d) in with.iter().enumerate() {
                if !self.devices.contains(d) {
                    out.push((
                        format!("condition.with[{j}]"),
                        format!("no device `{d}` is declared"),
                    ));
                }
            }
        }
        out
    }
}
