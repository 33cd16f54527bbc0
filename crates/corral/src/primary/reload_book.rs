//! The record of rolling reloads: how many completed and aborted, how the
//! last one ended, and who waits for which one (`corral reload` waits for
//! the reload that includes its request: the one it started, or, asked
//! during one, the next). The supervisor tells it when a reload begins and
//! ends; it answers the waiters.

use std::time::Instant;

use tokio::sync::oneshot;

use crate::control::status::{
    Draining, DurationHistogram, ReloadOutcome, ReloadResult, ReloadStats,
};

/// Told how the reload it waits for ended: `Ok` completed, `Err` aborted.
pub(crate) type ReloadWaiter = oneshot::Sender<Result<ReloadOutcome, ReloadOutcome>>;

#[derive(Default)]
pub(crate) struct ReloadBook {
    completed: u64,
    aborted: u64,
    /// The last reload that ended, and when.
    last: Option<(ReloadOutcome, Instant)>,
    /// The rolling reload under way: when it began, who waits for it.
    current: Option<(Instant, Vec<ReloadWaiter>)>,
    /// Waiters for the next rolling reload.
    next: Vec<ReloadWaiter>,
    /// How long the reloads that ended took (for the metrics).
    durations: DurationHistogram,
}

impl ReloadBook {
    /// `waiter` waits for the next rolling reload to begin and end.
    pub(crate) fn wait_for_next(&mut self, waiter: ReloadWaiter) {
        self.next.push(waiter);
    }

    /// A rolling reload begins: the waiters for the next one wait for it.
    pub(crate) fn begin(&mut self, now: Instant) {
        let waiters = std::mem::take(&mut self.next);
        self.current = Some((now, waiters));
    }

    /// The rolling reload under way replaced every worker; `draining`:
    /// the old workers that have not exited yet.
    pub(crate) fn complete(&mut self, replaced: usize, draining: Draining, now: Instant) {
        let Some((began, waiters)) = self.current.take() else {
            return;
        };
        self.completed += 1;
        let outcome = ReloadOutcome {
            draining,
            ..outcome(ReloadResult::Completed, None, replaced, began, now)
        };
        self.durations.observe(outcome.duration_seconds);
        self.last = Some((outcome.clone(), now));
        for waiter in waiters {
            let _ = waiter.send(Ok(outcome.clone()));
        }
    }

    /// The rolling reload under way was given up (`why`). The reload that
    /// was queued behind it is dropped with it: its waiters hear so.
    pub(crate) fn abort(&mut self, replaced: usize, why: &str, now: Instant) {
        if let Some((began, waiters)) = self.current.take() {
            self.aborted += 1;
            let outcome = outcome(
                ReloadResult::Aborted,
                Some(why.to_string()),
                replaced,
                began,
                now,
            );
            self.durations.observe(outcome.duration_seconds);
            self.last = Some((outcome.clone(), now));
            for waiter in waiters {
                let _ = waiter.send(Err(outcome.clone()));
            }
        }
        let dropped = format!("not started: the reload before it aborted ({why})");
        for waiter in std::mem::take(&mut self.next) {
            let _ = waiter.send(Err(outcome(
                ReloadResult::Aborted,
                Some(dropped.clone()),
                0,
                now,
                now,
            )));
        }
    }

    /// The cluster stops: no reload will end; the waiters are let go (and
    /// told the cluster stopped by their channel closing).
    pub(crate) fn cancel(&mut self) {
        self.current = None;
        self.next.clear();
    }

    pub(crate) fn stats(&self, now: Instant) -> ReloadStats {
        ReloadStats {
            completed: self.completed,
            aborted: self.aborted,
            in_progress: self.current.is_some(),
            last: self.last.as_ref().map(|(outcome, ended)| ReloadOutcome {
                ended_seconds_ago: now.saturating_duration_since(*ended).as_secs_f64(),
                ..outcome.clone()
            }),
            durations: self.durations.clone(),
        }
    }
}

fn outcome(
    result: ReloadResult,
    reason: Option<String>,
    replaced: usize,
    began: Instant,
    ended: Instant,
) -> ReloadOutcome {
    ReloadOutcome {
        result,
        reason,
        replaced,
        duration_seconds: ended.saturating_duration_since(began).as_secs_f64(),
        ended_seconds_ago: 0.0,
        draining: Draining::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiter() -> (
        ReloadWaiter,
        oneshot::Receiver<Result<ReloadOutcome, ReloadOutcome>>,
    ) {
        oneshot::channel()
    }

    #[test]
    fn a_waiter_hears_how_its_reload_ended() {
        let mut book = ReloadBook::default();
        let start = Instant::now();
        let (first, mut first_result) = waiter();
        book.wait_for_next(first);
        book.begin(start);
        assert!(book.stats(start).in_progress);
        // Asked during the first reload: waits for the next one.
        let (second, mut second_result) = waiter();
        book.wait_for_next(second);
        let draining = Draining {
            workers: 2,
            connections: None,
        };
        book.complete(2, draining, start + Duration::from_secs(1));
        let done = first_result.try_recv().unwrap().unwrap();
        assert_eq!((done.result, done.replaced), (ReloadResult::Completed, 2));
        assert_eq!(done.draining, draining);
        assert_eq!(done.duration_seconds, 1.0);
        assert!(second_result.try_recv().is_err(), "not ended yet");
        book.begin(start + Duration::from_secs(2));
        book.abort(
            0,
            "worker 1 exited with code 3",
            start + Duration::from_secs(3),
        );
        let failed = second_result.try_recv().unwrap().unwrap_err();
        assert_eq!(failed.result, ReloadResult::Aborted);
        assert_eq!(
            failed.reason.as_deref(),
            Some("worker 1 exited with code 3")
        );
        let stats = book.stats(start + Duration::from_secs(4));
        assert_eq!(
            (stats.completed, stats.aborted, stats.in_progress),
            (1, 1, false)
        );
        assert_eq!(stats.last.unwrap().ended_seconds_ago, 1.0);
    }

    #[test]
    fn an_abort_drops_the_queued_reload_and_says_so() {
        let mut book = ReloadBook::default();
        let now = Instant::now();
        book.begin(now);
        let (queued, mut result) = waiter();
        book.wait_for_next(queued);
        book.abort(1, "boom", now);
        let dropped = result.try_recv().unwrap().unwrap_err();
        assert!(
            dropped
                .reason
                .unwrap()
                .contains("reload before it aborted (boom)")
        );
    }

    #[test]
    fn cancelling_lets_waiters_go() {
        let mut book = ReloadBook::default();
        let (first, mut result) = waiter();
        book.wait_for_next(first);
        book.begin(Instant::now());
        book.cancel();
        assert!(matches!(
            result.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        // A reload that ends after a cancel changes nothing.
        book.complete(1, Draining::default(), Instant::now());
        assert_eq!(book.stats(Instant::now()).completed, 0);
    }
}
