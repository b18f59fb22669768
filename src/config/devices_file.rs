//! `devices_file`: the devices of a campus in a CSV file, the way a school
//! exports them from its asset spreadsheet, read record by record: 10,000
//! devices cost the memory of 10,000 devices, not of a TOML parse tree.
//!
//! A header row names the columns, in any order: `id`, `kind`, `site`, and
//! optionally `building`, `floor`, `room`, `name`, `heartbeat` (empty cells
//! are fine).
//! UTF-8, with or without the BOM that Excel writes. Each problem names the
//! file's line.

use std::collections::HashSet;
use std::path::Path;

use super::validate::{declared_twice, device_problems};
use super::DeviceConfig;

/// At most this many problems are reported; a wrong file usually has one
/// mistake repeated on every line.
const MAX_PROBLEMS: usize = 20;

/// Appends the file's devices to `devices` (already holding those of
/// `[[devices]]`); returns the problems as messages for the key `devices_file`.
pub(super) fn read(path: &Path, devices: &mut Vec<DeviceConfig>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut reader = match csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
    {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot read {}: {e}", path.display())],
    };
    let headers = match reader.headers() {
        // Excel's UTF-8 export starts with a BOM, which would stick to `id`.
        Ok(h) => h
            .iter()
            .map(|c| c.trim_start_matches('\u{feff}'))
            .collect::<csv::StringRecord>(),
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let mut seen: HashSet<(String, String)> = devices
        .iter()
        .map(|d| (d.site.clone(), d.id.clone()))
        .collect();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        let at = |msg: String| format!("{} line {line}: {msg}", path.display());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => match record.deserialize::<DeviceConfig>(Some(&headers)) {
                Ok(d) => {
                    let bad = device_problems(&d);
                    if !bad.is_empty() {
                        for (key, message) in bad {
                            problems.push(at(format!("{key} {message}")));
                        }
                    } else if !seen.insert((d.site.clone(), d.id.clone())) {
                        problems.push(at(declared_twice(&d)));
                    } else {
                        devices.push(d);
                    }
                }
                Err(e) => problems.push(at(deserialize_message(&e))),
            },
            Err(e) => problems.push(at(e.to_string())),
        }
        if problems.len() >= MAX_PROBLEMS {
            problems.push(format!(
                "{}: stopped after {MAX_PROBLEMS} problems",
                path.display()
            ));
            break;
        }
    }
    problems
}

/// csv's messages carry its own positions (record, byte); ours is the line.
fn deserialize_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(i) => format!("column {}: {}", i + 1, err.kind()),
            None => err.kind().to_string(),
        },
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> (Vec<DeviceConfig>, Vec<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("devices.csv");
        std::fs::write(&path, text).expect("write");
        let mut devices = Vec::new();
        let problems = read(&path, &mut devices);
        (devices, problems)
    }

    #[test]
    fn reads_an_excel_export_with_bom_and_empty_cells() {
        let (d, p) = read_text(
            "\u{feff}id,kind,site,building,floor,room,name\na1-101,smoke,yazhong,A1,1,101,教学楼A1 一楼101教室\n gate-east , gate ,yazhong,,,,\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name.as_deref(), Some("教学楼A1 一楼101教室"));
        assert_eq!(d[1].id, "gate-east");
        assert_eq!(d[1].building, None);
    }

    #[test]
    fn names_the_line_of_each_problem() {
        let (d, p) =
            read_text("kind,id,site\nsmoke,a,s\nsmok,b,s\nsmoke,a,s\nsmoke,c d,s\nsmoke,e\n");
        assert_eq!(d.len(), 1);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("line 3") && p[0].contains("smok"), "{}", p[0]);
        assert!(
            p[1].contains("line 4") && p[1].contains("twice"),
            "{}",
            p[1]
        );
        assert!(
            p[2].contains("line 5") && p[2].contains("letters"),
            "{}",
            p[2]
        );
        assert!(p[3].contains("line 6"), "{}", p[3]);
    }

    #[test]
    fn a_heartbeat_column_sets_how_long_a_device_may_be_silent() {
        let (d, p) = read_text("id,kind,site,heartbeat\na,smoke,s,10m\nb,smoke,s,\nc,smoke,s,0s\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].heartbeat, Some(std::time::Duration::from_secs(600)));
        assert_eq!(d[1].heartbeat, None, "empty: the kind's default");
        assert!(
            p.len() == 1 && p[0].contains("line 4") && p[0].contains("heartbeat"),
            "{p:?}"
        );
    }

    #[test]
    fn an_unknown_column_is_refused() {
        let (_, p) = read_text("id,kind,site,colour\na,smoke,s,red\n");
        assert!(p[0].contains("colour"), "{p:?}");
    }
}
