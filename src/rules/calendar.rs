//! Calendars: school hours, nights, weekends, holidays — in local time.
//! Pure: the time to judge is passed in.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, Timelike, Utc, Weekday};

use crate::config::{AlarmsConfig, CalendarConfig};

/// Parses a UTC offset such as `+08:00`.
pub fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let bad = || format!("`{s}` is not a UTC offset such as +08:00");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// Parses holiday entries: `2026-10-01` or `2026-10-01..2026-10-07`.
pub fn parse_holidays(entries: &[String]) -> Result<Vec<(NaiveDate, NaiveDate)>, String> {
    entries
        .iter()
        .map(|e| {
            let date = |d: &str| {
                NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
                    format!("`{e}` is not a date (2026-10-01) or range (2026-10-01..2026-10-07)")
                })
            };
            match e.split_once("..") {
                Some((a, b)) => {
                    let (a, b) = (date(a)?, date(b)?);
                    if b < a {
                        return Err(format!("`{e}` ends before it starts"));
                    }
                    Ok((a, b))
                }
                None => date(e).map(|d| (d, d)),
            }
        })
        .collect()
}

/// A compiled calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    weekdays: Vec<Weekday>,
    /// (start, end) minutes of the day; end < start passes midnight.
    times: Vec<(u32, u32)>,
    on_holidays: bool,
}

/// Holidays and the local offset, shared by all calendars.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTime {
    offset: FixedOffset,
    holidays: Vec<(NaiveDate, NaiveDate)>,
}

impl LocalTime {
    /// From `[alarms]`.
    pub fn new(cfg: &AlarmsConfig) -> Result<Self, String> {
        Ok(Self {
            offset: parse_offset(&cfg.utc_offset)?,
            holidays: parse_holidays(&cfg.holidays)?,
        })
    }

    /// The local offset.
    pub fn offset(&self) -> FixedOffset {
        self.offset
    }

    fn local(&self, now_ms: i64) -> DateTime<FixedOffset> {
        DateTime::<Utc>::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .with_timezone(&self.offset)
    }

    fn is_holiday(&self, d: NaiveDate) -> bool {
        self.holidays.iter().any(|(a, b)| *a <= d && d <= *b)
    }
}

impl Calendar {
    /// Compiles a calendar; the error names what is wrong.
    pub fn new(cfg: &CalendarConfig) -> Result<Self, String> {
        let weekdays = cfg
            .weekdays
            .iter()
            .map(|d| {
                d.parse::<Weekday>()
                    .map_err(|_| format!("`{d}` is not a weekday (mon … sun)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let times = cfg
            .times
            .iter()
            .map(|t| {
                let bad = || format!("`{t}` is not a time range such as 07:00-18:30");
                let (a, b) = t.split_once('-').ok_or_else(bad)?;
                let m = |x: &str| {
                    NaiveTime::parse_from_str(x.trim(), "%H:%M")
                        .map(|t| t.hour() * 60 + t.minute())
                        .map_err(|_| bad())
                };
                Ok((m(a)?, m(b)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            weekdays,
            times,
            on_holidays: cfg.on_holidays,
        })
    }

    /// Whether the calendar holds at `now_ms`.
    pub fn holds(&self, lt: &LocalTime, now_ms: i64) -> bool {
        let local = lt.local(now_ms);
        let minute = local.hour() * 60 + local.minute();
        // A range past midnight belongs to the day it started on.
        let day_of = |started_yesterday: bool| {
            if started_yesterday {
                local.date_naive().pred_opt().unwrap_or(local.date_naive())
            } else {
                local.date_naive()
            }
        };
        let day_ok = |d: NaiveDate| {
            (self.weekdays.is_empty() || self.weekdays.contains(&d.weekday()))
                && (self.on_holidays || !lt.is_holiday(d))
        };
        if self.times.is_empty() {
            return day_ok(local.date_naive());
        }
        self.times.iter().any(|&(start, end)| {
            if start <= end {
                start <= minute && minute < end && day_ok(day_of(false))
            } else if minute >= start {
                day_ok(day_of(false))
            } else {
                minute < end && day_ok(day_of(true))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(holidays: &[&str]) -> LocalTime {
        LocalTime::new(&AlarmsConfig {
            holidays: holidays.iter().map(|s| s.to_string()).collect(),
            ..AlarmsConfig::default()
        })
        .expect("local time")
    }

    /// Epoch ms of a local (UTC+8) time.
    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(&format!("{s}+08:00"))
            .expect("time")
            .timestamp_millis()
    }

    fn cal(weekdays: &[&str], times: &[&str]) -> Calendar {
        Calendar::new(&CalendarConfig {
            weekdays: weekdays.iter().map(|s| s.to_string()).collect(),
            times: times.iter().map(|s| s.to_string()).collect(),
            on_holidays: false,
        })
        .expect("calendar")
    }

    #[test]
    fn school_hours_weekdays_and_holidays() {
        let school = cal(&["mon", "tue", "wed", "thu", "fri"], &["07:00-18:30"]);
        let l = lt(&["2026-10-01..2026-10-07"]);
        assert!(
            school.holds(&l, at("2026-11-30T07:00:00")),
            "Monday 07:00 starts"
        );
        assert!(
            !school.holds(&l, at("2026-11-30T18:30:00")),
            "18:30 is already after"
        );
        assert!(!school.holds(&l, at("2026-11-30T02:00:00")), "night");
        assert!(!school.holds(&l, at("2026-11-29T10:00:00")), "Sunday");
        assert!(
            !school.holds(&l, at("2026-10-02T10:00:00")),
            "National Day holiday"
        );
    }

    #[test]
    fn night_range_passes_midnight() {
        let night = cal(&["fri"], &["22:00-06:00"]);
        let l = lt(&[]);
        assert!(night.holds(&l, at("2026-11-27T23:00:00")), "Friday night");
        assert!(
            night.holds(&l, at("2026-11-28T05:59:00")),
            "early Saturday belongs to Friday night"
        );
        assert!(
            !night.holds(&l, at("2026-11-28T23:00:00")),
            "Saturday night is not Friday's"
        );
    }

    #[test]
    fn bad_inputs_are_explained() {
        assert!(parse_offset("8").is_err());
        assert_eq!(
            parse_offset("+08:00").map(|o| o.local_minus_utc()),
            Ok(8 * 3600)
        );
        assert!(parse_holidays(&["2026-13-01".into()]).is_err());
        assert!(parse_holidays(&["2026-10-07..2026-10-01".into()]).is_err());
        assert!(Calendar::new(&CalendarConfig {
            weekdays: vec!["funday".into()],
            times: vec![],
            on_holidays: false
        })
        .is_err());
        assert!(Calendar::new(&CalendarConfig {
            weekdays: vec![],
            times: vec!["7-18".into()],
            on_holidays: false
        })
        .is_err());
    }
}
