//! The ISA-18.2 alarm state machine, pure: an `Alarm` and the actions that
//! move it. No I/O, no clock: every action carries its time.
//!
//! ```text
//!            raise                 clear
//!   (none) ───────► Unacked ───────────────► ClearedUnacked
//!                     │  ▲  re-trip (repeat)      │
//!                 ack │  └────────────────────────┘
//!                     ▼                           │ ack
//!                   Acked ──────── clear ───────► Cleared (closed)
//!
//!   shelve: Unacked | Acked | ClearedUnacked ──► Shelved ── unshelve ──► Unacked (still active) | Cleared
//! ```

use serde::{Deserialize, Serialize};

/// How urgent an alarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Life safety: fire, gas leak.
    Critical,
    /// Act now: forced gate, chemical cabinet open.
    High,
    /// Act soon: detector offline, grease build-up.
    Medium,
    /// Plan: low battery.
    Low,
}

impl Severity {
    /// The name used in the API, metrics and InfluxDB.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

/// Where an alarm is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Active, not acknowledged.
    Unacked,
    /// Active, acknowledged.
    Acked,
    /// Returned to normal, not yet acknowledged.
    ClearedUnacked,
    /// Returned to normal and acknowledged: closed.
    Cleared,
    /// Hidden for a while by an operator.
    Shelved,
}

impl State {
    /// The name used in the API, the store and InfluxDB.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unacked => "unacked",
            State::Acked => "acked",
            State::ClearedUnacked => "cleared_unacked",
            State::Cleared => "cleared",
            State::Shelved => "shelved",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Unacked,
            State::Acked,
            State::ClearedUnacked,
            State::Cleared,
            State::Shelved,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// Something that happens to an alarm.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The condition is true again while the alarm is open.
    Repeat {
        /// The value that tripped it.
        value: Option<f64>,
    },
    /// The condition returned to normal.
    Clear,
    /// An operator acknowledged it.
    Ack {
        /// Who.
        by: String,
        /// Why or what was done.
        comment: Option<String>,
    },
    /// An operator shelved it until `until` (epoch ms).
    Shelve {
        /// Who.
        by: String,
        /// Until when.
        until: i64,
        /// Why.
        reason: String,
    },
    /// The shelving time ran out (or an operator took it back).
    Unshelve,
    /// An operator added a note.
    Comment {
        /// Who.
        by: String,
        /// The note.
        text: String,
    },
}

impl Action {
    /// The name recorded in the ledger.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Repeat { .. } => "repeat",
            Action::Clear => "clear",
            Action::Ack { .. } => "ack",
            Action::Shelve { .. } => "shelve",
            Action::Unshelve => "unshelve",
            Action::Comment { .. } => "comment",
        }
    }
}

/// A text in both of the page's languages. A rule written in one language
/// has the same text in both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// Chinese: the default of the page, the ledger and messages.
    pub zh: String,
    /// English.
    pub en: String,
}

impl Text {
    /// The same text in both languages.
    pub fn one(text: impl Into<String>) -> Self {
        let zh = text.into();
        Self { en: zh.clone(), zh }
    }

    /// Chinese and English.
    pub fn two(zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            zh: zh.into(),
            en: en.into(),
        }
    }

    /// The text in `lang` (`en`, else Chinese).
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Zh => &self.zh,
            Lang::En => &self.en,
        }
    }
}

/// A language of the page, the ledger and messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Chinese (the default).
    #[default]
    Zh,
    /// English.
    En,
}

/// An action that does not apply in the alarm's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} an alarm that is {state}")]
pub struct NotAllowed {
    /// The action.
    pub action: &'static str,
    /// The state it was in.
    pub state: &'static str,
}

/// One alarm: a rule's condition on one device (or a flood group), from
/// raise to close.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// Store id.
    pub id: i64,
    /// Rule id.
    pub rule: String,
    /// Device id (`*` for a flood group).
    pub device: String,
    /// Device kind.
    pub kind: String,
    /// Site.
    pub site: String,
    /// Where, in words (building, floor, room, name).
    pub location: Option<crate::reading::Location>,
    /// Severity.
    pub severity: Severity,
    /// Lifecycle state.
    pub state: State,
    /// Whether the condition is true right now (also while shelved).
    pub active: bool,
    /// First raised, epoch ms.
    pub raised_at: i64,
    /// Last returned to normal, epoch ms.
    pub cleared_at: Option<i64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When, epoch ms.
    pub acked_at: Option<i64>,
    /// Last value that tripped it.
    pub value: Option<f64>,
    /// Largest such value.
    pub peak: Option<f64>,
    /// How many times it tripped while open.
    pub count: u32,
    /// Last tripped (raised or repeated), epoch ms; for a flood group, its
    /// newest member's.
    pub last_at: i64,
    /// The rule's name.
    pub name: Text,
    /// The rule's message for it.
    pub message: Text,
    /// Shelved until, epoch ms.
    pub shelved_until: Option<i64>,
    /// Why it was shelved.
    pub shelve_reason: Option<String>,
    /// Raised in a zone under a drill or maintenance: recorded, notifies no one.
    pub suppressed: Option<String>,
    /// The flood group it belongs to.
    pub group: Option<i64>,
    /// Whether this is a flood group (its members point to it).
    pub is_group: bool,
    /// The alarm of another rule on the same device that was active when
    /// this one was raised (or raised while this one was unacknowledged) and
    /// covers it: shown under it, acknowledged with it.
    pub inhibited_by: Option<i64>,
    /// Whether the device is declared in the configuration (an undeclared
    /// one may be spoofed: the page marks it).
    pub declared: bool,
    /// Last change, epoch ms.
    pub updated_at: i64,
}

impl Alarm {
    /// The place in words (building, floor, room), or `site/device` when
    /// the device has no place: what a message or a page names the alarm by.
    pub fn place(&self) -> String {
        self.location
            .as_ref()
            .map(crate::reading::Location::describe)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("{}/{}", self.site, self.device))
    }

    /// A newly raised alarm: active, unacknowledged, tripped once.
    pub fn raised(
        id: i64,
        rule: &str,
        severity: Severity,
        message: Text,
        value: Option<f64>,
        at: i64,
    ) -> Self {
        Self {
            id,
            rule: rule.to_owned(),
            device: String::new(),
            kind: String::new(),
            site: String::new(),
            location: None,
            severity,
            state: State::Unacked,
            active: true,
            raised_at: at,
            cleared_at: None,
            acked_by: None,
            acked_at: None,
            value,
            peak: value,
            count: 1,
            last_at: at,
            name: Text::one(rule),
            message,
            shelved_until: None,
            shelve_reason: None,
            suppressed: None,
            group: None,
            is_group: false,
            inhibited_by: None,
            declared: true,
            updated_at: at,
        }
    }

    /// Whether the alarm is closed (no longer shown as active).
    pub fn is_closed(&self) -> bool {
        self.state == State::Cleared
    }

    /// Applies `action` at `at` (epoch ms); returns the state before.
    pub fn apply(&mut self, action: &Action, at: i64) -> Result<State, NotAllowed> {
        use State::*;
        let before = self.state;
        let refuse = || NotAllowed {
            action: action.name(),
            state: before.as_str(),
        };
        match action {
            Action::Repeat { value } => {
                if before == Cleared {
                    return Err(refuse());
                }
                self.active = true;
                self.count = self.count.saturating_add(1);
                self.last_at = at;
                self.record_value(*value);
                if before == ClearedUnacked {
                    self.state = Unacked;
                }
            }
            Action::Clear => {
                if !self.active || before == Cleared {
                    return Err(refuse());
                }
                self.active = false;
                self.cleared_at = Some(at);
                self.state = match before {
                    Unacked => ClearedUnacked,
                    Acked => Cleared,
                    other => other,
                };
            }
            Action::Ack { by, .. } => {
                self.state = match before {
                    Unacked => Acked,
                    ClearedUnacked => Cleared,
                    _ => return Err(refuse()),
                };
                self.acked_by = Some(by.clone());
                self.acked_at = Some(at);
            }
            Action::Shelve { until, reason, .. } => {
                if matches!(before, Cleared | Shelved) || *until <= at {
                    return Err(refuse());
                }
                self.state = Shelved;
                self.shelved_until = Some(*until);
                self.shelve_reason = Some(reason.clone());
            }
            Action::Unshelve => {
                if before != Shelved {
                    return Err(refuse());
                }
                self.shelved_until = None;
                // Still active: it must be seen again. Normal: nothing left to do.
                self.state = if self.active { Unacked } else { Cleared };
            }
            Action::Comment { .. } => {
                if before == Cleared {
                    return Err(refuse());
                }
            }
        }
        self.updated_at = at;
        Ok(before)
    }

    fn record_value(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.value = Some(v);
            self.peak = Some(self.peak.map_or(v, |p| p.max(v)));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn raised(at: i64) -> Alarm {
        Alarm {
            id: 1,
            rule: "r".into(),
            device: "d".into(),
            kind: "smoke".into(),
            site: "s".into(),
            location: None,
            severity: Severity::High,
            state: State::Unacked,
            active: true,
            raised_at: at,
            cleared_at: None,
            acked_by: None,
            acked_at: None,
            value: Some(1.0),
            peak: Some(1.0),
            count: 1,
            last_at: at,
            name: Text::one("r"),
            message: Text::two("消息", "m"),
            shelved_until: None,
            shelve_reason: None,
            suppressed: None,
            group: None,
            is_group: false,
            inhibited_by: None,
            declared: true,
            updated_at: at,
        }
    }

    fn ack() -> Action {
        Action::Ack {
            by: "op".into(),
            comment: None,
        }
    }

    #[test]
    fn ack_then_clear_closes() {
        let mut a = raised(0);
        assert_eq!(a.apply(&ack(), 1), Ok(State::Unacked));
        assert_eq!(a.state, State::Acked);
        a.apply(&Action::Clear, 2).expect("clear");
        assert!(a.is_closed());
        assert_eq!(a.acked_by.as_deref(), Some("op"));
    }

    #[test]
    fn clear_then_ack_closes_and_retrip_reopens() {
        let mut a = raised(0);
        a.apply(&Action::Clear, 1).expect("clear");
        assert_eq!(a.state, State::ClearedUnacked);
        a.apply(&Action::Repeat { value: Some(5.0) }, 2)
            .expect("repeat");
        assert_eq!((a.state, a.count, a.peak), (State::Unacked, 2, Some(5.0)));
        a.apply(&Action::Clear, 3).expect("clear");
        a.apply(&ack(), 4).expect("ack");
        assert!(a.is_closed());
        assert!(
            a.apply(&ack(), 5).is_err(),
            "a closed alarm takes no action"
        );
    }

    #[test]
    fn shelving_hides_then_returns() {
        let mut a = raised(0);
        let shelve = Action::Shelve {
            by: "op".into(),
            until: 100,
            reason: "detector being replaced".into(),
        };
        a.apply(&shelve, 1).expect("shelve");
        assert_eq!(a.state, State::Shelved);
        a.apply(&Action::Unshelve, 100).expect("unshelve");
        assert_eq!(a.state, State::Unacked, "still active: seen again");
        a.apply(&shelve, 101).expect_err("until in the past");
        a.apply(
            &Action::Shelve {
                by: "op".into(),
                until: 500,
                reason: "x".into(),
            },
            102,
        )
        .expect("shelve again");
        a.apply(&Action::Clear, 200).expect("clears while shelved");
        assert_eq!(a.state, State::Shelved);
        a.apply(&Action::Unshelve, 500).expect("unshelve");
        assert!(a.is_closed(), "normal when the shelf ran out: closed");
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            proptest::option::of(-100.0f64..100.0).prop_map(|value| Action::Repeat { value }),
            Just(Action::Clear),
            Just(ack()),
            (1i64..50).prop_map(|d| Action::Shelve {
                by: "op".into(),
                until: 1000 + d,
                reason: "r".into()
            }),
            Just(Action::Unshelve),
            Just(Action::Comment {
                by: "op".into(),
                text: "t".into()
            }),
        ]
    }

    proptest! {
        /// No sequence of events loses an alarm or leaves an impossible state.
        #[test]
        fn invariants_hold(actions in proptest::collection::vec(action(), 0..40)) {
            let mut a = raised(0);
            for (i, act) in actions.iter().enumerate() {
                let before = a.clone();
                match a.apply(act, 1 + i as i64) {
                    Ok(_) => {}
                    Err(_) => prop_assert_eq!(&a, &before, "a refused action changes nothing"),
                }
                // Closed only when normal and acknowledged (or shelved out while normal).
                if a.state == State::Cleared {
                    prop_assert!(!a.active);
                }
                // An active alarm is never closed: it cannot be forgotten.
                if a.active {
                    prop_assert!(a.state != State::Cleared);
                }
                prop_assert_eq!(a.state == State::Shelved, a.shelved_until.is_some());
                if a.state == State::Acked {
                    prop_assert!(a.acked_by.is_some());
                }
                prop_assert!(a.count >= 1);
                if let (Some(v), Some(p)) = (a.value, a.peak) {
                    prop_assert!(p >= v);
                }
            }
        }
    }
}
