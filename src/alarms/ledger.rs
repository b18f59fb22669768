//! The alarm ledger (台账) as CSV, for the inspector: one row per alarm with
//! who handled it, when and how, in the school's local time and language.
//!
//! What a spreadsheet would misread is made harmless: a cell that starts like
//! a formula (`=`, `+`, `-`, `@`, a tab or carriage return, and their
//! full-width forms) is prefixed with `'`; line breaks inside an operator's
//! text are shown as `↵`, so a comment cannot fake a handling entry of its
//! own (each entry is one line of the handling cell); a cell longer than
//! Excel's 32,767 characters is cut with a mark.

use chrono::{DateTime, FixedOffset, Utc};

use super::change::Event;
use super::lifecycle::{Lang, Severity, State};
use super::store::{AlarmStore, Query, StoreError};
use super::Alarm;

/// Excel's limit for one cell, in UTF-16 units.
const CELL_MAX: usize = 32_767;

/// How the ledger is written.
#[derive(Debug, Clone, Copy)]
pub struct LedgerOptions {
    /// Headers, states, severities and texts in this language.
    pub lang: Lang,
    /// The school's local time (`[alarms].utc_offset`): dates as on the page.
    pub offset: FixedOffset,
}

/// Why the ledger could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the CSV failed.
    #[error("writing the ledger: {0}")]
    Csv(#[from] csv::Error),
}

const HEADERS_ZH: [&str; 18] = [
    "编号",
    "报警时间",
    "级别",
    "规则",
    "校区",
    "设备",
    "类型",
    "位置",
    "报警内容",
    "峰值",
    "状态",
    "恢复时间",
    "确认人",
    "确认时间",
    "处置记录",
    "演练/维护",
    "报警组",
    "已登记",
];

const HEADERS_EN: [&str; 18] = [
    "id",
    "raised_at",
    "severity",
    "rule",
    "site",
    "device",
    "kind",
    "location",
    "message",
    "peak",
    "state",
    "cleared_at",
    "acked_by",
    "acked_at",
    "handling",
    "suppressed",
    "group",
    "declared",
];

/// Writes the ledger of alarms raised in `[from, to)` (epoch ms), oldest first.
pub fn write_csv<W: std::io::Write>(
    store: &AlarmStore,
    from: i64,
    to: i64,
    opts: LedgerOptions,
    out: W,
) -> Result<(), LedgerError> {
    let alarms = store.query(&Query {
        since: Some(from),
        until: Some(to),
        limit: usize::MAX,
        ..Query::default()
    })?;
    let mut w = csv::Writer::from_writer(out);
    w.write_record(match opts.lang {
        Lang::Zh => HEADERS_ZH,
        Lang::En => HEADERS_EN,
    })?;
    for a in alarms.iter().rev() {
        let handling: Vec<String> = store.events(a.id)?.iter().map(|e| entry(e, opts)).collect();
        let row = row(a, &handling.join("\n"), opts);
        w.write_record(row.iter().map(|c| cell(c)))?;
    }
    w.flush()
        .map_err(|e| LedgerError::Csv(csv::Error::from(e)))?;
    Ok(())
}

fn row(a: &Alarm, handling: &str, opts: LedgerOptions) -> [String; 18] {
    let lang = opts.lang;
    let yes_no = |b: bool| match (lang, b) {
        (Lang::Zh, true) => "是",
        (Lang::Zh, false) => "否",
        (Lang::En, true) => "yes",
        (Lang::En, false) => "no",
    };
    let place = match a.location.as_ref().map(crate::reading::Location::describe) {
        Some(p) if !p.is_empty() => p,
        // An undeclared device has no place of its own: say so instead of nothing.
        _ if !a.declared => match lang {
            Lang::Zh => format!("未登记设备 {}/{}", a.site, a.device),
            Lang::En => format!("undeclared device {}/{}", a.site, a.device),
        },
        _ => a.device.clone(),
    };
    [
        a.id.to_string(),
        local(a.raised_at, opts),
        severity(a.severity, lang).to_owned(),
        format!("{} ({})", a.name.get(lang), a.rule),
        a.site.clone(),
        a.device.clone(),
        kind(&a.kind, lang).to_owned(),
        place,
        a.message.get(lang).to_owned(),
        a.peak.map(|p| p.to_string()).unwrap_or_default(),
        state(a.state, lang).to_owned(),
        a.cleared_at.map(|t| local(t, opts)).unwrap_or_default(),
        a.acked_by.clone().unwrap_or_default(),
        a.acked_at.map(|t| local(t, opts)).unwrap_or_default(),
        handling.to_owned(),
        a.suppressed.clone().unwrap_or_default(),
        a.group.map(|g| g.to_string()).unwrap_or_default(),
        yes_no(a.declared).to_owned(),
    ]
}

/// One ledger entry on one line: time, who, what, the value and what
/// identified the trip (card, place), and the operator's words.
fn entry(e: &Event, opts: LedgerOptions) -> String {
    let who = e.user.as_deref().map_or_else(
        || match opts.lang {
            Lang::Zh => "系统".to_owned(),
            Lang::En => "system".to_owned(),
        },
        one_line,
    );
    let mut text = format!(
        "{} {} {}",
        local(e.at, opts),
        who,
        action(&e.action, opts.lang)
    );
    if let Some(v) = e.value {
        text.push_str(&format!(" = {v}"));
    }
    if !e.detail.is_empty() {
        let detail: Vec<String> = e
            .detail
            .iter()
            .map(|(k, v)| format!("{k}={}", one_line(v)))
            .collect();
        text.push_str(&format!(" [{}]", detail.join(", ")));
    }
    if let Some(c) = &e.comment {
        text.push_str(&format!(": {}", one_line(c)));
    }
    text
}

/// Line breaks of someone's text, shown as such and kept on one line.
fn one_line(s: &str) -> String {
    s.replace("\r\n", "↵").replace(['\n', '\r'], "↵")
}

/// A cell a spreadsheet shows as text: formulas neutralised, cut to Excel's limit.
pub(crate) fn cell(text: &str) -> String {
    const FORMULA: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];
    let is_number = text.parse::<f64>().is_ok_and(f64::is_finite);
    let mut out = if text.starts_with(FORMULA) && !is_number {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if out.encode_utf16().count() > CELL_MAX {
        const MARK: &str = " …[已截断 truncated]";
        let budget = CELL_MAX - MARK.encode_utf16().count();
        let mut units = 0;
        let cut = out
            .char_indices()
            .find(|(_, c)| {
                units += c.len_utf16();
                units > budget
            })
            .map_or(out.len(), |(i, _)| i);
        out.truncate(cut);
        out.push_str(MARK);
    }
    out
}

fn local(ms: i64, opts: LedgerOptions) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&opts.offset)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

fn severity(s: Severity, lang: Lang) -> &'static str {
    match lang {
        Lang::En => s.as_str(),
        Lang::Zh => match s {
            Severity::Critical => "紧急",
            Severity::High => "高",
            Severity::Medium => "中",
            Severity::Low => "低",
        },
    }
}

fn state(s: State, lang: Lang) -> &'static str {
    match lang {
        Lang::En => s.as_str(),
        Lang::Zh => match s {
            State::Unacked => "未确认",
            State::Acked => "已确认",
            State::ClearedUnacked => "已恢复未确认",
            State::Cleared => "已关闭",
            State::Shelved => "已搁置",
        },
    }
}

fn kind(k: &str, lang: Lang) -> &str {
    match (lang, k) {
        (Lang::Zh, "smoke") => "烟感",
        (Lang::Zh, "gate") => "门禁",
        (Lang::Zh, "kitchen") => "厨房排烟",
        (Lang::Zh, "labcab") => "危化品柜",
        (Lang::Zh, "bus") => "校车",
        (Lang::Zh, "gateway") => "网关",
        (_, other) => other,
    }
}

fn action(a: &str, lang: Lang) -> &str {
    match (lang, a) {
        (Lang::Zh, "raise") => "报警",
        (Lang::Zh, "repeat") => "再次报警",
        (Lang::Zh, "clear") => "恢复正常",
        (Lang::Zh, "ack") => "确认",
        (Lang::Zh, "shelve") => "搁置",
        (Lang::Zh, "unshelve") => "取消搁置",
        (Lang::Zh, "comment") => "备注",
        (Lang::Zh, "group") => "归入报警组",
        (Lang::Zh, "inhibit") => "被同设备报警覆盖",
        (_, other) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::lifecycle::tests::raised;
    use crate::alarms::store::tests::change;

    #[test]
    fn cells_that_look_like_formulas_are_neutralised() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        assert_eq!(cell("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("＝1+1"), "'＝1+1");
        assert_eq!(cell("-3.5"), "-3.5", "a number stays a number");
        assert_eq!(cell("-1+1"), "'-1+1");
        assert_eq!(cell("张老师"), "张老师");
    }

    #[test]
    fn long_cells_are_cut_with_a_mark() {
        let long = "火".repeat(40_000);
        let c = cell(&long);
        assert!(c.encode_utf16().count() <= CELL_MAX);
        assert!(c.ends_with("[已截断 truncated]"));
    }

    #[test]
    fn a_comment_with_a_line_break_stays_one_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = AlarmStore::open(&dir.path().join("alarms.db")).expect("open");
        let a = raised(1_764_380_000_000);
        let mut c = change(&a, "ack");
        c.event.comment = Some("ok\r\n2026-11-29 09:00:00 admin ack: fake".into());
        s.apply(&[c]).expect("apply");
        let opts = LedgerOptions {
            lang: Lang::Zh,
            offset: FixedOffset::east_opt(8 * 3600).expect("offset"),
        };
        let mut out = Vec::new();
        write_csv(&s, 0, i64::MAX, opts, &mut out).expect("ledger");
        let mut r = csv::Reader::from_reader(out.as_slice());
        assert_eq!(r.headers().expect("headers").get(1), Some("报警时间"));
        let rows: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().expect("rows");
        assert_eq!(rows.len(), 1);
        let handling = &rows[0][14];
        assert_eq!(handling.lines().count(), 1, "{handling}");
        assert!(handling.contains("ok↵2026-11-29"), "{handling}");
        // 1764380000000 is 2025-11-29 01:33:20 UTC, 09:33:20 in Beijing.
        assert_eq!(&rows[0][1], "2025-11-29 09:33:20");
        assert_eq!(&rows[0][10], "未确认");
    }
}
