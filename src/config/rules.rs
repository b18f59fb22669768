//! Configuration of alarm rules, calendars and alarm handling.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::alarms::Severity;
use crate::reading::Kind;

/// `[alarms]`: alarm handling shared by all rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// This many alarms of one rule raised within `flood_window` become one grouped entry.
    #[serde(default = "default_flood_threshold")]
    pub flood_threshold: usize,
    /// The window of the flood detector.
    #[serde(default = "default_flood_window", with = "humantime_serde")]
    pub flood_window: Duration,
    /// MQTT topic of alarm transitions; `{site}`, `{device}`, `{rule}` are filled in; "" disables.
    #[serde(default = "default_alarm_topic")]
    pub mqtt_topic: String,
    /// Days the school is closed (`2026-10-01`, or a range `2026-10-01..2026-10-07`).
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Local time of the calendars, as a UTC offset (China: `+08:00`).
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        Self {
            flood_threshold: default_flood_threshold(),
            flood_window: default_flood_window(),
            mqtt_topic: default_alarm_topic(),
            holidays: Vec::new(),
            utc_offset: default_utc_offset(),
        }
    }
}

fn default_flood_threshold() -> usize {
    10
}
fn default_flood_window() -> Duration {
    Duration::from_secs(10)
}
fn default_alarm_topic() -> String {
    "campusgw/{site}/alarm/{device}/{rule}".to_owned()
}
fn default_utc_offset() -> String {
    "+08:00".to_owned()
}

/// `[calendars.<name>]`: when something is the case, e.g. school hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Days of the week: `mon` … `sun`. Empty: every day.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// Times of day, `07:00-18:30`; a range may pass midnight (`22:00-06:00`). Empty: all day.
    #[serde(default)]
    pub times: Vec<String>,
    /// Whether the calendar also holds on `[alarms].holidays`.
    #[serde(default)]
    pub on_holidays: bool,
}

/// A text of a rule, in one language for both (`"…"`) or in each
/// (`{ zh = "…", en = "…" }`): the page and the ledger pick the reader's.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a text (\"…\") or one per language ({ zh = \"…\", en = \"…\" })"
)]
pub enum TextConfig {
    /// The same text in both languages.
    One(String),
    /// Chinese and English.
    Two {
        /// Chinese.
        zh: String,
        /// English.
        en: String,
    },
}

impl TextConfig {
    /// Both languages.
    pub fn texts(&self) -> crate::alarms::Text {
        match self {
            TextConfig::One(t) => crate::alarms::Text::one(t.clone()),
            TextConfig::Two { zh, en } => crate::alarms::Text::two(zh.clone(), en.clone()),
        }
    }
}

/// `[[rules]]`: one alarm rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Stable id: alarms, the ledger and MQTT topics refer to it.
    pub id: String,
    /// A human name (shown on the page), one text or `{ zh, en }`.
    pub name: Option<TextConfig>,
    /// How urgent.
    pub severity: Severity,
    /// The alarm text, one text or `{ zh, en }`; `{device}`, `{site}`,
    /// `{location}`, `{value}` (the condition's field), `{rule}` and any
    /// field of the rule's kinds are filled in. A placeholder that names
    /// nothing is a configuration error.
    pub message: TextConfig,
    /// Applies to these kinds (empty: any kind).
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Applies to these device ids only (empty: any device of the kinds).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Applies only to devices in this building.
    pub building: Option<String>,
    /// Applies only to devices on this floor.
    pub floor: Option<String>,
    /// Evaluated only while this calendar holds.
    pub active_during: Option<String>,
    /// Evaluated only while this calendar does not hold.
    pub active_outside: Option<String>,
    /// Off switch without deleting the rule.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Whether a flood of this rule's alarms (`[alarms].flood_threshold`
    /// within `flood_window`) becomes one group. `false` for alarms each of
    /// which must be a row of its own (a fire).
    #[serde(default = "default_enabled")]
    pub flood: bool,
    /// Rules whose alarms on the same device this rule's active alarm
    /// covers (a detector's own alarm covers its obscuration alarm): they
    /// are still raised and recorded, shown under this one and acknowledged
    /// with it.
    #[serde(default)]
    pub inhibits: Vec<String>,
    /// What trips it.
    pub condition: ConditionConfig,
}

fn default_enabled() -> bool {
    true
}

/// The condition of a rule (`type = …`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionConfig {
    /// `field` above `value`; clears below `clear` (the deadband; default `value`).
    Above {
        /// The field.
        field: String,
        /// Trips when the value is greater.
        value: f64,
        /// Clears when the value is lower (hysteresis).
        clear: Option<f64>,
        /// Must hold this long before the alarm is raised.
        #[serde(default, rename = "for", with = "humantime_serde")]
        for_: Duration,
        /// Must be normal this long before the alarm clears.
        #[serde(default, with = "humantime_serde")]
        clear_for: Duration,
    },
    /// `field` below `value`; clears above `clear`.
    Below {
        /// The field.
        field: String,
        /// Trips when the value is lower.
        value: f64,
        /// Clears when the value is greater (hysteresis).
        clear: Option<f64>,
        /// Must hold this long before the alarm is raised.
        #[serde(default, rename = "for", with = "humantime_serde")]
        for_: Duration,
        /// Must be normal this long before the alarm clears.
        #[serde(default, with = "humantime_serde")]
        clear_for: Duration,
    },
    /// A device event or state: `field` equals `value` (`alarm = true`, `event = "forced_open"`).
    Equals {
        /// The field.
        field: String,
        /// The value (boolean, string or number).
        value: toml::Value,
        /// Must hold this long before the alarm is raised (e.g. a door held open).
        #[serde(default, rename = "for", with = "humantime_serde")]
        for_: Duration,
        /// Must be normal this long before the alarm clears.
        #[serde(default, with = "humantime_serde")]
        clear_for: Duration,
    },
    /// `field` changing by at least `per_minute` per minute over `window` (negative: falling).
    Rate {
        /// The field.
        field: String,
        /// Change per minute that trips it.
        per_minute: f64,
        /// Change per minute below which it clears (default half of `per_minute`).
        clear_per_minute: Option<f64>,
        /// How far back the change is measured.
        #[serde(default = "default_rate_window", with = "humantime_serde")]
        window: Duration,
    },
    /// No reading for longer than `after` (default: three times the kind's report interval).
    Offline {
        /// Silence that counts as offline.
        #[serde(default, with = "humantime_serde::option")]
        after: Option<Duration>,
    },
    /// A CEL expression over the device's latest fields (and `devices["id"].field` of `with`).
    Expr {
        /// Trips when true, e.g. `fan_on == false && duct_temp_c > 50.0`.
        expr: String,
        /// Clears when true (default: when `expr` is false).
        clear: Option<String>,
        /// Other devices whose latest fields the expression may read as `devices["id"]`.
        #[serde(default)]
        with: Vec<String>,
        /// Must hold this long before the alarm is raised.
        #[serde(default, rename = "for", with = "humantime_serde")]
        for_: Duration,
        /// Must be normal this long before the alarm clears.
        #[serde(default, with = "humantime_serde")]
        clear_for: Duration,
    },
    /// Chemical cabinets: opened without two distinct authorised cards within `window`.
    TwoPerson {
        /// How long before the opening both cards must have been presented.
        #[serde(default = "default_two_person_window", with = "humantime_serde")]
        window: Duration,
        /// The authorised cards (empty: any two distinct cards).
        #[serde(default)]
        cards: Vec<String>,
    },
}

fn default_rate_window() -> Duration {
    Duration::from_secs(60)
}
fn default_two_person_window() -> Duration {
    Duration::from_secs(60)
}

/// The calendars by name.
pub type Calendars = BTreeMap<String, CalendarConfig>;
