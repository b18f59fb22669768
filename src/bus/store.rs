//! `buses.db` under `data_dir`: the trips (for the reports), each bus's
//! checker state (so a restart mid-trip continues it) and the bad-weather
//! switch's history. SQLite in WAL mode, its own file: the bus checks never
//! wait on the alarm store's writer, and the page reads while the task writes.
//! Rows are JSON of `trip::Trip` and `check::Checker`: one shape, no mapping.

use std::path::Path;

use rusqlite::{params, Connection};

use super::check::Checker;
use super::trip::Trip;

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum BusStoreError {
    /// SQLite said no (disk full, corrupt file…).
    #[error("bus store {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A row that is not what this version wrote.
    #[error("bus store {path}: a stored {what} cannot be read: {source}")]
    Json {
        /// The file.
        path: String,
        /// Trip or checker.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The bus store.
#[derive(Debug)]
pub struct BusStore {
    conn: Connection,
    path: String,
}

/// The file under `data_dir`.
pub fn path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("buses.db")
}

impl BusStore {
    /// Opens (creating) the store.
    pub fn open(file: &Path) -> Result<Self, BusStoreError> {
        let path = file.display().to_string();
        let e = |source| BusStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(file).map_err(e)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS trips (
                 id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, date TEXT NOT NULL, body TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS trips_date ON trips (date, vehicle);
             CREATE TABLE IF NOT EXISTS checkers (vehicle TEXT PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS weather (at INTEGER NOT NULL, on_ INTEGER NOT NULL, by TEXT NOT NULL);",
        )
        .map_err(e)?;
        Ok(Self { conn, path })
    }

    fn sqlite(&self, source: rusqlite::Error) -> BusStoreError {
        BusStoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes the checkers and their trips (running, extra, just finished)
    /// in one transaction.
    pub fn save(&mut self, checkers: &[&Checker]) -> Result<(), BusStoreError> {
        let path = self.path.clone();
        let e = |source| BusStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        for c in checkers {
            for t in c.trip.iter().chain(&c.extra).chain(&c.finished) {
                let body = serde_json::to_string(t).map_err(|source| BusStoreError::Json {
                    path: path.clone(),
                    what: "trip",
                    source,
                })?;
                tx.execute(
                    "INSERT INTO trips (id, vehicle, date, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    params![t.id, t.vehicle, t.date, body],
                )
                .map_err(e)?;
            }
            let mut state = (*c).clone();
            state.finished.clear();
            let body = serde_json::to_string(&state).map_err(|source| BusStoreError::Json {
                path: path.clone(),
                what: "checker",
                source,
            })?;
            tx.execute(
                "INSERT INTO checkers (vehicle, body) VALUES (?1, ?2)
                 ON CONFLICT (vehicle) DO UPDATE SET body = excluded.body",
                params![c.vehicle, body],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// Every bus's checker as it was last saved.
    pub fn load_checkers(&self) -> Result<Vec<Checker>, BusStoreError> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM checkers")
            .map_err(|e| self.sqlite(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.sqlite(e))?;
            out.push(
                serde_json::from_str(&body).map_err(|source| BusStoreError::Json {
                    path: self.path.clone(),
                    what: "checker",
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// The trips of a local date (all buses, or one), in order of start.
    pub fn trips(&self, date: &str, vehicle: Option<&str>) -> Result<Vec<Trip>, BusStoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT body FROM trips WHERE date = ?1 AND (?2 IS NULL OR vehicle = ?2)
                 ORDER BY vehicle, id",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = st
            .query_map(params![date, vehicle], |r| r.get::<_, String>(0))
            .map_err(|e| self.sqlite(e))?;
        let mut out: Vec<Trip> = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.sqlite(e))?;
            out.push(
                serde_json::from_str(&body).map_err(|source| BusStoreError::Json {
                    path: self.path.clone(),
                    what: "trip",
                    source,
                })?,
            );
        }
        out.sort_by(|a, b| (&a.vehicle, a.started_at).cmp(&(&b.vehicle, b.started_at)));
        Ok(out)
    }

    /// Records a switch of the bad-weather limit.
    pub fn set_weather(&self, at: i64, on: bool, by: &str) -> Result<(), BusStoreError> {
        self.conn
            .execute(
                "INSERT INTO weather (at, on_, by) VALUES (?1, ?2, ?3)",
                params![at, on, by],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// The switch's last changes, oldest first (at most `n`).
    pub fn weather(&self, n: usize) -> Result<Vec<(i64, bool)>, BusStoreError> {
        let mut st = self
            .conn
            .prepare("SELECT at, on_ FROM weather ORDER BY at DESC, rowid DESC LIMIT ?1")
            .map_err(|e| self.sqlite(e))?;
        let rows = st
            .query_map(params![n as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sqlite(e))?;
        let mut out = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite(e))?;
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::check::Ctx;

    #[test]
    fn a_running_trip_survives_a_reopen_and_is_in_the_days_trips() {
        let plan = crate::bus::tests::plan();
        let fixes = crate::bus::trace::generate(
            &plan.network,
            &crate::bus::trace::TraceSpec::new("R1", crate::bus::tests::MONDAY_0700),
        )
        .expect("trace");
        let ctx = Ctx {
            plan: &plan,
            weather: &[],
        };
        let mut c = Checker::new("bus-07");
        let mut out = Vec::new();
        for f in fixes.iter().take(60) {
            c.push(*f, f.ts + 20_000, &ctx, &mut out);
        }
        assert!(c.trip.is_some(), "mid-trip");
        let dir = tempfile::tempdir().expect("dir");
        let file = path(dir.path());
        {
            let mut s = BusStore::open(&file).expect("open");
            s.save(&[&c]).expect("save");
            s.set_weather(5, true, "duty").expect("weather");
        }
        let s = BusStore::open(&file).expect("reopen");
        let back = s.load_checkers().expect("load");
        assert_eq!(back, vec![c.clone()]);
        let trips = s.trips("2026-11-30", Some("bus-07")).expect("trips");
        assert_eq!(trips.len(), 1);
        assert_eq!(Some(&trips[0]), c.trip.as_ref());
        assert!(s
            .trips("2026-11-30", Some("bus-12"))
            .expect("trips")
            .is_empty());
        assert_eq!(s.weather(10).expect("weather"), vec![(5, true)]);
    }
}
