//! The control server's connection cap. At most [`MAX_CONNECTIONS`] clients
//! are connected at once; when one more arrives, the connection idle the
//! longest (waiting for a request, not for a reload or streaming) is closed
//! to make room, so a flood of idle connections can never lock an operator
//! out. When every connection is busy, the newcomer is refused.
//!
//! Requests that hold their connection for long (following events or
//! logs, waiting for a reload, sending a long log) take one of at most
//! [`MAX_LONG_LIVED`] places; more are refused. The other places are idle
//! or answering a quick request (`status`, `scale`) for milliseconds, so
//! a newcomer's `status` always finds one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// The most control connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// The most of them held by long requests at once; the rest stay free
/// for quick ones.
pub(crate) const MAX_LONG_LIVED: usize = 48;

/// What the roster knows of one connection.
struct Entry {
    activity: Activity,
    evict: Arc<Notify>,
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// Waiting for a request, since then: may be evicted.
    Idle(Instant),
    /// Answering a quick request.
    Busy,
    /// Answering a long request (a stream, a waited-for reload, a long log).
    LongLived,
}

#[derive(Default)]
pub(crate) struct Roster {
    entries: Mutex<BTreeMap<u64, Entry>>,
    next: Mutex<u64>,
}

/// A connection's place in the roster; leaves it when dropped.
pub(crate) struct Seat {
    roster: Arc<Roster>,
    pub id: u64,
    /// Notified when the connection must close to make room.
    pub evicted: Arc<Notify>,
}

impl Roster {
    /// Seats a new connection, closing the longest-idle one if the roster
    /// is full; `None` when every seat is busy.
    pub(crate) fn seat(self: &Arc<Self>, now: Instant) -> Option<Seat> {
        let mut entries = self.lock();
        if entries.len() >= MAX_CONNECTIONS {
            let idle: Vec<(u64, Instant)> = entries
                .iter()
                .filter_map(|(&id, entry)| match entry.activity {
                    Activity::Idle(since) => Some((id, since)),
                    Activity::Busy | Activity::LongLived => None,
                })
                .collect();
            let victim = longest_idle(&idle)?;
            if let Some(entry) = entries.remove(&victim) {
                entry.evict.notify_one();
            }
        }
        let id = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            *next += 1;
            *next
        };
        let evict = Arc::new(Notify::new());
        entries.insert(
            id,
            Entry {
                activity: Activity::Idle(now),
                evict: evict.clone(),
            },
        );
        Some(Seat {
            roster: self.clone(),
            id,
            evicted: evict,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Seat {
    /// The connection waits for its next request from `now` on.
    pub(crate) fn idle(&self, now: Instant) {
        self.set(Activity::Idle(now));
    }

    /// The connection works on a request: not to be evicted.
    pub(crate) fn busy(&self) {
        self.set(Activity::Busy);
    }

    /// The connection starts a long request, if one of the
    /// [`MAX_LONG_LIVED`] places is free; `false` (and nothing changed)
    /// when none is.
    pub(crate) fn long_lived(&self) -> bool {
        let mut entries = self.roster.lock();
        let held = entries
            .values()
            .filter(|entry| entry.activity == Activity::LongLived)
            .count();
        match entries.get_mut(&self.id) {
            Some(entry) if entry.activity == Activity::LongLived => true,
            Some(entry) if held < MAX_LONG_LIVED => {
                entry.activity = Activity::LongLived;
                true
            }
            _ => false,
        }
    }

    fn set(&self, activity: Activity) {
        if let Some(entry) = self.roster.lock().get_mut(&self.id) {
            entry.activity = activity;
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.roster.lock().remove(&self.id);
    }
}

/// Of (connection, idle since) pairs, the connection idle the longest.
fn longest_idle(idle: &[(u64, Instant)]) -> Option<u64> {
    idle.iter()
        .min_by_key(|(_, since)| *since)
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_roster_evicts_the_longest_idle_connection() {
        let roster = Arc::new(Roster::default());
        let start = Instant::now();
        let seats: Vec<Seat> = (0..MAX_CONNECTIONS)
            .map(|n| {
                roster
                    .seat(start + Duration::from_millis(n as u64))
                    .unwrap()
            })
            .collect();
        // The oldest is busy, so the second oldest goes.
        seats[0].busy();
        let newcomer = roster.seat(start + Duration::from_secs(1)).unwrap();
        assert!(roster.lock().contains_key(&seats[0].id));
        assert!(!roster.lock().contains_key(&seats[1].id));
        assert!(roster.lock().contains_key(&newcomer.id));
        assert_eq!(roster.lock().len(), MAX_CONNECTIONS);
    }

    #[test]
    fn a_roster_of_busy_connections_refuses_newcomers() {
        let roster = Arc::new(Roster::default());
        let now = Instant::now();
        let seats: Vec<Seat> = (0..MAX_CONNECTIONS)
            .map(|_| roster.seat(now).unwrap())
            .collect();
        for seat in &seats {
            seat.busy();
        }
        assert!(roster.seat(now).is_none());
        drop(seats);
        assert!(roster.seat(now).is_some());
    }

    #[test]
    fn long_requests_leave_places_for_quick_ones() {
        let roster = Arc::new(Roster::default());
        let now = Instant::now();
        let seats: Vec<Seat> = (0..MAX_CONNECTIONS)
            .map(|_| roster.seat(now).unwrap())
            .collect();
        let granted = seats.iter().filter(|seat| seat.long_lived()).count();
        assert_eq!(granted, MAX_LONG_LIVED);
        // The refused stay idle: a newcomer evicts one of them.
        let newcomer = roster.seat(now + Duration::from_secs(1)).unwrap();
        assert!(!newcomer.long_lived());
        // A place freed by a long request is granted again.
        drop(seats);
        assert!(newcomer.long_lived());
    }

    #[test]
    fn the_longest_idle_is_the_earliest() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(longest_idle(&[(1, later), (2, now)]), Some(2));
        assert_eq!(longest_idle(&[]), None);
    }
}
