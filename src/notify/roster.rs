//! Who is on duty (值班), pure: the weekly pattern of `[[notify.shifts]]`,
//! replaced on the dates it lists by the roster file a school keeps in a
//! spreadsheet (`date,start,end,team,person`). Time is passed in.
//!
//! At a moment `t` (local time), for one team:
//! - if the roster file has an entry of the team on `t`'s date, or one of the
//!   day before that runs past midnight into `t`, the file decides: the
//!   people of its entries that cover `t` (none is a gap, shown as such);
//! - else the shifts of the team that hold at `t` (a range past midnight
//!   belongs to the day it starts; holidays only with `on_holidays`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};

use crate::config::{CalendarConfig, Config, PersonConfig, TeamConfig};
use crate::rules::calendar::{Calendar, LocalTime};

/// At most this many problems of the roster file are reported.
const MAX_FILE_PROBLEMS: usize = 20;

/// Where a team's duty at a moment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DutySource {
    /// The roster file's entries for the date.
    RosterFile,
    /// The weekly pattern.
    Pattern,
}

/// Who of a team is on duty at a moment.
#[derive(Debug, Clone)]
pub struct Duty<'a> {
    /// Team id.
    pub team: &'a str,
    /// Its name, when it has one.
    pub team_name: Option<&'a str>,
    /// On duty (empty: nobody — a gap the security room must see).
    pub people: Vec<&'a PersonConfig>,
    /// What decided.
    pub source: DutySource,
}

#[derive(Debug, Clone)]
struct Shift {
    team: String,
    people: Vec<String>,
    calendar: Calendar,
}

/// One line of the roster file.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    date: NaiveDate,
    /// Minutes of the day; `end <= start` runs past midnight.
    start: u32,
    end: u32,
    team: String,
    person: String,
}

impl Entry {
    /// Whether the entry covers minute `m` of `day`.
    fn covers(&self, day: NaiveDate, m: u32) -> bool {
        let overnight = self.end <= self.start;
        if day == self.date {
            m >= self.start && (overnight || m < self.end)
        } else {
            overnight && self.date.succ_opt() == Some(day) && m < self.end
        }
    }
}

/// The people, teams and who is on duty when.
#[derive(Debug, Clone)]
pub struct Roster {
    people: BTreeMap<String, PersonConfig>,
    teams: BTreeMap<String, TeamConfig>,
    shifts: Vec<Shift>,
    entries: Vec<Entry>,
    local: LocalTime,
}

impl Roster {
    /// Builds the roster of a configuration, reading its roster file; `Err`
    /// lists (key path, problem), the file's with their line.
    pub fn new(cfg: &Config) -> Result<Self, Vec<(String, String)>> {
        let n = &cfg.notify;
        let mut errors = Vec::new();
        let mut people = BTreeMap::new();
        for (i, p) in n.people.iter().enumerate() {
            if !crate::config::is_valid_id(&p.id) {
                errors.push((
                    format!("notify.people[{i}].id"),
                    format!("`{}` may hold only letters, digits, - and _", p.id),
                ));
            }
            if p.name.trim().is_empty() {
                errors.push((format!("notify.people[{i}].name"), "is empty".into()));
            }
            if people.insert(p.id.clone(), p.clone()).is_some() {
                errors.push((
                    format!("notify.people[{i}].id"),
                    format!("person `{}` is declared twice", p.id),
                ));
            }
        }
        let person = |key: String, id: &str, errors: &mut Vec<(String, String)>| {
            if !people.contains_key(id) {
                errors.push((key, format!("no person `{id}` in [[notify.people]]")));
            }
        };
        for (t, team) in &n.teams {
            for (j, m) in team.members.iter().enumerate() {
                person(format!("notify.teams.{t}.members[{j}]"), m, &mut errors);
            }
            if let Some(l) = &team.lead {
                person(format!("notify.teams.{t}.lead"), l, &mut errors);
            }
        }
        let mut shifts = Vec::new();
        for (i, s) in n.shifts.iter().enumerate() {
            let at = |k: &str| format!("notify.shifts[{i}].{k}");
            if !n.teams.contains_key(&s.team) {
                errors.push((
                    at("team"),
                    format!("no team `{}` in [notify.teams]", s.team),
                ));
            }
            if s.people.is_empty() {
                errors.push((at("people"), "a shift needs someone on it".into()));
            }
            for (j, p) in s.people.iter().enumerate() {
                person(at(&format!("people[{j}]")), p, &mut errors);
            }
            let cal = CalendarConfig {
                weekdays: s.weekdays.clone(),
                times: s.times.clone(),
                on_holidays: s.on_holidays,
            };
            match Calendar::new(&cal) {
                Ok(calendar) => shifts.push(Shift {
                    team: s.team.clone(),
                    people: s.people.clone(),
                    calendar,
                }),
                Err(e) => errors.push((at("times"), e)),
            }
        }
        let local = match LocalTime::new(&cfg.alarms) {
            Ok(l) => Some(l),
            Err(e) => {
                errors.push(("alarms".into(), e));
                None
            }
        };
        let mut entries = Vec::new();
        if let Some(path) = &n.roster_file {
            match read_file(path, &n.teams, &people) {
                Ok(e) => entries = e,
                Err(problems) => errors.extend(
                    problems
                        .into_iter()
                        .map(|m| ("notify.roster_file".to_owned(), m)),
                ),
            }
        }
        match local {
            Some(local) if errors.is_empty() => Ok(Self {
                people,
                teams: n.teams.clone(),
                shifts,
                entries,
                local,
            }),
            _ => Err(errors),
        }
    }

    /// A person by id.
    pub fn person(&self, id: &str) -> Option<&PersonConfig> {
        self.people.get(id)
    }

    /// A team's lead.
    pub fn lead(&self, team: &str) -> Option<&PersonConfig> {
        self.teams
            .get(team)
            .and_then(|t| t.lead.as_deref())
            .and_then(|id| self.person(id))
    }

    /// A team's members.
    pub fn members(&self, team: &str) -> Vec<&PersonConfig> {
        self.teams.get(team).map_or_else(Vec::new, |t| {
            t.members.iter().filter_map(|id| self.person(id)).collect()
        })
    }

    /// The team ids.
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.teams.keys().map(String::as_str)
    }

    /// Who of `team` is on duty at `at_ms`; `None` for an unknown team.
    pub fn on_duty(&self, team: &str, at_ms: i64) -> Option<Duty<'_>> {
        let (id, cfg) = self.teams.get_key_value(team)?;
        let local = DateTime::<Utc>::from_timestamp_millis(at_ms)
            .unwrap_or_default()
            .with_timezone(&self.local.offset());
        let (day, minute) = (local.date_naive(), local.hour() * 60 + local.minute());
        let yesterday = day - Duration::days(1);
        let listed = self.entries.iter().any(|e| {
            e.team == *id && (e.date == day || (e.date == yesterday && e.covers(day, minute)))
        });
        let mut seen = HashSet::new();
        let (ids, source): (Vec<&str>, DutySource) = if listed {
            (
                self.entries
                    .iter()
                    .filter(|e| e.team == *id && e.covers(day, minute))
                    .map(|e| e.person.as_str())
                    .collect(),
                DutySource::RosterFile,
            )
        } else {
            (
                self.shifts
                    .iter()
                    .filter(|s| s.team == *id && s.calendar.holds(&self.local, at_ms))
                    .flat_map(|s| s.people.iter().map(String::as_str))
                    .collect(),
                DutySource::Pattern,
            )
        };
        Some(Duty {
            team: id,
            team_name: cfg.name.as_deref(),
            people: ids
                .into_iter()
                .filter(|p| seen.insert(*p))
                .filter_map(|p| self.person(p))
                .collect(),
            source,
        })
    }

    /// Every team's duty at `at_ms`.
    pub fn duty(&self, at_ms: i64) -> Vec<Duty<'_>> {
        self.teams
            .keys()
            .filter_map(|t| self.on_duty(t, at_ms))
            .collect()
    }
}

/// Reads the roster file: a header row (`date,start,end,team,person`, any
/// order), UTF-8 with or without a BOM.
fn read_file(
    path: &Path,
    teams: &BTreeMap<String, TeamConfig>,
    people: &BTreeMap<String, PersonConfig>,
) -> Result<Vec<Entry>, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| vec![format!("{}: {e}", path.display())])?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(cd), Some(cs), Some(ce), Some(ct), Some(cp)) = (
        col("date"),
        col("start"),
        col("end"),
        col("team"),
        col("person"),
    ) else {
        return Err(vec![format!(
            "{} line 1: the header must name the columns date, start, end, team, person (found {})",
            path.display(),
            headers.join(", ")
        )]);
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        let at = |msg: String| format!("{} line {line}: {msg}", path.display());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let cell = |i: usize| record.get(i).unwrap_or("");
                let mut bad = Vec::new();
                let date = NaiveDate::parse_from_str(cell(cd), "%Y-%m-%d")
                    .map_err(|_| {
                        bad.push(format!("`{}` is not a date such as 2026-12-02", cell(cd)))
                    })
                    .ok();
                let mut minute = |c: usize| {
                    NaiveTime::parse_from_str(cell(c), "%H:%M")
                        .map(|t| t.hour() * 60 + t.minute())
                        .map_err(|_| bad.push(format!("`{}` is not a time such as 08:00", cell(c))))
                        .ok()
                };
                let (start, end) = (minute(cs), minute(ce));
                let (team, person) = (cell(ct).to_owned(), cell(cp).to_owned());
                if !teams.contains_key(&team) {
                    bad.push(format!("no team `{team}` in [notify.teams]"));
                }
                if !people.contains_key(&person) {
                    bad.push(format!("no person `{person}` in [[notify.people]]"));
                }
                match (date, start, end) {
                    (Some(date), Some(start), Some(end)) if bad.is_empty() => entries.push(Entry {
                        date,
                        start,
                        end,
                        team,
                        person,
                    }),
                    _ => problems.extend(bad.into_iter().map(at)),
                }
            }
            Err(e) => problems.push(at(e.to_string())),
        }
        if problems.len() >= MAX_FILE_PROBLEMS {
            problems.push(format!(
                "{}: stopped after {MAX_FILE_PROBLEMS} problems",
                path.display()
            ));
            break;
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEOPLE: &str = r#"
[alarms]
holidays = ["2027-01-01"]

[[notify.people]]
id = "zhang"
name = "张伟"
phone = "13800000001"
[[notify.people]]
id = "li"
name = "李娜"
lang = "en"
[[notify.people]]
id = "wang"
name = "王处长"

[notify.teams.security]
name = "保卫处"
members = ["zhang", "li"]
lead = "wang"

[[notify.shifts]]
team = "security"
people = ["zhang"]
weekdays = ["mon", "tue", "wed", "thu", "fri"]
times = ["08:00-20:00"]

[[notify.shifts]]
team = "security"
people = ["li"]
times = ["20:00-08:00"]
on_holidays = true
"#;

    fn roster(extra: &str, file: Option<&str>) -> (Roster, Option<tempfile::TempDir>) {
        let dir = file.map(|text| {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("roster.csv"), text).expect("write");
            dir
        });
        let roster_file = dir
            .as_ref()
            .map(|d| {
                format!(
                    "[notify]\nroster_file = \"{}\"\n",
                    d.path().join("roster.csv").display()
                )
            })
            .unwrap_or_default();
        let text = format!("{roster_file}[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{PEOPLE}{extra}");
        let cfg = Config::from_toml(&text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        (Roster::new(&cfg).unwrap_or_else(|e| panic!("{e:?}")), dir)
    }

    /// Epoch ms of a local (UTC+8) time.
    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(&format!("{s}:00+08:00"))
            .expect("time")
            .timestamp_millis()
    }

    fn who(r: &Roster, t: &str) -> (Vec<String>, DutySource) {
        let d = r.on_duty("security", at(t)).expect("team");
        (d.people.iter().map(|p| p.id.clone()).collect(), d.source)
    }

    #[test]
    fn the_weekly_pattern_at_its_boundaries_and_across_midnight() {
        let (r, _) = roster("", None);
        // 2026-12-02 is a Wednesday.
        assert_eq!(
            who(&r, "2026-12-02T07:59").0,
            ["li"],
            "the night shift of Tuesday"
        );
        assert_eq!(who(&r, "2026-12-02T08:00").0, ["zhang"]);
        assert_eq!(who(&r, "2026-12-02T19:59").0, ["zhang"]);
        assert_eq!(who(&r, "2026-12-02T20:00").0, ["li"]);
        assert_eq!(
            who(&r, "2026-12-03T03:00"),
            (vec!["li".to_owned()], DutySource::Pattern)
        );
        // Saturday day: nobody (the weekday shift does not hold) — a gap.
        assert!(who(&r, "2026-12-05T10:00").0.is_empty());
        // A holiday (Friday 2027-01-01): the day shift does not hold, the night shift does.
        assert!(who(&r, "2027-01-01T10:00").0.is_empty());
        assert_eq!(who(&r, "2027-01-01T22:00").0, ["li"]);
        assert_eq!(r.lead("security").map(|p| p.name.as_str()), Some("王处长"));
    }

    #[test]
    fn the_roster_file_replaces_the_pattern_on_its_dates() {
        let file = "\u{feff}date,start,end,team,person\n2026-12-02,08:00,20:00,security,li\n2026-12-02,20:00,08:00,security,wang\n";
        let (r, _dir) = roster("", Some(file));
        assert_eq!(
            who(&r, "2026-12-02T09:00"),
            (vec!["li".to_owned()], DutySource::RosterFile)
        );
        assert_eq!(
            who(&r, "2026-12-03T03:00"),
            (vec!["wang".to_owned()], DutySource::RosterFile),
            "past midnight"
        );
        // The next day is not in the file: the pattern again.
        assert_eq!(
            who(&r, "2026-12-03T09:00"),
            (vec!["zhang".to_owned()], DutySource::Pattern)
        );
        // Before the date's first entry the file still decides: its day is the file's.
        assert_eq!(
            who(&r, "2026-12-02T07:00"),
            (vec![], DutySource::RosterFile)
        );
    }

    #[test]
    fn problems_of_the_roster_file_name_their_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("roster.csv");
        std::fs::write(&path, "date,start,end,team,person\n2026-12-02,08:00,20:00,security,li\n2026-13-02,8am,20:00,canteen,nobody\n").expect("write");
        let text = format!(
            "[notify]\nroster_file = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{PEOPLE}",
            path.display()
        );
        let err = Config::from_toml(&text, Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for want in [
            "line 3: `2026-13-02` is not a date",
            "line 3: `8am` is not a time",
            "line 3: no team `canteen`",
            "line 3: no person `nobody`",
        ] {
            assert!(err.contains(want), "{want} missing in {err}");
        }
        assert!(!err.contains("roster.csv line 2"), "{err}");
    }

    #[test]
    fn references_to_nobody_are_errors() {
        let text = format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{PEOPLE}[[notify.shifts]]\nteam = \"kitchen\"\npeople = [\"zhao\"]\ntimes = [\"25:00-08:00\"]\n"
        );
        let err = Config::from_toml(&text, Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for want in [
            "notify.shifts[2].team",
            "notify.shifts[2].people[0]",
            "notify.shifts[2].times",
        ] {
            assert!(err.contains(want), "{want} missing in {err}");
        }
    }
}
