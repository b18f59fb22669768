//! Who may do what: users with roles, argon2 password hashes, sessions,
//! API tokens and the audit log — all in
//! `data_dir/gateway.db` (SQLite), so a restart logs no one out.
//!
//! Session and API tokens are 256-bit random strings; only their SHA-256
//! is stored, so a copy of the database opens no session. Passwords are
//! hashed with Argon2id (the crate's defaults, OWASP's recommendation).
//! Throttling sign-ins and where the hashing runs are `web::signin`'s.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a user may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges, shelves, comments, starts drills.
    Operator,
    /// Also manages users, tokens and rules.
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "admin" => Role::Admin,
            "operator" => Role::Operator,
            _ => Role::Viewer,
        }
    }
}

/// A signed-in user or an API token acting as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// User name (`token:<name>` for an API token).
    pub user: String,
    /// The user this acts for: the user itself, or the token's owner.
    #[serde(skip)]
    pub owner: String,
    /// Role (a token's never above its owner's current role).
    pub role: Role,
    /// The session's CSRF token; `None` for API tokens, which carry no ambient authority.
    #[serde(skip)]
    pub csrf: Option<String>,
}

/// What went wrong with the auth store.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// SQLite.
    #[error("user store: {0}")]
    Store(#[from] rusqlite::Error),
    /// Hashing.
    #[error("password hashing failed")]
    Hash,
    /// Input out of bounds.
    #[error("{0}")]
    Invalid(String),
}

/// One user as listed to admins.
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Created, epoch ms.
    pub created_at: i64,
}

/// One API token as listed to admins (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role (it acts with at most its owner's current role).
    pub role: Role,
    /// Created by: the owner, with whom the token dies.
    pub created_by: String,
    /// Created, epoch ms.
    pub created_at: i64,
    /// Refused from then on, epoch ms; `None`: until revoked.
    pub expires_at: Option<i64>,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// When, epoch ms.
    pub at: i64,
    /// Who.
    pub user: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Details.
    pub detail: String,
    /// From where.
    pub addr: String,
}

/// Sessions last this long after the last use (a wall screen stays signed in).
const SESSION_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A session's idle timer is written at most this often, so checking a
/// session (every request, every event stream) is a read, not a write.
const SESSION_REFRESH: Duration = Duration::from_secs(60);

/// The earliest last use (epoch ms) of a session still valid at `now`.
fn oldest_live_use(now: i64) -> i64 {
    now - SESSION_IDLE.as_millis() as i64
}

/// The auth store.
#[derive(Debug)]
pub struct AuthStore {
    conn: Mutex<Connection>,
    /// Bumped whenever a session or token may have ended (sign-out, user or
    /// token deleted, password changed): open event streams check theirs.
    revoked: tokio::sync::watch::Sender<u64>,
}

fn now_ms() -> i64 {
    crate::reading::now_ms()
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The stored form of a session or API token.
pub(crate) fn digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
}

/// Hashes a password with Argon2id.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AuthError::Hash)
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The longest password taken, in bytes (a passphrase of 128 characters of
/// any script fits); longer is refused before hashing.
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// The longest user (and token) name, in characters.
pub const NAME_MAX_CHARS: usize = 32;
/// The longest life of an API token, in days.
pub const TOKEN_MAX_DAYS: u32 = 3650;

/// Checks a new password for `user`: at least 10 characters, not only
/// spaces or one repeated character, not the user name.
pub fn check_password(user: &str, p: &str) -> Result<(), AuthError> {
    let bad = |m: &str| Err(AuthError::Invalid(m.into()));
    if p.chars().count() < 10 {
        return bad("a password needs at least 10 characters");
    }
    if p.len() > PASSWORD_MAX_BYTES {
        return bad("a password may have at most 1024 bytes");
    }
    if p.chars().all(char::is_whitespace) {
        return bad("a password cannot be only spaces");
    }
    let mut chars = p.chars();
    if let Some(first) = chars.next() {
        if chars.all(|c| c == first) {
            return bad("a password cannot be one character repeated");
        }
    }
    if p.trim().to_lowercase() == user.to_lowercase() {
        return bad("a password cannot be the user name");
    }
    Ok(())
}

/// Checks a user or token name: 1 to 32 characters that show as themselves
/// on the page and in the audit log — letters (any script, CJK too),
/// digits, `.`, `_`, `-`, `@` and single inner spaces. No control, bidi or
/// format characters, emoji or combining marks (which could make two names
/// look alike or reorder the text around them).
pub fn check_name(n: &str) -> Result<(), AuthError> {
    let ok = !n.is_empty()
        && n.chars().count() <= NAME_MAX_CHARS
        && !n.starts_with(' ')
        && !n.ends_with(' ')
        && !n.contains("  ")
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ' '));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(
            "a name has 1 to 32 letters, digits, '.', '_', '-', '@' or inner spaces".into(),
        ))
    }
}

impl AuthStore {
    /// Opens (creating) `gateway.db` under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        let conn = Connection::open(data_dir.join("gateway.db"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            r#"
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_at INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL, last_used INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL, created_by TEXT NOT NULL, created_at INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, addr TEXT NOT NULL);
            "#,
        )?;
        // Stores made before tokens could expire.
        let has_expiry: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('tokens') WHERE name = 'expires_at'")?
            .exists([])?;
        if !has_expiry {
            conn.execute_batch("ALTER TABLE tokens ADD COLUMN expires_at INTEGER")?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            revoked: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Changes whenever a session or token may have ended.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revoked.subscribe()
    }

    fn revoke(&self) {
        self.revoked.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces a user.
    pub fn set_user(&self, name: &str, role: Role, password: &str) -> Result<(), AuthError> {
        check_name(name)?;
        check_password(name, password)?;
        let hash = hash_password(password)?;
        self.conn().execute(
            "INSERT INTO users (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
            params![name, role.as_str(), hash, now_ms()],
        )?;
        // A new password (or role) ends the user's other sessions.
        self.conn()
            .execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        self.revoke();
        Ok(())
    }

    /// Removes a user with their sessions and API tokens; false when there was none.
    pub fn delete_user(&self, name: &str) -> Result<bool, AuthError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        tx.execute("DELETE FROM tokens WHERE created_by = ?1", [name])?;
        let found = tx.execute("DELETE FROM users WHERE name = ?1", [name])? > 0;
        tx.commit()?;
        self.revoke();
        Ok(found)
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<UserInfo>, AuthError> {
        let c = self.conn();
        let mut stmt = c.prepare("SELECT name, role, created_at FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(UserInfo {
                name: r.get(0)?,
                role: Role::parse(&r.get::<_, String>(1)?),
                created_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks a password; on success opens a session and returns
    /// (session token, principal). Slow on purpose (Argon2): the caller
    /// throttles and runs it on `web::signin::Hasher`.
    pub fn login(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<(String, Principal)>, AuthError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT role, hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // Hash even for an unknown user, so timing does not tell which names exist.
        let ok = match &row {
            Some((_, hash)) => verify_password(password, hash),
            None => {
                let _ = verify_password(password, dummy_hash());
                false
            }
        };
        if !ok {
            return Ok(None);
        }
        let (role, _) = row.unwrap_or_default();
        let token = random_token();
        let csrf = random_token();
        let now = now_ms();
        let c = self.conn();
        // Expired sessions are refused when read; a sign-in clears them away.
        c.execute(
            "DELETE FROM sessions WHERE last_used < ?1",
            [oldest_live_use(now)],
        )?;
        c.execute(
            "INSERT INTO sessions (digest, user, csrf, last_used) VALUES (?1, ?2, ?3, ?4)",
            params![digest(&token), name, csrf, now],
        )?;
        Ok(Some((
            token,
            Principal {
                user: name.to_owned(),
                owner: name.to_owned(),
                role: Role::parse(&role),
                csrf: Some(csrf),
            },
        )))
    }

    /// The user of a session cookie, refreshing its idle timer.
    pub fn session(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        let d = digest(token);
        let now = now_ms();
        let c = self.conn();
        let found = c
            .query_row(
                "SELECT s.user, u.role, s.csrf, s.last_used FROM sessions s JOIN users u ON u.name = s.user WHERE s.digest = ?1 AND s.last_used >= ?2",
                params![d, oldest_live_use(now)],
                |r| {
                    let user: String = r.get(0)?;
                    let p = Principal {
                        owner: user.clone(),
                        user,
                        role: Role::parse(&r.get::<_, String>(1)?),
                        csrf: Some(r.get(2)?),
                    };
                    Ok((p, r.get::<_, i64>(3)?))
                },
            )
            .optional()?;
        let Some((p, last_used)) = found else {
            return Ok(None);
        };
        if now - last_used > SESSION_REFRESH.as_millis() as i64 {
            c.execute(
                "UPDATE sessions SET last_used = ?1 WHERE digest = ?2",
                params![now, d],
            )?;
        }
        Ok(Some(p))
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) -> Result<(), AuthError> {
        self.conn()
            .execute("DELETE FROM sessions WHERE digest = ?1", [digest(token)])?;
        self.revoke();
        Ok(())
    }

    /// Creates an API token owned by the user `owner`, with at most the
    /// owner's role, valid for `days` (or until revoked); the secret is
    /// returned once and never stored. The token dies with its owner.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        owner: &str,
        days: Option<u32>,
    ) -> Result<String, AuthError> {
        check_name(name)?;
        if days.is_some_and(|d| d == 0 || d > TOKEN_MAX_DAYS) {
            return Err(AuthError::Invalid(format!(
                "expires_in_days must be 1 to {TOKEN_MAX_DAYS}"
            )));
        }
        let now = now_ms();
        let expires_at = days.map(|d| now + i64::from(d) * 86_400_000);
        let token = format!("cgw_{}", random_token());
        let c = self.conn();
        let owner_role: Option<String> = c
            .query_row("SELECT role FROM users WHERE name = ?1", [owner], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(owner_role) = owner_role.map(|r| Role::parse(&r)) else {
            return Err(AuthError::Invalid(format!(
                "a token belongs to a user; there is no user `{owner}`"
            )));
        };
        if role > owner_role {
            return Err(AuthError::Invalid(format!(
                "a token cannot have a role above its owner's ({})",
                owner_role.as_str()
            )));
        }
        c.execute(
            "INSERT INTO tokens (name, digest, role, created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, digest(&token), role.as_str(), owner, now, expires_at],
        )?;
        Ok(token)
    }

    /// The principal of a bearer token: refused once expired or once its
    /// owner is gone; its role is capped by the owner's current role.
    pub fn token(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT t.name, t.role, u.role, u.name FROM tokens t JOIN users u ON u.name = t.created_by
                 WHERE t.digest = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                params![digest(token), now_ms()],
                |r| {
                    let own = Role::parse(&r.get::<_, String>(1)?);
                    let owner = Role::parse(&r.get::<_, String>(2)?);
                    Ok(Principal {
                        user: format!("token:{}", r.get::<_, String>(0)?),
                        owner: r.get(3)?,
                        role: own.min(owner),
                        csrf: None,
                    })
                },
            )
            .optional()?)
    }

    /// Every API token (without secrets).
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT id, name, role, created_by, created_at, expires_at FROM tokens ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                name: r.get(1)?,
                role: Role::parse(&r.get::<_, String>(2)?),
                created_by: r.get(3)?,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a token; false when there was none.
    pub fn delete_token(&self, id: i64) -> Result<bool, AuthError> {
        let found = self
            .conn()
            .execute("DELETE FROM tokens WHERE id = ?1", [id])?
            > 0;
        self.revoke();
        Ok(found)
    }

    /// Records an operator action.
    pub fn audit(
        &self,
        user: &str,
        action: &str,
        target: &str,
        detail: &str,
        addr: &str,
    ) -> Result<(), AuthError> {
        self.conn().execute(
            "INSERT INTO audit (at, user, action, target, detail, addr) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now_ms(), user, action, target, detail, addr],
        )?;
        Ok(())
    }

    /// Who signed in from where since `since_ms` (user, address): the
    /// sign-in throttle's known screens after a restart.
    pub fn sign_ins_since(&self, since_ms: i64) -> Result<Vec<(String, String)>, AuthError> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT DISTINCT user, addr FROM audit WHERE action = 'login' AND at >= ?1 LIMIT 10000",
        )?;
        let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest audit entries.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, AuthError> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT at, user, action, target, detail, addr FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(AuditEntry {
                at: r.get(0)?,
                user: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                detail: r.get(4)?,
                addr: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A hash of a random password, verified against for unknown users so that
/// a failed sign-in takes as long whether or not the name exists.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_password()).unwrap_or_default())
}

/// A random password for the demo's operator: 16 characters from an
/// alphabet without look-alikes.
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords_that_are_refused() {
        for good in ["wang", "li.na", "ops-2@school", "张伟", "Wang Wei", "x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " wang",
            "wang ",
            "wang  wei",
            "admin\u{202e}nimda",
            "zero\u{200b}width",
            "tab\tname",
            "token:x",
            "e\u{301}",
            &"😀".repeat(8),
            &"a".repeat(33),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(32)).is_ok());
        for bad in [
            "short",
            "          ",
            "\t\t\t\t\t \n\n\n\n",
            "aaaaaaaaaaaa",
            "operator01",
            " Operator01 ",
        ] {
            assert!(check_password("operator01", bad).is_err(), "{bad:?}");
        }
        assert!(check_password("operator01", "correct horse battery").is_ok());
        assert!(
            check_password("x", &"长城".repeat(150)).is_ok(),
            "300 CJK characters fit"
        );
        assert!(
            check_password("x", &"a1".repeat(600)).is_err(),
            "over 1024 bytes"
        );
    }

    #[test]
    fn a_token_dies_with_its_owner_expires_and_never_outranks_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = AuthStore::open(dir.path()).expect("open");
        s.set_user("chen", Role::Admin, "chen's long password")
            .expect("add");
        assert!(
            s.create_token("t", Role::Admin, "nobody", None).is_err(),
            "a token needs an owner"
        );
        assert!(s.create_token("t", Role::Admin, "chen", Some(0)).is_err());
        let admin = s
            .create_token("t", Role::Admin, "chen", None)
            .expect("token");
        let short = s
            .create_token("t2", Role::Viewer, "chen", Some(1))
            .expect("token");
        assert_eq!(
            s.token(&admin).expect("lookup").map(|p| (p.role, p.owner)),
            Some((Role::Admin, "chen".into()))
        );

        // Demoted: the token acts as a viewer and cannot make an admin token.
        s.set_user("chen", Role::Viewer, "chen's long password")
            .expect("demote");
        assert_eq!(
            s.token(&admin).expect("lookup").map(|p| p.role),
            Some(Role::Viewer)
        );
        assert!(s.create_token("t3", Role::Operator, "chen", None).is_err());

        // Expired.
        s.conn()
            .execute(
                "UPDATE tokens SET expires_at = ?1 WHERE name = 't2'",
                [now_ms() - 1],
            )
            .expect("expire");
        assert_eq!(s.token(&short).expect("lookup"), None);
        assert!(s
            .tokens()
            .expect("list")
            .iter()
            .any(|t| t.expires_at.is_some()));

        // Deleted owner: the token is refused, and gone from the list.
        assert!(s.delete_user("chen").expect("delete"));
        assert_eq!(s.token(&admin).expect("lookup"), None);
        assert!(s.tokens().expect("list").is_empty());
    }

    #[test]
    fn users_sessions_and_tokens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = AuthStore::open(dir.path()).expect("open");
        assert!(
            s.set_user("wang", Role::Operator, "short").is_err(),
            "too short"
        );
        s.set_user("wang", Role::Operator, "correct horse battery")
            .expect("add");
        assert!(s.login("wang", "wrong password!").expect("login").is_none());
        let (token, p) = s
            .login("wang", "correct horse battery")
            .expect("login")
            .expect("ok");
        assert_eq!((p.user.as_str(), p.role), ("wang", Role::Operator));
        assert_eq!(s.session(&token).expect("session"), Some(p.clone()));
        s.logout(&token).expect("logout");
        assert_eq!(s.session(&token).expect("session"), None);

        // Idle sessions: refreshed when a minute stale, refused after a week.
        let (token, _) = s
            .login("wang", "correct horse battery")
            .expect("login")
            .expect("ok");
        let age = |ms: i64| {
            s.conn()
                .execute(
                    "UPDATE sessions SET last_used = ?1 WHERE digest = ?2",
                    params![now_ms() - ms, digest(&token)],
                )
                .expect("age the session");
        };
        let last_used = || -> i64 {
            s.conn()
                .query_row(
                    "SELECT last_used FROM sessions WHERE digest = ?1",
                    [digest(&token)],
                    |r| r.get(0),
                )
                .expect("last_used")
        };
        age(2 * 60_000);
        assert!(s.session(&token).expect("session").is_some());
        assert!(
            now_ms() - last_used() < 60_000,
            "a stale timer is refreshed"
        );
        age(10_000);
        let before = last_used();
        assert!(s.session(&token).expect("session").is_some());
        assert_eq!(last_used(), before, "a fresh one is only read");
        age(SESSION_IDLE.as_millis() as i64 + 1);
        assert_eq!(s.session(&token).expect("session"), None, "expired");

        let api = s
            .create_token("district", Role::Viewer, "wang", None)
            .expect("token");
        assert_eq!(
            s.token(&api).expect("lookup").map(|p| p.role),
            Some(Role::Viewer)
        );
        assert_eq!(s.token("cgw_made_up").expect("lookup"), None);

        assert!(
            PasswordHash::new(dummy_hash()).is_ok(),
            "the dummy hash is a real one"
        );
    }
}
