//! Counts with a total and a count per key: the connection and stream caps
//! of the web server and the built-in broker.

use std::collections::HashMap;

/// A total and a count per key.
#[derive(Debug)]
pub struct Counts<K> {
    /// Everything counted.
    pub total: usize,
    per: HashMap<K, usize>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self {
            total: 0,
            per: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Counts<K> {
    /// Counts one more for `k`.
    pub fn add(&mut self, k: &K) {
        self.total += 1;
        *self.per.entry(k.clone()).or_default() += 1;
    }

    /// How many `k` has.
    pub fn of(&self, k: &K) -> usize {
        self.per.get(k).copied().unwrap_or(0)
    }

    /// Counts one less for `k`.
    pub fn remove(&mut self, k: &K) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                self.per.remove(k);
            }
        }
    }
}
