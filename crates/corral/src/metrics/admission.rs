//! Who gets one of the endpoint's [`MAX_CONNECTIONS`] connections. The
//! endpoint is unauthenticated and its health probes restart pods when
//! they fail, so a crowd of slow or stuck clients must never keep a probe
//! out. Every connection is accepted at once (none waits in the listen
//! queue behind the crowd); when the table is full, the connection that
//! has been open the longest is closed to admit the newcomer.
//!
//! Why the oldest: a probe or a scrape sends its request at once and is
//! answered within milliseconds, so it is always among the newest; a
//! client that dribbles a request head, or stopped reading, has been
//! there longer than anyone. To close a probe before its answer, a crowd
//! would have to open [`MAX_CONNECTIONS`] connections within those
//! milliseconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The most connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// The open connections, oldest first (by admission number).
#[derive(Default)]
pub(crate) struct Admissions {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: BTreeMap<u64, Arc<Notify>>,
    next: u64,
}

/// One admitted connection; leaves the table when dropped.
pub(crate) struct Admitted {
    table: Arc<Admissions>,
    number: u64,
    /// Notified when the connection must close to admit a newer one.
    pub evicted: Arc<Notify>,
}

impl Admissions {
    /// Admits a connection, evicting the oldest when the table is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let mut state = self.lock();
        while state.open.len() >= MAX_CONNECTIONS {
            let Some((_, oldest)) = state.open.pop_first() else {
                break;
            };
            // Stored as a permit if its task is not waiting yet.
            oldest.notify_one();
        }
        state.next += 1;
        let number = state.next;
        let evicted = Arc::new(Notify::new());
        state.open.insert(number, evicted.clone());
        Admitted {
            table: self.clone(),
            number,
            evicted,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_table_evicts_its_oldest_connection() {
        let table = Arc::new(Admissions::default());
        let first: Vec<Admitted> = (0..MAX_CONNECTIONS).map(|_| table.admit()).collect();
        let newcomer = table.admit();
        assert_eq!(table.lock().open.len(), MAX_CONNECTIONS);
        // The oldest was told (the permit waits for it), the others not.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            first[0].evicted.notified(),
        )
        .await
        .expect("the oldest is evicted");
        assert!(table.lock().open.contains_key(&first[1].number));
        assert!(table.lock().open.contains_key(&newcomer.number));
        drop(first);
        assert_eq!(table.lock().open.len(), 1);
    }
}
