//! `campusgw backup`: a consistent copy of every SQLite store of a data
//! directory, taken while the gateway runs.
//!
//! Each store ([`STORES`]) is copied with SQLite's online backup API in one
//! step, i.e. inside one read transaction: the copy is the store as it was at
//! one commit, whatever the gateway writes meanwhile (WAL mode lets it go on
//! writing). The copies go into a new directory (mode 0700: it holds password
//! hashes and sessions), each written as `<name>.partial`, checked with
//! `PRAGMA quick_check`, then renamed, so a directory with `alarms.db` in it
//! holds a whole store. Restoring is copying the files back into a stopped
//! gateway's data directory (the README says how).
//!
//! The spool (`spool/`) is not copied: it holds readings on their way to
//! InfluxDB, empties itself as InfluxDB takes them, and a copy restored
//! later would write again what InfluxDB already has. Nor is `lock`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// The stores of a data directory, in the order they are copied.
pub const STORES: [&str; 3] = ["gateway.db", "alarms.db", "notify.db"];

/// How long a copy waits for a store that is locked (a checkpoint, a
/// migration) before it gives up.
const BUSY_WAIT: Duration = Duration::from_secs(30);
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// One store copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The store's file name.
    pub name: &'static str,
    /// Its size in the copy.
    pub bytes: u64,
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The stores copied.
    pub copied: Vec<Copied>,
    /// The stores the data directory does not have (e.g. `notify.db`
    /// without `[notify]`).
    pub absent: Vec<&'static str>,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("{path}: {source}")]
    Sqlite {
        /// The store or its copy.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The destination exists and is not empty.
    #[error("{0} exists and is not empty: give a new directory, e.g. /var/backups/campusgw/$(date +%F-%H%M)")]
    NotEmpty(PathBuf),
    /// No store in the data directory.
    #[error("{0} has none of gateway.db, alarms.db, notify.db: is it a gateway's data_dir?")]
    NoStores(PathBuf),
    /// The store stayed locked.
    #[error("{0}: still locked after {BUSY_WAIT:?}; try again")]
    Busy(PathBuf),
    /// The copy does not pass SQLite's check.
    #[error("{path}: the copy fails SQLite's check: {detail}")]
    Corrupt {
        /// The copy.
        path: PathBuf,
        /// What quick_check said.
        detail: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Copies every store of `data_dir` into the directory `to` (created; an
/// existing one must be empty).
pub fn backup(data_dir: &Path, to: &Path) -> Result<Report, BackupError> {
    let present: Vec<&'static str> = STORES
        .into_iter()
        .filter(|n| data_dir.join(n).is_file())
        .collect();
    if present.is_empty() {
        return Err(BackupError::NoStores(data_dir.to_owned()));
    }
    make_dir(to)?;
    let mut copied = Vec::new();
    for name in &present {
        let from = data_dir.join(name);
        let dest = to.join(name);
        let partial = to.join(format!("{name}.partial"));
        copy_store(&from, &partial)?;
        std::fs::rename(&partial, &dest).map_err(io(&dest))?;
        let bytes = std::fs::metadata(&dest).map_err(io(&dest))?.len();
        copied.push(Copied { name, bytes });
    }
    let absent = STORES
        .into_iter()
        .filter(|n| !present.contains(n))
        .collect();
    Ok(Report { copied, absent })
}

/// Creates `to` (0700), or accepts an empty existing directory.
fn make_dir(to: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(to.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt as _;
                b.mode(0o700);
            }
            b.create(to).map_err(io(to))
        }
        Err(e) => Err(io(to)(e)),
    }
}

/// One store, in one backup step (one read transaction), then checked.
fn copy_store(from: &Path, partial: &Path) -> Result<(), BackupError> {
    // Read-only: the backup never creates or changes a file of the data
    // directory (as root, a file it made would be root's).
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(from))?;
    src.busy_timeout(BUSY_WAIT).map_err(sql(from))?;
    let _ = std::fs::remove_file(partial);
    let mut dst = Connection::open(partial).map_err(sql(partial))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(partial, std::fs::Permissions::from_mode(0o600))
            .map_err(io(partial))?;
    }
    {
        let b = Backup::new(&src, &mut dst).map_err(sql(partial))?;
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            // -1: every page in one step, so the copy is one snapshot (in
            // steps, every write of the gateway would restart it).
            match b.step(-1).map_err(sql(from))? {
                StepResult::Done => break,
                _ => {
                    if std::time::Instant::now() >= deadline {
                        return Err(BackupError::Busy(from.to_owned()));
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
            }
        }
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql(partial))?;
    if check != "ok" {
        return Err(BackupError::Corrupt {
            path: partial.to_owned(),
            detail: check,
        });
    }
    // One file per store: no -wal beside the copy.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(sql(partial))?;
    dst.close().map_err(|(_, e)| sql(partial)(e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(path: &Path, rows: i64) -> Connection {
        let c = Connection::open(path).expect("open");
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .expect("schema");
        for i in 0..rows {
            c.execute("INSERT INTO t VALUES (?1)", [i]).expect("insert");
        }
        c
    }

    #[test]
    fn copies_the_stores_present_including_what_is_still_in_the_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        // Held open: its rows are in the -wal, not yet in the .db file.
        let _live = store(&data.join("alarms.db"), 100);
        drop(store(&data.join("gateway.db"), 3));
        let to = dir.path().join("backup");
        let r = backup(&data, &to).expect("backup");
        assert_eq!(
            r.copied.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["gateway.db", "alarms.db"]
        );
        assert_eq!(r.absent, ["notify.db"]);
        let n: i64 = Connection::open(to.join("alarms.db"))
            .expect("open copy")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 100);
        let mut names: Vec<_> = std::fs::read_dir(&to)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["alarms.db", "gateway.db"], "no -wal, no .partial");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&to), 0o700);
            assert_eq!(mode(&to.join("gateway.db")), 0o600);
        }
        // A second backup into the same directory is refused, not mixed in.
        assert!(matches!(backup(&data, &to), Err(BackupError::NotEmpty(_))));
        // Nor is a directory without stores taken for a data directory.
        assert!(matches!(
            backup(&to.join("nothing"), &dir.path().join("b2")),
            Err(BackupError::NoStores(_))
        ));
    }
}
