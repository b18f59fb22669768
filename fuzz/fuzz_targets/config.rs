//! The configuration parser: `Config::from_toml` on arbitrary text (and one
//! environment override). Invariants: never panics; an error names at least
//! one problem.
#![no_main]

use campus_gateway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = vec![("CAMPUSGW__GATEWAY__SPOOL_MAX_MB".to_owned(), "64".to_owned())];
    if let Err(e) = Config::from_toml(text, env) {
        assert!(!e.problems.is_empty());
    }
});
