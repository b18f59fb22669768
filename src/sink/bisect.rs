//! Finding the lines a database refuses in a batch it refused.
//!
//! One device's bad point (a name line protocol cannot carry, a field whose
//! type changed) makes InfluxDB answer 400 to the whole batch, up to
//! `batch_size` points of every device. Dropping the batch would drop them
//! all; retrying it would be refused forever. So the batch is split in
//! halves, each half is written, and a refused half is split again, until
//! what is refused is single lines: only those are given up.
//!
//! A refused part may still have been stored in part (InfluxDB 1.x writes
//! the good lines of a body and answers 400 "partial write"): its good lines
//! are written again in a smaller part, which rewrites the same points
//! (measurement, tags and time are a point's identity), so each good point is
//! stored, and counted as written, once. For one bad line among n this costs
//! about 2·log2(n) requests (26 for 5,000 points).
//!
//! Pure: the write is passed in, so the splitting is tested without a server.

use std::future::Future;

/// The outcome of writing one part.
#[derive(Debug)]
pub enum Attempt<E> {
    /// The database has it.
    Stored,
    /// The database refuses it for good (400, 413, 422).
    Refused(E),
    /// Shutdown: stop here, the spool keeps the batch.
    GaveUp,
}

/// The lines a database refused, each with its answer.
pub type Refused<'a, E> = Vec<(&'a [u8], E)>;

/// Writes the parts of `lines` (whole lines ending in `\n`, one point each),
/// a batch the database refused as a whole, splitting every refused part in
/// two. Returns the single lines it still refused, in order, or `None` when
/// `write` gave up.
pub async fn bisect<'a, E, F, Fut>(lines: &'a [u8], mut write: F) -> Option<Refused<'a, E>>
where
    F: FnMut(&'a [u8]) -> Fut,
    Fut: Future<Output = Attempt<E>>,
{
    let mut refused = Vec::new();
    // A stack, the first half on top, so parts are written in batch order.
    let mut parts: Vec<&'a [u8]> = Vec::new();
    push_halves(lines, &mut parts);
    while let Some(part) = parts.pop() {
        match write(part).await {
            Attempt::Stored => {}
            Attempt::GaveUp => return None,
            Attempt::Refused(e) => {
                if line_count(part) <= 1 {
                    refused.push((part, e));
                } else {
                    push_halves(part, &mut parts);
                }
            }
        }
    }
    Some(refused)
}

/// How many lines `part` holds.
pub fn line_count(part: &[u8]) -> usize {
    let ends = part.iter().filter(|b| **b == b'\n').count();
    ends + usize::from(part.last().is_some_and(|b| *b != b'\n'))
}

/// Pushes the two halves of `part` (by lines): the second, then the first.
/// A single line is pushed as it is.
fn push_halves<'a>(part: &'a [u8], parts: &mut Vec<&'a [u8]>) {
    let n = line_count(part);
    if n <= 1 {
        if !part.is_empty() {
            parts.push(part);
        }
        return;
    }
    // The end of line n/2: the split point, just after its newline.
    let mut seen = 0;
    let mut split = part.len();
    for (i, b) in part.iter().enumerate() {
        if *b == b'\n' {
            seen += 1;
            if seen == n / 2 {
                split = i + 1;
                break;
            }
        }
    }
    let (first, second) = part.split_at(split);
    parts.push(second);
    parts.push(first);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A database that refuses any part holding a line with `bad`, and
    /// (like InfluxDB 1.x) stores the other lines of a refused part too.
    fn run(lines: &str) -> (Vec<String>, Vec<String>, usize) {
        let stored = RefCell::new(Vec::new());
        let requests = RefCell::new(0);
        let refused = futures_util::FutureExt::now_or_never(bisect(lines.as_bytes(), |part| {
            *requests.borrow_mut() += 1;
            let text = std::str::from_utf8(part).expect("utf-8");
            let bad = text.lines().any(|l| l.contains("bad"));
            stored.borrow_mut().extend(
                text.lines()
                    .filter(|l| !l.contains("bad"))
                    .map(str::to_owned),
            );
            std::future::ready(if bad {
                Attempt::Refused("400 partial write")
            } else {
                Attempt::Stored
            })
        }))
        .expect("no waiting")
        .expect("not given up");
        let refused = refused
            .into_iter()
            .map(|(l, e)| {
                assert_eq!(e, "400 partial write");
                String::from_utf8(l.to_vec()).expect("utf-8")
            })
            .collect();
        let mut stored = stored.into_inner();
        stored.sort();
        stored.dedup();
        (refused, stored, requests.into_inner())
    }

    fn batch(n: usize, bad: &[usize]) -> String {
        (0..n)
            .map(|i| {
                if bad.contains(&i) {
                    format!("smoke,device=d{i} bad name=1 {i}\n")
                } else {
                    format!("smoke,device=d{i} temp_c=1 {i}\n")
                }
            })
            .collect()
    }

    #[test]
    fn only_the_refused_lines_are_given_up_and_every_other_is_stored() {
        for (n, bad) in [
            (5000, vec![2500]),
            (5000, vec![0, 4999]),
            (7, vec![1, 2, 3]),
            (2, vec![0, 1]),
            (1, vec![0]),
            (100, (0..100).step_by(7).collect()),
        ] {
            let (refused, stored, requests) = run(&batch(n, &bad));
            let want: Vec<String> = bad
                .iter()
                .map(|i| format!("smoke,device=d{i} bad name=1 {i}\n"))
                .collect();
            assert_eq!(refused, want, "n = {n}");
            assert_eq!(
                stored.len(),
                n - bad.len(),
                "n = {n}: every good line stored"
            );
            if bad.len() == 1 && n == 5000 {
                assert!(requests <= 2 * 13, "{requests} requests for one bad line");
            }
        }
    }

    #[test]
    fn a_shutdown_stops_the_search() {
        let lines = batch(8, &[3]);
        let mut calls = 0;
        let out = futures_util::FutureExt::now_or_never(bisect(lines.as_bytes(), |_| {
            calls += 1;
            std::future::ready(if calls == 2 {
                Attempt::<()>::GaveUp
            } else {
                Attempt::Stored
            })
        }))
        .expect("no waiting");
        assert!(out.is_none());
        assert_eq!(calls, 2);
    }

    #[test]
    fn lines_are_counted_with_or_without_a_last_newline() {
        assert_eq!(line_count(b""), 0);
        assert_eq!(line_count(b"a\n"), 1);
        assert_eq!(line_count(b"a\nb"), 2);
        assert_eq!(line_count(b"a\nb\n"), 2);
    }
}
