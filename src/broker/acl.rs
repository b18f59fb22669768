//! Who may connect to the built-in broker and what each may publish and
//! subscribe to: the users file (argon2 hashes, never a password), the
//! anonymous and internal principals, and the topic-filter arithmetic the
//! checks need. Pure but for reading the file.
//!
//! The users file is TOML, written by `campusgw broker user add`:
//!
//! ```toml
//! [[users]]
//! name = "yazhong"                      # the devices of site yazhong
//! hash = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! publish = ["campus/yazhong/#"]
//! subscribe = []
//! ```
//!
//! Two rules hold whatever the file says: only the gateway itself publishes
//! under [`RESERVED_PREFIX`] (the alarms other systems trust), and nobody
//! publishes a `$` topic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use serde::{Deserialize, Serialize};

/// Topics only the gateway may publish under: its alarms.
pub const RESERVED_PREFIX: &str = "campusgw/";

/// The longest user name taken.
pub const NAME_MAX: usize = 64;

/// One account of the users file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The MQTT user name.
    pub name: String,
    /// The argon2 PHC string of the password.
    pub hash: String,
    /// Topic filters the user may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters the user may subscribe to (a subscription must lie inside one).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// The users file as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Every account.
    #[serde(default)]
    pub users: Vec<UserEntry>,
}

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Not readable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the entry's name.
        message: String,
    },
    /// Not writable.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl UsersFile {
    /// Reads and checks the file: every name once, every hash a PHC string,
    /// every filter valid.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| UsersError::Invalid {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        file.problems()
            .into_iter()
            .next()
            .map_or(Ok(file), |message| {
                Err(UsersError::Invalid {
                    path: shown,
                    message,
                })
            })
    }

    /// Every problem of the entries, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            if let Err(e) = check_name(&u.name) {
                out.push(format!("user `{}`: {e}", u.name));
            }
            if !seen.insert(u.name.as_str()) {
                out.push(format!("user `{}` is listed twice", u.name));
            }
            if PasswordHash::new(&u.hash).is_err() {
                out.push(format!(
                    "user `{}`: hash is not an argon2 PHC string (write it with `campusgw broker user add`)",
                    u.name
                ));
            }
            for f in u.publish.iter().chain(&u.subscribe) {
                if !valid_filter(f) {
                    out.push(format!("user `{}`: `{f}` is not a topic filter", u.name));
                }
            }
            if let Some(f) = u.publish.iter().find(|f| filters_overlap(f, "campusgw/#")) {
                out.push(format!(
                    "user `{}`: `{f}` reaches {RESERVED_PREFIX}…, where only the gateway publishes (it is refused anyway)",
                    u.name
                ));
            }
        }
        out
    }

    /// Adds the user or replaces its password and filters.
    pub fn set(&mut self, entry: UserEntry) {
        match self.users.iter_mut().find(|u| u.name == entry.name) {
            Some(u) => *u = entry,
            None => self.users.push(entry),
        }
    }

    /// Writes the file (0640: it holds hashes, not passwords) through a
    /// temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let shown = path.display().to_string();
        let werr = |source| UsersError::Write {
            path: shown.clone(),
            source,
        };
        let text = format!(
            "# campusgw built-in broker users: `campusgw broker user add` writes this file.\n\
             # Passwords are argon2 hashes; publish/subscribe are MQTT topic filters.\n{}",
            toml::to_string(self).map_err(|e| UsersError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?
        );
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write as _;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            o.mode(0o640);
            let mut f = o.open(&tmp).map_err(werr)?;
            f.write_all(text.as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, path).map_err(werr)
    }
}

/// A user name the broker takes: 1 to [`NAME_MAX`] characters of the feed's ASCII set.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(format!("a name has 1 to {NAME_MAX} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("a name uses letters, digits, `-`, `_` and `.` only".into());
    }
    Ok(())
}

/// Hashes a device password (argon2id, the crate's default cost).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Who a connection is, once its CONNECT was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The gateway's own connections (the internal listener only).
    Internal,
    /// A client without a user name, on an all-loopback broker that allows it.
    Anonymous,
    /// An account of the users file.
    User(Arc<Grants>),
}

/// What one account may do.
#[derive(PartialEq, Eq)]
pub struct Grants {
    /// The user name.
    pub name: String,
    /// Publish filters.
    pub publish: Vec<String>,
    /// Subscribe filters.
    pub subscribe: Vec<String>,
    /// The password's hash when the connection was accepted: a changed
    /// password ends the connection at the next reload.
    hash: String,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("name", &self.name)
            .field("publish", &self.publish)
            .field("subscribe", &self.subscribe)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// The name in logs.
    pub fn name(&self) -> &str {
        match self {
            Principal::Internal => "(gateway)",
            Principal::Anonymous => "(anonymous)",
            Principal::User(g) => &g.name,
        }
    }

    /// May this principal publish to `topic` (a valid topic name)?
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Principal::Internal => true,
            _ if topic.starts_with('$') || topic.starts_with(RESERVED_PREFIX) => false,
            Principal::Anonymous => true,
            Principal::User(g) => g.publish.iter().any(|f| matches(topic, f)),
        }
    }

    /// May this principal subscribe to `filter` (a valid filter)? Only
    /// when every topic it can match lies inside one of its filters.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Principal::Internal | Principal::Anonymous => true,
            Principal::User(g) => g.subscribe.iter().any(|f| filter_covers(f, filter)),
        }
    }
}

/// The accounts, with a cache of checked passwords so that a reconnecting
/// device costs one argon2 hash per gateway start, not one per connect.
#[derive(Debug, Default)]
pub struct Accounts {
    users: HashMap<String, (String, Arc<Grants>)>,
    /// (user, SHA-256 of the password) pairs that verified.
    verified: std::sync::Mutex<std::collections::HashSet<(String, [u8; 32])>>,
}

/// How many verified passwords the cache keeps (then it starts over).
const VERIFIED_MAX: usize = 100_000;

impl Accounts {
    /// From the users file's entries.
    pub fn new(file: &UsersFile) -> Self {
        let users = file
            .users
            .iter()
            .map(|u| {
                let grants = Grants {
                    name: u.name.clone(),
                    publish: u.publish.clone(),
                    subscribe: u.subscribe.clone(),
                    hash: u.hash.clone(),
                };
                (u.name.clone(), (u.hash.clone(), Arc::new(grants)))
            })
            .collect();
        Self {
            users,
            verified: Default::default(),
        }
    }

    /// The account's grants if `password` is its password. Slow the first
    /// time (argon2): call it off the async workers.
    pub fn verify(&self, user: &str, password: &[u8]) -> Option<Arc<Grants>> {
        use sha2::Digest as _;
        let (hash, grants) = self.users.get(user)?;
        let key = (user.to_owned(), sha2::Sha256::digest(password).into());
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.contains(&key) {
            return Some(grants.clone());
        }
        drop(cache);
        let ok = PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(password, &h).is_ok())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_MAX {
            cache.clear();
        }
        cache.insert(key);
        Some(grants.clone())
    }

    /// Whether an account of that name exists (cheap; says nothing of the password).
    pub fn knows(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `grants` (taken at connect) still hold: same account, same
    /// password, same topics.
    pub fn still(&self, grants: &Grants) -> bool {
        self.users
            .get(&grants.name)
            .is_some_and(|(_, now)| **now == *grants)
    }
}

/// A valid topic name to publish to: not empty, no wildcard, no NUL.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A valid subscription filter (MQTT 3.1.1 4.7), without NUL.
pub fn valid_filter(filter: &str) -> bool {
    !filter.contains('\0') && rumqttc::valid_filter(filter)
}

/// Does `topic` match `filter`? (`$` topics match only filters that name them.)
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Does every topic `inner` matches also match `outer`?
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let mut inner_levels = inner.split('/');
    for o in outer.split('/') {
        if o == "#" {
            return true;
        }
        match inner_levels.next() {
            // `#` in the inner filter matches more than any one level can.
            Some("#") | None => return false,
            Some("+") if o != "+" => return false,
            Some(i) if o == "+" || o == i => {}
            Some(_) => return false,
        }
    }
    inner_levels.next().is_none()
}

/// Could one topic match both filters?
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(publish: &[&str], subscribe: &[&str]) -> Principal {
        Principal::User(Arc::new(Grants {
            name: "yazhong".into(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            hash: String::new(),
        }))
    }

    #[test]
    fn a_site_account_publishes_only_under_its_site() {
        let p = user(&["campus/yazhong/#"], &[]);
        assert!(p.may_publish("campus/yazhong/gate/east-1"));
        assert!(!p.may_publish("campus/evil/gate/east-1"));
        assert!(!p.may_publish("campus/yazhongx/gate/east-1"));
        assert!(!p.may_subscribe("campus/#"));
    }

    #[test]
    fn nobody_but_the_gateway_publishes_its_alarms_or_dollar_topics() {
        let p = user(&["#"], &["#"]);
        assert!(!p.may_publish("campusgw/alarms/1"));
        assert!(!p.may_publish("$SYS/x"));
        assert!(!Principal::Anonymous.may_publish("campusgw/alarms/1"));
        assert!(Principal::Internal.may_publish("campusgw/alarms/1"));
        assert!(p.may_publish("campusgwx/a"));
    }

    #[test]
    fn a_subscription_must_lie_inside_a_granted_filter() {
        let p = user(&[], &["campusgw/#", "campus/+/smoke/#"]);
        assert!(p.may_subscribe("campusgw/#"));
        assert!(p.may_subscribe("campusgw/alarms/+"));
        assert!(p.may_subscribe("campus/yazhong/smoke/a3-301"));
        assert!(p.may_subscribe("campus/+/smoke/+"));
        assert!(!p.may_subscribe("#"));
        assert!(!p.may_subscribe("campus/#"));
        assert!(!p.may_subscribe("campus/+/+/a"));
        assert!(!p.may_subscribe("+/alarms"));
    }

    #[test]
    fn matching() {
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "a/#"));
        assert!(matches("a", "a/#"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("$SYS/a", "#"));
        assert!(matches("$SYS/a", "$SYS/#"));
        assert!(filters_overlap("campus/#", "+/yazhong/gate/x"));
        assert!(!filters_overlap("campus/a/#", "campus/b/#"));
        assert!(filters_overlap("#", "campusgw/#"));
    }

    #[test]
    fn the_password_is_checked_once_then_remembered() {
        let entry = UserEntry {
            name: "yazhong".into(),
            hash: hash("correct horse battery").unwrap(),
            publish: vec!["campus/yazhong/#".into()],
            subscribe: vec![],
        };
        let file = UsersFile { users: vec![entry] };
        assert!(file.problems().is_empty());
        let accounts = Accounts::new(&file);
        assert!(accounts.verify("yazhong", b"wrong").is_none());
        assert!(accounts
            .verify("nobody", b"correct horse battery")
            .is_none());
        assert!(accounts
            .verify("yazhong", b"correct horse battery")
            .is_some());
        assert_eq!(accounts.verified.lock().unwrap().len(), 1);
        assert!(accounts
            .verify("yazhong", b"correct horse battery")
            .is_some());
    }

    #[test]
    fn a_broken_file_names_its_entry() {
        let file = UsersFile {
            users: vec![UserEntry {
                name: "a b".into(),
                hash: "plaintext".into(),
                publish: vec!["campus/#/x".into(), "campusgw/alarms".into()],
                subscribe: vec![],
            }],
        };
        let p = file.problems().join("\n");
        assert!(p.contains("letters, digits"), "{p}");
        assert!(p.contains("not an argon2"), "{p}");
        assert!(p.contains("`campus/#/x` is not a topic filter"), "{p}");
        assert!(p.contains("only the gateway"), "{p}");
    }
}
