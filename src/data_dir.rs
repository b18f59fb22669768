//! The data directory (`gateway.data_dir`): who may use it and who owns
//! what is created in it.
//!
//! - One gateway per directory: `run` and `demo` hold an exclusive `flock`
//!   on `<data_dir>/lock` for the life of the process, so a second gateway on
//!   the same spool and alarm store refuses to start instead of the two
//!   appending to, replaying and truncating the same files.
//!   `user add` takes no lock: it only writes the user store, and SQLite
//!   serialises that with the running gateway.
//! - Files belong to the directory's owner. The service runs as `campusgw`;
//!   an installer runs `sudo campusgw user add …` as root. What root creates
//!   in a directory owned by someone else (`gateway.db` and its `-wal`,
//!   `-shm`) is handed to that owner afterwards, or the service could not
//!   write its own stores ("readonly database"). A gateway started as root in
//!   such a directory is refused: its spool segments, made over its whole
//!   life, would belong to root.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Creating, opening or locking failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("{dir} is in use by another campusgw (pid {pid}): one gateway per data directory; stop the other one (systemctl stop campusgw) or give this one its own gateway.data_dir")]
    Busy {
        /// The data directory.
        dir: PathBuf,
        /// What the lock file says, or "unknown".
        pid: String,
    },
    /// Root in a directory owned by another user, where it must not create files.
    #[error("{dir} belongs to user id {uid}, and this runs as root: files it creates would be root's and the service could not write them; run it as that user, e.g. sudo -u campusgw campusgw {command} …")]
    NotOwner {
        /// The data directory.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
        /// The command to run instead.
        command: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The exclusive lock of a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    // Closing the file releases the flock.
    _file: File,
}

/// Creates `dir` if needed and takes its lock, or says who holds it.
/// `command` names the command in the messages (`run`).
pub fn lock(dir: &Path, command: &'static str) -> Result<DirLock, DataDirError> {
    // Whoever runs the gateway owns a directory it makes: root's gateway, root's files.
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if let Some(uid) = foreign_owner(dir)? {
        return Err(DataDirError::NotOwner {
            dir: dir.to_owned(),
            uid,
            command,
        });
    }
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    if !try_flock(&file).map_err(io(&path))? {
        let pid = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        return Err(DataDirError::Busy {
            dir: dir.to_owned(),
            pid,
        });
    }
    // Who holds it, for the message of the next one (the lock itself is the flock).
    use std::io::Write as _;
    file.set_len(0).map_err(io(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
    Ok(DirLock { _file: file })
}

/// Creates `dir` if it does not exist, for a command that writes into a
/// gateway's directory without running one (`user add`). A directory made
/// here belongs to whoever runs the command; systemd's `StateDirectory=`
/// hands it to the service's user at its start.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// As root in a directory owned by another user: gives every file and
/// directory of `dir` (two levels: the stores and the spool's segments) that
/// root owns to the directory's owner. Nothing otherwise.
pub fn adopt(dir: &Path) -> Result<(), DataDirError> {
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
    #[cfg(unix)]
    adopt_unix(dir)
}

#[cfg(unix)]
fn adopt_unix(dir: &Path) -> Result<(), DataDirError> {
    let Some(uid) = foreign_owner(dir)? else {
        return Ok(());
    };
    let gid = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir).map_err(io(dir))?.gid()
    };
    give(dir, uid, gid, 2)
}

#[cfg(unix)]
fn give(dir: &Path, uid: u32, gid: u32, depth: u8) -> Result<(), DataDirError> {
    use std::os::unix::fs::MetadataExt as _;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        // Not following links: a link planted in the directory must not
        // hand some other file to the directory's owner.
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.uid() == 0 {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io(&path))?;
        }
        if meta.is_dir() && depth > 1 {
            give(&path, uid, gid, depth - 1)?;
        }
    }
    Ok(())
}

/// The owner of `dir` when this process is root and the owner is not.
fn foreign_owner(dir: &Path) -> Result<Option<u32>, DataDirError> {
    if !is_root() {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata(dir).map_err(io(dir))?.uid();
        Ok((uid != 0).then_some(uid))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(None)
    }
}

fn is_root() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another open file holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: the descriptor is open for the call's duration (borrowed from `file`).
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(e)
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        // Without libc here there is no lock: the one-gateway rule is the installer's.
        let _ = file;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = lock(dir.path(), "run").expect("first lock");
        let second = lock(dir.path(), "run").expect_err("the directory is locked");
        let text = second.to_string();
        assert!(
            text.contains(&std::process::id().to_string()) && text.contains("in use"),
            "{text}"
        );
        drop(first);
        lock(dir.path(), "run").expect("free again");
    }
}
