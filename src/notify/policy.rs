//! Routing and escalation, pure: which policy an alarm goes to (the first
//! `[[notify.routes]]` that matches), when each of its steps is due, and
//! whom a step's targets name at a moment (through the roster).

use std::collections::BTreeMap;

use crate::alarms::Alarm;
use crate::config::{Config, PersonConfig};

use super::roster::Roster;

/// Whom a step tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Whoever of the team the roster has on duty at the step's time.
    OnDuty(String),
    /// The team's lead.
    Lead(String),
    /// Every member of the team.
    Team(String),
    /// One person.
    Person(String),
}

impl Target {
    fn parse(s: &str) -> Result<Self, String> {
        let (kind, id) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not on_duty:<team>, lead:<team>, team:<team> or person:<id>")
        })?;
        let id = id.to_owned();
        Ok(match kind {
            "on_duty" => Target::OnDuty(id),
            "lead" => Target::Lead(id),
            "team" => Target::Team(id),
            "person" => Target::Person(id),
            _ => {
                return Err(format!(
                    "`{s}` is not on_duty:<team>, lead:<team>, team:<team> or person:<id>"
                ))
            }
        })
    }
}

/// One step of a policy.
#[derive(Debug, Clone)]
pub struct Step {
    /// After the raise, ms.
    pub after_ms: i64,
    /// Whom.
    pub targets: Vec<Target>,
    /// Channel ids.
    pub channels: Vec<String>,
}

/// An escalation policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Id.
    pub id: String,
    /// By `after`.
    pub steps: Vec<Step>,
    /// Repeat of the last step while unacknowledged, ms.
    pub repeat_ms: Option<i64>,
    /// Tell who was told when the alarm is over.
    pub notify_on_clear: bool,
    /// Messages carry one-time acknowledge links, valid this long (ms).
    pub ack_links_ms: Option<i64>,
    /// Minutes of the local day at which `low` alarms go out as one digest
    /// (sorted); empty: one message each.
    pub digest_at: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Route {
    severities: Vec<crate::alarms::Severity>,
    kinds: Vec<String>,
    rules: Vec<String>,
    building: Option<String>,
    policy: String,
}

/// Routes and policies.
#[derive(Debug, Clone)]
pub struct Plan {
    policies: BTreeMap<String, Policy>,
    routes: Vec<Route>,
    /// The first step waits at least this long (a flood becomes one message).
    pub group_wait_ms: i64,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Plan {
    /// From the configuration; `Err` lists (key path, problem).
    pub fn new(cfg: &Config) -> Result<Self, Vec<(String, String)>> {
        let n = &cfg.notify;
        let mut errors = Vec::new();
        let mut policies = BTreeMap::new();
        for (id, p) in &n.policies {
            let mut steps = Vec::new();
            if p.steps.is_empty() {
                errors.push((
                    format!("notify.policies.{id}.steps"),
                    "a policy needs at least one step".into(),
                ));
            }
            let mut last = -1;
            for (i, s) in p.steps.iter().enumerate() {
                let at = |k: &str| format!("notify.policies.{id}.steps[{i}].{k}");
                if ms(s.after) < last {
                    errors.push((at("after"), "steps must be in the order of `after`".into()));
                }
                last = ms(s.after);
                let mut targets = Vec::new();
                for (j, t) in s.notify.iter().enumerate() {
                    match Target::parse(t) {
                        Ok(target) => {
                            let known = match &target {
                                Target::OnDuty(team) | Target::Lead(team) | Target::Team(team) => {
                                    n.teams.contains_key(team)
                                }
                                Target::Person(p) => n.people.iter().any(|x| &x.id == p),
                            };
                            if known {
                                targets.push(target);
                            } else {
                                errors.push((
                                    at(&format!("notify[{j}]")),
                                    format!("`{t}` names no team or person of [notify]"),
                                ));
                            }
                        }
                        Err(e) => errors.push((at(&format!("notify[{j}]")), e)),
                    }
                }
                if s.channels.is_empty() {
                    errors.push((at("channels"), "a step needs a channel".into()));
                }
                for (j, c) in s.channels.iter().enumerate() {
                    if !n.channels.contains_key(c) {
                        errors.push((
                            at(&format!("channels[{j}]")),
                            format!("no channel `{c}` in [notify.channels]"),
                        ));
                    }
                }
                steps.push(Step {
                    after_ms: ms(s.after),
                    targets,
                    channels: s.channels.clone(),
                });
            }
            if p.ack_links && n.public_url(&cfg.web).is_none() {
                errors.push((
                    format!("notify.policies.{id}.ack_links"),
                    "needs [web] public_url, the page's address as phones reach it".into(),
                ));
            }
            if p.ack_links && p.ack_expiry.is_zero() {
                errors.push((
                    format!("notify.policies.{id}.ack_expiry"),
                    "must be longer than 0s".into(),
                ));
            }
            let mut digest_at = Vec::new();
            for (j, t) in p.digest_at.iter().enumerate() {
                match chrono::NaiveTime::parse_from_str(t, "%H:%M") {
                    Ok(t) => digest_at
                        .push(chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t)),
                    Err(_) => errors.push((
                        format!("notify.policies.{id}.digest_at[{j}]"),
                        format!("`{t}` is not a local time HH:MM"),
                    )),
                }
            }
            digest_at.sort_unstable();
            digest_at.dedup();
            if p.repeat.is_some_and(|r| r.is_zero()) {
                errors.push((
                    format!("notify.policies.{id}.repeat"),
                    "must be longer than 0s".into(),
                ));
            }
            policies.insert(
                id.clone(),
                Policy {
                    id: id.clone(),
                    steps,
                    repeat_ms: p.repeat.map(ms),
                    notify_on_clear: p.notify_on_clear,
                    ack_links_ms: p.ack_links.then(|| ms(p.ack_expiry)),
                    digest_at,
                },
            );
        }
        let routes = n
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if !n.policies.contains_key(&r.policy) {
                    errors.push((
                        format!("notify.routes[{i}].policy"),
                        format!("no policy `{}` in [notify.policies]", r.policy),
                    ));
                }
                Route {
                    severities: r.severities.clone(),
                    kinds: r.kinds.clone(),
                    rules: r.rules.clone(),
                    building: r.building.clone(),
                    policy: r.policy.clone(),
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(Self {
                policies,
                routes,
                group_wait_ms: ms(n.group_wait),
            })
        } else {
            Err(errors)
        }
    }

    /// Whether any route exists (else nothing is ever sent).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The policy of an alarm: the first route that matches it.
    pub fn route(&self, a: &Alarm) -> Option<&Policy> {
        let building = a.location.as_ref().and_then(|l| l.building.as_deref());
        self.routes
            .iter()
            .find(|r| {
                (r.severities.is_empty() || r.severities.contains(&a.severity))
                    && (r.kinds.is_empty() || r.kinds.iter().any(|k| k == &a.kind))
                    && (r.rules.is_empty() || r.rules.iter().any(|x| x == &a.rule))
                    && r.building.as_deref().is_none_or(|b| Some(b) == building)
            })
            .and_then(|r| self.policies.get(&r.policy))
    }

    /// A policy by id.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.get(id)
    }
}

impl Policy {
    /// When step `k` is due for an alarm raised at `raised_at`: steps by their
    /// `after` (the first no earlier than `group_wait`), then the last step
    /// again every `repeat`. `None`: the chain is over.
    pub fn due(&self, k: usize, raised_at: i64, group_wait_ms: i64) -> Option<i64> {
        let last = self.steps.len().checked_sub(1)?;
        let at = |i: usize| {
            raised_at
                + self.steps[i]
                    .after_ms
                    .max(if i == 0 { group_wait_ms } else { 0 })
        };
        if k <= last {
            return Some(at(k));
        }
        let rounds = i64::try_from(k - last).ok()?;
        self.repeat_ms
            .map(|r| at(last).saturating_add(r.saturating_mul(rounds)))
    }

    /// Whether an alarm of `severity` waits for this policy's digest.
    pub fn digests(&self, severity: crate::alarms::Severity) -> bool {
        severity == crate::alarms::Severity::Low && !self.digest_at.is_empty()
    }

    /// The first digest time at or after `at_ms` (epoch ms) in the local
    /// time of `offset`.
    pub fn next_digest(&self, at_ms: i64, offset: chrono::FixedOffset) -> Option<i64> {
        let local = chrono::DateTime::from_timestamp_millis(at_ms)?.with_timezone(&offset);
        let midnight = local
            .date_naive()
            .and_hms_opt(0, 0, 0)?
            .and_local_timezone(offset)
            .single()?
            .timestamp_millis();
        (0..2)
            .flat_map(|day| {
                self.digest_at
                    .iter()
                    .map(move |m| midnight + day * 86_400_000 + i64::from(*m) * 60_000)
            })
            .find(|t| *t >= at_ms)
    }

    /// The step that step number `k` runs (repeats run the last).
    pub fn step(&self, k: usize) -> Option<&Step> {
        self.steps.get(k.min(self.steps.len().checked_sub(1)?))
    }
}

/// The people a step's targets name at `now_ms`, each once.
pub fn people<'a>(targets: &[Target], roster: &'a Roster, now_ms: i64) -> Vec<&'a PersonConfig> {
    let mut out: Vec<&PersonConfig> = Vec::new();
    for t in targets {
        let found: Vec<&PersonConfig> = match t {
            Target::OnDuty(team) => roster
                .on_duty(team, now_ms)
                .map(|d| d.people)
                .unwrap_or_default(),
            Target::Lead(team) => roster.lead(team).into_iter().collect(),
            Target::Team(team) => roster.members(team),
            Target::Person(id) => roster.person(id).into_iter().collect(),
        };
        for p in found {
            if !out.iter().any(|x| x.id == p.id) {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = r#"
[[notify.people]]
id = "zhang"
name = "张伟"
[[notify.people]]
id = "wang"
name = "王处长"
[notify.teams.security]
members = ["zhang"]
lead = "wang"
[[notify.shifts]]
team = "security"
people = ["zhang"]
times = ["08:00-20:00"]
[notify.channels.sms]
type = "webhook"
url = "http://127.0.0.1:9/"
[notify.policies.fire]
steps = [
  { after = "0s", notify = ["on_duty:security"], channels = ["sms"] },
  { after = "5m", notify = ["lead:security"], channels = ["sms"] },
]
repeat = "10m"
[[notify.routes]]
severities = ["critical"]
policy = "fire"
"#;

    fn plan() -> (Plan, Roster) {
        let text = format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{NOTIFY}");
        let cfg = Config::from_toml(&text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        (
            Plan::new(&cfg).expect("plan"),
            Roster::new(&cfg).expect("roster"),
        )
    }

    #[test]
    fn steps_come_at_their_minute_then_repeat() {
        let (plan, _) = plan();
        let mut a = crate::alarms::lifecycle::tests::raised(0);
        a.severity = crate::alarms::Severity::Critical;
        let p = plan.route(&a).expect("routed");
        assert_eq!(
            p.due(0, 1_000, 3_000),
            Some(4_000),
            "the first waits for a flood to gather"
        );
        assert_eq!(p.due(1, 1_000, 3_000), Some(301_000));
        assert_eq!(
            p.due(2, 1_000, 3_000),
            Some(901_000),
            "then every 10 minutes"
        );
        a.severity = crate::alarms::Severity::Low;
        assert!(plan.route(&a).is_none(), "no route: nobody");
    }

    #[test]
    fn on_duty_follows_the_roster_and_nobody_is_nobody() {
        let (plan, roster) = plan();
        let step = &plan.policy("fire").expect("policy").steps[0];
        // 2026-12-02 10:00 and 23:00 in Beijing.
        let day = 1_796_176_800_000;
        let night = day + 13 * 3_600_000;
        assert_eq!(
            people(&step.targets, &roster, day)
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["zhang"]
        );
        assert!(
            people(&step.targets, &roster, night).is_empty(),
            "nobody on duty: the step is skipped"
        );
    }

    #[test]
    fn references_to_nothing_are_errors() {
        let text = format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{}",
            NOTIFY
                .replace("lead:security", "lead:kitchen")
                .replace("policy = \"fire\"", "policy = \"flood\"")
        );
        let err = Config::from_toml(&text, Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("notify.policies.fire.steps[1].notify[0]"),
            "{err}"
        );
        assert!(err.contains("notify.routes[0].policy"), "{err}");
    }
}
