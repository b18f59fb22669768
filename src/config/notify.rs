//! `[notify]`: the people who are told of alarms, their teams and the duty
//! roster (值班表). Who is on duty is worked out by `notify::roster`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::alarms::Lang;

/// `[notify]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Everyone who may be told of an alarm.
    #[serde(default)]
    pub people: Vec<PersonConfig>,
    /// Teams by id (`security`, `canteen`, `labs`, `transport`, `leadership`).
    #[serde(default)]
    pub teams: BTreeMap<String, TeamConfig>,
    /// The weekly duty pattern.
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
    /// A CSV duty roster (`date,start,end,team,person`) that replaces the
    /// weekly pattern of a team on the dates it lists; relative to the
    /// configuration file.
    pub roster_file: Option<PathBuf>,
}

/// `[[notify.people]]`: one person.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// Stable id, referred to by teams, shifts and the roster file.
    pub id: String,
    /// Name as shown in messages and the ledger (`张伟`).
    pub name: String,
    /// Mobile number for SMS.
    pub phone: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// WeCom (企业微信) user id, to @-mention in a group robot's message.
    pub wecom_user: Option<String>,
    /// Mobile number registered with DingTalk, to @-mention.
    pub dingtalk_mobile: Option<String>,
    /// Language of their messages.
    #[serde(default)]
    pub lang: Lang,
    /// The status page's user they sign in as (acknowledging from a message).
    pub user: Option<String>,
}

/// `[notify.teams.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// A human name (`保卫处`).
    pub name: Option<String>,
    /// People ids.
    #[serde(default)]
    pub members: Vec<String>,
    /// The person the chain escalates to (a people id).
    pub lead: Option<String>,
}

/// `[[notify.shifts]]`: who of a team is on duty when, every week.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    /// The team.
    pub team: String,
    /// People ids on this shift.
    pub people: Vec<String>,
    /// `mon` … `sun`; empty: every day.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `08:00-20:00`; a range may pass midnight (`20:00-08:00` belongs to the
    /// day it starts). Empty: all day.
    #[serde(default)]
    pub times: Vec<String>,
    /// Whether the shift also holds on `[alarms].holidays`.
    #[serde(default)]
    pub on_holidays: bool,
}
