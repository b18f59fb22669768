//! Keeps a flood of bad input from flooding the log: at most one line per key
//! per interval, with the count of lines held back since.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-key log rate limiter.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl LogLimiter {
    /// A limiter allowing one line per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line for `key` may be logged now, `n` being how many were
    /// held back since the last one; `None` when this one should be held back.
    pub fn check(&self, key: &'static str) -> Option<u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.interval => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                state.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_and_reports_count() {
        let l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.check_at("a", t0), Some(0));
        assert_eq!(l.check_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.check_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.check_at("a", t0 + Duration::from_secs(11)), Some(2));
    }
}
