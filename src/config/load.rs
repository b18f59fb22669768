//! Loading: parse the TOML (syntax errors carry a line), merge the
//! environment overrides into the parsed table, deserialize with
//! `serde_path_to_error` (type errors carry a key path), then validate. Key
//! paths are mapped back to lines with `toml_edit`'s spans; a key set from
//! the environment names its variable instead. (figment would merge the
//! environment for us but loses the line numbers installers need.)

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Config;

/// The prefix of environment overrides: `CAMPUSGW__MQTT__URL` sets `mqtt.url`.
pub const ENV_PREFIX: &str = "CAMPUSGW__";

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `mqtt.topics[0].qos`.
    pub path: String,
    /// Where the key is: `line 12`, or the environment variable that set it.
    pub origin: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(o) = &self.origin {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

/// Every problem of a configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, when loaded from one.
    pub file: Option<PathBuf>,
    /// All problems found.
    pub problems: Vec<Problem>,
    /// What was not checked yet, if anything.
    pub note: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => writeln!(f, "{} has {} problem(s):", p.display(), self.problems.len())?,
            None => writeln!(
                f,
                "the configuration has {} problem(s):",
                self.problems.len()
            )?,
        }
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        if let Some(note) = &self.note {
            writeln!(f, "({note})")?;
        }
        Ok(())
    }
}

/// A configuration that loaded, with what `check` should warn about.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Usable but worth a look (inline secrets, no database).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Loads `path` with the process environment's overrides, and reads
    /// every secret and key file it names (a missing one is a problem).
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        Self::load_file(path, true)
    }

    /// `load` without reading the secrets: for commands that need only
    /// `gateway.data_dir` (`user add`), run by someone who may not have them.
    pub fn load_skipping_secrets(path: &Path) -> Result<Loaded, ConfigError> {
        Self::load_file(path, false)
    }

    fn load_file(path: &Path, secrets: bool) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            problems: vec![Problem {
                path: String::new(),
                origin: None,
                message: format!("cannot read the file: {e}"),
            }],
            note: None,
        })?;
        Self::parse(&text, std::env::vars(), path.parent(), secrets).map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Parses TOML text, applies `CAMPUSGW__…` overrides from `env`, validates.
    /// A relative `devices_file` is read from the working directory. Secrets
    /// are not read (`load` reads them, as `run` will).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        Self::parse(text, env, None, false)
    }

    /// `from_toml`, with a relative `devices_file` read from `dir` (the
    /// configuration file's), and with `secrets` the secrets and key files read.
    fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        dir: Option<&Path>,
        secrets: bool,
    ) -> Result<Loaded, ConfigError> {
        let fail = |problems| ConfigError {
            file: None,
            problems,
            note: None,
        };
        let parse_table = || -> Result<toml::Table, ConfigError> {
            toml::from_str(text).map_err(|e| {
                fail(vec![Problem {
                    path: String::new(),
                    origin: e.span().map(|s| format!("line {}", line_of(text, s.start))),
                    message: format!("TOML syntax: {}", e.message().trim()),
                }])
            })
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut table = parse_table()?;
        let (overrides, env_problems) = apply_env(&mut table, env.iter().cloned());
        // The span-keeping parse costs several times the file's size in memory
        // (10,000 devices: tens of MB), so it is made only to place a problem.
        let doc = std::cell::OnceCell::new();
        let locate = |path: &str| {
            let doc = doc.get_or_init(|| text.parse::<toml_edit::ImDocument<String>>().ok());
            doc.as_ref().and_then(|d| locate(d, text, &overrides, path))
        };
        let with_origin = |ps: Vec<(String, String)>| {
            ps.into_iter()
                .map(|(path, message)| Problem {
                    origin: locate(&path),
                    path,
                    message,
                })
                .collect::<Vec<_>>()
        };

        // The whole file at once (no copy of it kept); only when that fails
        // is it parsed again and checked piece by piece, for every error.
        let mut type_errors = Vec::new();
        let mut bad_sections = std::collections::BTreeSet::new();
        let config: Option<Config> = match toml::Value::Table(table).try_into() {
            Ok(c) => Some(c),
            Err(whole) => {
                let mut table = parse_table()?;
                let _ = apply_env(&mut table, env);
                let found = super::collect::check(&mut table);
                type_errors = found.problems;
                bad_sections = found.bad_sections;
                let repaired = found
                    .repaired
                    .then(|| toml::Value::Table(table).try_into::<Config>());
                match repaired {
                    Some(Ok(c)) => Some(c),
                    // Never left unsaid: serde's own word when the pieces passed.
                    Some(Err(e)) if type_errors.is_empty() => {
                        type_errors.push((String::new(), e.message().trim().to_owned()));
                        None
                    }
                    None if type_errors.is_empty() => {
                        type_errors.push((String::new(), whole.message().trim().to_owned()));
                        None
                    }
                    _ => None,
                }
            }
        };
        let mut problems = env_problems;
        problems.extend(with_origin(type_errors));
        let Some(mut config) = config else {
            let mut e = fail(sorted(problems));
            e.note =
                Some("the checks of values against each other run once these are fixed".into());
            return Err(e);
        };

        let mut file_problems = Vec::new();
        if let Some(file) = &config.devices_file {
            let file = dir.map_or_else(|| file.clone(), |d| d.join(file));
            let before = config.devices.len();
            file_problems = super::devices_file::read(&file, &mut config.devices);
            config.devices_from_file = config.devices.len() - before;
        }
        // Files read later (roster reloads, `campusgw roster`, a channel's
        // CA, the bus routes) are anchored here, like devices_file: relative
        // to the configuration file, not to wherever the gateway was started.
        let anchor = |f: &mut std::path::PathBuf| {
            if let Some(d) = dir.filter(|_| f.is_relative()) {
                *f = d.join(&*f);
            }
        };
        if let Some(f) = config.notify.roster_file.as_mut() {
            anchor(f);
        }
        for c in config.notify.channels.values_mut() {
            if let super::ChannelKind::Email {
                ca_file: Some(f), ..
            } = &mut c.kind
            {
                anchor(f);
            }
        }
        if let Some(f) = config.buses.routes_file.as_mut() {
            anchor(f);
        }
        let super::validate::Findings {
            mut errors,
            warnings,
        } = config.validate();
        if secrets {
            errors.extend(config.secret_problems());
        }
        errors.splice(
            0..0,
            file_problems
                .into_iter()
                .map(|m| ("devices_file".to_owned(), m)),
        );
        // A section that had type errors was repaired by taking keys out: what
        // the semantic checks say of it follows from that, not from the file.
        let section = |path: &str| {
            let end = path.find(['.', '[']).unwrap_or(path.len());
            bad_sections.contains(&path[..end])
        };
        errors.retain(|(path, _)| !section(path));
        problems.extend(with_origin(errors));
        if !problems.is_empty() {
            return Err(fail(sorted(problems)));
        }
        Ok(Loaded {
            config,
            warnings: with_origin(warnings),
        })
    }
}

/// Most problems listed: a file generated wrong can have one per line, and
/// the list goes into a log line and an HTTP answer.
const MAX_PROBLEMS: usize = 200;

/// Problems in the order of the file (those set by the environment last),
/// at most `MAX_PROBLEMS` of them and a last one saying how many more.
fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    let line = |p: &Problem| {
        p.origin
            .as_deref()
            .and_then(|o| o.strip_prefix("line "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    problems.sort_by_key(line);
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(Problem {
            path: String::new(),
            origin: None,
            message: format!("… and {more} more problems, shown once these are fixed"),
        });
    }
    problems
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of a dotted key path (`a.b[2].c`) in the file, or the
/// environment variable that set it. Falls back to the deepest part found.
fn locate(
    doc: &toml_edit::ImDocument<String>,
    text: &str,
    overrides: &BTreeMap<String, String>,
    path: &str,
) -> Option<String> {
    use toml_edit::{Item, TableLike, Value};
    if let Some((var, _)) = overrides.iter().find(|(_, p)| path.starts_with(p.as_str())) {
        return Some(format!("set by environment variable {var}"));
    }
    let mut table: &dyn TableLike = doc.as_table();
    let mut span = None;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, v)) = table.get_key_value(key) else {
            break;
        };
        span = k.span().or(span);
        let next: Option<&dyn TableLike> = match (v, index) {
            (Item::ArrayOfTables(a), Some(i)) => match a.get(i) {
                Some(t) => {
                    span = t.span().or(span);
                    Some(t)
                }
                None => None,
            },
            (Item::Value(Value::Array(a)), Some(i)) => match a.get(i) {
                Some(v) => {
                    span = v.span().or(span);
                    v.as_inline_table().map(|t| t as &dyn TableLike)
                }
                None => None,
            },
            (v, None) => v.as_table_like(),
            _ => None,
        };
        match next {
            Some(t) => table = t,
            None => break,
        }
    }
    span.map(|s| format!("line {}", line_of(text, s.start)))
}

/// Merges `CAMPUSGW__SECTION__KEY=value` into the table. A value that parses
/// as a TOML value (number, bool, array) takes that type, else it is a string.
/// Returns variable → key path, so problems can name the variable, and the
/// variables that could not be applied.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> (BTreeMap<String, String>, Vec<Problem>) {
    let mut applied = BTreeMap::new();
    let mut problems = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            problems.push(Problem {
                path: String::new(),
                origin: Some(format!("environment variable {var}")),
                message: "has an empty key part".into(),
            });
            continue;
        }
        match insert_path(table, &keys, parse_env_value(&raw)) {
            Ok(()) => {
                applied.insert(var, keys.join("."));
            }
            Err(section) => problems.push(Problem {
                path: keys.join("."),
                origin: Some(format!("environment variable {var}")),
                message: format!("`{section}` is not a section"),
            }),
        }
    }
    (applied, problems)
}

/// Sets `keys` (a path) to `value`, creating sections; `Err(key)` when a
/// parent key holds a value, not a section.
fn insert_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    match keys {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => insert_path(inner, rest, value),
            _ => Err(first.clone()),
        },
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // `x = <raw>` parses numbers, booleans and arrays; anything else is a string.
    match format!("x = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("x") {
            Some(
                v @ (toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InfluxApi, Secret};

    const MINIMAL: &str = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";

    fn load(text: &str) -> Result<Loaded, ConfigError> {
        Config::from_toml(text, Vec::new())
    }

    fn problems(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_known_device_has_one_heartbeat() {
        let text = format!(
            r#"{MINIMAL}
[[devices]]
id = "d1"
kind = "smoke"
site = "s"
[[devices]]
id = "d2"
kind = "kitchen"
site = "s"
heartbeat = "5m"
[modbus.maps.m]
registers = [{{ field = "temp_c", table = "holding", address = 0, type = "i16" }}]
[[modbus.devices]]
device = "d2"
transport = "tcp"
address = "10.0.0.1"
map = "m"
[[modbus.devices]]
id = "m1"
kind = "labcab"
site = "s"
transport = "tcp"
address = "10.0.0.2"
map = "m"
timeout = "3s"
"#
        );
        let cfg = load(&text).expect("loads").config;
        let beats: Vec<(String, bool, i64)> = cfg
            .known_devices()
            .iter()
            .map(|k| (k.config.id.clone(), k.polled, k.heartbeat_ms))
            .collect();
        assert_eq!(
            beats,
            vec![
                ("d1".into(), false, 90_000),
                ("d2".into(), true, 300_000),
                // (3 failed polls + 1) × max(1 s interval, 2 attempts × 3 s).
                ("m1".into(), true, 24_000),
            ]
        );
        let zero = format!("{MINIMAL}[[devices]]\nid = \"d\"\nkind = \"smoke\"\nsite = \"s\"\nheartbeat = \"0s\"\n");
        assert!(
            problems(&zero)
                .iter()
                .any(|p| p.contains("devices[0].heartbeat")),
            "{:?}",
            problems(&zero)
        );
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let l = load(MINIMAL).expect("minimal config");
        assert_eq!(
            l.config.mqtt.topics[0].pattern,
            "campus/{site}/{kind}/{device}"
        );
        assert_eq!(l.config.influx.batch_size, 5000);
        assert!(l.warnings.iter().any(|w| w.path == "influx.url"));
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let p = problems("[mqtt]\nurl = \"mqtt://a:1\"\n\n[influx]\nurll = \"x\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown field `urll`"), "{p:?}");
        assert!(p[0].contains("line 5"), "{p:?}");
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let p = problems(
            "[mqtt]\nurl = \"mqtt://a:1\"\n[[mqtt.topics]]\npattern = \"a/{site}/{kind}/{device}\"\nqos = \"one\"\n",
        );
        assert!(p[0].starts_with("mqtt.topics[0].qos"), "{p:?}");
        assert!(p[0].contains("line 5"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let p = problems(
            "[mqtt]\nurl = \"http://x\"\n[[mqtt.topics]]\npattern = \"a/{device}\"\nqos = 2\n[influx]\nurl = \"http://db:8086\"\n",
        );
        let joined = p.join("\n");
        for needle in [
            "mqtt.url",
            "mqtt.topics[0].qos",
            "mqtt.topics[0].site",
            "mqtt.topics[0].kind",
            "influx.org",
            "influx.bucket",
            "influx.token",
        ] {
            assert!(joined.contains(needle), "{needle} missing in {joined}");
        }
        assert!(joined.contains("line 5"), "{joined}");
    }

    #[test]
    fn spool_settings_are_checked() {
        let p = problems(
            "[gateway]\nspool_max_mb = 0\nspool_sync_interval = \"2s\"\n[mqtt]\nurl = \"mqtt://a:1\"\n",
        );
        let joined = p.join("\n");
        assert!(joined.contains("gateway.spool_max_mb"), "{joined}");
        assert!(joined.contains("gateway.spool_sync_interval"), "{joined}");
        let l = Config::from_toml(
            "[gateway]\nspool_fsync = false\n[mqtt]\nurl = \"mqtt://a:1\"\n[influx]\nmax_pending_batches = 4\n",
            Vec::new(),
        )
        .expect("usable");
        let warned: Vec<&str> = l.warnings.iter().map(|w| w.path.as_str()).collect();
        assert!(warned.contains(&"gateway.spool_fsync"), "{warned:?}");
        assert!(warned.contains(&"influx.max_pending_batches"), "{warned:?}");
        assert_eq!(l.config.gateway.spool_max_mb, 1024);
    }

    #[test]
    fn a_required_key_that_is_wrong_stops_only_the_checks_that_depend_on_it() {
        // `kind` is wrong and needed: the device cannot be repaired, so the
        // cross-checks wait (a note says so), but every type error is named.
        let text = format!("{MINIMAL}keep_alive = \"0s\"\n[gateway]\nqos = 1\n[[devices]]\nid = \"a\"\nkind = \"smok\"\nsite = \"s\"\n[influx]\nbatch_size = \"x\"\n");
        let e = load(&text).expect_err("broken");
        let p: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("gateway.qos: unknown field") && p[0].contains("line 5"),
            "{p:?}"
        );
        assert!(
            p[1].contains("devices[0].kind") && p[1].contains("did you mean `smoke`?"),
            "{p:?}"
        );
        assert!(p[2].starts_with("influx.batch_size"), "{p:?}");
        assert!(e.note.is_some());
        // With the device mended, the zero keep-alive is named with the rest.
        let e = load(&text.replace("smok", "smoke")).expect_err("broken");
        let p: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
        assert!(
            p.iter()
                .any(|x| x.starts_with("mqtt.keep_alive") && x.contains("line 3")),
            "{p:?}"
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(e.note.is_none());
        // An environment variable's mistake names the variable.
        let env = vec![("CAMPUSGW__INFLUX__TIMEOUT".to_owned(), "10".to_owned())];
        let e = Config::from_toml(MINIMAL, env).expect_err("a number is no duration");
        assert!(
            e.to_string().contains("influx.timeout")
                && e.to_string().contains("CAMPUSGW__INFLUX__TIMEOUT"),
            "{e}"
        );
    }

    #[test]
    fn a_file_wrong_on_every_line_lists_a_bounded_number_of_problems() {
        let mut text = MINIMAL.to_owned();
        for i in 0..300 {
            text.push_str(&format!(
                "[[devices]]\nid = \"d{i}\"\nkind = \"smoke\"\nsite = \"s\"\nroom = {i}\n"
            ));
        }
        let e = load(&text).expect_err("300 bad rooms");
        assert_eq!(e.problems.len(), MAX_PROBLEMS + 1);
        assert!(e.problems[MAX_PROBLEMS].message.contains("100 more"), "{e}");
    }

    #[test]
    fn syntax_error_has_line() {
        let p = problems("[mqtt]\nurl = \"mqtt://a:1\"\nfoo = = 3\n");
        assert!(p[0].contains("line 3"), "{p:?}");
    }

    #[test]
    fn env_overrides_and_types() {
        let env = vec![
            (
                "CAMPUSGW__INFLUX__URL".to_owned(),
                "http://db:8086".to_owned(),
            ),
            ("CAMPUSGW__INFLUX__API".to_owned(), "v1".to_owned()),
            ("CAMPUSGW__INFLUX__DATABASE".to_owned(), "campus".to_owned()),
            ("CAMPUSGW__INFLUX__BATCH_SIZE".to_owned(), "100".to_owned()),
            ("CAMPUSGW__WEB__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let l = Config::from_toml(MINIMAL, env).expect("overridden config");
        assert_eq!(l.config.influx.url.as_deref(), Some("http://db:8086"));
        assert_eq!(l.config.influx.api, InfluxApi::V1);
        assert_eq!(l.config.influx.batch_size, 100);
        assert_eq!(l.config.web.listen.port(), 0);
    }

    #[test]
    fn env_problem_names_variable() {
        let env = vec![("CAMPUSGW__INFLUX__BATCH_SIZE".to_owned(), "0".to_owned())];
        let e = Config::from_toml(MINIMAL, env).expect_err("batch size 0");
        assert!(
            e.to_string().contains("CAMPUSGW__INFLUX__BATCH_SIZE"),
            "{e}"
        );
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write token");
        let s = Secret::File { file: path };
        assert_eq!(s.resolve().as_deref(), Ok("s3cret"));
        let missing = Secret::Env {
            env: "CAMPUSGW_TEST_SURELY_UNSET".into(),
        };
        assert!(missing.resolve().is_err());
        assert_eq!(
            format!("{:?}", Secret::Inline("pw".into())),
            "Secret(inline, redacted)"
        );
    }

    #[test]
    fn devices_file_is_read_next_to_the_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("devices.csv"),
            "id,kind,site,building\nb,gate,s,East\na,smoke,s,\n",
        )
        .expect("write csv");
        let path = dir.path().join("campus.toml");
        let toml = format!(
            "devices_file = \"devices.csv\"\n{MINIMAL}[[devices]]\nid = \"a\"\nkind = \"smoke\"\nsite = \"s\"\n"
        );
        std::fs::write(&path, &toml).expect("write toml");
        // `a` is declared in both: refused, with the CSV's line.
        let e = Config::load(&path).expect_err("a is declared twice");
        let p = e
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert!(
            p.iter().any(|x| x.starts_with("devices_file")
                && x.contains("devices.csv line 3")
                && x.contains("declared twice")
                && x.contains("line 1")),
            "{p:?}"
        );
        std::fs::write(&path, toml.replace("id = \"a\"", "id = \"c\"")).expect("write toml");
        let l = Config::load(&path).expect("config with a devices file");
        let ids: Vec<&str> = l.config.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(l.config.devices_from_file, 2);
        assert_eq!(l.config.devices[1].building.as_deref(), Some("East"));
    }

    #[test]
    fn duplicate_devices_are_refused() {
        let text = format!(
            "{MINIMAL}[[devices]]\nid = \"a\"\nkind = \"smoke\"\nsite = \"s\"\n[[devices]]\nid = \"a\"\nkind = \"gate\"\nsite = \"s\"\n"
        );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|x| x.contains("devices[1].id") && x.contains("line 8")),
            "{p:?}"
        );
    }

    #[test]
    fn a_look_alike_device_id_is_refused_with_the_rule() {
        // `еast-1` with a Cyrillic е: the feed refuses it as `bad_id`, so
        // the configuration must too, or the device could never report.
        let text =
            format!("{MINIMAL}[[devices]]\nid = \"\u{435}ast-1\"\nkind = \"gate\"\nsite = \"s\"\n");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|x| x.contains("devices[0].id") && x.contains("ASCII letters")),
            "{p:?}"
        );
    }

    #[test]
    fn example_config_is_valid() {
        let routes = concat!(env!("CARGO_MANIFEST_DIR"), "/config/routes.example.geojson");
        let text = include_str!("../../config/campus.example.toml").replace(
            "routes_file = \"routes.example.geojson\"",
            &format!("routes_file = \"{routes}\""),
        );
        let text = text.as_str();
        let l = load(text).unwrap_or_else(|e| panic!("example config: {e}"));
        assert!(!l.config.devices.is_empty());
        // The reference maps ship ready to use, and every Modbus device resolves.
        for map in ["ref-kitchen-hood", "ref-chem-cabinet"] {
            assert!(l.config.modbus.maps.contains_key(map), "{map}");
        }
        let specs = crate::sources::modbus::device_specs(&l.config).expect("modbus devices");
        assert!(specs.len() >= 4);

        // With the example devices file switched on.
        let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/config/devices.example.csv");
        let text = text.replace(
            "# devices_file = \"devices.csv\"",
            &format!("devices_file = \"{csv}\""),
        );
        let with_file =
            load(&text).unwrap_or_else(|e| panic!("example with its devices file: {e}"));
        assert_eq!(with_file.config.devices_from_file, 6);
        assert_eq!(with_file.config.devices.len(), l.config.devices.len() + 6);
    }

    #[test]
    fn the_examples_of_the_device_reference_are_accepted() {
        let doc = include_str!("../../docs/devices.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert!(blocks.len() >= 4, "{}", blocks.len());
        for b in blocks {
            if let Err(e) = load(&format!("{MINIMAL}{b}")) {
                panic!("docs/devices.md example:\n{b}\n{e}");
            }
        }
    }

    #[test]
    fn modbus_problems_name_their_key_and_line() {
        let text = format!(
            r#"{MINIMAL}
[modbus]
max_registers_per_request = 200
[modbus.lines.l1]
path = "/dev/ttyS0"
stop_bits = 3
[modbus.maps.m]
kind = "kitchen"
registers = [
  {{ field = "fan_on", table = "coil", address = 0, type = "u16" }},
  {{ field = "x", table = "holding", address = 65535, type = "f32" }},
]
[[modbus.devices]]
id = "cab"
kind = "labcab"
site = "s"
transport = "tcp"
map = "m"

[[modbus.devices]]
device = "nowhere"
transport = "rtu"
line = "l2"
registers = [{{ field = "door_open", table = "holding", address = 0, type = "bit" }}]

[[modbus.devices]]
id = "a"
kind = "labcab"
site = "s"
transport = "rtu"
line = "l1"
unit = 0
"#
        );
        let joined = problems(&text).join("\n");
        for (needle, line) in [
            ("modbus.max_registers_per_request", "line 5"),
            ("modbus.lines.l1.stop_bits", "line 8"),
            (
                "modbus.maps.m.registers[0]: a coil holds one bit",
                "line 12",
            ),
            ("modbus.maps.m.registers[1]: address 65535", "line 13"),
            ("modbus.devices[0].address", "line 15"),
            ("modbus.devices[0].map: `m` is for a kitchen", "line 20"),
            ("modbus.devices[1].device: `nowhere`", "line 23"),
            ("modbus.devices[1].line: `l2`", "line 25"),
            (
                "modbus.devices[1].registers[0]: type bit needs `bit`",
                "line 26",
            ),
            ("modbus.devices[2].unit: must be 1 to 247", "line 34"),
            ("modbus.devices[2].map: or `registers` is needed", "line 28"),
        ] {
            let hit = joined.lines().find(|l| l.contains(needle));
            assert!(
                hit.is_some_and(|l| l.contains(line)),
                "{needle} at {line} in:\n{joined}"
            );
        }
    }
}
