//! Alarms: the ISA-18.2 lifecycle (`lifecycle`, pure), the durable store and
//! ledger (`store`, SQLite under `data_dir`), and their publication over MQTT
//! (`publish`). The rule engine (`rules/`) decides; this module keeps.
//!
//! `AlarmView` is the one outside shape of an alarm, shared by the HTTP API,
//! the event stream and MQTT, so every consumer sees the same fields.

pub mod change;
pub mod ledger;
pub mod lifecycle;
pub mod publish;
pub mod store;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

pub use change::{Change, Command, CommandError, DeviceAlarm, Event, Suppression};
pub use lifecycle::{Action, Alarm, Lang, Severity, State, Text};

fn ts(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// An alarm as the outside sees it: RFC 3339 times, the place in words.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    /// Id.
    pub id: i64,
    /// Rule id.
    pub rule: String,
    /// Device id (`*` for a flood group).
    pub device: String,
    /// Device kind.
    pub kind: String,
    /// Site.
    pub site: String,
    /// The place in words.
    pub location: String,
    /// Building.
    pub building: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Room.
    pub room: Option<String>,
    /// `critical` `high` `medium` `low`.
    pub severity: Severity,
    /// `unacked` `acked` `cleared_unacked` `cleared` `shelved`.
    pub state: State,
    /// Whether the condition is true now.
    pub active: bool,
    /// Raised.
    pub raised_at: Option<DateTime<Utc>>,
    /// Returned to normal.
    pub cleared_at: Option<DateTime<Utc>>,
    /// Acknowledged by.
    pub acked_by: Option<String>,
    /// Acknowledged at.
    pub acked_at: Option<DateTime<Utc>>,
    /// Last value that tripped it.
    pub value: Option<f64>,
    /// Largest value.
    pub peak: Option<f64>,
    /// Times tripped while open (members, for a group).
    pub count: u32,
    /// Last tripped; for a flood group, its newest member's raise.
    pub last_at: Option<DateTime<Utc>>,
    /// The text, in Chinese (or the rule's one language).
    pub message: String,
    /// The text in each language.
    pub messages: Text,
    /// The rule's name in each language.
    pub names: Text,
    /// Shelved until.
    pub shelved_until: Option<DateTime<Utc>>,
    /// Why shelved.
    pub shelve_reason: Option<String>,
    /// The drill or maintenance it was raised under, if any.
    pub suppressed: Option<String>,
    /// The flood group it belongs to.
    pub group: Option<i64>,
    /// Whether it is a flood group.
    pub is_group: bool,
    /// The alarm on the same device that covers it (see `inhibits`).
    pub inhibited_by: Option<i64>,
    /// Whether the device is declared in the configuration; `false` marks
    /// one only seen on the network, whose id may be spoofed.
    pub declared: bool,
    /// Last change.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&Alarm> for AlarmView {
    fn from(a: &Alarm) -> Self {
        let loc = a.location.as_ref();
        Self {
            id: a.id,
            rule: a.rule.clone(),
            device: a.device.clone(),
            kind: a.kind.clone(),
            site: a.site.clone(),
            location: loc
                .map(crate::reading::Location::describe)
                .unwrap_or_default(),
            building: loc.and_then(|l| l.building.clone()),
            floor: loc.and_then(|l| l.floor.clone()),
            room: loc.and_then(|l| l.room.clone()),
            severity: a.severity,
            state: a.state,
            active: a.active,
            raised_at: ts(a.raised_at),
            cleared_at: a.cleared_at.and_then(ts),
            acked_by: a.acked_by.clone(),
            acked_at: a.acked_at.and_then(ts),
            value: a.value,
            peak: a.peak,
            count: a.count,
            last_at: ts(a.last_at),
            message: a.message.zh.clone(),
            messages: a.message.clone(),
            names: a.name.clone(),
            shelved_until: a.shelved_until.and_then(ts),
            shelve_reason: a.shelve_reason.clone(),
            suppressed: a.suppressed.clone(),
            group: a.group,
            is_group: a.is_group,
            inhibited_by: a.inhibited_by,
            declared: a.declared,
            updated_at: ts(a.updated_at),
        }
    }
}
