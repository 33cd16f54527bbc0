//! Which connections the endpoint keeps. It is unauthenticated and its
//! health probes restart pods when they fail, so a crowd of slow or stuck
//! clients must never keep a probe out. Every connection is accepted at
//! once (none waits in the listen queue behind the crowd), and kept in one
//! of two pools, each with its cap, the oldest closed to make room:
//!
//! * [`MAX_WAITING`] connections that have not sent a whole request head
//!   yet. A slowloris crowd lives here, and a probe passes through in the
//!   moment between its connect and its request: to push it out then, the
//!   crowd would have to open [`MAX_WAITING`] connections within that
//!   moment, not merely keep many open.
//! * [`MAX_SERVED`] connections that sent one: being answered, kept alive
//!   between requests, or stalled writing to a client that does not read.
//!   A probe is answered within milliseconds, so it is among the newest
//!   here; a client that stopped reading has been there longest.
//!
//! The head and write timeouts (see the module above) close the rest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The most connections kept while they send their first request head.
pub(crate) const MAX_WAITING: usize = 256;
/// The most connections kept that sent a request.
pub(crate) const MAX_SERVED: usize = 64;

/// The open connections, oldest first (by admission number).
#[derive(Default)]
pub(crate) struct Admissions {
    state: Mutex<BTreeMap<u64, Entry>>,
    next: Mutex<u64>,
}

struct Entry {
    evict: Arc<Notify>,
    /// It sent a whole request head.
    served: bool,
}

/// One admitted connection; leaves the table when dropped.
pub(crate) struct Admitted {
    table: Arc<Admissions>,
    number: u64,
    /// Notified when the connection must close to make room.
    pub evicted: Arc<Notify>,
}

impl Admissions {
    /// Admits a new connection among the waiting ones.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let number = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            *next += 1;
            *next
        };
        let evicted = Arc::new(Notify::new());
        let mut open = self.lock();
        make_room(&mut open, false, MAX_WAITING);
        open.insert(
            number,
            Entry {
                evict: evicted.clone(),
                served: false,
            },
        );
        Admitted {
            table: self.clone(),
            number,
            evicted,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Admitted {
    /// The connection sent a whole request head: it moves to the served.
    pub(crate) fn served(&self) {
        let mut open = self.table.lock();
        match open.get(&self.number) {
            Some(entry) if !entry.served => {}
            _ => return,
        }
        let Some(mut entry) = open.remove(&self.number) else {
            return;
        };
        make_room(&mut open, true, MAX_SERVED);
        entry.served = true;
        open.insert(self.number, entry);
    }
}

/// Closes the oldest connections of the pool (`served` or waiting) until
/// it has fewer than `cap`.
fn make_room(open: &mut BTreeMap<u64, Entry>, served: bool, cap: usize) {
    let in_pool: Vec<u64> = open
        .iter()
        .filter(|(_, entry)| entry.served == served)
        .map(|(&number, _)| number)
        .collect();
    let excess = (in_pool.len() + 1).saturating_sub(cap);
    for number in in_pool.into_iter().take(excess) {
        if let Some(entry) = open.remove(&number) {
            // Stored as a permit if its task is not waiting yet.
            entry.evict.notify_one();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_open(table: &Admissions, admitted: &Admitted) -> bool {
        table.lock().contains_key(&admitted.number)
    }

    #[tokio::test]
    async fn a_full_pool_evicts_its_oldest_connection() {
        let table = Arc::new(Admissions::default());
        let waiting: Vec<Admitted> = (0..MAX_WAITING).map(|_| table.admit()).collect();
        let newcomer = table.admit();
        assert_eq!(table.lock().len(), MAX_WAITING);
        // The oldest was told (the permit waits for it), the others not.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            waiting[0].evicted.notified(),
        )
        .await
        .expect("the oldest is evicted");
        assert!(is_open(&table, &waiting[1]) && is_open(&table, &newcomer));
        drop(waiting);
        assert_eq!(table.lock().len(), 1);
    }

    #[test]
    fn the_pools_do_not_push_each_other_out() {
        let table = Arc::new(Admissions::default());
        let served: Vec<Admitted> = (0..MAX_SERVED).map(|_| table.admit()).collect();
        for admitted in &served {
            admitted.served();
        }
        // A crowd that never sends a whole head leaves the served alone.
        let crowd: Vec<Admitted> = (0..MAX_WAITING * 2).map(|_| table.admit()).collect();
        assert!(served.iter().all(|admitted| is_open(&table, admitted)));
        assert!(is_open(&table, crowd.last().unwrap()));
        // A probe that sends its head pushes out the oldest served one,
        // not a waiting one.
        let probe = table.admit();
        let oldest_waiting = crowd
            .iter()
            .find(|admitted| is_open(&table, admitted))
            .unwrap();
        probe.served();
        assert!(is_open(&table, &probe) && is_open(&table, oldest_waiting));
        assert!(!is_open(&table, &served[0]) && is_open(&table, &served[1]));
        assert_eq!(table.lock().len(), MAX_WAITING + MAX_SERVED - 1);
    }
}
