//! Rule conditions, pure: each decides from a device's latest fields (and its
//! own small history) whether the condition is met, and a `Debounce` turns
//! "met / not met" into raise and clear edges with `for` and `clear_for`.
//!
//! Hysteresis lives in the conditions (a tripped threshold stays met until
//! the value crosses the clear level); time lives in the debounce. No I/O,
//! no clock: times are passed in, so tests drive them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::config::ConditionConfig;
use crate::reading::{FieldName, Value};

/// A raise or clear decided by a debounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The condition held for `for`.
    Raise,
    /// The condition was normal for `clear_for`.
    Clear,
}

/// Turns a stream of met / not-met into edges, with minimum durations.
#[derive(Debug, Clone, Default)]
pub struct Debounce {
    for_ms: i64,
    clear_for_ms: i64,
    /// Whether the alarm condition is considered true.
    pub tripped: bool,
    since: Option<i64>,
    last_met: Option<bool>,
}

impl Debounce {
    /// A debounce with the given minimum durations.
    pub fn new(for_ms: i64, clear_for_ms: i64) -> Self {
        Self {
            for_ms,
            clear_for_ms,
            ..Self::default()
        }
    }

    /// Feeds what the condition says at `now`.
    pub fn step(&mut self, met: bool, now: i64) -> Option<Edge> {
        self.last_met = Some(met);
        self.check(now)
    }

    /// Re-judges the last input at `now` (a tick: durations can elapse without readings).
    pub fn check(&mut self, now: i64) -> Option<Edge> {
        let met = self.last_met?;
        if met == self.tripped {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let need = if met { self.for_ms } else { self.clear_for_ms };
        if now - since >= need {
            self.tripped = met;
            self.since = None;
            Some(if met { Edge::Raise } else { Edge::Clear })
        } else {
            None
        }
    }

    /// Restores a tripped state (an alarm that was active before a restart).
    pub fn restore_tripped(&mut self) {
        self.tripped = true;
        self.last_met = Some(true);
    }
}

/// What a condition sees of one device.
#[derive(Debug)]
pub struct Input<'a> {
    /// The device's latest value of every field.
    pub fields: &'a [(FieldName, Value)],
    /// The fields of this reading only (events are judged on these).
    pub reading: &'a [(FieldName, Value)],
    /// The reading's own time, ms.
    pub ts_ms: i64,
    /// Latest fields of other devices, for expressions (`devices["id"]`).
    pub others: &'a HashMap<String, Vec<(FieldName, Value)>>,
    /// Device id, site and kind, for expressions.
    pub device: &'a str,
    /// Site.
    pub site: &'a str,
    /// Kind.
    pub kind: &'a str,
}

fn field<'a>(fields: &'a [(FieldName, Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Value above `on`, until below `off`.
    Above {
        /// Field.
        field: String,
        /// Trip level.
        on: f64,
        /// Clear level.
        off: f64,
    },
    /// Value below `on`, until above `off`.
    Below {
        /// Field.
        field: String,
        /// Trip level.
        on: f64,
        /// Clear level.
        off: f64,
    },
    /// Field equals a value.
    Equals {
        /// Field.
        field: String,
        /// The value.
        value: Value,
    },
    /// Change per minute.
    Rate {
        /// Field.
        field: String,
        /// Trip rate (negative: falling).
        on: f64,
        /// Clear rate.
        off: f64,
        /// Window, ms.
        window_ms: i64,
    },
    /// No reading for `after_ms`; judged by the engine from presence, not fields.
    Offline {
        /// Silence, ms; `None`: the kind's default.
        after_ms: Option<i64>,
    },
    /// A CEL expression.
    Expr {
        /// Trips when true.
        raise: Arc<cel::Program>,
        /// Clears when true (else: when `raise` is false).
        clear: Option<Arc<cel::Program>>,
        /// The other devices it reads.
        with: Vec<String>,
    },
    /// Two distinct authorised cards before an opening.
    TwoPerson {
        /// Window, ms.
        window_ms: i64,
        /// Authorised cards (empty: any).
        cards: HashSet<String>,
    },
}

/// Per rule and device: what a condition remembers.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Raise/clear timing.
    pub debounce: Debounce,
    /// (ts, value) within a rate window.
    history: VecDeque<(i64, f64)>,
    /// (ts, card) presented within the two-person window.
    swipes: VecDeque<(i64, String)>,
    door_open: bool,
    violation: bool,
}

impl Memory {
    /// Fresh memory with the rule's durations.
    pub fn new(for_ms: i64, clear_for_ms: i64) -> Self {
        Self {
            debounce: Debounce::new(for_ms, clear_for_ms),
            ..Self::default()
        }
    }
}

/// Bound on remembered samples per rule and device, whatever the report rate.
const MAX_HISTORY: usize = 512;

/// A condition that could not be evaluated (an expression's runtime error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl Condition {
    /// Compiles a condition; the error says what is wrong.
    pub fn compile(cfg: &ConditionConfig) -> Result<(Self, i64, i64), String> {
        let ms = |d: std::time::Duration| d.as_millis() as i64;
        Ok(match cfg {
            ConditionConfig::Above {
                field,
                value,
                clear,
                for_,
                clear_for,
            } => {
                let off = clear.unwrap_or(*value);
                if off > *value {
                    return Err(format!("clear ({off}) must not be above value ({value})"));
                }
                (
                    Condition::Above {
                        field: field.clone(),
                        on: *value,
                        off,
                    },
                    ms(*for_),
                    ms(*clear_for),
                )
            }
            ConditionConfig::Below {
                field,
                value,
                clear,
                for_,
                clear_for,
            } => {
                let off = clear.unwrap_or(*value);
                if off < *value {
                    return Err(format!("clear ({off}) must not be below value ({value})"));
                }
                (
                    Condition::Below {
                        field: field.clone(),
                        on: *value,
                        off,
                    },
                    ms(*for_),
                    ms(*clear_for),
                )
            }
            ConditionConfig::Equals {
                field,
                value,
                for_,
                clear_for,
            } => {
                let value = match value {
                    toml::Value::Boolean(b) => Value::Bool(*b),
                    toml::Value::String(s) => Value::Str(s.as_str().into()),
                    toml::Value::Integer(i) => Value::F64(*i as f64),
                    toml::Value::Float(f) => Value::F64(*f),
                    _ => return Err("value must be a boolean, string or number".into()),
                };
                (
                    Condition::Equals {
                        field: field.clone(),
                        value,
                    },
                    ms(*for_),
                    ms(*clear_for),
                )
            }
            ConditionConfig::Rate {
                field,
                per_minute,
                clear_per_minute,
                window,
            } => {
                if *per_minute == 0.0 || !per_minute.is_finite() {
                    return Err("per_minute must be a non-zero number".into());
                }
                let off = clear_per_minute.unwrap_or(per_minute / 2.0);
                let w = ms(*window);
                if w < 1000 {
                    return Err("window must be at least 1s".into());
                }
                (
                    Condition::Rate {
                        field: field.clone(),
                        on: *per_minute,
                        off,
                        window_ms: w,
                    },
                    0,
                    0,
                )
            }
            ConditionConfig::Offline { after } => (
                Condition::Offline {
                    after_ms: after.map(ms),
                },
                0,
                0,
            ),
            ConditionConfig::Expr {
                expr,
                clear,
                with,
                for_,
                clear_for,
            } => {
                let compile = |e: &str| {
                    cel::Program::compile(e)
                        .map(Arc::new)
                        .map_err(|err| format!("`{e}` is not a valid CEL expression: {err}"))
                };
                let raise = compile(expr)?;
                let clear = clear.as_deref().map(compile).transpose()?;
                (
                    Condition::Expr {
                        raise,
                        clear,
                        with: with.clone(),
                    },
                    ms(*for_),
                    ms(*clear_for),
                )
            }
            ConditionConfig::TwoPerson { window, cards } => (
                Condition::TwoPerson {
                    window_ms: ms(*window),
                    cards: cards.iter().cloned().collect(),
                },
                0,
                0,
            ),
        })
    }

    /// The field a value-based condition watches (for `{value}` in messages).
    pub fn field(&self) -> Option<&str> {
        match self {
            Condition::Above { field, .. }
            | Condition::Below { field, .. }
            | Condition::Equals { field, .. }
            | Condition::Rate { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether the condition is met for this input; `Ok(None)` when the input
    /// says nothing about it (the field is absent).
    pub fn met(&self, mem: &mut Memory, input: &Input<'_>) -> Result<Option<bool>, EvalError> {
        let tripped = mem.debounce.tripped;
        Ok(match self {
            Condition::Above { field: f, on, off } => field(input.fields, f)
                .and_then(Value::as_f64)
                .map(|v| if tripped { v >= *off } else { v > *on }),
            Condition::Below { field: f, on, off } => field(input.fields, f)
                .and_then(Value::as_f64)
                .map(|v| if tripped { v <= *off } else { v < *on }),
            Condition::Equals { field: f, value } => {
                // Judged on the reading itself: an event field repeated in the latest
                // values must not keep a momentary event alive.
                field(input.reading, f).map(|v| match (v, value) {
                    (Value::I64(i), Value::F64(x)) => (*i as f64) == *x,
                    (v, x) => v == x,
                })
            }
            Condition::Rate {
                field: f,
                on,
                off,
                window_ms,
            } => {
                let Some(v) = field(input.reading, f).and_then(Value::as_f64) else {
                    return Ok(None);
                };
                mem.history.push_back((input.ts_ms, v));
                while mem.history.len() > MAX_HISTORY
                    || mem
                        .history
                        .front()
                        .is_some_and(|(t, _)| *t < input.ts_ms - window_ms)
                {
                    mem.history.pop_front();
                }
                let (t0, v0) = *mem.history.front().unwrap_or(&(input.ts_ms, v));
                // Half a window of data at the least, so two close samples make no slope.
                if input.ts_ms - t0 < window_ms / 2 {
                    return Ok(Some(tripped));
                }
                let per_min = (v - v0) / ((input.ts_ms - t0) as f64 / 60_000.0);
                let (on, off) = if *on > 0.0 { (*on, *off) } else { (-on, -off) };
                let rate = if self.rising() { per_min } else { -per_min };
                Some(if tripped { rate >= off } else { rate >= on })
            }
            Condition::Offline { .. } => None,
            Condition::Expr { raise, clear, with } => {
                let ctx = context(input, with);
                let exec = |p: &cel::Program| match p.execute(&ctx) {
                    Ok(cel::Value::Bool(b)) => Ok(b),
                    Ok(other) => Err(EvalError(format!(
                        "the expression gave {other:?}, not true or false"
                    ))),
                    Err(e) => Err(EvalError(e.to_string())),
                };
                match (tripped, clear) {
                    (true, Some(c)) => Some(!exec(c)?),
                    _ => Some(exec(raise)?),
                }
            }
            Condition::TwoPerson { window_ms, cards } => {
                if let Some(card) = field(input.reading, "card_id").and_then(Value::as_str) {
                    if cards.is_empty() || cards.contains(card) {
                        mem.swipes.push_back((input.ts_ms, card.to_owned()));
                    }
                }
                while mem.swipes.len() > MAX_HISTORY
                    || mem
                        .swipes
                        .front()
                        .is_some_and(|(t, _)| *t < input.ts_ms - window_ms)
                {
                    mem.swipes.pop_front();
                }
                let Some(open) = field(input.reading, "door_open").and_then(Value::as_bool) else {
                    return Ok(None);
                };
                if open && !mem.door_open {
                    let distinct: HashSet<&str> =
                        mem.swipes.iter().map(|(_, c)| c.as_str()).collect();
                    mem.violation = distinct.len() < 2;
                    // An opening uses the cards up: the next one needs two again.
                    mem.swipes.clear();
                }
                if !open {
                    mem.violation = false;
                }
                mem.door_open = open;
                Some(mem.violation)
            }
        })
    }

    fn rising(&self) -> bool {
        matches!(self, Condition::Rate { on, .. } if *on > 0.0)
    }
}

fn cel_value(v: &Value) -> cel::Value {
    match v {
        Value::F64(f) => cel::Value::Float(*f),
        Value::I64(i) => cel::Value::Int(*i),
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Str(s) => cel::Value::String(Arc::new(s.to_string())),
    }
}

fn context(input: &Input<'_>, with: &[String]) -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::default();
    for (name, v) in input.fields {
        ctx.add_variable_from_value(name.to_string(), cel_value(v));
    }
    ctx.add_variable_from_value("device", input.device.to_owned());
    ctx.add_variable_from_value("site", input.site.to_owned());
    ctx.add_variable_from_value("kind", input.kind.to_owned());
    if !with.is_empty() {
        let devices: HashMap<String, cel::Value> = with
            .iter()
            .map(|id| {
                let fields: HashMap<String, cel::Value> = input
                    .others
                    .get(id)
                    .map(|fs| {
                        fs.iter()
                            .map(|(n, v)| (n.to_string(), cel_value(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                (id.clone(), cel::Value::from(fields))
            })
            .collect();
        ctx.add_variable_from_value("devices", devices);
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(toml_text: &str) -> (Condition, Memory) {
        let cfg: ConditionConfig = toml::from_str(toml_text).expect("condition config");
        let (c, f, cf) = Condition::compile(&cfg).expect("compiles");
        (c, Memory::new(f, cf))
    }

    fn fields(pairs: &[(&'static str, Value)]) -> Vec<(FieldName, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (FieldName::Borrowed(n), v.clone()))
            .collect()
    }

    /// Feeds one reading at `t` and returns the edge.
    fn feed(
        c: &Condition,
        m: &mut Memory,
        t: i64,
        pairs: &[(&'static str, Value)],
    ) -> Option<Edge> {
        let f = fields(pairs);
        let others = HashMap::new();
        let input = Input {
            fields: &f,
            reading: &f,
            ts_ms: t,
            others: &others,
            device: "d",
            site: "s",
            kind: "kitchen",
        };
        match c.met(m, &input).expect("evaluates") {
            Some(met) => m.debounce.step(met, t),
            None => m.debounce.check(t),
        }
    }

    fn temp(v: f64) -> [(&'static str, Value); 1] {
        [("duct_temp_c", Value::F64(v))]
    }

    #[test]
    fn threshold_edges_and_deadband() {
        let (c, mut m) =
            cond("type = \"above\"\nfield = \"duct_temp_c\"\nvalue = 80.0\nclear = 75.0");
        assert_eq!(
            feed(&c, &mut m, 0, &temp(80.0)),
            None,
            "exactly at the threshold does not trip"
        );
        assert_eq!(feed(&c, &mut m, 1, &temp(80.1)), Some(Edge::Raise));
        // Hovering around the limit: one alarm, not fifty.
        for (i, v) in [79.0, 81.0, 76.0, 80.5, 75.0].iter().enumerate() {
            assert_eq!(
                feed(&c, &mut m, 2 + i as i64, &temp(*v)),
                None,
                "within the deadband at {v}"
            );
        }
        assert_eq!(feed(&c, &mut m, 10, &temp(74.9)), Some(Edge::Clear));
        assert_eq!(
            feed(&c, &mut m, 11, &temp(79.0)),
            None,
            "below the trip level stays normal"
        );
    }

    #[test]
    fn for_duration_and_gap_shorter_than_for() {
        let (c, mut m) = cond("type = \"above\"\nfield = \"duct_temp_c\"\nvalue = 80.0\nfor = \"10s\"\nclear_for = \"5s\"");
        assert_eq!(feed(&c, &mut m, 0, &temp(90.0)), None);
        assert_eq!(feed(&c, &mut m, 9_999, &temp(90.0)), None, "not yet 10 s");
        assert_eq!(
            feed(&c, &mut m, 10_500, &temp(70.0)),
            None,
            "a dip restarts the wait"
        );
        assert_eq!(feed(&c, &mut m, 11_000, &temp(90.0)), None);
        assert_eq!(m.debounce.check(20_999), None);
        assert_eq!(
            m.debounce.check(21_000),
            Some(Edge::Raise),
            "a tick raises once 10 s have passed"
        );
        assert_eq!(feed(&c, &mut m, 22_000, &temp(70.0)), None);
        assert_eq!(
            feed(&c, &mut m, 24_000, &temp(90.0)),
            None,
            "a gap shorter than clear_for does not clear"
        );
        assert_eq!(feed(&c, &mut m, 25_000, &temp(70.0)), None);
        assert_eq!(m.debounce.check(30_000), Some(Edge::Clear));
    }

    #[test]
    fn below_for_battery() {
        let (c, mut m) =
            cond("type = \"below\"\nfield = \"battery_pct\"\nvalue = 20.0\nclear = 25.0");
        let b = |v: f64| [("battery_pct", Value::F64(v))];
        assert_eq!(feed(&c, &mut m, 0, &b(20.0)), None);
        assert_eq!(feed(&c, &mut m, 1, &b(19.0)), Some(Edge::Raise));
        assert_eq!(feed(&c, &mut m, 2, &b(24.0)), None);
        assert_eq!(feed(&c, &mut m, 3, &b(25.5)), Some(Edge::Clear));
    }

    #[test]
    fn device_event_is_momentary() {
        let (c, mut m) = cond("type = \"equals\"\nfield = \"event\"\nvalue = \"forced_open\"");
        let e = |s: &str| [("event", Value::Str(s.into()))];
        assert_eq!(feed(&c, &mut m, 0, &e("access_granted")), None);
        assert_eq!(feed(&c, &mut m, 1, &e("forced_open")), Some(Edge::Raise));
        assert_eq!(
            feed(&c, &mut m, 2, &[("door_open", Value::Bool(true))]),
            None,
            "no event field: no change"
        );
        assert_eq!(feed(&c, &mut m, 3, &e("closed")), Some(Edge::Clear));
        let (c, mut m) = cond("type = \"equals\"\nfield = \"alarm\"\nvalue = true");
        assert_eq!(
            feed(&c, &mut m, 0, &[("alarm", Value::Bool(true))]),
            Some(Edge::Raise)
        );
    }

    #[test]
    fn rate_of_rise() {
        let (c, mut m) =
            cond("type = \"rate\"\nfield = \"duct_temp_c\"\nper_minute = 5.0\nwindow = \"60s\"");
        assert_eq!(feed(&c, &mut m, 0, &temp(50.0)), None);
        assert_eq!(
            feed(&c, &mut m, 20_000, &temp(51.0)),
            None,
            "not enough history yet"
        );
        assert_eq!(
            feed(&c, &mut m, 30_000, &temp(52.0)),
            None,
            "4 °C/min is below 5"
        );
        assert_eq!(
            feed(&c, &mut m, 40_000, &temp(54.0)),
            Some(Edge::Raise),
            "6 °C/min"
        );
        assert_eq!(
            feed(&c, &mut m, 100_000, &temp(55.0)),
            Some(Edge::Clear),
            "1.7 °C/min is below the clear rate"
        );
    }

    #[test]
    fn expression_across_fields_and_devices() {
        let (c, mut m) = cond(
            "type = \"expr\"\nexpr = 'fan_on == false && duct_temp_c > 50.0 && devices[\"gas-1\"].gas_lel_pct >= 0.0'\nwith = [\"gas-1\"]",
        );
        let f = fields(&[
            ("fan_on", Value::Bool(false)),
            ("duct_temp_c", Value::F64(60.0)),
        ]);
        let mut others = HashMap::new();
        others.insert(
            "gas-1".to_owned(),
            fields(&[("gas_lel_pct", Value::F64(1.0))]),
        );
        let input = Input {
            fields: &f,
            reading: &f,
            ts_ms: 0,
            others: &others,
            device: "d",
            site: "s",
            kind: "kitchen",
        };
        assert_eq!(c.met(&mut m, &input), Ok(Some(true)));
        let (bad, mut m) = cond("type = \"expr\"\nexpr = 'duct_temp_c + 1.0'");
        assert!(
            bad.met(&mut m, &input).is_err(),
            "a number is not a condition"
        );
        let cfg: ConditionConfig =
            toml::from_str("type = \"expr\"\nexpr = 'a &&'").expect("config");
        assert!(Condition::compile(&cfg).is_err());
    }

    proptest::proptest! {
        /// A rule's expression is installer input: no text may crash the parser.
        #[test]
        fn any_expression_text_is_refused_or_compiled(expr in "[a-z_ .=&|!<>()\\[\\]\"0-9+*/-]{0,40}") {
            let cfg = ConditionConfig::Expr { expr, clear: None, with: Vec::new(), for_: Default::default(), clear_for: Default::default() };
            let _ = Condition::compile(&cfg);
        }
    }

    #[test]
    fn two_person_rule() {
        let (c, mut m) =
            cond("type = \"two_person\"\nwindow = \"60s\"\ncards = [\"T1\", \"T2\", \"T3\"]");
        let swipe = |card: &'static str| {
            [
                ("card_id", Value::Str(card.into())),
                ("door_open", Value::Bool(false)),
            ]
        };
        let door = |open: bool| [("door_open", Value::Bool(open))];
        // Two authorised teachers: fine.
        assert_eq!(feed(&c, &mut m, 0, &swipe("T1")), None);
        assert_eq!(feed(&c, &mut m, 10_000, &swipe("T2")), None);
        assert_eq!(feed(&c, &mut m, 20_000, &door(true)), None);
        assert_eq!(feed(&c, &mut m, 30_000, &door(false)), None);
        // One card twice: alarm, cleared when the door closes.
        assert_eq!(feed(&c, &mut m, 40_000, &swipe("T1")), None);
        assert_eq!(feed(&c, &mut m, 41_000, &swipe("T1")), None);
        assert_eq!(feed(&c, &mut m, 42_000, &door(true)), Some(Edge::Raise));
        assert_eq!(feed(&c, &mut m, 50_000, &door(false)), Some(Edge::Clear));
        // An unauthorised card does not count; cards older than the window neither.
        assert_eq!(feed(&c, &mut m, 60_000, &swipe("X9")), None);
        assert_eq!(feed(&c, &mut m, 61_000, &swipe("T3")), None);
        assert_eq!(feed(&c, &mut m, 62_000, &door(true)), Some(Edge::Raise));
    }
}
