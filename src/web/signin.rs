//! Sign-in under attack: the throttle that decides whether a password is
//! checked at all, and the small pool that checks it.
//!
//! **Throttle.** An attempt is counted (reserved) *before* its password is
//! hashed, under one lock, so a burst of simultaneous guesses cannot all
//! pass the check before the first failure is recorded. Three limits:
//!
//! - per (address, user name): 3 attempts free, then a growing delay before
//!   the next one (1 s, 2 s, 4 s … capped at 5 min); a successful sign-in
//!   clears it. This is what slows a guesser; it never locks an account.
//! - per address, any user names: at most 30 attempts in 15 minutes (a
//!   guesser cycling through names).
//! - per user name, from every address that is not a *known screen* (one
//!   with a successful sign-in for that user in the last 30 days, seeded at
//!   start from the audit log): 10 failures free within 15 minutes, then a
//!   growing delay. Guessing `operator` from many addresses slows those
//!   addresses; the security room's PC keeps signing in at once.
//!
//! Behind a reverse proxy the address is the client's from
//! `X-Forwarded-For`, when the peer is in `[web] trusted_proxies`
//! (`web::client_addr`).
//!
//! **Hashing.** Argon2 takes ~19 MiB and tens of milliseconds of one core
//! per check. It runs on its own threads (at most 2, at a lower priority),
//! never on tokio's blocking pool that serves session checks and the alarm
//! store; at most `HASH_QUEUE` checks wait for them, a further one waits
//! up to `HASH_WAIT` for a place and is then answered 503. So a burst of
//! sign-ins costs bounded memory and never slows the alarm path or the page.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

/// The throttle and the hashing pool, shared by the sign-in handler.
#[derive(Debug)]
pub struct SignIn {
    /// Whether an attempt is checked.
    pub throttle: Throttle,
    /// Where it is checked.
    pub hasher: Hasher,
}

impl SignIn {
    /// Starts the hashing pool; the known screens come from the audit
    /// log's sign-ins of the last 30 days.
    pub fn start(auth: &crate::web::AuthStore) -> std::io::Result<Self> {
        let throttle = Throttle::default();
        let since = crate::reading::now_ms() - KNOWN_FOR.as_millis() as i64;
        match auth.sign_ins_since(since) {
            Ok(pairs) => throttle.seed_known(pairs, Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read past sign-ins: every screen starts unknown.")
            }
        }
        Ok(Self {
            throttle,
            hasher: Hasher::default_pool()?,
        })
    }
}

/// Attempts per (address, user) before the delay starts.
const PAIR_FREE: u32 = 3;
/// The longest delay between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(300);
/// A pair with no attempt for this long is forgotten.
const PAIR_FORGET: Duration = Duration::from_secs(15 * 60);
/// The window of the per-address and per-user counts.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Attempts per address within `WINDOW`, whatever the user names.
const ADDR_MAX: usize = 30;
/// Failures per user from unknown addresses within `WINDOW` before they are slowed.
const USER_FREE: usize = 10;
/// How long a successful sign-in makes its address a known screen for the user.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);
/// Entries kept per map: a flood of made-up names or addresses must not grow memory without end.
const MAX_ENTRIES: usize = 10_000;

/// Checks waiting for a hashing thread.
const HASH_QUEUE: usize = 4;
/// How long a check waits for a place in the queue before it is answered 503.
const HASH_WAIT: Duration = Duration::from_secs(2);

/// The delay before the next attempt after `n` counted ones of which `free` cost nothing.
fn delay(n: u32, free: u32) -> Duration {
    if n < free {
        return Duration::ZERO;
    }
    let exp = (n - free).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

#[derive(Debug)]
struct Pair {
    attempts: u32,
    next: Instant,
    last: Instant,
}

#[derive(Debug, Default)]
struct UserState {
    /// Failures from unknown addresses within `WINDOW`.
    failures: VecDeque<Instant>,
    next: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    pairs: HashMap<(String, String), Pair>,
    addrs: HashMap<String, VecDeque<Instant>>,
    users: HashMap<String, UserState>,
    known: HashMap<(String, String), Instant>,
}

/// Why an attempt is not checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many attempts: try again after this long.
    Wait(Duration),
}

/// The sign-in throttle (see the module docs). Every method takes `now`, so
/// tests drive it with their own clock.
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<State>,
}

/// A reserved attempt: counted as a failure until [`Attempt::succeeded`],
/// or given back with [`Attempt::refund`] when no password was checked.
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    addr: String,
    user: String,
    known: bool,
}

fn prune_window(q: &mut VecDeque<Instant>, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
}

/// Keeps `map` under `MAX_ENTRIES`: drops what `stale` says is stale, then,
/// if still full, arbitrary entries (a flood of made-up keys loses its own
/// history, which only a flood can cause).
fn bound<K, V>(map: &mut HashMap<K, V>, stale: impl Fn(&V) -> bool) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, v| !stale(v));
    let excess = map.len().saturating_sub(MAX_ENTRIES * 9 / 10);
    if excess > 0 {
        let mut n = 0;
        map.retain(|_, _| {
            n += 1;
            n > excess
        });
    }
}

impl Throttle {
    /// Marks (address, user) pairs as known screens, from the audit log's sign-ins.
    pub fn seed_known(&self, pairs: impl IntoIterator<Item = (String, String)>, now: Instant) {
        let mut s = self.lock();
        for (user, addr) in pairs.into_iter().take(MAX_ENTRIES) {
            s.known.insert((addr, user), now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt by `user` from `addr` before its password is
    /// checked, or says how long to wait.
    pub fn reserve(&self, addr: &str, user: &str, now: Instant) -> Result<Attempt, Refused> {
        let mut s = self.lock();
        let key = (addr.to_owned(), user.to_owned());
        let known = s
            .known
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < KNOWN_FOR);

        // Refusals first, so that a refused attempt changes nothing.
        let pair_wait = s
            .pairs
            .get(&key)
            .filter(|p| now.duration_since(p.last) < PAIR_FORGET)
            .and_then(|p| p.next.checked_duration_since(now))
            .filter(|w| !w.is_zero());
        let addr_wait = s.addrs.get_mut(addr).and_then(|q| {
            prune_window(q, now);
            (q.len() >= ADDR_MAX)
                .then(|| {
                    q.front()
                        .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
                })
                .flatten()
        });
        let user_wait = if known {
            None
        } else {
            s.users
                .get(user)
                .and_then(|u| u.next)
                .and_then(|n| n.checked_duration_since(now))
                .filter(|w| !w.is_zero())
        };
        if let Some(wait) = [pair_wait, addr_wait, user_wait]
            .into_iter()
            .flatten()
            .max()
        {
            return Err(Refused::Wait(wait.max(Duration::from_secs(1))));
        }

        bound(&mut s.pairs, |p| now.duration_since(p.last) >= PAIR_FORGET);
        match s.pairs.entry(key) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                if now.duration_since(p.last) >= PAIR_FORGET {
                    p.attempts = 0;
                }
                p.attempts += 1;
                p.next = now + delay(p.attempts, PAIR_FREE);
                p.last = now;
            }
            Entry::Vacant(e) => {
                e.insert(Pair {
                    attempts: 1,
                    next: now + delay(1, PAIR_FREE),
                    last: now,
                });
            }
        }
        bound(&mut s.addrs, |q| {
            q.back().is_none_or(|t| now.duration_since(*t) >= WINDOW)
        });
        s.addrs.entry(addr.to_owned()).or_default().push_back(now);
        if !known {
            bound(&mut s.users, |u| {
                u.failures
                    .back()
                    .is_none_or(|t| now.duration_since(*t) >= WINDOW)
            });
            let u = s.users.entry(user.to_owned()).or_default();
            prune_window(&mut u.failures, now);
            u.failures.push_back(now);
            let n = u32::try_from(u.failures.len()).unwrap_or(u32::MAX);
            let free = u32::try_from(USER_FREE).unwrap_or(u32::MAX);
            u.next = (n >= free).then(|| now + delay(n, free));
        }
        Ok(Attempt {
            addr: addr.to_owned(),
            user: user.to_owned(),
            known,
        })
    }

    /// The password was right: the pair starts afresh and the address
    /// becomes a known screen for the user.
    pub fn succeeded(&self, a: Attempt, now: Instant) {
        let mut s = self.lock();
        let key = (a.addr, a.user);
        s.pairs.remove(&key);
        if let Some(q) = s.addrs.get_mut(&key.0) {
            q.pop_back();
        }
        if !a.known {
            if let Some(u) = s.users.get_mut(&key.1) {
                u.failures.pop_back();
            }
        }
        bound(&mut s.known, |t| now.duration_since(*t) >= KNOWN_FOR);
        s.known.insert(key, now);
    }

    /// No password was checked (the hashing pool was busy): the attempt
    /// does not count.
    pub fn refund(&self, a: Attempt) {
        let mut s = self.lock();
        let key = (a.addr, a.user);
        if let Some(p) = s.pairs.get_mut(&key) {
            p.attempts = p.attempts.saturating_sub(1);
            p.next = p.last + delay(p.attempts, PAIR_FREE);
        }
        if let Some(q) = s.addrs.get_mut(&key.0) {
            q.pop_back();
        }
        if !a.known {
            if let Some(u) = s.users.get_mut(&key.1) {
                u.failures.pop_back();
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The password-hashing pool: its own threads, a bounded queue.
#[derive(Debug)]
pub struct Hasher {
    /// One permit per check running or queued.
    permits: Arc<Semaphore>,
    jobs: Mutex<mpsc::SyncSender<Job>>,
}

/// The pool is full: the check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Hasher {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::sync_channel::<Job>(threads + HASH_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("campusgw-hash-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // Held while waiting: the other thread waits for the lock instead.
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            // The gateway is gone.
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(Self {
            permits: Arc::new(Semaphore::new(threads + HASH_QUEUE)),
            jobs: Mutex::new(tx),
        })
    }

    /// The default pool: two threads, or one on a single core.
    pub fn default_pool() -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(if cores > 2 { 2 } else { 1 })
    }

    /// Runs `f` on a hashing thread, waiting up to `HASH_WAIT` for a place.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let permit = tokio::time::timeout(HASH_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
            drop(permit);
        });
        // Never full: the permits bound the jobs to the channel's capacity.
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_send(job)
            .map_err(|_| Busy)?;
        rx.await.map_err(|_| Busy)
    }
}

/// Hashing yields to everything else on the box (nice +10 needs no privilege).
fn lower_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gettid and setpriority only read and set this thread's nice value.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(r: Result<Attempt, Refused>) -> Duration {
        match r {
            Err(Refused::Wait(w)) => w,
            Ok(_) => panic!("not refused"),
        }
    }

    #[test]
    fn a_burst_from_one_address_gets_three_checks_then_a_growing_delay() {
        let t = Throttle::default();
        let t0 = Instant::now();
        // 150 simultaneous guesses: reserved one after the other under the lock.
        let passed: Vec<Attempt> = (0..150)
            .filter_map(|_| t.reserve("10.0.0.66", "operator", t0).ok())
            .collect();
        assert_eq!(
            passed.len(),
            3,
            "three are checked, the rest refused unhashed"
        );
        // The next one in 1 s, then 2 s, then 4 s.
        assert_eq!(
            wait(t.reserve("10.0.0.66", "operator", t0)),
            Duration::from_secs(1)
        );
        let t1 = t0 + Duration::from_secs(1);
        let _fourth = t.reserve("10.0.0.66", "operator", t1).expect("after 1 s");
        assert_eq!(
            wait(t.reserve("10.0.0.66", "operator", t1)),
            Duration::from_secs(2)
        );
        let t2 = t1 + Duration::from_secs(2);
        let _fifth = t.reserve("10.0.0.66", "operator", t2).expect("after 2 s");
        assert_eq!(
            wait(t.reserve("10.0.0.66", "operator", t2)),
            Duration::from_secs(4)
        );
        // The delay is capped.
        assert_eq!(delay(40, PAIR_FREE), MAX_DELAY);

        // Not a lockout: the real operator at another screen signs in at once.
        let mine = t
            .reserve("10.0.5.20", "operator", t2)
            .expect("another address");
        t.succeeded(mine, t2);
    }

    #[test]
    fn a_known_screen_signs_in_while_guesses_from_many_addresses_are_slowed() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let ok = t.reserve("10.0.5.20", "operator", t0).expect("first");
        t.succeeded(ok, t0);
        // One guess from each of many addresses.
        let mut refused = 0;
        for n in 0..40 {
            if t.reserve(&format!("192.0.2.{n}"), "operator", t0).is_err() {
                refused += 1;
            }
        }
        assert_eq!(
            refused,
            40 - USER_FREE,
            "addresses beyond the tenth are slowed"
        );
        // A new address is slowed too; the known screen is not.
        assert!(t.reserve("198.51.100.1", "operator", t0).is_err());
        let ok = t
            .reserve("10.0.5.20", "operator", t0)
            .expect("the known screen");
        t.succeeded(ok, t0);
        // Known screens survive a restart through the audit log.
        let fresh = Throttle::default();
        fresh.seed_known([("operator".to_owned(), "10.0.5.20".to_owned())], t0);
        for n in 0..USER_FREE {
            let _ = fresh.reserve(&format!("192.0.2.{n}"), "operator", t0);
        }
        assert!(fresh.reserve("198.51.100.1", "operator", t0).is_err());
        assert!(fresh.reserve("10.0.5.20", "operator", t0).is_ok());
    }

    #[test]
    fn one_address_cycling_through_names_is_capped_and_a_refund_gives_back() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for n in 0..ADDR_MAX {
            let _ = t
                .reserve("10.0.0.66", &format!("user{n}"), t0)
                .expect("under the cap");
        }
        assert!(t.reserve("10.0.0.66", "someone", t0).is_err());
        let later = t0 + WINDOW;
        let a = t
            .reserve("10.0.0.66", "someone", later)
            .expect("the window moved on");
        t.refund(a);
        let b = t
            .reserve("10.0.0.66", "someone", later)
            .expect("refunded: no delay");
        t.succeeded(b, later);
    }

    #[tokio::test]
    async fn the_pool_runs_checks_on_its_own_threads_and_says_busy_when_full() {
        let pool = Arc::new(Hasher::new(1).expect("pool"));
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        assert_eq!(name.as_deref(), Some("campusgw-hash-0"));
        // Hold the one thread and the queue; the next check is refused after HASH_WAIT.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let mut held = Vec::new();
        for _ in 0..=HASH_QUEUE {
            let hold = hold.clone();
            let pool = pool.clone();
            held.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = hold.lock().map(|h| h.recv());
                })
                .await
            }));
        }
        while pool.permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.run(|| ()).await, Err(Busy));
        for _ in 0..=HASH_QUEUE {
            let _ = release.send(());
        }
        for h in held {
            assert_eq!(h.await.expect("task"), Ok(()));
        }
    }
}
