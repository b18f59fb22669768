//! The alarm vocabulary the rest of the gateway speaks: a [`Change`] of an
//! alarm with its ledger [`Event`], the operator's [`Command`]s and why one
//! is refused, and the zones under a drill ([`Suppression`]). The rule
//! engine produces and takes them; the store, the sink, MQTT and the web
//! only read them — so `rules` depends on `alarms`, never the other way.

use super::lifecycle::{Alarm, NotAllowed, State, Text};
use crate::reading::Location;

/// A changed alarm with the ledger entry that records why.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The alarm after the change.
    pub alarm: Alarm,
    /// The ledger entry.
    pub event: Event,
}

/// One line of the alarm ledger (台账).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// The alarm.
    pub alarm_id: i64,
    /// When, epoch ms.
    pub at: i64,
    /// `raise`, `repeat`, `clear`, `ack`, `shelve`, `unshelve`, `comment`, `group`.
    pub action: String,
    /// State before (none for a raise).
    pub from: Option<State>,
    /// State after.
    pub to: State,
    /// Who (operator actions).
    pub user: Option<String>,
    /// Comment, reason.
    pub comment: Option<String>,
    /// The value involved.
    pub value: Option<f64>,
    /// What identifies this trip: the reading's text fields (a card id, a
    /// gate event), the condition's field and the place.
    pub detail: Vec<(String, String)>,
}

/// What an operator asks of an alarm or a zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Acknowledge (a group: with its members).
    Ack {
        /// Alarm id.
        id: i64,
        /// User.
        by: String,
        /// Comment.
        comment: Option<String>,
    },
    /// Shelve for `minutes`.
    Shelve {
        /// Alarm id.
        id: i64,
        /// User.
        by: String,
        /// How long.
        minutes: u32,
        /// Why.
        reason: String,
    },
    /// Take off the shelf now.
    Unshelve {
        /// Alarm id.
        id: i64,
        /// User.
        by: String,
    },
    /// Add a note.
    Comment {
        /// Alarm id.
        id: i64,
        /// User.
        by: String,
        /// The note.
        text: String,
    },
    /// A drill or maintenance in a zone: alarms there are recorded, marked, and notify no one.
    Suppress(Suppression),
    /// The gateway's own trouble the security room must see (data being
    /// dropped): raised while `active`, cleared when not.
    System {
        /// Rule id, e.g. `gateway-spool-full`.
        rule: String,
        /// Whether the condition holds.
        active: bool,
        /// Severity.
        severity: crate::alarms::Severity,
        /// The text.
        message: Text,
    },
    /// An alarm on a device that a checker outside the rule engine keeps
    /// (a school bus's route episodes, `bus::task`): raised while `active`,
    /// cleared when not, at the device's own time `at`.
    Device(DeviceAlarm),
    /// End a zone's suppression early.
    EndSuppression {
        /// Building.
        building: String,
        /// Floor (none: the whole building).
        floor: Option<String>,
    },
}

/// An alarm that a checker outside the rule engine raises or clears.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAlarm {
    /// Rule id, e.g. `bus-overspeed`.
    pub rule: String,
    /// Site.
    pub site: String,
    /// Device id.
    pub device: String,
    /// Whether the condition holds.
    pub active: bool,
    /// Severity.
    pub severity: crate::alarms::Severity,
    /// The rule's name.
    pub name: Text,
    /// The text.
    pub message: Text,
    /// The figure (peak speed, distance).
    pub value: Option<f64>,
    /// When, epoch ms (the device's time).
    pub at: i64,
    /// What identifies it in the ledger (trip, stop, zone).
    pub detail: Vec<(String, String)>,
}

/// A zone under a drill or maintenance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Suppression {
    /// Building.
    pub building: String,
    /// Floor (none: the whole building).
    pub floor: Option<String>,
    /// Until, epoch ms.
    pub until: i64,
    /// Why (`fire drill`).
    pub reason: String,
    /// Who.
    pub by: String,
}

impl Suppression {
    /// Whether a device at `loc` is in the zone.
    pub fn covers(&self, loc: Option<&Location>) -> bool {
        let Some(l) = loc else { return false };
        l.building.as_deref() == Some(self.building.as_str())
            && self
                .floor
                .as_ref()
                .is_none_or(|f| l.floor.as_ref() == Some(f))
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No open alarm has this id.
    #[error("no open alarm {0}")]
    NotFound(i64),
    /// The alarm's state does not allow it.
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    /// Out of range.
    #[error("{0}")]
    Invalid(String),
}
