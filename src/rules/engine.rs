//! The rule engine, pure: readings, ticks and operator commands in, alarm
//! changes out. It owns the conditions' memory and the open alarms; the
//! rules task persists what it returns before anyone else hears of it.
//!
//! One alarm per rule and device while it is open: a re-trip updates it,
//! and its ledger entry keeps the re-trip's value and identifying fields.
//! A flood — `flood_threshold` alarms of one rule within `flood_window` —
//! becomes one group alarm whose members point to it; the group takes
//! later alarms only while they keep coming within the window of its newest
//! member, so a fire minutes after a power dip is a row of its own. A rule's
//! active alarm covers the alarms of the rules it `inhibits` on the same
//! device: they are raised and recorded, marked `inhibited_by`, shown under
//! it and acknowledged with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::alarms::lifecycle::{Action, Alarm, State, Text};
use crate::alarms::{Change, Command, CommandError, Event, Suppression};
use crate::config::{kind_heartbeat_ms, KnownDevice};
use crate::reading::{FieldName, Kind, Location, Reading, Value};

use super::condition::{Condition, Edge, Input, Memory};
use super::{Rule, RuleSet};

/// (site, device).
type DeviceKey = (Arc<str>, Arc<str>);

/// Site, device and kind of the gateway's own alarms.
pub const SYSTEM: &str = "gateway";

/// The most field names other than its kind's own kept of one device's
/// latest values (the default `gateway.max_fields`; each reading is already
/// cut to `max_fields` by the decoder).
const MAX_UNKNOWN_FIELDS: usize = 64;

#[derive(Debug, Clone)]
struct Device {
    kind: Kind,
    location: Option<Arc<Location>>,
    fields: Vec<(FieldName, Value)>,
    last_seen: i64,
    /// Silence after which an `offline` rule without its own `after` trips, ms.
    heartbeat_ms: i64,
    /// Declared in the configuration (else only seen).
    declared: bool,
    /// Readings seen (saturating): an undeclared device is watched for
    /// silence only once it has shown that it reports.
    readings: u32,
}

/// Readings an undeclared device must have sent before its silence is an
/// alarm: one stray message from a device nobody declared (a spoofed or
/// misconfigured id) must not leave an offline alarm behind forever.
const UNDECLARED_OFFLINE_AFTER_READINGS: u32 = 3;

/// At most this many identifying fields per ledger entry, each at most this long.
const DETAIL_MAX: usize = 8;
const DETAIL_VALUE_MAX: usize = 128;

/// Flood settings.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Alarms of one rule…
    pub threshold: usize,
    /// …within this many ms.
    pub window_ms: i64,
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    set: RuleSet,
    /// Per rule (parallel to `set.rules`): each device's condition memory.
    mem: Vec<HashMap<DeviceKey, Memory>>,
    devices: HashMap<DeviceKey, Device>,
    open: HashMap<i64, Alarm>,
    by_key: HashMap<(String, DeviceKey), i64>,
    groups: HashMap<String, i64>,
    recent: HashMap<String, VecDeque<(i64, i64)>>,
    suppressions: Vec<Suppression>,
    flood: Flood,
    next_id: i64,
    /// Expression errors since the last `take_eval_errors`.
    eval_errors: Vec<(String, String)>,
}

impl Engine {
    /// A new engine; `known` devices count as seen at `now` so that one
    /// which never reports goes offline after its heartbeat.
    pub fn new(set: RuleSet, flood: Flood, known: &[KnownDevice<'_>], now: i64) -> Self {
        let devices = known
            .iter()
            .map(|k| {
                let d = &k.config;
                let loc = d.location();
                let dev = Device {
                    kind: d.kind,
                    location: (loc != Location::default()).then(|| Arc::new(loc)),
                    fields: Vec::new(),
                    last_seen: now,
                    heartbeat_ms: k.heartbeat_ms,
                    declared: true,
                    readings: 0,
                };
                ((Arc::from(d.site.as_str()), Arc::from(d.id.as_str())), dev)
            })
            .collect();
        Self {
            mem: vec![HashMap::new(); set.rules.len()],
            set,
            devices,
            open: HashMap::new(),
            by_key: HashMap::new(),
            groups: HashMap::new(),
            recent: HashMap::new(),
            suppressions: Vec::new(),
            flood,
            next_id: 1,
            eval_errors: Vec::new(),
        }
    }

    /// Brings back what the store had open after a restart.
    pub fn restore(&mut self, alarms: Vec<Alarm>, suppressions: Vec<Suppression>, next_id: i64) {
        self.next_id = next_id.max(self.next_id);
        self.suppressions = suppressions;
        for a in alarms {
            let key: DeviceKey = (Arc::from(a.site.as_str()), Arc::from(a.device.as_str()));
            if a.is_group {
                // The newest group of a rule is the one later alarms may join.
                let newer = self
                    .groups
                    .get(&a.rule)
                    .and_then(|g| self.open.get(g))
                    .is_none_or(|g| g.last_at <= a.last_at);
                if newer {
                    self.groups.insert(a.rule.clone(), a.id);
                }
            } else {
                if a.active {
                    if let Some(i) = self.set.rules.iter().position(|r| r.id == a.rule) {
                        let rule = &self.set.rules[i];
                        let mut mem = Memory::new(rule.for_ms, rule.clear_for_ms);
                        mem.debounce.restore_tripped();
                        self.mem[i].insert(key.clone(), mem);
                    }
                }
                self.by_key.insert((a.rule.clone(), key), a.id);
            }
            self.open.insert(a.id, a);
        }
    }

    /// The open alarms (not yet cleared and acknowledged).
    pub fn open_alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.open.values()
    }

    /// The zones under suppression.
    pub fn suppressions(&self) -> &[Suppression] {
        &self.suppressions
    }

    /// Expression errors since the last call: (rule, error).
    pub fn take_eval_errors(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.eval_errors)
    }

    /// Evaluates one reading (already admitted by the registry) at `now`.
    pub fn on_reading(&mut self, r: &Reading, now: i64) -> Vec<Change> {
        let key: DeviceKey = (r.site.clone(), r.device.clone());
        let dev = self.devices.entry(key.clone()).or_insert_with(|| Device {
            kind: r.kind,
            location: r.location.clone(),
            fields: Vec::new(),
            last_seen: now,
            heartbeat_ms: kind_heartbeat_ms(r.kind),
            declared: false,
            readings: 0,
        });
        dev.last_seen = now;
        dev.readings = dev.readings.saturating_add(1);
        dev.location = r.location.clone();
        for (n, v) in &r.fields {
            if let Some((_, old)) = dev.fields.iter_mut().find(|(x, _)| x == n) {
                *old = v.clone();
            // A device that keeps inventing field names must not grow this
            // without bound: its kind's own fields always, at most
            // MAX_UNKNOWN_FIELDS others.
            } else if r.kind.field_type(n).is_some() || dev.fields.len() < MAX_UNKNOWN_FIELDS {
                dev.fields.push((n.clone(), v.clone()));
            }
        }
        let mut edges = Vec::new();
        for (i, rule) in self.set.matching(r) {
            let mem = self.mem[i]
                .entry(key.clone())
                .or_insert_with(|| Memory::new(rule.for_ms, rule.clear_for_ms));
            // A reporting device is not offline; a rule out of its schedule is normal.
            let met = if matches!(rule.condition, Condition::Offline { .. })
                || !self.set.in_schedule(rule, now)
            {
                Some(false)
            } else {
                let others = others(&self.devices, &r.site, &rule.condition);
                let dev = &self.devices[&key];
                let input = Input {
                    fields: &dev.fields,
                    reading: &r.fields,
                    ts_ms: r.ts_ms,
                    others: &others,
                    device: &r.device,
                    site: &r.site,
                    kind: r.kind.as_str(),
                };
                match rule.condition.met(mem, &input) {
                    Ok(m) => m,
                    Err(e) => {
                        if self.eval_errors.len() < 100 {
                            self.eval_errors.push((rule.id.clone(), e.0));
                        }
                        None
                    }
                }
            };
            let edge = match met {
                Some(m) => mem.debounce.step(m, now),
                None => mem.debounce.check(now),
            };
            if let Some(e) = edge {
                // The reading that made it true, or for a `for` that ran out
                // here, the device's latest: every alarm carries its value.
                let value = rule
                    .condition
                    .field()
                    .and_then(|f| r.field(f).or_else(|| latest(&self.devices[&key].fields, f)))
                    .cloned();
                edges.push((i, e, value));
            }
        }
        let mut changes = Vec::new();
        for (i, e, value) in edges {
            let detail = detail(
                &r.fields,
                self.set.rules[i].condition.field(),
                r.location.as_deref(),
            );
            self.edge(i, &key, e, value, detail, now, &mut changes);
        }
        changes
    }

    /// Judges what time alone decides: `for` durations, offline devices,
    /// calendars starting or ending, shelves and suppressions running out.
    pub fn on_tick(&mut self, now: i64) -> Vec<Change> {
        let mut edges = Vec::new();
        for (i, rule) in self.set.rules.iter().enumerate() {
            let scheduled = self.set.in_schedule(rule, now);
            if let Condition::Offline { after_ms } = rule.condition {
                for (key, dev) in &self.devices {
                    if !rule.applies(dev.kind, &key.1, dev.location.as_deref()) {
                        continue;
                    }
                    let after = after_ms.unwrap_or(dev.heartbeat_ms);
                    let mem = self.mem[i]
                        .entry(key.clone())
                        .or_insert_with(|| Memory::new(rule.for_ms, rule.clear_for_ms));
                    let watched = dev.declared || dev.readings >= UNDECLARED_OFFLINE_AFTER_READINGS;
                    let met = scheduled && watched && now - dev.last_seen > after;
                    if let Some(e) = mem.debounce.step(met, now) {
                        edges.push((i, key.clone(), e));
                    }
                }
            } else {
                for (key, mem) in self.mem[i].iter_mut() {
                    let edge = if scheduled {
                        mem.debounce.check(now)
                    } else {
                        mem.debounce.step(false, now)
                    };
                    if let Some(e) = edge {
                        edges.push((i, key.clone(), e));
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for (i, key, e) in edges {
            // A timer (`for`, `clear_for`) ran out: the value is the latest
            // reading's, which has held the condition true all along.
            let field = self.set.rules[i].condition.field();
            let (value, detail) = match self.devices.get(&key) {
                Some(d) => (
                    field.and_then(|f| latest(&d.fields, f)).cloned(),
                    detail(&d.fields, field, d.location.as_deref()),
                ),
                None => (None, Vec::new()),
            };
            self.edge(i, &key, e, value, detail, now, &mut changes);
        }
        let expired: Vec<i64> = self
            .open
            .values()
            .filter(|a| a.state == State::Shelved && a.shelved_until.is_some_and(|u| u <= now))
            .map(|a| a.id)
            .collect();
        for id in expired {
            self.act(id, Action::Unshelve, None, None, now, &mut changes);
        }
        self.suppressions.retain(|s| s.until > now);
        changes
    }

    /// Carries out an operator's command.
    pub fn command(&mut self, cmd: Command, now: i64) -> Result<Vec<Change>, CommandError> {
        let mut changes = Vec::new();
        match cmd {
            Command::Ack { id, by, comment } => {
                let a = self.open.get(&id).ok_or(CommandError::NotFound(id))?;
                let action = Action::Ack {
                    by: by.clone(),
                    comment: comment.clone(),
                };
                let mut probe = a.clone();
                probe.apply(&action, now)?;
                self.act(
                    id,
                    action.clone(),
                    Some(by.clone()),
                    comment.clone(),
                    now,
                    &mut changes,
                );
                // Acknowledging a flood group acknowledges its members, and
                // an alarm the ones it covers.
                let members: Vec<i64> = self
                    .open
                    .values()
                    .filter(|m| {
                        (m.group == Some(id) || m.inhibited_by == Some(id))
                            && matches!(m.state, State::Unacked | State::ClearedUnacked)
                    })
                    .map(|m| m.id)
                    .collect();
                for m in members {
                    self.act(
                        m,
                        action.clone(),
                        Some(by.clone()),
                        comment.clone(),
                        now,
                        &mut changes,
                    );
                }
            }
            Command::Shelve {
                id,
                by,
                minutes,
                reason,
            } => {
                if minutes == 0 || minutes > 7 * 24 * 60 {
                    return Err(CommandError::Invalid(
                        "minutes must be 1 to 10080 (a week)".into(),
                    ));
                }
                let a = self.open.get(&id).ok_or(CommandError::NotFound(id))?;
                let until = now + i64::from(minutes) * 60_000;
                let action = Action::Shelve {
                    by: by.clone(),
                    until,
                    reason: reason.clone(),
                };
                a.clone().apply(&action, now)?;
                self.act(id, action, Some(by), Some(reason), now, &mut changes);
            }
            Command::Unshelve { id, by } => {
                let a = self.open.get(&id).ok_or(CommandError::NotFound(id))?;
                a.clone().apply(&Action::Unshelve, now)?;
                self.act(id, Action::Unshelve, Some(by), None, now, &mut changes);
            }
            Command::Comment { id, by, text } => {
                if text.trim().is_empty() || text.len() > 2000 {
                    return Err(CommandError::Invalid(
                        "a comment has 1 to 2000 characters".into(),
                    ));
                }
                if !self.open.contains_key(&id) {
                    return Err(CommandError::NotFound(id));
                }
                let action = Action::Comment {
                    by: by.clone(),
                    text: text.clone(),
                };
                self.act(id, action, Some(by), Some(text), now, &mut changes);
            }
            Command::Suppress(s) => {
                if s.until <= now {
                    return Err(CommandError::Invalid(
                        "a suppression must end in the future".into(),
                    ));
                }
                self.suppressions
                    .retain(|x| !(x.building == s.building && x.floor == s.floor));
                self.suppressions.push(s);
            }
            Command::System {
                rule,
                active,
                severity,
                message,
            } => {
                let key: DeviceKey = (Arc::from(SYSTEM), Arc::from(SYSTEM));
                let open = self.by_key.get(&(rule.clone(), key.clone())).copied();
                match (active, open) {
                    (true, None) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        let mut alarm = Alarm::raised(id, &rule, severity, message, None, now);
                        alarm.device = SYSTEM.into();
                        alarm.kind = SYSTEM.into();
                        alarm.site = SYSTEM.into();
                        self.open_new(alarm, key, None, Vec::new(), &mut changes);
                    }
                    (false, Some(id)) => self.act(id, Action::Clear, None, None, now, &mut changes),
                    _ => {}
                }
            }
            Command::Device(d) => self.device_alarm(d, &mut changes),
            Command::EndSuppression { building, floor } => {
                self.suppressions
                    .retain(|x| !(x.building == building && x.floor == floor));
            }
        }
        Ok(changes)
    }

    /// An alarm kept by a checker outside the engine (`bus::task`): raised,
    /// repeated while open, cleared, like a rule's, at the device's time.
    fn device_alarm(&mut self, d: crate::alarms::DeviceAlarm, changes: &mut Vec<Change>) {
        let key: DeviceKey = (Arc::from(d.site.as_str()), Arc::from(d.device.as_str()));
        let open = self.by_key.get(&(d.rule.clone(), key.clone())).copied();
        match (d.active, open) {
            (true, Some(id)) => {
                self.act(
                    id,
                    Action::Repeat { value: d.value },
                    None,
                    None,
                    d.at,
                    changes,
                );
                if let Some(last) = changes.last_mut().filter(|c| c.alarm.id == id) {
                    last.event.detail = d.detail;
                }
            }
            (true, None) => {
                let dev = self.devices.get(&key);
                let location = dev.and_then(|x| x.location.clone());
                let suppressed = self
                    .suppressions
                    .iter()
                    .find(|s| s.until > d.at && s.covers(location.as_deref()))
                    .map(|s| s.reason.clone());
                let id = self.next_id;
                self.next_id += 1;
                let mut alarm = Alarm::raised(id, &d.rule, d.severity, d.message, d.value, d.at);
                alarm.name = d.name;
                alarm.device = d.device;
                alarm.kind = dev.map_or("", |x| x.kind.as_str()).to_owned();
                alarm.site = d.site;
                alarm.location = location.as_deref().cloned();
                alarm.suppressed = suppressed;
                alarm.declared = dev.is_some_and(|x| x.declared);
                self.open_new(alarm, key, None, d.detail, changes);
            }
            (false, Some(id)) => {
                let active = self.open.get(&id).is_some_and(|a| a.active);
                if active {
                    self.act(id, Action::Clear, None, None, d.at, changes);
                }
            }
            (false, None) => {}
        }
    }

    /// Replaces the rules, keeping what the conditions remember of rules that
    /// stay; open alarms of removed rules are cleared.
    pub fn reload(&mut self, set: RuleSet, now: i64) -> Vec<Change> {
        let mut old: HashMap<String, HashMap<DeviceKey, Memory>> = self
            .set
            .rules
            .iter()
            .map(|r| r.id.clone())
            .zip(std::mem::take(&mut self.mem))
            .collect();
        self.mem = set
            .rules
            .iter()
            .map(|r| old.remove(&r.id).unwrap_or_default())
            .collect();
        self.set = set;
        let gone: Vec<i64> = self
            .open
            .values()
            .filter(|a| {
                a.active
                    && !a.is_group
                    && a.kind != SYSTEM
                    // The bus checker's alarms are not the rules' to clear.
                    && !a.rule.starts_with("bus-")
                    && !self.set.rules.iter().any(|r| r.id == a.rule)
            })
            .map(|a| a.id)
            .collect();
        let mut changes = Vec::new();
        for id in gone {
            self.act(
                id,
                Action::Clear,
                None,
                Some("rule removed".into()),
                now,
                &mut changes,
            );
            self.after_member_clear(id, now, &mut changes);
        }
        changes
    }

    #[allow(clippy::too_many_arguments)]
    fn edge(
        &mut self,
        i: usize,
        key: &DeviceKey,
        edge: Edge,
        value: Option<Value>,
        detail: Vec<(String, String)>,
        now: i64,
        changes: &mut Vec<Change>,
    ) {
        let rule = &self.set.rules[i];
        let open = self.by_key.get(&(rule.id.clone(), key.clone())).copied();
        match (edge, open) {
            (Edge::Raise, Some(id)) => {
                let value = value.as_ref().and_then(Value::as_f64);
                self.act(id, Action::Repeat { value }, None, None, now, changes);
                if let Some(last) = changes.last_mut().filter(|c| c.alarm.id == id) {
                    last.event.detail = detail;
                }
                if let Some(g) = self.open.get(&id).and_then(|a| a.group) {
                    self.refresh_group(g, now, changes);
                }
            }
            (Edge::Raise, None) => {
                let rule = rule.clone();
                self.raise(&rule, key, value, detail, now, changes);
            }
            (Edge::Clear, Some(id)) => {
                self.act(id, Action::Clear, None, None, now, changes);
                self.after_member_clear(id, now, changes);
            }
            (Edge::Clear, None) => {}
        }
    }

    fn raise(
        &mut self,
        rule: &Rule,
        key: &DeviceKey,
        value: Option<Value>,
        detail: Vec<(String, String)>,
        now: i64,
        changes: &mut Vec<Change>,
    ) {
        let dev = self.devices.get(key);
        let location = dev.and_then(|d| d.location.clone());
        let fields: &[(FieldName, Value)] = dev.map_or(&[], |d| &d.fields);
        let id = self.next_id;
        self.next_id += 1;
        let suppressed = self
            .suppressions
            .iter()
            .find(|s| s.until > now && s.covers(location.as_deref()))
            .map(|s| s.reason.clone());
        let message = rule.render(&key.1, &key.0, location.as_deref(), fields, value.as_ref());
        let mut alarm = Alarm::raised(
            id,
            &rule.id,
            rule.severity,
            message,
            value.as_ref().and_then(Value::as_f64),
            now,
        );
        alarm.name = rule.name.clone();
        alarm.device = key.1.to_string();
        alarm.kind = dev.map_or("", |d| d.kind.as_str()).to_owned();
        alarm.site = key.0.to_string();
        alarm.location = location.as_deref().cloned();
        alarm.suppressed = suppressed;
        alarm.declared = dev.is_some_and(|d| d.declared);
        alarm.inhibited_by = self.inhibitor(&rule.id, key);
        let comment = alarm
            .inhibited_by
            .map(|by| format!("covered by alarm {by}"));
        // A group still collecting takes the alarm as it is raised, so the
        // raise itself says where it belongs and is announced as new.
        let join = match alarm.inhibited_by {
            None if rule.flood => self.joinable_group(&rule.id, now),
            _ => None,
        };
        alarm.group = join;
        self.open_new(alarm, key.clone(), comment, detail, changes);
        self.cover(rule, id, key, now, changes);
        match join {
            Some(g) => self.refresh_group(g, now, changes),
            None if rule.flood && self.open.get(&id).is_some_and(|a| a.inhibited_by.is_none()) => {
                self.flood(rule, id, now, changes)
            }
            None => {}
        }
    }

    /// The active alarm on this device of a rule that inhibits `rule`.
    fn inhibitor(&self, rule: &str, key: &DeviceKey) -> Option<i64> {
        self.set
            .rules
            .iter()
            .filter(|r| r.inhibits.iter().any(|x| x == rule))
            .filter_map(|r| self.by_key.get(&(r.id.clone(), key.clone())))
            .copied()
            .find(|id| self.open.get(id).is_some_and(|a| a.active))
    }

    /// A newly raised alarm of `rule` covers the unacknowledged alarms on the
    /// same device of the rules it inhibits.
    fn cover(
        &mut self,
        rule: &Rule,
        id: i64,
        key: &DeviceKey,
        now: i64,
        changes: &mut Vec<Change>,
    ) {
        for target in &rule.inhibits {
            let Some(&t) = self.by_key.get(&(target.clone(), key.clone())) else {
                continue;
            };
            let Some(a) = self.open.get_mut(&t) else {
                continue;
            };
            if a.state != State::Unacked || a.inhibited_by.is_some() || a.group.is_some() {
                continue;
            }
            a.inhibited_by = Some(id);
            a.updated_at = now;
            let (state, alarm) = (a.state, a.clone());
            changes.push(Change {
                event: Event {
                    alarm_id: t,
                    at: now,
                    action: "inhibit".into(),
                    from: Some(state),
                    to: state,
                    user: None,
                    comment: Some(format!("covered by alarm {id} ({})", rule.id)),
                    value: None,
                    detail: Vec::new(),
                },
                alarm,
            });
        }
    }

    /// Records a newly raised alarm as open and as a `raise` change.
    fn open_new(
        &mut self,
        alarm: Alarm,
        key: DeviceKey,
        comment: Option<String>,
        detail: Vec<(String, String)>,
        changes: &mut Vec<Change>,
    ) {
        changes.push(Change {
            event: Event {
                alarm_id: alarm.id,
                at: alarm.raised_at,
                action: "raise".into(),
                from: None,
                to: State::Unacked,
                user: None,
                comment,
                value: alarm.value,
                detail,
            },
            alarm: alarm.clone(),
        });
        self.by_key.insert((alarm.rule.clone(), key), alarm.id);
        self.open.insert(alarm.id, alarm);
    }

    /// The rule's open group, while its newest member is within the flood window.
    fn joinable_group(&self, rule: &str, now: i64) -> Option<i64> {
        let g = *self.groups.get(rule)?;
        let group = self.open.get(&g)?;
        (self.flood.threshold > 0 && now - group.last_at <= self.flood.window_ms).then_some(g)
    }

    /// Counts an alarm towards a flood; at `threshold` within the window
    /// the recent ones become a new group.
    fn flood(&mut self, rule: &Rule, id: i64, now: i64, changes: &mut Vec<Change>) {
        if self.flood.threshold == 0 {
            return;
        }
        let recent = self.recent.entry(rule.id.clone()).or_default();
        recent.push_back((now, id));
        while recent
            .front()
            .is_some_and(|(t, _)| *t < now - self.flood.window_ms)
            || recent.len() > self.flood.threshold.max(1) * 4
        {
            recent.pop_front();
        }
        if recent.len() < self.flood.threshold {
            return;
        }
        let members: Vec<i64> = recent.drain(..).map(|(_, m)| m).collect();
        let Some(first) = self.open.get(&id).cloned() else {
            return;
        };
        let g = self.next_id;
        self.next_id += 1;
        let alarm = Alarm {
            id: g,
            device: "*".into(),
            location: None,
            value: None,
            peak: None,
            count: 0,
            message: Text::default(),
            group: None,
            is_group: true,
            suppressed: None,
            inhibited_by: None,
            declared: true,
            raised_at: now,
            last_at: now,
            updated_at: now,
            ..first
        };
        changes.push(Change {
            event: Event {
                alarm_id: g,
                at: now,
                action: "raise".into(),
                from: None,
                to: State::Unacked,
                user: None,
                comment: Some("flood".into()),
                value: None,
                detail: Vec::new(),
            },
            alarm: alarm.clone(),
        });
        self.open.insert(g, alarm);
        self.groups.insert(rule.id.clone(), g);
        for m in members {
            if let Some(a) = self.open.get_mut(&m) {
                if a.group.is_none() {
                    a.group = Some(g);
                    a.updated_at = now;
                    let (state, alarm) = (a.state, a.clone());
                    changes.push(Change {
                        event: Event {
                            alarm_id: m,
                            at: now,
                            action: "group".into(),
                            from: Some(state),
                            to: state,
                            user: None,
                            comment: Some(format!("grouped into flood {g}")),
                            value: None,
                            detail: Vec::new(),
                        },
                        alarm,
                    });
                }
            }
        }
        self.refresh_group(g, now, changes);
    }

    /// Recounts a group's members, keeps its text and places current, and
    /// clears or re-raises it as its members do. One step records one group line.
    fn refresh_group(&mut self, g: i64, now: i64, changes: &mut Vec<Change>) {
        let mut members: Vec<&Alarm> = self.open.values().filter(|a| a.group == Some(g)).collect();
        members.sort_by_key(|a| (a.raised_at, a.id));
        let (total, active) = (members.len(), members.iter().filter(|a| a.active).count());
        let newest = members.iter().map(|a| a.raised_at).max();
        let places = group_places(&members);
        let Some(mut group) = self.open.get(&g).cloned() else {
            return;
        };
        let message = Text {
            zh: format!("{total} 个{}（{active} 个仍在报警）", group.name.zh),
            en: format!("{total} × {} ({active} active)", group.name.en),
        };
        let location = Some(crate::reading::Location {
            name: Some(places),
            ..Default::default()
        });
        let action = match (group.active, active > 0) {
            (true, false) => Some(Action::Clear),
            (false, true) => Some(Action::Repeat { value: None }),
            _ => None,
        };
        if action.is_none() && group.message == message && group.location == location {
            return;
        }
        let before = group.state;
        let name = match &action {
            Some(a) if group.apply(a, now).is_ok() => a.name(),
            _ => "group",
        };
        group.message = message;
        group.location = location;
        group.count = total as u32;
        group.last_at = newest.unwrap_or(group.last_at).max(group.last_at);
        group.updated_at = now;
        changes.retain(|c| !(c.alarm.id == g && c.event.action == "group"));
        changes.push(Change {
            event: Event {
                alarm_id: g,
                at: now,
                action: name.into(),
                from: Some(before),
                to: group.state,
                user: None,
                comment: Some(format!("{total} members, {active} active")),
                value: None,
                detail: Vec::new(),
            },
            alarm: group.clone(),
        });
        self.close_if_done(group);
    }

    fn after_member_clear(&mut self, id: i64, now: i64, changes: &mut Vec<Change>) {
        let group = self.open.get(&id).and_then(|a| a.group).or_else(|| {
            changes
                .iter()
                .rev()
                .find(|c| c.alarm.id == id)
                .and_then(|c| c.alarm.group)
        });
        if let Some(g) = group {
            self.refresh_group(g, now, changes);
        }
    }

    /// Applies an action to an open alarm and records the change.
    fn act(
        &mut self,
        id: i64,
        action: Action,
        user: Option<String>,
        comment: Option<String>,
        now: i64,
        changes: &mut Vec<Change>,
    ) {
        let Some(a) = self.open.get_mut(&id) else {
            return;
        };
        let Ok(before) = a.apply(&action, now) else {
            return;
        };
        let value = match &action {
            Action::Repeat { value } => *value,
            _ => None,
        };
        let alarm = a.clone();
        changes.push(Change {
            event: Event {
                alarm_id: id,
                at: now,
                action: action.name().into(),
                from: Some(before),
                to: alarm.state,
                user,
                comment,
                value,
                detail: Vec::new(),
            },
            alarm: alarm.clone(),
        });
        self.close_if_done(alarm);
    }

    /// Stores the alarm back, or forgets it once closed.
    fn close_if_done(&mut self, alarm: Alarm) {
        if alarm.is_closed() {
            self.open.remove(&alarm.id);
            if alarm.is_group {
                self.groups.retain(|_, g| *g != alarm.id);
            } else {
                self.by_key.retain(|_, v| *v != alarm.id);
            }
        } else {
            self.open.insert(alarm.id, alarm);
        }
    }
}

/// Latest fields of the devices an expression names (same site).
fn others(
    devices: &HashMap<DeviceKey, Device>,
    site: &Arc<str>,
    c: &Condition,
) -> HashMap<String, Vec<(FieldName, Value)>> {
    match c {
        Condition::Expr { with, .. } if !with.is_empty() => with
            .iter()
            .filter_map(|id| {
                devices
                    .get(&(site.clone(), Arc::from(id.as_str())))
                    .map(|d| (id.clone(), d.fields.clone()))
            })
            .collect(),
        _ => HashMap::new(),
    }
}

/// A field's latest value among a device's fields.
fn latest<'a>(fields: &'a [(FieldName, Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// What identifies one trip for the ledger: the condition's field, the
/// reading's text fields (card id, event, route) and the place; bounded.
fn detail(
    fields: &[(FieldName, Value)],
    condition_field: Option<&str>,
    location: Option<&crate::reading::Location>,
) -> Vec<(String, String)> {
    let cut = |s: &str| -> String {
        match s.char_indices().nth(DETAIL_VALUE_MAX) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s.to_owned(),
        }
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, v) in fields {
        let wanted = Some(n.as_ref()) == condition_field || matches!(v, Value::Str(_));
        if wanted && out.len() < DETAIL_MAX - 1 {
            let text = match v {
                Value::Str(s) => cut(s),
                Value::F64(f) => ryu::Buffer::new().format(*f).to_owned(),
                Value::I64(i) => i.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            out.push((n.to_string(), text));
        }
    }
    if let Some(place) = location.map(crate::reading::Location::describe) {
        if !place.is_empty() {
            out.push(("place".into(), cut(&place)));
        }
    }
    out
}

/// A flood group's places in words: its members' buildings and floors, in
/// the order they were raised, the rest counted.
fn group_places(members: &[&Alarm]) -> String {
    const SHOWN: usize = 6;
    let mut places: Vec<String> = Vec::new();
    for a in members {
        let p = match &a.location {
            Some(l) if l.building.is_some() || l.floor.is_some() => {
                [l.building.as_deref(), l.floor.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" / ")
            }
            Some(l) if !l.describe().is_empty() => l.describe(),
            _ => format!("{}/{}", a.site, a.device),
        };
        if !places.contains(&p) {
            places.push(p);
        }
    }
    let more = places.len().saturating_sub(SHOWN);
    places.truncate(SHOWN);
    let mut text = places.join(", ");
    if more > 0 {
        text.push_str(&format!(" … (+{more})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::reading::Source;

    const T0: i64 = 1_764_380_000_000;

    fn engine(rules: &str, devices: usize) -> Engine {
        let mut text = format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{rules}\n");
        for i in 0..devices {
            text.push_str(&format!(
                "[[devices]]\nid = \"s{i}\"\nkind = \"smoke\"\nsite = \"yz\"\nbuilding = \"{}\"\nfloor = \"1\"\n",
                if i % 2 == 0 { "A" } else { "B" }
            ));
        }
        let cfg = Config::from_toml(&text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let set = RuleSet::compile(&cfg).expect("rules");
        Engine::new(
            set,
            Flood {
                threshold: 10,
                window_ms: 10_000,
            },
            &cfg.known_devices(),
            T0,
        )
    }

    fn smoke(device: &str, fields: &[(&'static str, Value)], loc: &str) -> Reading {
        let mut r = Reading::new(
            Arc::from("yz"),
            Arc::from(device),
            Kind::Smoke,
            T0,
            fields
                .iter()
                .map(|(n, v)| (FieldName::Borrowed(n), v.clone()))
                .collect(),
            Source::Mqtt,
        );
        r.location = Some(Arc::new(Location {
            building: Some(loc.into()),
            floor: Some("1".into()),
            room: None,
            name: None,
        }));
        r
    }

    const FIRE: &str = r#"
[[rules]]
id = "smoke-alarm"
severity = "critical"
kinds = ["smoke"]
message = "Smoke at {location}: {obscuration_pct_m} %/m"
condition = { type = "equals", field = "alarm", value = true }

[[rules]]
id = "smoke-offline"
severity = "medium"
kinds = ["smoke"]
message = "{device} silent"
condition = { type = "offline", after = "60s" }
"#;

    fn actions(changes: &[Change]) -> Vec<(i64, String, State)> {
        changes
            .iter()
            .map(|c| (c.alarm.id, c.event.action.clone(), c.alarm.state))
            .collect()
    }

    #[test]
    fn a_device_inventing_field_names_keeps_a_bounded_latest() {
        let mut e = engine(FIRE, 1);
        for i in 0..500 {
            let mut r = smoke("s0", &[], "A");
            r.fields = vec![(format!("x{i}").into(), Value::F64(1.0))];
            e.on_reading(&r, T0);
        }
        e.on_reading(&smoke("s0", &[("alarm", Value::Bool(true))], "A"), T0);
        let dev = &e.devices[&(Arc::from("yz"), Arc::from("s0"))];
        assert!(dev.fields.len() <= MAX_UNKNOWN_FIELDS + Kind::Smoke.schema().len());
        assert!(
            dev.fields.iter().any(|(n, _)| n == "alarm"),
            "the kind's own field kept"
        );
    }

    #[test]
    fn raise_repeat_clear_ack() {
        let mut e = engine(FIRE, 1);
        let on = [
            ("alarm", Value::Bool(true)),
            ("obscuration_pct_m", Value::F64(4.2)),
        ];
        let c = e.on_reading(&smoke("s0", &on, "A"), T0);
        assert_eq!(actions(&c), vec![(1, "raise".into(), State::Unacked)]);
        assert_eq!(c[0].alarm.message.en, "Smoke at A / 1: 4.2 %/m");
        assert!(
            e.on_reading(&smoke("s0", &on, "A"), T0 + 1).is_empty(),
            "still in alarm: nothing new"
        );
        let off = [("alarm", Value::Bool(false))];
        let c = e.on_reading(&smoke("s0", &off, "A"), T0 + 2);
        assert_eq!(
            actions(&c),
            vec![(1, "clear".into(), State::ClearedUnacked)]
        );
        let c = e.on_reading(&smoke("s0", &on, "A"), T0 + 3);
        assert_eq!(
            actions(&c),
            vec![(1, "repeat".into(), State::Unacked)],
            "one alarm while it lasts"
        );
        assert_eq!(c[0].alarm.count, 2);
        let c = e
            .command(
                Command::Ack {
                    id: 1,
                    by: "王老师".into(),
                    comment: Some("checked room".into()),
                },
                T0 + 4,
            )
            .expect("ack");
        assert_eq!(c[0].event.user.as_deref(), Some("王老师"));
        e.on_reading(&smoke("s0", &off, "A"), T0 + 5);
        assert_eq!(e.open_alarms().count(), 0, "acked and normal: closed");
        assert_eq!(
            e.command(
                Command::Ack {
                    id: 1,
                    by: "x".into(),
                    comment: None
                },
                T0 + 6
            ),
            Err(CommandError::NotFound(1))
        );
    }

    #[test]
    fn silent_detector_goes_offline_and_comes_back() {
        let mut e = engine(FIRE, 1);
        assert!(
            e.on_tick(T0 + 60_000).is_empty(),
            "exactly at the limit: not yet"
        );
        let c = e.on_tick(T0 + 60_001);
        assert_eq!(actions(&c), vec![(1, "raise".into(), State::Unacked)]);
        assert_eq!(c[0].alarm.rule, "smoke-offline");
        let c = e.on_reading(
            &smoke("s0", &[("alarm", Value::Bool(false))], "A"),
            T0 + 70_000,
        );
        assert_eq!(
            actions(&c),
            vec![(1, "clear".into(), State::ClearedUnacked)]
        );
    }

    #[test]
    fn offline_without_after_follows_each_devices_heartbeat() {
        // s0 is a detector on MQTT (three report intervals: 90 s); chem-9 is
        // polled every 10 s and never answers: the poller gives up after
        // 3 polls, so it is offline after (3 + 1) × 10 s.
        let rules = r#"
[[rules]]
id = "silent"
severity = "medium"
kinds = ["smoke", "labcab"]
message = "{device} silent"
condition = { type = "offline" }
[modbus.maps.m]
registers = [{ field = "temp_c", table = "holding", address = 0, type = "i16" }]
[[modbus.devices]]
id = "chem-9"
kind = "labcab"
site = "yz"
transport = "tcp"
address = "10.0.0.2"
map = "m"
poll_interval = "10s"
"#;
        let mut e = engine(rules, 1);
        let raised = |c: &[Change]| -> Vec<String> {
            c.iter()
                .filter(|c| c.event.action == "raise")
                .map(|c| c.alarm.device.clone())
                .collect()
        };
        assert!(raised(&e.on_tick(T0 + 40_000)).is_empty());
        assert_eq!(raised(&e.on_tick(T0 + 40_001)), vec!["chem-9"]);
        assert!(raised(&e.on_tick(T0 + 90_000)).is_empty());
        assert_eq!(raised(&e.on_tick(T0 + 90_001)), vec!["s0"]);
    }

    #[test]
    fn power_dip_flood_becomes_one_group() {
        let mut e = engine(FIRE, 200);
        let changes = e.on_tick(T0 + 61_000);
        let raised = changes
            .iter()
            .filter(|c| c.event.action == "raise" && !c.alarm.is_group)
            .count();
        assert_eq!(raised, 200);
        let groups: Vec<&Alarm> = e.open_alarms().filter(|a| a.is_group).collect();
        assert_eq!(groups.len(), 1, "one grouped entry");
        let g = groups[0].id;
        assert_eq!(groups[0].count, 200);
        assert!(
            e.open_alarms()
                .filter(|a| !a.is_group)
                .all(|a| a.group == Some(g)),
            "every member in the group"
        );
        // The operator acknowledges the one entry: all 200 are acknowledged.
        e.command(
            Command::Ack {
                id: g,
                by: "op".into(),
                comment: None,
            },
            T0 + 62_000,
        )
        .expect("ack group");
        assert!(e.open_alarms().all(|a| a.state == State::Acked));
        // Power back: everything reports, everything closes.
        for i in 0..200 {
            let loc = if i % 2 == 0 { "A" } else { "B" };
            e.on_reading(
                &smoke(&format!("s{i}"), &[("alarm", Value::Bool(false))], loc),
                T0 + 63_000,
            );
        }
        assert_eq!(e.open_alarms().count(), 0);
    }

    #[test]
    fn drill_zone_records_but_marks() {
        let mut e = engine(FIRE, 2);
        let s = Suppression {
            building: "A".into(),
            floor: None,
            until: T0 + 600_000,
            reason: "fire drill".into(),
            by: "admin".into(),
        };
        e.command(Command::Suppress(s), T0).expect("suppress");
        let on = [("alarm", Value::Bool(true))];
        let a = e.on_reading(&smoke("s0", &on, "A"), T0 + 1);
        let b = e.on_reading(&smoke("s1", &on, "B"), T0 + 1);
        assert_eq!(a[0].alarm.suppressed.as_deref(), Some("fire drill"));
        assert_eq!(
            b[0].alarm.suppressed, None,
            "building B is not in the drill"
        );
        e.on_tick(T0 + 600_001);
        assert!(e.suppressions().is_empty(), "the drill ends by itself");
    }

    #[test]
    fn restart_restores_open_alarms_and_their_condition() {
        let mut e = engine(FIRE, 1);
        let c = e.on_reading(&smoke("s0", &[("alarm", Value::Bool(true))], "A"), T0);
        let open: Vec<Alarm> = e.open_alarms().cloned().collect();
        let mut fresh = engine(FIRE, 1);
        fresh.restore(open, Vec::new(), c[0].alarm.id + 1);
        assert!(
            fresh
                .on_reading(&smoke("s0", &[("alarm", Value::Bool(true))], "A"), T0 + 1)
                .is_empty(),
            "no duplicate raise"
        );
        let c = fresh.on_reading(&smoke("s0", &[("alarm", Value::Bool(false))], "A"), T0 + 2);
        assert_eq!(
            actions(&c),
            vec![(1, "clear".into(), State::ClearedUnacked)],
            "the restored alarm clears"
        );
        let c = fresh.on_reading(&smoke("s0", &[("alarm", Value::Bool(true))], "A"), T0 + 3);
        assert_eq!(c[0].alarm.id, 1, "same alarm re-trips");
    }

    #[test]
    fn shelve_runs_out_and_reload_clears_removed_rules() {
        let fire_only = &FIRE[..FIRE
            .find("[[rules]]\nid = \"smoke-offline\"")
            .expect("second rule")];
        let mut e = engine(fire_only, 1);
        e.on_reading(&smoke("s0", &[("alarm", Value::Bool(true))], "A"), T0);
        let c = e
            .command(
                Command::Shelve {
                    id: 1,
                    by: "op".into(),
                    minutes: 5,
                    reason: "detector cleaning".into(),
                },
                T0,
            )
            .expect("shelve");
        assert_eq!(c[0].alarm.state, State::Shelved);
        assert!(e
            .command(
                Command::Shelve {
                    id: 1,
                    by: "op".into(),
                    minutes: 0,
                    reason: "x".into()
                },
                T0
            )
            .is_err());
        let c = e.on_tick(T0 + 300_000);
        assert_eq!(
            actions(&c),
            vec![(1, "unshelve".into(), State::Unacked)],
            "still active after the shelf: seen again"
        );
        let c = e.reload(engine("", 1).set, T0 + 300_001);
        assert_eq!(
            actions(&c),
            vec![(1, "clear".into(), State::ClearedUnacked)]
        );
        assert_eq!(c[0].event.comment.as_deref(), Some("rule removed"));
    }

    #[test]
    fn the_gateways_own_trouble_is_an_alarm() {
        let mut e = engine(FIRE, 0);
        let sys = |active| Command::System {
            rule: "gateway-spool-full".into(),
            active,
            severity: crate::alarms::Severity::High,
            message: Text::one("dropping"),
        };
        let c = e.command(sys(true), T0).expect("raise");
        assert_eq!(actions(&c), vec![(1, "raise".into(), State::Unacked)]);
        assert!(
            e.command(sys(true), T0 + 1).expect("again").is_empty(),
            "one alarm while it lasts"
        );
        let c = e.command(sys(false), T0 + 2).expect("clear");
        assert_eq!(
            actions(&c),
            vec![(1, "clear".into(), State::ClearedUnacked)]
        );
        assert!(
            e.reload(engine(FIRE, 0).set, T0 + 3).is_empty(),
            "a reload leaves it alone"
        );
    }

    #[test]
    fn schedule_limits_a_rule() {
        let rules = r#"
[calendars.school_hours]
weekdays = ["mon", "tue", "wed", "thu", "fri"]
times = ["07:00-18:00"]

[[rules]]
id = "door-at-night"
severity = "high"
kinds = ["smoke"]
message = "x"
active_outside = "school_hours"
condition = { type = "equals", field = "tamper", value = true }
"#;
        let mut e = engine(rules, 1);
        let tamper = [("tamper", Value::Bool(true))];
        // 2026-11-30 is a Monday; 10:00 and 02:00 local (UTC+8).
        let monday_10 = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00+08:00")
            .expect("t")
            .timestamp_millis();
        let monday_02 = monday_10 - 8 * 3_600_000;
        assert!(
            e.on_reading(&smoke("s0", &tamper, "A"), monday_10)
                .is_empty(),
            "school hours: not watched"
        );
        assert_eq!(
            e.on_reading(&smoke("s0", &tamper, "A"), monday_02).len(),
            1,
            "02:00: alarm"
        );
    }

    fn gate(device: &str, event: &str, card: &str) -> Reading {
        let mut r = smoke(device, &[], "G");
        r.kind = Kind::Gate;
        r.fields = vec![
            (FieldName::Borrowed("event"), Value::Str(event.into())),
            (FieldName::Borrowed("card_id"), Value::Str(card.into())),
        ];
        r
    }

    #[test]
    fn an_alarm_raised_by_its_for_timer_carries_the_value() {
        let rules = r#"
[[rules]]
id = "duct"
severity = "critical"
kinds = ["smoke"]
message = { zh = "温度 {value} °C，{location}", en = "{value} °C at {location}" }
condition = { type = "above", field = "temp_c", value = 90.0, for = "10s" }
"#;
        let mut e = engine(rules, 1);
        let hot = [("temp_c", Value::F64(95.5))];
        assert!(
            e.on_reading(&smoke("s0", &hot, "A"), T0).is_empty(),
            "not for 10 s yet"
        );
        let c = e.on_tick(T0 + 10_001);
        assert_eq!(actions(&c), vec![(1, "raise".into(), State::Unacked)]);
        let a = &c[0].alarm;
        assert_eq!((a.value, a.peak), (Some(95.5), Some(95.5)));
        assert_eq!(a.message.zh, "温度 95.5 °C，A / 1");
        assert_eq!(a.message.en, "95.5 °C at A / 1");
        assert_eq!(c[0].event.value, Some(95.5), "the ledger has it too");
    }

    #[test]
    fn a_late_alarm_is_a_row_of_its_own_not_part_of_an_old_flood() {
        let mut e = engine(FIRE, 13);
        let on = [("alarm", Value::Bool(true))];
        let mut first = Vec::new();
        for i in 0..12 {
            let loc = if i % 2 == 0 { "A" } else { "B" };
            first.extend(e.on_reading(&smoke(&format!("s{i}"), &on, loc), T0 + i as i64 * 500));
        }
        let group = e
            .open_alarms()
            .find(|a| a.is_group)
            .cloned()
            .expect("a flood group");
        assert_eq!(group.count, 12);
        let places = group
            .location
            .as_ref()
            .and_then(|l| l.name.clone())
            .unwrap_or_default();
        assert!(
            places.contains("A / 1") && places.contains("B / 1"),
            "{places}"
        );
        assert_eq!(group.last_at, T0 + 11 * 500, "its newest member's time");
        // The 11th and 12th joined the group as they were raised: announced as new, with their group.
        let late_member = first
            .iter()
            .find(|c| c.event.action == "raise" && c.alarm.device == "s11")
            .expect("s11 raised");
        assert_eq!(late_member.alarm.group, Some(group.id));

        // Five minutes later the library's detector: a row of its own.
        let c = e.on_reading(&smoke("s12", &on, "A"), T0 + 300_000);
        let raised = c
            .iter()
            .find(|c| c.event.action == "raise")
            .expect("raised");
        assert_eq!(raised.alarm.group, None, "not hidden in the old group");
        assert_eq!(
            e.open_alarms().find(|a| a.id == group.id).map(|g| g.count),
            Some(12),
            "the old group is unchanged"
        );
    }

    #[test]
    fn a_rule_may_refuse_flood_grouping() {
        let rules = FIRE.replace(
            "id = \"smoke-alarm\"\nseverity = \"critical\"",
            "id = \"smoke-alarm\"\nflood = false\nseverity = \"critical\"",
        );
        let mut e = engine(&rules, 30);
        for i in 0..30 {
            e.on_reading(
                &smoke(&format!("s{i}"), &[("alarm", Value::Bool(true))], "A"),
                T0,
            );
        }
        assert_eq!(e.open_alarms().count(), 30, "thirty rows, no group");
        assert!(e.open_alarms().all(|a| !a.is_group && a.group.is_none()));
    }

    #[test]
    fn each_repeat_keeps_its_value_and_card() {
        let rules = r#"
[[rules]]
id = "after-hours"
severity = "high"
kinds = ["gate"]
message = "Access at {location} (card {card_id})"
condition = { type = "equals", field = "event", value = "access_granted" }
"#;
        let mut e = engine(rules, 0);
        let c = e.on_reading(&gate("east-1", "access_granted", "T1001"), T0);
        assert!(c[0]
            .event
            .detail
            .contains(&("card_id".into(), "T1001".into())));
        assert!(c[0]
            .event
            .detail
            .contains(&("place".into(), "G / 1".into())));
        e.on_reading(&gate("east-1", "closed", "T1001"), T0 + 1_000);
        let c = e.on_reading(&gate("east-1", "access_granted", "T2002"), T0 + 2_000);
        assert_eq!(actions(&c), vec![(1, "repeat".into(), State::Unacked)]);
        let d = &c[0].event.detail;
        assert!(d.contains(&("card_id".into(), "T2002".into())), "{d:?}");
        assert!(
            d.contains(&("event".into(), "access_granted".into())),
            "{d:?}"
        );
        assert_eq!(
            c[0].alarm.message.en, "Access at G / 1 (card T1001)",
            "the message is the first trip's"
        );
    }

    const INHIBITED: &str = r#"
[[rules]]
id = "smoke-obscuration"
severity = "critical"
kinds = ["smoke"]
message = "{value} %/m"
condition = { type = "above", field = "obscuration_pct_m", value = 3.0 }

[[rules]]
id = "smoke-alarm"
severity = "critical"
kinds = ["smoke"]
inhibits = ["smoke-obscuration"]
message = "Smoke at {location}"
condition = { type = "equals", field = "alarm", value = true }
"#;

    #[test]
    fn a_detectors_own_alarm_covers_its_obscuration_alarm() {
        // Both at once (the covered rule comes first in the file).
        let mut e = engine(INHIBITED, 2);
        let both = [
            ("alarm", Value::Bool(true)),
            ("obscuration_pct_m", Value::F64(4.0)),
        ];
        e.on_reading(&smoke("s0", &both, "A"), T0);
        let by_rule = |e: &Engine, rule: &str, dev: &str| {
            e.open_alarms()
                .find(|a| a.rule == rule && a.device == dev)
                .cloned()
                .expect("open")
        };
        let alarm = by_rule(&e, "smoke-alarm", "s0");
        assert_eq!(
            by_rule(&e, "smoke-obscuration", "s0").inhibited_by,
            Some(alarm.id)
        );
        assert_eq!(alarm.inhibited_by, None);

        // Obscuration first, the detector's alarm a moment later.
        e.on_reading(
            &smoke(
                "s1",
                &[
                    ("alarm", Value::Bool(false)),
                    ("obscuration_pct_m", Value::F64(4.0)),
                ],
                "B",
            ),
            T0,
        );
        assert_eq!(by_rule(&e, "smoke-obscuration", "s1").inhibited_by, None);
        let c = e.on_reading(&smoke("s1", &both, "B"), T0 + 1_000);
        let cover = by_rule(&e, "smoke-alarm", "s1");
        assert!(c
            .iter()
            .any(|c| c.event.action == "inhibit" && c.alarm.rule == "smoke-obscuration"));
        assert_eq!(
            by_rule(&e, "smoke-obscuration", "s1").inhibited_by,
            Some(cover.id)
        );

        // Acknowledging the detector's alarm acknowledges what it covers.
        e.command(
            Command::Ack {
                id: cover.id,
                by: "op".into(),
                comment: None,
            },
            T0 + 2_000,
        )
        .expect("ack");
        assert_eq!(by_rule(&e, "smoke-obscuration", "s1").state, State::Acked);
        assert_eq!(
            by_rule(&e, "smoke-obscuration", "s0").state,
            State::Unacked,
            "other device untouched"
        );
    }

    #[test]
    fn an_undeclared_device_seen_once_leaves_no_offline_alarm() {
        let mut e = engine(FIRE, 1);
        let normal = [("alarm", Value::Bool(false))];
        e.on_reading(&smoke("ghost", &normal, "A"), T0);
        for i in 0..3 {
            e.on_reading(&smoke("stray", &normal, "A"), T0 + i);
        }
        e.on_reading(&smoke("s0", &normal, "A"), T0);
        let c = e.on_tick(T0 + 61_000);
        let mut silent: Vec<&str> = c
            .iter()
            .filter(|c| c.event.action == "raise" && !c.alarm.is_group)
            .map(|c| c.alarm.device.as_str())
            .collect();
        silent.sort();
        assert_eq!(
            silent,
            ["s0", "stray"],
            "the ghost seen once is not watched"
        );
        let stray = c.iter().find(|c| c.alarm.device == "stray").expect("stray");
        assert!(!stray.alarm.declared, "marked undeclared");
        assert!(c
            .iter()
            .find(|c| c.alarm.device == "s0")
            .is_some_and(|c| c.alarm.declared));
    }

    /// What `check` says of these rules (empty: accepted).
    fn problems(rules: &str) -> String {
        let text = format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[[devices]]\nid = \"s0\"\nkind = \"smoke\"\nsite = \"yz\"\nbuilding = \"A3\"\n{rules}"
        );
        Config::from_toml(&text, Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn references_that_name_nothing_are_errors() {
        let p = problems(
            r#"
[[rules]]
id = "a"
severity = "critical"
kinds = ["smoke"]
message = { zh = "烟雾 {obscuration} {value}", en = "{value} at {location}" }
condition = { type = "above", field = "obscuraton_pct_m", value = 3.0 }

[[rules]]
id = "b"
severity = "high"
kinds = ["smoke"]
devices = ["s9"]
building = "教学楼"
inhibits = ["nope"]
message = "{value}"
condition = { type = "expr", expr = "fault == true" }
"#,
        );
        for want in [
            "rules[0].message.zh",
            "rules[0].condition.field",
            "rules[1].devices[0]",
            "rules[1].building",
            "rules[1].inhibits[0]",
            "rules[1].message",
        ] {
            assert!(p.contains(&format!("{want}: ")), "{want} missing in {p}");
        }
        assert!(!p.contains("rules[0].message.en"), "{p}");
        assert!(problems(FIRE).is_empty(), "{}", problems(FIRE));
    }
}
