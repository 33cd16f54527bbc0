//! The primary's memory of what happened, for `corral logs`, `corral
//! events` and `corral top`: a bounded ring buffer of output lines (workers'
//! stdout and stderr, and corral's own events in words), the last events,
//! and live feeds of both for clients that follow. Writing never waits: a
//! follower that falls behind misses lines (and is told how many), the
//! cluster never slows down for it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::protocol::{EventRecord, LogLine, LogStream};
use crate::primary::event::Event;

/// Output lines kept for `corral logs`.
pub(crate) const LOG_LINES: usize = 10_000;
/// Bytes of text kept, at most, across those lines.
pub(crate) const LOG_BYTES: usize = 4 << 20;
/// Events kept for `corral top`'s list of recent events.
pub(crate) const RECENT_EVENTS: usize = 100;
/// How far a follower may fall behind before it misses lines.
const FOLLOW_BACKLOG: usize = 4096;

pub(crate) struct Journal {
    kept: Mutex<Kept>,
    live_logs: broadcast::Sender<LogLine>,
    live_events: broadcast::Sender<EventRecord>,
}

#[derive(Default)]
struct Kept {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
    events: VecDeque<EventRecord>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            kept: Mutex::default(),
            live_logs: broadcast::channel(FOLLOW_BACKLOG).0,
            live_events: broadcast::channel(FOLLOW_BACKLOG).0,
        }
    }
}

impl Journal {
    /// Keeps a line a worker wrote.
    pub(crate) fn output(&self, worker: u32, stream: LogStream, text: String) {
        self.keep_line(Some(worker), stream, text);
    }

    /// Keeps an event: in words among the output lines, and as a record
    /// for the events feed.
    pub(crate) fn event(&self, record: EventRecord) {
        self.keep_line(record.worker, LogStream::Corral, record.text.clone());
        let mut kept = self.lock();
        if kept.events.len() == RECENT_EVENTS {
            kept.events.pop_front();
        }
        kept.events.push_back(record.clone());
        drop(kept);
        let _ = self.live_events.send(record);
    }

    fn keep_line(&self, worker: Option<u32>, stream: LogStream, text: String) {
        let mut kept = self.lock();
        let line = LogLine {
            seq: kept.next_seq,
            time: now(),
            worker,
            stream,
            text,
        };
        kept.next_seq += 1;
        kept.bytes += line.text.len();
        kept.lines.push_back(line.clone());
        while kept.lines.len() > LOG_LINES || kept.bytes > LOG_BYTES {
            let Some(old) = kept.lines.pop_front() else {
                break;
            };
            kept.bytes -= old.text.len();
        }
        drop(kept);
        let _ = self.live_logs.send(line);
    }

    /// Where the last `count` lines (of `worker` only, with it) are: the
    /// numbers of the first and the last, to read them with
    /// [`Self::lines_from`] a part at a time; `None` when there are none.
    pub(crate) fn last_lines_span(&self, count: usize, worker: Option<u32>) -> Option<(u64, u64)> {
        let kept = self.lock();
        let mut wanted = kept
            .lines
            .iter()
            .rev()
            .filter(|line| worker.is_none() || line.worker == worker)
            .take(count);
        let last = wanted.next()?.seq;
        let first = wanted.last().map_or(last, |line| line.seq);
        Some((first, last))
    }

    /// Kept lines numbered `first` to `last` (of `worker` only, with it),
    /// oldest first, stopping once they hold `max_bytes` of text (at least
    /// one line). Lines dropped from the buffer since are left out.
    pub(crate) fn lines_from(
        &self,
        first: u64,
        last: u64,
        worker: Option<u32>,
        max_bytes: usize,
    ) -> Vec<LogLine> {
        let kept = self.lock();
        let Some(oldest) = kept.lines.front().map(|line| line.seq) else {
            return Vec::new();
        };
        // Lines are numbered consecutively, so a number is an index.
        let start = usize::try_from(first.saturating_sub(oldest)).unwrap_or(usize::MAX);
        let mut bytes = 0;
        let mut part = Vec::new();
        for line in kept.lines.iter().skip(start) {
            if line.seq > last || (bytes >= max_bytes && !part.is_empty()) {
                break;
            }
            if worker.is_none() || line.worker == worker {
                bytes += line.text.len();
                part.push(line.clone());
            }
        }
        part
    }

    /// The last `count` lines (of `worker` only, with it), oldest first.
    #[cfg(test)]
    pub(crate) fn last_lines(&self, count: usize, worker: Option<u32>) -> Vec<LogLine> {
        let Some((first, last)) = self.last_lines_span(count, worker) else {
            return Vec::new();
        };
        self.lines_from(first, last, worker, usize::MAX)
    }

    /// The last events, oldest first.
    pub(crate) fn recent_events(&self) -> Vec<EventRecord> {
        self.lock().events.iter().cloned().collect()
    }

    pub(crate) fn follow_logs(&self) -> broadcast::Receiver<LogLine> {
        self.live_logs.subscribe()
    }

    pub(crate) fn follow_events(&self) -> broadcast::Receiver<EventRecord> {
        self.live_events.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The record of a lifecycle event, cut from its JSON form; `None` for
/// what is not one (a worker's user message).
pub(crate) fn event_record(event: &Event) -> Option<EventRecord> {
    if let Event::Message { .. } = event {
        return None;
    }
    let parts = event.parts();
    Some(EventRecord {
        time: now(),
        event: parts.name,
        worker: parts.worker,
        pid: parts.pid,
        fields: parts.fields,
        text: event.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn the_buffer_keeps_the_last_lines_in_order() {
        let journal = Journal::default();
        for n in 0..(LOG_LINES + 5) {
            journal.output(1 + (n % 2) as u32, LogStream::Stdout, format!("line {n}"));
        }
        let last = journal.last_lines(3, None);
        let texts: Vec<&str> = last.iter().map(|line| line.text.as_str()).collect();
        let n = LOG_LINES + 5;
        assert_eq!(
            texts,
            [
                format!("line {}", n - 3),
                format!("line {}", n - 2),
                format!("line {}", n - 1)
            ]
        );
        assert_eq!(journal.lock().lines.len(), LOG_LINES);
        let of_worker_1 = journal.last_lines(2, Some(1));
        assert!(of_worker_1.iter().all(|line| line.worker == Some(1)));
        assert!(of_worker_1[0].seq < of_worker_1[1].seq);
    }

    #[test]
    fn the_last_lines_are_read_a_part_at_a_time() {
        let journal = Journal::default();
        for n in 0..100 {
            journal.output(1 + (n % 2) as u32, LogStream::Stdout, format!("{n:04}"));
        }
        let (first, last) = journal.last_lines_span(10, Some(2)).unwrap();
        let mut read = Vec::new();
        let mut next = first;
        loop {
            let part = journal.lines_from(next, last, Some(2), 8);
            let Some(end) = part.last() else { break };
            assert!(part.len() <= 2, "8 bytes hold two lines of 4");
            next = end.seq + 1;
            read.extend(part.into_iter().map(|line| line.text));
        }
        let expected: Vec<String> = (80..100)
            .filter(|n| n % 2 == 1)
            .map(|n| format!("{n:04}"))
            .collect();
        assert_eq!(read, expected);
        assert!(journal.last_lines_span(10, Some(3)).is_none());
    }

    #[test]
    fn the_buffer_is_bounded_in_bytes() {
        let journal = Journal::default();
        for _ in 0..10 {
            journal.output(1, LogStream::Stderr, "x".repeat(LOG_BYTES / 4));
        }
        let kept = journal.lock();
        assert!(kept.bytes <= LOG_BYTES);
        assert_eq!(kept.lines.len(), 4);
    }

    #[test]
    fn events_become_lines_records_and_live_feed_entries() {
        let journal = Journal::default();
        let mut live = journal.follow_events();
        let exit = Event::Exit {
            id: 2,
            pid: 77,
            code: None,
            signal: Some(libc::SIGKILL),
            requested: false,
            ran_for: Duration::from_millis(1500),
        };
        journal.event(event_record(&exit).unwrap());
        let record = live.try_recv().unwrap();
        assert_eq!(record.event, "exit");
        assert_eq!((record.worker, record.pid), (Some(2), Some(77)));
        assert_eq!(record.fields["signal"], "SIGKILL");
        assert_eq!(record.fields["requested"], false);
        let line = &journal.last_lines(1, Some(2))[0];
        assert_eq!(line.stream, LogStream::Corral);
        assert!(
            line.text.contains("exited on signal SIGKILL"),
            "{}",
            line.text
        );
        assert_eq!(journal.recent_events().len(), 1);
        let message = Event::Message {
            id: 1,
            message: json!({"a": 1}),
        };
        assert!(event_record(&message).is_none());
    }
}
