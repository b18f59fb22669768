//! Acknowledging from the phone: the one-time tokens of `/ack/{token}`
//! links, kept in `notify.db` (table `ack_tokens`).
//!
//! A token is 256 bits, derived as HMAC-SHA256 over the notification's
//! idempotency key and the person with a random key of this gateway
//! (`data_dir/ack-links.key`, made at first use, mode 0600): every attempt
//! of a message carries the same link, and no one who lacks the key can
//! guess one. Only its SHA-256 is stored, with the alarm, the person, when
//! it expires and when it was used — a copy of the database acknowledges
//! nothing. The confirm form of the page carries a nonce bound to the token
//! and the time it was shown (HMAC with the same key, valid for
//! [`NONCE_FOR_MS`]): a form another site posts does not have it.

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// How long a shown confirm page may be submitted.
pub const NONCE_FOR_MS: i64 = 60 * 60 * 1000;

/// The file of the link key in the data directory.
pub const KEY_FILE: &str = "ack-links.key";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ack_tokens (
    hash TEXT PRIMARY KEY, alarm_id INTEGER NOT NULL, person TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER
);";

/// What went wrong with the key or the store.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The key file.
    #[error("ack link key {path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store.
    #[error("ack link store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Where a token stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Good: for this alarm and person.
    Valid {
        /// The alarm.
        alarm_id: i64,
        /// The person's id.
        person: String,
    },
    /// Used already.
    Used {
        /// The person's id (for the language of the page).
        person: String,
    },
    /// Past its time.
    Expired {
        /// The person's id.
        person: String,
    },
    /// Not a token of this gateway.
    Unknown,
}

/// The tokens: the key and a connection to `notify.db`.
pub struct AckLinks {
    key: [u8; 32],
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for AckLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckLinks").finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a token.
fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` has a token's shape (43 characters of base64url), checked
/// before any lookup.
pub fn well_formed(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_or_make_key(path: &Path) -> Result<[u8; 32], AckError> {
    let err = |source| AckError::Key {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            return bytes.as_slice().try_into().map_err(|_| {
                err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not 32 bytes (remove it to make a new key; links sent so far stop working)",
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(&key).and_then(|()| f.sync_all()).map_err(err)?;
            Ok(key)
        }
        // Made meanwhile by the other half of the gateway (web or notifier).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_make_key(path),
        Err(e) => Err(err(e)),
    }
}

impl AckLinks {
    /// Opens the key (made at first use) and `notify.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, AckError> {
        let key = read_or_make_key(&data_dir.join(KEY_FILE))?;
        let conn = Connection::open(super::outbox::path(data_dir))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            key,
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token of the message with idempotency key `message` to `person`
    /// about `alarm_id`, recorded (once) as valid until `expires_at`.
    pub fn issue(
        &self,
        message: &str,
        person: &str,
        alarm_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<String, AckError> {
        let token = b64(&hmac(
            &self.key,
            &[b"ack-link", message.as_bytes(), person.as_bytes()],
        ));
        self.conn().execute(
            "INSERT OR IGNORE INTO ack_tokens (hash, alarm_id, person, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![digest(&token), alarm_id, person, now, expires_at],
        )?;
        Ok(token)
    }

    /// What `token` is at `now`; changes nothing.
    pub fn lookup(&self, token: &str, now: i64) -> Result<Lookup, AckError> {
        if !well_formed(token) {
            return Ok(Lookup::Unknown);
        }
        let row = self
            .conn()
            .query_row(
                "SELECT alarm_id, person, expires_at, used_at FROM ack_tokens WHERE hash = ?1",
                [digest(token)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()?;
        Ok(match row {
            None => Lookup::Unknown,
            Some((_, person, _, Some(_))) => Lookup::Used { person },
            Some((_, person, expires, None)) if expires <= now => Lookup::Expired { person },
            Some((alarm_id, person, _, None)) => Lookup::Valid { alarm_id, person },
        })
    }

    /// Uses `token` (once): `Valid` only for the one call that used it.
    pub fn consume(&self, token: &str, now: i64) -> Result<Lookup, AckError> {
        let found = self.lookup(token, now)?;
        if !matches!(found, Lookup::Valid { .. }) {
            return Ok(found);
        }
        let changed = self.conn().execute(
            "UPDATE ack_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![digest(token), now],
        )?;
        if changed == 1 {
            Ok(found)
        } else {
            // Used (or expired) between the two statements: by another request.
            self.lookup(token, now)
        }
    }

    /// Makes a used `token` usable again: its acknowledgement did not go
    /// through (the alarm engine was not running), so the person can retry.
    pub fn release(&self, token: &str) -> Result<(), AckError> {
        self.conn().execute(
            "UPDATE ack_tokens SET used_at = NULL WHERE hash = ?1",
            [digest(token)],
        )?;
        Ok(())
    }

    /// The confirm form's nonce for `token`, shown at `now`.
    pub fn nonce(&self, token: &str, now: i64) -> String {
        let at = now.to_string();
        let mac = hmac(&self.key, &[b"ack-nonce", token.as_bytes(), at.as_bytes()]);
        format!("{at}.{}", b64(&mac))
    }

    /// Whether `nonce` was made by [`AckLinks::nonce`] for `token` less than
    /// [`NONCE_FOR_MS`] before `now`.
    pub fn nonce_ok(&self, token: &str, nonce: &str, now: i64) -> bool {
        let Some((at, _)) = nonce.split_once('.') else {
            return false;
        };
        let Ok(shown) = at.parse::<i64>() else {
            return false;
        };
        if shown > now + 60_000 || now - shown > NONCE_FOR_MS {
            return false;
        }
        let want = self.nonce(token, shown);
        // Both are ASCII of the same shape; compare without an early exit.
        want.len() == nonce.len()
            && want
                .bytes()
                .zip(nonce.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_once_expires_and_is_stored_hashed() {
        let dir = tempfile::tempdir().expect("dir");
        let links = AckLinks::open(dir.path()).expect("open");
        let t = links
            .issue("alarm:1:step:0:sms:zhang", "zhang", 1, 0, 1_000)
            .expect("issue");
        assert!(well_formed(&t), "{t}");
        // The same message gets the same link on every attempt.
        assert_eq!(
            links
                .issue("alarm:1:step:0:sms:zhang", "zhang", 1, 10, 2_000)
                .expect("issue"),
            t
        );
        let valid = Lookup::Valid {
            alarm_id: 1,
            person: "zhang".into(),
        };
        assert_eq!(links.lookup(&t, 500).expect("lookup"), valid);
        assert_eq!(
            links.lookup(&t, 1_000).expect("lookup"),
            Lookup::Expired {
                person: "zhang".into()
            }
        );
        assert_eq!(links.consume(&t, 999).expect("consume"), valid);
        assert_eq!(
            links.consume(&t, 999).expect("consume"),
            Lookup::Used {
                person: "zhang".into()
            }
        );
        let stored: String = links
            .conn()
            .query_row("SELECT hash FROM ack_tokens", [], |r| r.get(0))
            .expect("row");
        assert_ne!(stored, t);
        // Another gateway's key makes other tokens.
        let other = tempfile::tempdir().expect("dir");
        let links2 = AckLinks::open(other.path()).expect("open");
        let t2 = links2
            .issue("alarm:1:step:0:sms:zhang", "zhang", 1, 0, 1_000)
            .expect("issue");
        assert_ne!(t, t2);
        assert_eq!(links.lookup(&t2, 0).expect("lookup"), Lookup::Unknown);
        assert_eq!(links.lookup("garbage", 0).expect("lookup"), Lookup::Unknown);
    }

    #[test]
    fn a_nonce_is_bound_to_its_token_and_time() {
        let dir = tempfile::tempdir().expect("dir");
        let links = AckLinks::open(dir.path()).expect("open");
        let n = links.nonce("a", 1_000);
        assert!(links.nonce_ok("a", &n, 2_000));
        assert!(!links.nonce_ok("b", &n, 2_000));
        assert!(!links.nonce_ok("a", &n, 1_000 + NONCE_FOR_MS + 1));
        assert!(!links.nonce_ok("a", "1000.AAAA", 2_000));
    }
}
