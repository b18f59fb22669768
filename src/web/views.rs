//! The JSON bodies the API answers with, one type per shape, so a field's
//! name and type are written down once and a handler cannot drift from them.
//! Times are RFC 3339 (UTC); lists are wrapped in an object named for what
//! they hold, so a field can be added beside them later.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::auth::Role;
use crate::alarms::{Alarm, AlarmView, State};
use crate::registry::{DeviceView, KindCounts};

/// An epoch-ms time as RFC 3339.
pub(super) fn ts(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// `GET /api/me` and the answer to a sign-in.
#[derive(Serialize)]
pub(super) struct Me<'a> {
    pub user: &'a str,
    pub role: Role,
    pub csrf: Option<&'a str>,
}

/// Any list of alarms: `{"alarms": [...]}`.
#[derive(Serialize)]
pub(super) struct Alarms<T> {
    pub alarms: Vec<T>,
}

impl Alarms<AlarmView> {
    /// The alarms a command changed.
    pub(super) fn of(list: &[Alarm]) -> Self {
        Self {
            alarms: list.iter().map(AlarmView::from).collect(),
        }
    }
}

/// An open alarm with the members of its flood group and the alarms it covers.
#[derive(Serialize)]
pub(super) struct Nested {
    #[serde(flatten)]
    pub alarm: AlarmView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<AlarmView>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<AlarmView>,
}

/// `GET /api/alarms/{id}`.
#[derive(Serialize)]
pub(super) struct AlarmDetail {
    pub alarm: AlarmView,
    pub events: Vec<EventView>,
    pub notifications: Vec<NotificationView>,
}

/// One ledger entry of an alarm.
#[derive(Serialize)]
pub(super) struct EventView {
    pub at: Option<DateTime<Utc>>,
    pub action: String,
    pub from: Option<State>,
    pub to: State,
    pub user: Option<String>,
    pub comment: Option<String>,
    pub value: Option<f64>,
    pub detail: BTreeMap<String, String>,
}

impl From<crate::alarms::Event> for EventView {
    fn from(e: crate::alarms::Event) -> Self {
        Self {
            at: ts(e.at),
            action: e.action,
            from: e.from,
            to: e.to,
            user: e.user,
            comment: e.comment,
            value: e.value,
            detail: e.detail.into_iter().collect(),
        }
    }
}

/// One notification of an alarm (a row of the notifier's outbox).
#[derive(Serialize)]
pub(super) struct NotificationView {
    pub channel: String,
    pub people: Vec<String>,
    pub step: usize,
    pub kind: String,
    pub state: String,
    pub attempts: u32,
    pub created_at: Option<DateTime<Utc>>,
    /// Only while it waits to be sent.
    pub next_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub answer: Option<String>,
}

impl From<crate::notify::outbox::Notification> for NotificationView {
    fn from(n: crate::notify::outbox::Notification) -> Self {
        Self {
            people: n
                .people
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            next_at: (n.state == "pending").then(|| ts(n.next_at)).flatten(),
            sent_at: n.sent_at.and_then(ts),
            created_at: ts(n.created_at),
            channel: n.channel,
            step: n.step,
            kind: n.kind,
            state: n.state,
            attempts: n.attempts,
            answer: n.answer,
        }
    }
}

/// `GET /api/duty`.
#[derive(Serialize)]
pub(super) struct DutyNow<'a> {
    pub at: Option<DateTime<Utc>>,
    pub teams: Vec<TeamOnDuty<'a>>,
}

/// Who is on duty in one team.
#[derive(Serialize)]
pub(super) struct TeamOnDuty<'a> {
    pub team: &'a str,
    pub name: Option<&'a str>,
    pub source: crate::notify::roster::DutySource,
    /// Nobody on duty: the security room must see it.
    pub gap: bool,
    pub people: Vec<OnDuty<'a>>,
}

/// A person on duty, as the page shows them.
#[derive(Serialize)]
pub(super) struct OnDuty<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub phone: Option<&'a str>,
}

impl<'a> From<crate::notify::roster::Duty<'a>> for TeamOnDuty<'a> {
    fn from(d: crate::notify::roster::Duty<'a>) -> Self {
        Self {
            team: d.team,
            name: d.team_name,
            source: d.source,
            gap: d.people.is_empty(),
            people: d
                .people
                .iter()
                .map(|p| OnDuty {
                    id: &p.id,
                    name: &p.name,
                    phone: p.phone.as_deref(),
                })
                .collect(),
        }
    }
}

/// `GET /api/suppressions`.
#[derive(Serialize)]
pub(super) struct Suppressions {
    pub suppressions: Vec<SuppressionView>,
}

/// A drill zone in force.
#[derive(Serialize)]
pub(super) struct SuppressionView {
    pub building: String,
    pub floor: Option<String>,
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
    pub by: String,
}

impl From<crate::alarms::Suppression> for SuppressionView {
    fn from(x: crate::alarms::Suppression) -> Self {
        Self {
            until: ts(x.until),
            building: x.building,
            floor: x.floor,
            reason: x.reason,
            by: x.by,
        }
    }
}

/// `GET /api/devices`.
#[derive(Serialize)]
pub(super) struct Devices {
    pub devices: Vec<DeviceView>,
    /// Online and offline per kind.
    pub counts: BTreeMap<&'static str, KindCounts>,
}

/// `GET /api/buildings`.
#[derive(Serialize)]
pub(super) struct Buildings {
    pub buildings: Vec<Building>,
}

/// A building with its floors.
#[derive(Serialize)]
pub(super) struct Building {
    pub building: String,
    pub floors: std::collections::BTreeSet<String>,
}

/// `GET /api/users`.
#[derive(Serialize)]
pub(super) struct Users {
    pub users: Vec<super::auth::UserInfo>,
}

/// `GET /api/tokens`.
#[derive(Serialize)]
pub(super) struct Tokens {
    pub tokens: Vec<super::auth::TokenInfo>,
}

/// `POST /api/tokens`: the one answer that carries the secret.
#[derive(Serialize)]
pub(super) struct NewTokenMade {
    pub name: String,
    pub role: Role,
    pub token: String,
    pub owner: String,
    pub expires_in_days: Option<u32>,
}

/// `GET /api/audit`.
#[derive(Serialize)]
pub(super) struct Audit {
    pub audit: Vec<super::auth::AuditEntry>,
}

/// `POST /api/admin/reload`.
#[derive(Serialize)]
pub(super) struct Reloaded {
    /// How many rules run now.
    pub rules: usize,
    /// How many accounts the built-in broker has now (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_accounts: Option<usize>,
}
