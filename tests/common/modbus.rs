//! Modbus peers that are not our code: pymodbus's server (PyPI, pinned
//! 3.16.1) over TCP on a free loopback port, or over a pair of virtual
//! serial ports made by `socat`, serving the reference register maps of
//! FEED.md with values the test sets while it runs.
//!
//! The device is driven through a JSON file the Python script re-reads when
//! it changes (see `modbus_server.py`): register values per unit, and a mode
//! (`normal`, `silent`, `slow`) or an exception range per unit.
//!
//! Python: `$CAMPUSGW_TEST_PYTHON`, else the venv `target/pyvenv` that
//! scripts/test.sh creates. Never skips: a missing python, pymodbus or socat
//! panics with how to get it.
//!
//! The register values for the reference maps are encoded here by hand from
//! FEED.md, not with the gateway's own `map::encode`, so a mistake there
//! cannot hide itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{require_executable, start_with_retries, ServerProcess};
use super::{free_port, tcp_accepts, START_DEADLINE};

/// The pinned pymodbus version (its server API changes between minor releases).
pub const PYMODBUS_VERSION: &str = "3.16.1";

const PYTHON_HINT: &str = "run scripts/test.sh (it creates target/pyvenv with pymodbus from PyPI), or: python3 -m venv target/pyvenv && target/pyvenv/bin/pip install pymodbus==3.16.1 pyserial==3.5 (or set CAMPUSGW_TEST_PYTHON to a python that has them)";
const SOCAT_HINT: &str = "run scripts/test.sh (it installs it) or apt-get install -y socat";

const SCRIPT: &str = include_str!("modbus_server.py");

/// The reference maps of FEED.md as gateway configuration, named
/// `hood` and `cabinet` (written from FEED.md, not copied from the example).
pub const REFERENCE_MAPS: &str = r#"
[modbus.maps.hood]
kind = "kitchen"
registers = [
  { field = "duct_temp_c", table = "input", address = 0, type = "i16", scale = 0.1 },
  { field = "fan_current_a", table = "input", address = 1, type = "u16", scale = 0.01 },
  { field = "grease_mg_m3", table = "input", address = 2, type = "f32", word_order = "big" },
  { field = "co_ppm", table = "input", address = 4, type = "u16" },
  { field = "gas_lel_pct", table = "input", address = 5, type = "u16", scale = 0.1 },
  { field = "fan_on", table = "coil", address = 0, type = "bool" },
]
[modbus.maps.cabinet]
kind = "labcab"
registers = [
  { field = "voc_ppm", table = "holding", address = 0, type = "f32", word_order = "little" },
  { field = "temp_c", table = "holding", address = 2, type = "i16", scale = 0.1 },
  { field = "humidity_pct", table = "holding", address = 3, type = "u16", scale = 0.1 },
  { field = "door_open", table = "discrete_input", address = 0, type = "bool" },
  { field = "locked", table = "discrete_input", address = 1, type = "bool" },
  { field = "exhaust_fan_on", table = "discrete_input", address = 2, type = "bool" },
]
"#;

/// How a unit behaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Answers at once.
    Normal,
    /// Accepts requests and never answers.
    Silent,
    /// Answers after this long.
    Slow(Duration),
}

/// One unit's tables and behaviour.
#[derive(Clone, Debug)]
pub struct Unit {
    pub coil: Vec<bool>,
    pub discrete_input: Vec<bool>,
    pub input: Vec<u16>,
    pub holding: Vec<u16>,
    pub mode: Mode,
    /// Exception 2 for requests touching (table, first, last).
    pub exception: Option<(&'static str, u16, u16)>,
}

impl Default for Unit {
    fn default() -> Self {
        Unit {
            coil: Vec::new(),
            discrete_input: Vec::new(),
            input: Vec::new(),
            holding: Vec::new(),
            mode: Mode::Normal,
            exception: None,
        }
    }
}

impl Unit {
    fn to_json(&self) -> Value {
        let (mode, delay) = match &self.mode {
            Mode::Normal => ("normal", 0),
            Mode::Silent => ("silent", 0),
            Mode::Slow(d) => ("slow", d.as_millis() as u64),
        };
        let mut v = json!({
            "coil": self.coil,
            "discrete_input": self.discrete_input,
            "input": self.input,
            "holding": self.holding,
            "mode": mode,
            "delay_ms": delay,
        });
        if let Some((table, from, to)) = self.exception {
            v["exception"] = json!({ "table": table, "from": from, "to": to });
        }
        v
    }
}

/// Kitchen-hood values, as a reading shows them.
#[derive(Clone, Copy, Debug)]
pub struct Hood {
    pub duct_temp_c: f64,
    pub fan_current_a: f64,
    pub grease_mg_m3: f64,
    pub co_ppm: u16,
    pub gas_lel_pct: f64,
    pub fan_on: bool,
}

/// Chemical-cabinet values, as a reading shows them.
#[derive(Clone, Copy, Debug)]
pub struct Cabinet {
    pub voc_ppm: f64,
    pub temp_c: f64,
    pub humidity_pct: f64,
    pub door_open: bool,
    pub locked: bool,
    pub exhaust_fan_on: bool,
}

/// The hood's registers per FEED.md: i16 ×0.1, u16 ×0.01, f32 high word first, u16, u16 ×0.1, coil.
pub fn hood_unit(h: &Hood) -> Unit {
    let g = (h.grease_mg_m3 as f32).to_bits();
    Unit {
        input: vec![
            (h.duct_temp_c * 10.0).round() as i16 as u16,
            (h.fan_current_a * 100.0).round() as u16,
            (g >> 16) as u16,
            g as u16,
            h.co_ppm,
            (h.gas_lel_pct * 10.0).round() as u16,
        ],
        coil: vec![h.fan_on],
        ..Unit::default()
    }
}

/// The cabinet's registers per FEED.md: f32 low word first, i16 ×0.1, u16 ×0.1, three discrete inputs.
pub fn cabinet_unit(c: &Cabinet) -> Unit {
    let v = (c.voc_ppm as f32).to_bits();
    Unit {
        holding: vec![
            v as u16,
            (v >> 16) as u16,
            (c.temp_c * 10.0).round() as i16 as u16,
            (c.humidity_pct * 10.0).round() as u16,
        ],
        discrete_input: vec![c.door_open, c.locked, c.exhaust_fan_on],
        ..Unit::default()
    }
}

/// A python that has the pinned pymodbus, or a panic saying how to get one.
pub fn python() -> PathBuf {
    let candidate = std::env::var_os("CAMPUSGW_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    let out = Command::new(&candidate)
        .args(["-c", "import pymodbus, serial; print(pymodbus.__version__)"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let version = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            assert_eq!(
                version,
                PYMODBUS_VERSION,
                "{} has pymodbus {version}, the tests need {PYMODBUS_VERSION}: {PYTHON_HINT}",
                candidate.display()
            );
            candidate
        }
        Ok(o) => panic!(
            "{} cannot import pymodbus and pyserial ({}): {PYTHON_HINT}",
            candidate.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("{} not usable ({e}): {PYTHON_HINT}", candidate.display()),
    }
}

/// A pymodbus server process with its units.
pub struct PyModbus {
    process: ServerProcess,
    state_path: PathBuf,
    units: BTreeMap<u8, Unit>,
    port: Option<u16>,
}

impl PyModbus {
    /// Serves `units` over Modbus TCP on a free loopback port.
    pub fn tcp(units: &[(u8, Unit)]) -> PyModbus {
        let python = python();
        let mut server = PyModbus::prepare(python, units);
        start_with_retries("pymodbus", || {
            let port = free_port();
            server.port = Some(port);
            let args = server.args(&["--tcp".into(), port.to_string()]);
            server.process.spawn_and_wait(&args, START_DEADLINE, |log| {
                log.contains("READY") && tcp_accepts(port)
            })
        });
        server
    }

    /// Serves `units` as Modbus RTU on the serial device `path`.
    pub fn serial(path: &Path, units: &[(u8, Unit)]) -> PyModbus {
        let python = python();
        let mut server = PyModbus::prepare(python, units);
        let args = server.args(&["--serial".into(), path.display().to_string()]);
        server
            .process
            .spawn_and_wait(&args, START_DEADLINE, |log| log.contains("READY"))
            .unwrap_or_else(|e| panic!("pymodbus serial server: {e}"));
        server
    }

    fn prepare(python: PathBuf, units: &[(u8, Unit)]) -> PyModbus {
        let process = ServerProcess::new("pymodbus", python);
        let script = process.dir().join("modbus_server.py");
        std::fs::write(&script, SCRIPT)
            .unwrap_or_else(|e| panic!("write {}: {e}", script.display()));
        let server = PyModbus {
            state_path: process.dir().join("state.json"),
            process,
            units: units.iter().cloned().collect(),
            port: None,
        };
        server.write_state();
        server
    }

    fn args(&self, transport: &[String]) -> Vec<String> {
        let units: Vec<String> = self.units.keys().map(ToString::to_string).collect();
        let mut args = vec![
            // Unbuffered, so READY and errors reach the log at once.
            "-u".to_string(),
            self.process
                .dir()
                .join("modbus_server.py")
                .display()
                .to_string(),
            "--state".to_string(),
            self.state_path.display().to_string(),
            "--units".to_string(),
            units.join(","),
        ];
        args.extend_from_slice(transport);
        args
    }

    fn write_state(&self) {
        let state: serde_json::Map<String, Value> = self
            .units
            .iter()
            .map(|(id, u)| (id.to_string(), u.to_json()))
            .collect();
        // Written beside and renamed over: the server never reads half a file.
        let tmp = self.state_path.with_extension("tmp");
        std::fs::write(&tmp, Value::Object(state).to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.state_path)
            .unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
    }

    /// Changes one unit (values or mode); the next request sees it.
    pub fn set(&mut self, unit: u8, change: impl FnOnce(&mut Unit)) {
        change(self.units.entry(unit).or_default());
        self.write_state();
    }

    /// `127.0.0.1:PORT` (TCP only).
    pub fn address(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.port.expect("a TCP pymodbus server has a port")
        )
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Two linked virtual serial ports from `socat`: what is written to one is read from the other.
pub struct SerialPair {
    process: ServerProcess,
    /// The gateway's end.
    pub a: PathBuf,
    /// The device's end.
    pub b: PathBuf,
}

impl SerialPair {
    pub fn start() -> SerialPair {
        let socat = require_executable("socat", SOCAT_HINT);
        let mut process = ServerProcess::new("socat", socat);
        let a = process.dir().join("gateway-tty");
        let b = process.dir().join("device-tty");
        let args = vec![
            "-d".to_string(),
            "-d".to_string(),
            format!("pty,raw,echo=0,link={}", a.display()),
            format!("pty,raw,echo=0,link={}", b.display()),
        ];
        process
            .spawn_and_wait(&args, START_DEADLINE, |log| {
                log.contains("starting data transfer loop") && a.exists() && b.exists()
            })
            .unwrap_or_else(|e| panic!("socat: {e}"));
        SerialPair { process, a, b }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}
