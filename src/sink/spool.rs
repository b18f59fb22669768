//! The disk spool: an append-only, checksummed, size-bounded queue of
//! line-protocol records under `<data_dir>/spool/`, between the pipeline and
//! InfluxDB. It owns the segment files, the read cursor and the backlog
//! accounting; the batcher appends, the InfluxDB writer reads and commits.
//!
//! # Write-ahead, not only on failure
//!
//! Every batch goes through the spool, healthy database or not, and the
//! MQTT messages of a batch are acknowledged once its record is fsynced.
//! The broker lets at most `max_inflight_messages` messages wait for their
//! acknowledgement, so throughput is that window divided by the time a
//! message waits. Measured in the soak benchmark (10,000 devices, 5,000
//! msg/s, this project's 2-core VM): a grouped fdatasync of the spool took
//! 0.3 ms on average (p99 ~3 ms, `campusgw_spool_sync_duration_seconds`),
//! while a write of a 5,000-point batch to InfluxDB took 64–256 ms
//! (`campusgw_write_duration_seconds`), after up to `flush_interval` (1 s)
//! of filling the batch — and forever during an outage. Acknowledging after
//! the database would cap QoS 1 at ~1,000 messages per second with a window
//! of 1,000; spooling only failed batches would need a second
//! acknowledgement path for exactly the moments that matter. Write-ahead
//! costs one sequential write per point (the replay reads back from the page
//! cache) and gives one rule: acknowledged = on disk.
//!
//! # Format
//!
//! Segment files `NNNNNNNNNNNNNNNNNNNN.seg` (a rising number), each a
//! sequence of records: `len: u32 LE | points: u32 LE | crc32: u32 LE |
//! payload[len]`, the CRC (crc32fast) over `points` and the payload (line
//! protocol, one point per line). A segment is closed when it reaches its
//! size; a new one is started at every start, so a torn tail is never
//! written after. `cursor` holds `segment offset` of the first record
//! InfluxDB has not acknowledged; it is replaced by rename and not fsynced:
//! after a power cut it may be behind, which only rewrites points (harmless,
//! a point's identity makes the write idempotent).
//!
//! # Recovery
//!
//! At open every segment is scanned: a record whose length is impossible or
//! whose CRC does not match (a torn write after a power cut, a bad sector)
//! ends its segment there: the rest of that segment is cut off, logged and
//! counted (`campusgw_spool_corrupt_records_total`); the segments after it
//! are read as usual. Appends use positioned writes at the last good end,
//! so a failed write (disk full) leaves no garbage between records.
//!
//! # Full
//!
//! The spool holds at most `gateway.spool_max_mb`. Past it the oldest
//! closed segment is deleted, its unwritten points counted in
//! `campusgw_points_dropped_total{reason="spool_full"}`, logged as an error
//! and shown as the `spool` health component `degraded`, "dropping oldest
//! data", until the backlog is below half the bound. (The alarm engine
//! should raise an alarm on that state.) A disk that is full before the
//! bound is reached is another matter: nothing can be made durable, so
//! nothing is acknowledged; `spool` goes `down` with the cause, the append is
//! retried every second, and the broker keeps the messages meanwhile.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::telemetry::{Health, Metrics, Status};

/// The health component name of the spool.
pub const COMPONENT: &str = "spool";

/// Bytes of a record header.
const HEADER: u64 = 12;

/// A larger length field can only be corruption.
const MAX_RECORD: u64 = 256 * 1024 * 1024;

/// How the spool is set up.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool's directory (`<data_dir>/spool`).
    pub dir: PathBuf,
    /// The most bytes kept on disk; past it the oldest data is dropped.
    pub max_bytes: u64,
    /// A segment is closed at this size.
    pub segment_bytes: u64,
    /// fdatasync every group of appends (off: survives a crash of the
    /// process, not of the machine).
    pub fsync: bool,
}

impl SpoolConfig {
    /// The spool under `data_dir`, bounded by `max_mb`; segments are a
    /// sixteenth of that (256 KiB to 64 MiB), so dropping one loses little.
    pub fn new(data_dir: &Path, max_mb: u64, fsync: bool) -> Self {
        let max_bytes = max_mb.saturating_mul(1024 * 1024);
        Self {
            dir: data_dir.join("spool"),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(256 * 1024, 64 * 1024 * 1024),
            fsync,
        }
    }
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

fn ctx(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The segment's number.
    pub segment: u64,
    /// Bytes from its start.
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of whole, synced records (what a reader may read).
    bytes: u64,
    /// Points in those records.
    points: u64,
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last one is the one being appended to.
    segments: VecDeque<Segment>,
    /// The next record to read.
    read: Position,
    /// Points of `read.segment` before `read`.
    read_points_in_segment: u64,
    /// Everything before it is in InfluxDB.
    committed: Position,
    bytes: u64,
    /// Appended, not yet read into a batch.
    unread_points: u64,
    /// Read into a batch, not yet committed.
    inflight_points: u64,
    /// When the oldest unread point was appended (for `flush_interval`).
    oldest_unread: Option<Instant>,
    /// Dropping for lack of room, until the backlog is below half the bound.
    dropping: bool,
}

/// Points read for one write, and where the spool stands after them.
#[derive(Debug)]
pub struct ReadBatch {
    /// Line protocol, one point per line.
    pub lines: Vec<u8>,
    /// How many points.
    pub points: u64,
    /// Commit this once InfluxDB has them.
    pub end: Position,
}

/// The shared half of the spool: state, reading and committing.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    state: Mutex<State>,
    reader: Mutex<Option<(u64, File)>>,
    /// Woken when a batch is ready for the reader: when the first point
    /// after none becomes readable (its flush timer starts then) and when
    /// `wake_at` points are unread; not at every append, which woke the
    /// InfluxDB writer ~100 times a second at 1,000 msg/s to find no batch.
    appended: Notify,
    /// Unread points that make a batch (`Spool::wake_reader_at`).
    wake_at: AtomicU64,
    /// Set when the appender has finished (shutdown).
    closed: AtomicBool,
    /// Woken when `closed` is set.
    closed_notify: Notify,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The writing half: owns the segment being appended to. One per spool.
#[derive(Debug)]
pub struct Appender {
    spool: Arc<Spool>,
    file: File,
    segment: u64,
    /// Where the next record goes (the end of the last good one).
    offset: u64,
    /// What is synced and visible to the reader.
    synced: u64,
    /// Points appended since the last sync.
    unsynced_points: u64,
    buf: Vec<u8>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn encode_header(buf: &mut Vec<u8>, payload: &[u8], points: u32) {
    let mut h = crc32fast::Hasher::new();
    h.update(&points.to_le_bytes());
    h.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&points.to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
}

/// `(len, points, crc)` of a header.
fn decode_header(h: &[u8; HEADER as usize]) -> (u64, u32, u32) {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    (u64::from(word(0)), word(4), word(8))
}

fn checksum_ok(points: u32, payload: &[u8], crc: u32) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&points.to_le_bytes());
    h.update(payload);
    h.finalize() == crc
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
struct Scan {
    /// End of the last good record.
    good_end: u64,
    points: u64,
    /// Points in records that end at or before `until`.
    points_before: u64,
    /// The end of the last of those records.
    offset_before: u64,
    /// Bytes after `good_end` that do not make a good record.
    bad_bytes: u64,
}

/// Reads a segment record by record, stopping at the first bad one.
fn scan(path: &Path, until: u64) -> io::Result<Scan> {
    let mut file = io::BufReader::with_capacity(1 << 20, File::open(path)?);
    let len = file.get_ref().metadata()?.len();
    let mut s = Scan::default();
    let mut header = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while s.good_end < len {
        if len - s.good_end < HEADER || file.read_exact(&mut header).is_err() {
            break;
        }
        let (n, points, crc) = decode_header(&header);
        if n > MAX_RECORD || s.good_end + HEADER + n > len {
            break;
        }
        payload.resize(n as usize, 0);
        if file.read_exact(&mut payload).is_err() || !checksum_ok(points, &payload, crc) {
            break;
        }
        s.good_end += HEADER + n;
        s.points += u64::from(points);
        if s.good_end <= until {
            s.points_before += u64::from(points);
            s.offset_before = s.good_end;
        }
    }
    s.bad_bytes = len - s.good_end;
    Ok(s)
}

impl Spool {
    /// Opens (or creates) the spool: scans what is there, cuts torn tails,
    /// and starts a new segment for appends. Blocking: call it off the runtime.
    pub fn open(
        cfg: SpoolConfig,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<(Arc<Spool>, Appender), SpoolError> {
        fs::create_dir_all(&cfg.dir).map_err(ctx(&cfg.dir))?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(ctx(&cfg.dir))? {
            let entry = entry.map_err(ctx(&cfg.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let cursor_path = cfg.dir.join("cursor");
        let cursor = match fs::read_to_string(&cursor_path) {
            Ok(text) => parse_cursor(&text).or_else(|| {
                warn!(path = %cursor_path.display(), "The spool cursor is unreadable; replaying from the oldest segment.");
                None
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ctx(&cursor_path)(e)),
        };
        let start = cursor.unwrap_or(Position {
            segment: ids.first().copied().unwrap_or(0),
            offset: 0,
        });

        let mut segments = VecDeque::new();
        // Where reading starts: the first record not in InfluxDB.
        let mut read: Option<(Position, u64)> = None;
        let mut unread_points = 0;
        let mut bytes = 0;
        for id in &ids {
            let path = segment_path(&cfg.dir, *id);
            if *id < start.segment {
                // Everything in it is in InfluxDB already.
                fs::remove_file(&path).map_err(ctx(&path))?;
                continue;
            }
            let until = if *id == start.segment {
                start.offset
            } else {
                0
            };
            let s = scan(&path, until).map_err(ctx(&path))?;
            if s.bad_bytes > 0 {
                metrics.spool_corrupt_records.inc();
                warn!(segment = %path.display(), good_bytes = s.good_end, cut_bytes = s.bad_bytes,
                    "A torn or corrupt record in the spool (a power cut during a write?): the rest of this segment is skipped.");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(ctx(&path))?;
                f.set_len(s.good_end).map_err(ctx(&path))?;
            }
            if s.good_end == s.offset_before {
                // Empty, or entirely in InfluxDB already.
                fs::remove_file(&path).map_err(ctx(&path))?;
                continue;
            }
            if read.is_none() {
                read = Some((
                    Position {
                        segment: *id,
                        offset: s.offset_before,
                    },
                    s.points_before,
                ));
            }
            unread_points += s.points - s.points_before;
            bytes += s.good_end;
            segments.push_back(Segment {
                id: *id,
                bytes: s.good_end,
                points: s.points,
            });
        }

        let active = ids.last().copied().unwrap_or(0).max(start.segment) + 1;
        let path = segment_path(&cfg.dir, active);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ctx(&path))?;
        sync_dir(&cfg.dir).map_err(ctx(&cfg.dir))?;
        segments.push_back(Segment {
            id: active,
            bytes: 0,
            points: 0,
        });
        let (read, read_points_in_segment) = read.unwrap_or((
            Position {
                segment: active,
                offset: 0,
            },
            0,
        ));
        if unread_points > 0 {
            info!(
                points = unread_points,
                bytes, "The spool holds points not yet in InfluxDB; they are written first."
            );
        }
        metrics.spool_bytes.set(bytes as i64);
        metrics.spool_points.set(unread_points as i64);
        health.set(COMPONENT, Status::Ok, Some(cfg.dir.display().to_string()));
        let spool = Arc::new(Spool {
            state: Mutex::new(State {
                segments,
                read,
                read_points_in_segment,
                committed: read,
                bytes,
                unread_points,
                inflight_points: 0,
                // A replay is due at once.
                oldest_unread: (unread_points > 0).then(long_ago),
                dropping: false,
            }),
            reader: Mutex::new(None),
            appended: Notify::new(),
            wake_at: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            metrics,
            health,
            cfg,
        });
        let appender = Appender {
            spool: spool.clone(),
            file,
            segment: active,
            offset: 0,
            synced: 0,
            unsynced_points: 0,
            buf: Vec::new(),
        };
        Ok((spool, appender))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Points appended and not yet read, and when the oldest of them came.
    pub fn unread(&self) -> (u64, Option<Instant>) {
        let s = self.state();
        (s.unread_points, s.oldest_unread)
    }

    /// Points not yet in InfluxDB (unread and in flight).
    pub fn backlog_points(&self) -> u64 {
        let s = self.state();
        s.unread_points + s.inflight_points
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }

    /// The reader wants waking when `points` are unread (its batch size),
    /// besides at the first point after none and at the close. Until it
    /// says so, every append wakes it.
    pub fn wake_reader_at(&self, points: u64) {
        self.wake_at.store(points.max(1), Ordering::Relaxed);
    }

    /// Waits until a batch may be ready: the first point after none, a
    /// batch's worth (`wake_reader_at`), or the appender's close. The
    /// reader checks `unread` before waiting; a wake-up in between is kept.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Whether the appender has finished: nothing more will be appended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the appender has finished.
    pub async fn wait_closed(&self) {
        let notified = self.closed_notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a close in between is not missed.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    fn publish_gauges(&self, s: &State) {
        self.metrics.spool_bytes.set(s.bytes as i64);
        self.metrics
            .spool_points
            .set((s.unread_points + s.inflight_points) as i64);
    }

    /// Reads the next records, at least one and then as many as fit in
    /// `max_points`. `None` when nothing is unread. Blocking.
    ///
    /// It holds the state lock while reading (from the page cache, mostly),
    /// so that dropping the oldest data never races a read.
    pub fn read_batch(&self, max_points: u64) -> io::Result<Option<ReadBatch>> {
        let mut s = self.state();
        let mut lines = Vec::new();
        let mut points = 0u64;
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some(seg) = s.segments.iter().find(|g| g.id == s.read.segment) else {
                // Its segment is gone (written and deleted): on to the next one.
                match s.segments.iter().find(|g| g.id > s.read.segment) {
                    Some(next) => {
                        s.read = Position {
                            segment: next.id,
                            offset: 0,
                        };
                        s.read_points_in_segment = 0;
                        continue;
                    }
                    None => break,
                }
            };
            let (seg_id, seg_bytes, seg_points) = (seg.id, seg.bytes, seg.points);
            let last = s.segments.back().is_some_and(|g| g.id == seg_id);
            if s.read.offset >= seg_bytes {
                if last {
                    break;
                }
                // On to the next segment.
                let next = s
                    .segments
                    .iter()
                    .find(|g| g.id > seg_id)
                    .map_or(seg_id + 1, |g| g.id);
                s.read = Position {
                    segment: next,
                    offset: 0,
                };
                s.read_points_in_segment = 0;
                continue;
            }
            if !matches!(&*reader, Some((id, _)) if *id == seg_id) {
                let path = segment_path(&self.cfg.dir, seg_id);
                *reader = Some((seg_id, File::open(&path)?));
            }
            let Some((_, file)) = reader.as_ref() else {
                break;
            };
            let mut header = [0u8; HEADER as usize];
            let good = file.read_exact_at(&mut header, s.read.offset).is_ok();
            let (n, p, crc) = decode_header(&header);
            let fits = good && n <= MAX_RECORD && s.read.offset + HEADER + n <= seg_bytes;
            if fits && points > 0 && points + u64::from(p) > max_points {
                break;
            }
            let start = lines.len();
            let ok = fits && {
                lines.resize(start + n as usize, 0);
                file.read_exact_at(&mut lines[start..], s.read.offset + HEADER)
                    .is_ok()
                    && checksum_ok(p, &lines[start..], crc)
            };
            if !ok {
                // Only a disk fault gets here: the records were checked when written or at open.
                lines.truncate(start);
                let lost = seg_points.saturating_sub(s.read_points_in_segment);
                self.metrics.spool_corrupt_records.inc();
                self.metrics.drop_points("spool_corrupt", lost);
                error!(
                    segment = seg_id,
                    offset = s.read.offset,
                    points = lost,
                    "A spool record cannot be read back; the rest of its segment is skipped."
                );
                s.unread_points = s.unread_points.saturating_sub(lost);
                s.read.offset = seg_bytes;
                s.read_points_in_segment = seg_points;
                if last {
                    break;
                }
                continue;
            }
            s.read.offset += HEADER + n;
            s.read_points_in_segment += u64::from(p);
            points += u64::from(p);
            if points >= max_points {
                break;
            }
        }
        if points == 0 {
            if s.unread_points > 0 {
                // Nothing readable is left: the count must follow, or the
                // writer would keep asking.
                warn!(
                    points = s.unread_points,
                    "The spool's unread count did not match its records; corrected."
                );
                s.unread_points = 0;
                self.publish_gauges(&s);
            }
            s.oldest_unread = None;
            return Ok(None);
        }
        s.unread_points = s.unread_points.saturating_sub(points);
        s.inflight_points += points;
        // What is left is a backlog: due at once.
        s.oldest_unread = (s.unread_points > 0).then(long_ago);
        Ok(Some(ReadBatch {
            lines,
            points,
            end: s.read,
        }))
    }

    /// InfluxDB has the batch read up to `end`: moves the cursor, deletes
    /// segments left behind, and saves the cursor. Blocking.
    pub fn commit(&self, end: Position, points: u64) -> io::Result<()> {
        let mut s = self.state();
        s.inflight_points = s.inflight_points.saturating_sub(points);
        if end > s.committed {
            s.committed = end;
        }
        let committed = s.committed;
        let removed = cleanup(&mut s);
        if s.dropping && s.bytes < self.cfg.max_bytes / 2 {
            s.dropping = false;
            self.health.set(
                COMPONENT,
                Status::Ok,
                Some("recovered from dropping the oldest data (see campusgw_points_dropped_total{reason=\"spool_full\"})".into()),
            );
            info!("The spool has room again: no more data is dropped.");
        }
        self.publish_gauges(&s);
        drop(s);
        self.remove_segments(removed);
        // Not fsynced: a cursor that is behind after a power cut only rewrites points.
        let tmp = self.cfg.dir.join("cursor.tmp");
        fs::write(
            &tmp,
            format!("{} {}\n", committed.segment, committed.offset),
        )?;
        fs::rename(&tmp, self.cfg.dir.join("cursor"))
    }

    fn remove_segments(&self, ids: Vec<u64>) {
        {
            // An open handle would keep a deleted segment's disk space.
            let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(&*reader, Some((id, _)) if ids.contains(id)) {
                *reader = None;
            }
        }
        for id in ids {
            let path = segment_path(&self.cfg.dir, id);
            if let Err(e) = fs::remove_file(&path) {
                warn!(segment = %path.display(), error = %e, "Cannot delete a written spool segment.");
            }
        }
    }

    /// Drops the oldest closed segments while the spool is over its bound.
    fn enforce_bound(&self, s: &mut State) {
        while s.bytes > self.cfg.max_bytes && s.segments.len() > 1 {
            let Some(g) = s.segments.pop_front() else {
                break;
            };
            let lost = match g.id.cmp(&s.read.segment) {
                // Read into a batch already: it is being written.
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => g.points.saturating_sub(s.read_points_in_segment),
                std::cmp::Ordering::Greater => g.points,
            };
            if g.id >= s.read.segment {
                let next = s.segments.front().map_or(g.id + 1, |n| n.id);
                s.read = Position {
                    segment: next,
                    offset: 0,
                };
                s.read_points_in_segment = 0;
            }
            if s.committed.segment <= g.id {
                s.committed = s.read.min(Position {
                    segment: s.segments.front().map_or(g.id + 1, |n| n.id),
                    offset: 0,
                });
            }
            s.bytes -= g.bytes;
            s.unread_points = s.unread_points.saturating_sub(lost);
            self.metrics.drop_points("spool_full", lost);
            self.remove_segments(vec![g.id]);
            if !s.dropping {
                s.dropping = true;
                self.health.set(
                    COMPONENT,
                    Status::Degraded,
                    Some(format!(
                        "dropping oldest data: the spool is over gateway.spool_max_mb ({} MB) while InfluxDB is behind",
                        self.cfg.max_bytes / (1024 * 1024)
                    )),
                );
            }
            error!(points = lost, max_mb = self.cfg.max_bytes / (1024 * 1024), "The spool is full: the oldest data is dropped. InfluxDB has been unreachable or slow for too long.");
        }
    }
}

/// Takes the closed segments InfluxDB has entirely off the list; returns their ids.
fn cleanup(s: &mut State) -> Vec<u64> {
    let committed = s.committed;
    let mut removed = Vec::new();
    while s.segments.len() > 1 {
        let Some(g) = s.segments.front() else { break };
        let done =
            g.id < committed.segment || (g.id == committed.segment && committed.offset >= g.bytes);
        if !done {
            break;
        }
        if let Some(g) = s.segments.pop_front() {
            s.bytes -= g.bytes;
            removed.push(g.id);
        }
    }
    removed
}

/// An instant older than any `flush_interval`: "due now".
fn long_ago() -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(3_600)).unwrap_or(now)
}

fn parse_cursor(text: &str) -> Option<Position> {
    let mut it = text.split_whitespace();
    let segment = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    Some(Position { segment, offset })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Appender {
    /// The shared half.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Writes one record after the last good one (not yet durable nor
    /// visible: call [`Appender::sync`]). Starts a new segment when this one is full.
    pub fn append(&mut self, payload: &[u8], points: u32) -> io::Result<()> {
        let size = HEADER + payload.len() as u64;
        if self.offset > 0 && self.offset + size > self.spool.cfg.segment_bytes {
            self.rotate()?;
        }
        self.buf.clear();
        encode_header(&mut self.buf, payload, points);
        self.buf.extend_from_slice(payload);
        // Positioned: a failed write leaves nothing that a later one does not overwrite.
        self.file.write_all_at(&self.buf, self.offset)?;
        self.offset += size;
        self.unsynced_points += u64::from(points);
        Ok(())
    }

    /// Forgets the appends since the last sync (after a failed append or
    /// sync): they will be appended again.
    pub fn rollback(&mut self) {
        self.offset = self.synced;
        self.unsynced_points = 0;
        // Give back what a half-done write took (on a full disk it matters).
        let _ = self.file.set_len(self.synced);
    }

    /// After a failed append: if the segment being appended to holds data,
    /// closes it, so that once InfluxDB has its data it can be deleted and
    /// its room reused (on a disk smaller than a segment, nothing else would
    /// free it).
    pub fn make_room(&mut self) {
        if self.synced > 0 {
            if let Err(e) = self.rotate() {
                warn!(error = %e, "Cannot start a new spool segment.");
            }
        }
    }

    /// Makes the appends durable (fdatasync when configured) and readable,
    /// then enforces the size bound.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.offset == self.synced {
            return Ok(());
        }
        if self.spool.cfg.fsync {
            let started = Instant::now();
            self.file.sync_data()?;
            self.spool
                .metrics
                .spool_sync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let added = self.offset - self.synced;
        let points = self.unsynced_points;
        self.synced = self.offset;
        self.unsynced_points = 0;
        let mut s = self.spool.state();
        if let Some(g) = s.segments.back_mut() {
            g.bytes += added;
            g.points += points;
        }
        s.bytes += added;
        let before = s.unread_points;
        if before == 0 {
            s.oldest_unread = Some(Instant::now());
        }
        s.unread_points += points;
        let wake_at = self.spool.wake_at.load(Ordering::Relaxed);
        let wake = before == 0 || (before < wake_at && s.unread_points >= wake_at);
        self.spool.enforce_bound(&mut s);
        self.spool.publish_gauges(&s);
        drop(s);
        if wake {
            self.spool.appended.notify_one();
        }
        Ok(())
    }

    /// Closes the full segment and starts the next one.
    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let id = self.segment + 1;
        let path = segment_path(&self.spool.cfg.dir, id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        // The new name must survive a power cut too.
        sync_dir(&self.spool.cfg.dir)?;
        let _ = self.file.set_len(self.synced);
        self.file = file;
        self.segment = id;
        self.offset = 0;
        self.synced = 0;
        let mut s = self.spool.state();
        s.segments.push_back(Segment {
            id,
            bytes: 0,
            points: 0,
        });
        let removed = cleanup(&mut s);
        self.spool.publish_gauges(&s);
        drop(s);
        self.spool.remove_segments(removed);
        Ok(())
    }

    /// Nothing more will be appended: wakes the reader so it can finish.
    pub fn close(self) {
        self.spool.closed.store(true, Ordering::Release);
        self.spool.closed_notify.notify_waiters();
        self.spool.appended.notify_one();
    }
}

/// A short cause for an I/O error of the spool, for logs and `/healthz`.
pub fn describe(e: &io::Error) -> String {
    if e.raw_os_error() == Some(28) {
        "the disk of gateway.data_dir is full (ENOSPC): nothing can be spooled, so nothing is acknowledged; free space or raise the disk".into()
    } else {
        format!("cannot write the spool: {e}")
    }
}

/// Sleeps `d` unless `stop` is set first (checked every 50 ms).
pub fn sleep_unless(d: Duration, stop: &tokio_util::sync::CancellationToken) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.is_cancelled() {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max_mb: u64) -> (Arc<Spool>, Appender) {
        let mut cfg = SpoolConfig::new(dir, max_mb, true);
        cfg.segment_bytes = 4096;
        Spool::open(cfg, Arc::new(Metrics::new()), Arc::new(Health::default())).expect("open")
    }

    fn record(i: u32) -> String {
        format!("smoke,device=d{i} temp_c={i}.0 {}\n", 1_000_000 + i)
    }

    fn drain(spool: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = spool.read_batch(7).expect("read") {
            out.extend(
                String::from_utf8(b.lines)
                    .expect("utf8")
                    .lines()
                    .map(str::to_owned),
            );
            spool.commit(b.end, b.points).expect("commit");
        }
        out
    }

    fn expected(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| record(i).trim_end().to_owned()).collect()
    }

    #[test]
    fn the_reader_is_woken_for_a_batch_not_for_every_append() {
        use futures_util::FutureExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let (spool, mut app) = open(dir.path(), 1);
        spool.wake_reader_at(10);
        let mut add = |n: u32| {
            for i in 0..n {
                app.append(record(i).as_bytes(), 1).expect("append");
            }
            app.sync().expect("sync");
        };
        // The first point starts the reader's flush timer.
        add(1);
        assert!(spool.appended().now_or_never().is_some());
        add(5);
        assert!(spool.appended().now_or_never().is_none(), "6 of 10");
        add(4);
        assert!(spool.appended().now_or_never().is_some(), "a batch");
        add(3);
        assert!(spool.appended().now_or_never().is_none(), "past it already");
        // Read: the next point is a first one again.
        while spool.read_batch(100).expect("read").is_some() {}
        add(1);
        assert!(spool.appended().now_or_never().is_some());
        app.close();
        assert!(spool.appended().now_or_never().is_some(), "the close");
    }

    #[test]
    fn appends_are_read_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (spool, mut app) = open(dir.path(), 1);
            for i in 0..200 {
                app.append(record(i).as_bytes(), 1).expect("append");
                if i % 10 == 9 {
                    app.sync().expect("sync");
                }
            }
            assert_eq!(spool.backlog_points(), 200);
            // Read half, then "crash".
            let mut got = Vec::new();
            while got.len() < 100 {
                let b = spool.read_batch(10).expect("read").expect("batch");
                got.extend(
                    String::from_utf8(b.lines)
                        .expect("utf8")
                        .lines()
                        .map(str::to_owned),
                );
                spool.commit(b.end, b.points).expect("commit");
            }
            assert_eq!(got, expected(0..100));
        }
        let (spool, mut app) = open(dir.path(), 1);
        assert_eq!(spool.backlog_points(), 100);
        app.append(record(200).as_bytes(), 1).expect("append");
        app.sync().expect("sync");
        assert_eq!(drain(&spool), expected(100..201));
        drop(app);
        // Everything written: a restart finds nothing to replay.
        let (spool, _app) = open(dir.path(), 1);
        assert_eq!(spool.backlog_points(), 0);
        assert!(spool.read_batch(10).expect("read").is_none());
    }

    #[test]
    fn a_torn_last_record_is_cut_and_the_rest_survives() {
        let dir = tempfile::tempdir().expect("tmp");
        let seg;
        {
            let (_spool, mut app) = open(dir.path(), 1);
            for i in 0..5 {
                app.append(record(i).as_bytes(), 1).expect("append");
            }
            app.sync().expect("sync");
            seg = segment_path(&dir.path().join("spool"), app.segment);
        }
        // Half a record, as a power cut in the middle of a write leaves it.
        let mut half = Vec::new();
        encode_header(&mut half, record(5).as_bytes(), 1);
        half.extend_from_slice(&record(5).as_bytes()[..10]);
        let mut bytes = fs::read(&seg).expect("read");
        bytes.extend_from_slice(&half);
        fs::write(&seg, &bytes).expect("write");

        let metrics = Arc::new(Metrics::new());
        let mut cfg = SpoolConfig::new(dir.path(), 1, true);
        cfg.segment_bytes = 4096;
        let (spool, mut app) =
            Spool::open(cfg, metrics.clone(), Arc::new(Health::default())).expect("open");
        assert_eq!(metrics.spool_corrupt_records.get(), 1);
        app.append(record(6).as_bytes(), 1).expect("append");
        app.sync().expect("sync");
        let mut want = expected(0..5);
        want.push(record(6).trim_end().to_owned());
        assert_eq!(drain(&spool), want);
    }

    #[test]
    fn a_corrupt_record_skips_only_its_segment() {
        let dir = tempfile::tempdir().expect("tmp");
        let first;
        {
            let (_spool, mut app) = open(dir.path(), 1);
            first = app.segment;
            // Fill more than one 4 KiB segment.
            for i in 0..150 {
                app.append(record(i).as_bytes(), 1).expect("append");
                app.sync().expect("sync");
            }
            assert!(app.segment > first);
        }
        let seg = segment_path(&dir.path().join("spool"), first);
        let mut bytes = fs::read(&seg).expect("read");
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        fs::write(&seg, &bytes).expect("write");
        let (spool, _app) = open(dir.path(), 1);
        let got = drain(&spool);
        // Records before the flipped byte and every later segment survive.
        assert!(got.len() > 100 && got.len() < 150, "{}", got.len());
        assert_eq!(got.last(), Some(&record(149).trim_end().to_owned()));
        let mut sorted = got.clone();
        sorted.sort_by_key(|l| l.split(' ').nth(2).map(str::to_owned));
        assert_eq!(got, sorted, "still in order");
    }

    /// A 16 KiB spool of 4 KiB segments, to fill quickly.
    fn small_spool(dir: &Path) -> (Arc<Spool>, Appender, Arc<Metrics>, Arc<Health>) {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let mut cfg = SpoolConfig::new(dir, 1, false);
        cfg.max_bytes = 16 * 1024;
        cfg.segment_bytes = 4 * 1024;
        let (spool, app) = Spool::open(cfg, metrics.clone(), health.clone()).expect("open");
        (spool, app, metrics, health)
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (spool, mut app, metrics, health) = small_spool(dir.path());
        let n = 2_000u32;
        for i in 0..n {
            app.append(record(i).as_bytes(), 1).expect("append");
            app.sync().expect("sync");
        }
        assert!(spool.bytes() <= 16 * 1024, "bounded: {}", spool.bytes());
        let got = drain(&spool);
        let dropped = metrics.dropped("spool_full");
        assert!(dropped > 0);
        assert_eq!(
            got.len() as u64 + dropped,
            u64::from(n),
            "every point written or counted"
        );
        assert_eq!(
            got.last(),
            Some(&record(n - 1).trim_end().to_owned()),
            "the newest kept"
        );
        assert_eq!(
            health.status(COMPONENT),
            Some(Status::Ok),
            "recovered once drained"
        );
    }

    #[test]
    fn dropping_while_reading_counts_only_unread_points() {
        let dir = tempfile::tempdir().expect("tmp");
        let (spool, mut app, metrics, health) = small_spool(dir.path());
        let mut written = 0u64;
        for i in 0..3_000u32 {
            app.append(record(i).as_bytes(), 1).expect("append");
            app.sync().expect("sync");
            if i % 50 == 0 {
                // A slow reader: one small batch now and then, committed later.
                if let Some(b) = spool.read_batch(3).expect("read") {
                    written += b.points;
                    spool.commit(b.end, b.points).expect("commit");
                }
            }
        }
        assert_eq!(health.status(COMPONENT), Some(Status::Degraded));
        written += drain(&spool).len() as u64;
        assert_eq!(written + metrics.dropped("spool_full"), 3_000);
    }
}
