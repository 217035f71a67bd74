//! The process-wide journal of repairs: every module that verifies its own files (the image store, snapshots,
//! the spool, the desired store, the native backend) notes here what it found damaged and what it did, and the
//! agent drains the journal into `repair` events and `reported.repairs`. A journal rather than return values,
//! because a repair is found deep inside a call whose caller only wants the result (an image, a snapshot), and
//! because it must reach the controller whichever path found it.
//!
//! Bounded: at most [`MAX_PENDING`] repairs wait to be drained; more are counted, not kept. Knows nothing of what
//! the repairs mean.

use std::sync::Mutex;

use crate::base::Repair;

/// Repairs kept until the agent drains them; later ones only count.
pub(crate) const MAX_PENDING: usize = 256;

struct Journal {
    pending: Vec<Repair>,
    overflow: u64,
    /// Repairs noted since the process started.
    total: usize,
}

#[cfg(not(test))]
static JOURNAL: Mutex<Journal> = Mutex::new(Journal { pending: Vec::new(), overflow: 0, total: 0 });

#[cfg(not(test))]
fn with<T>(f: impl FnOnce(&mut Journal) -> T) -> T {
    f(&mut JOURNAL.lock().unwrap_or_else(|p| p.into_inner()))
}

// Unit tests run in parallel threads of one process: each test sees the repairs its own thread noted.
#[cfg(test)]
thread_local! {
    static JOURNAL: Mutex<Journal> = const { Mutex::new(Journal { pending: Vec::new(), overflow: 0, total: 0 }) };
}

#[cfg(test)]
fn with<T>(f: impl FnOnce(&mut Journal) -> T) -> T {
    JOURNAL.with(|j| f(&mut j.lock().unwrap_or_else(|p| p.into_inner())))
}

/// Notes a repair (also logged as a warning).
pub fn note(repair: Repair) {
    tracing::warn!(subject = %repair.subject, problem = %repair.problem, action = %repair.action,
        lost = repair.lost.as_deref().unwrap_or("-"), "repaired damaged state");
    with(|j| {
        j.total += 1;
        if j.pending.len() < MAX_PENDING {
            j.pending.push(repair);
        } else {
            j.overflow += 1;
        }
    })
}

/// How many repairs were noted since the process started (drained or not).
pub(crate) fn noted() -> usize {
    with(|j| j.total)
}

/// Takes every repair noted since the last call, oldest first, and how many were dropped over the bound.
pub(crate) fn drain() -> (Vec<Repair>, u64) {
    with(|j| (std::mem::take(&mut j.pending), std::mem::take(&mut j.overflow)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noted_repairs_drain_once_in_order() {
        note(Repair::new("journal-test-a", "torn", "dropped"));
        note(Repair::new("journal-test-b", "torn", "dropped").lost("one record"));
        let (got, overflow) = drain();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].subject, "journal-test-a");
        assert_eq!(got[1].lost.as_deref(), Some("one record"));
        assert_eq!(overflow, 0);
        assert!(drain().0.is_empty());
        for i in 0..MAX_PENDING + 3 {
            note(Repair::new(format!("r{i}"), "x", "y"));
        }
        let (got, overflow) = drain();
        assert_eq!((got.len(), overflow), (MAX_PENDING, 3));
    }
}
