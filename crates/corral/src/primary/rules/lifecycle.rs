//! A worker process's life, as one state that carries its own data, and
//! the rule for each change. The rule is a plain function
//! ([`Lifecycle::after`]); the supervisor's one transition function applies
//! what it returns to the live table, the balancer and the event stream,
//! so "became ready" or "began to drain" is written once.

use crate::control::status::WorkerState;

/// Where a worker process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Spawned, not ready yet: it gets no connections under a policy that
    /// waits for readiness.
    Starting,
    /// Serving.
    Ready,
    /// Gets no new connections and is to exit when done.
    Draining {
        /// Who began the drain.
        asked_by: Drainer,
        /// It had been ready (a worker that came up and then stopped).
        was_ready: bool,
    },
    /// A Node worker whose grace period ended got SIGTERM; SIGKILL is next
    /// if that does not end it.
    Terminating { was_ready: bool },
}

/// Who began a worker's drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drainer {
    /// The primary asked it to stop (a stop, a reload, a scale-down, a
    /// recycling).
    Primary,
    /// It said it is leaving (a Node worker's `cluster.worker.disconnect()`).
    Itself,
}

/// What can happen to a worker process while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// It said it is ready, or was deemed so (`--ready`).
    BecameReady,
    /// It said it is leaving by itself.
    Leaving,
    /// The primary asks it to stop.
    AskedToStop,
    /// Its grace period ended and it gets SIGTERM before SIGKILL (Node).
    Terminated,
}

impl Lifecycle {
    /// The state after `transition`, or `None` when the transition is no
    /// news (ready twice, a stop asked twice) or too late (ready while
    /// draining): then nothing changes and nothing is announced.
    pub(crate) fn after(self, transition: Transition) -> Option<Lifecycle> {
        use Lifecycle::*;
        let was_ready = self.was_ready();
        match (self, transition) {
            (Starting, Transition::BecameReady) => Some(Ready),
            (Starting | Ready, Transition::Leaving) => Some(Draining {
                asked_by: Drainer::Itself,
                was_ready,
            }),
            // The primary's stop outranks the worker's own leaving: the
            // worker gets the stop message (and a signal) all the same.
            (
                Starting
                | Ready
                | Draining {
                    asked_by: Drainer::Itself,
                    ..
                },
                Transition::AskedToStop,
            ) => Some(Draining {
                asked_by: Drainer::Primary,
                was_ready,
            }),
            (
                Draining {
                    asked_by: Drainer::Primary,
                    ..
                },
                Transition::Terminated,
            ) => Some(Terminating { was_ready }),
            _ => None,
        }
    }

    /// Whether it is ready and not draining.
    pub(crate) fn is_ready(self) -> bool {
        self == Lifecycle::Ready
    }

    /// Whether it said it is ready at some point (draining or not).
    pub(crate) fn was_ready(self) -> bool {
        match self {
            Lifecycle::Starting => false,
            Lifecycle::Ready => true,
            Lifecycle::Draining { was_ready, .. } | Lifecycle::Terminating { was_ready } => {
                was_ready
            }
        }
    }

    /// Whether the primary asked it to stop.
    pub(crate) fn stop_requested(self) -> bool {
        matches!(
            self,
            Lifecycle::Draining {
                asked_by: Drainer::Primary,
                ..
            } | Lifecycle::Terminating { .. }
        )
    }

    /// Whether it drains because it said it is leaving (and was not asked).
    pub(crate) fn left_by_itself(self) -> bool {
        matches!(
            self,
            Lifecycle::Draining {
                asked_by: Drainer::Itself,
                ..
            }
        )
    }

    /// Whether it drains (by itself or asked), and so gets no connections.
    pub(crate) fn is_draining(self) -> bool {
        matches!(
            self,
            Lifecycle::Draining { .. } | Lifecycle::Terminating { .. }
        )
    }

    /// What the live table (the control socket, `Primary::workers`) shows.
    pub(crate) fn shown_as(self) -> WorkerState {
        match self {
            Lifecycle::Starting => WorkerState::Starting,
            Lifecycle::Ready => WorkerState::Ready,
            Lifecycle::Draining { .. } | Lifecycle::Terminating { .. } => WorkerState::Stopping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Drainer::{Itself, Primary};
    use super::Lifecycle::{self, *};
    use super::Transition::{self, *};
    use crate::control::status::WorkerState;

    const fn draining(asked_by: super::Drainer, was_ready: bool) -> Lifecycle {
        Draining {
            asked_by,
            was_ready,
        }
    }

    /// Every state against every transition: what comes after, or `None`.
    #[test]
    fn every_transition_from_every_state() {
        let table: &[(Lifecycle, Transition, Option<Lifecycle>)] = &[
            (Starting, BecameReady, Some(Ready)),
            (Starting, Leaving, Some(draining(Itself, false))),
            (Starting, AskedToStop, Some(draining(Primary, false))),
            (Starting, Terminated, None),
            (Ready, BecameReady, None),
            (Ready, Leaving, Some(draining(Itself, true))),
            (Ready, AskedToStop, Some(draining(Primary, true))),
            (Ready, Terminated, None),
            (draining(Itself, true), BecameReady, None),
            (draining(Itself, true), Leaving, None),
            (
                draining(Itself, true),
                AskedToStop,
                Some(draining(Primary, true)),
            ),
            (draining(Itself, false), Terminated, None),
            (draining(Primary, false), BecameReady, None),
            (draining(Primary, false), Leaving, None),
            (draining(Primary, false), AskedToStop, None),
            (
                draining(Primary, true),
                Terminated,
                Some(Terminating { was_ready: true }),
            ),
            (Terminating { was_ready: true }, BecameReady, None),
            (Terminating { was_ready: true }, Leaving, None),
            (Terminating { was_ready: true }, AskedToStop, None),
            (Terminating { was_ready: true }, Terminated, None),
        ];
        for &(state, transition, expected) in table {
            assert_eq!(
                state.after(transition),
                expected,
                "{state:?} then {transition:?}"
            );
        }
    }

    /// What each state says of the worker, and what the table shows.
    #[test]
    fn each_state_answers_for_itself() {
        // state, ready, was ready, stop requested, left by itself, draining, shown
        let table: &[(Lifecycle, [bool; 5], WorkerState)] = &[
            (Starting, [false; 5], WorkerState::Starting),
            (Ready, [true, true, false, false, false], WorkerState::Ready),
            (
                draining(Itself, true),
                [false, true, false, true, true],
                WorkerState::Stopping,
            ),
            (
                draining(Primary, false),
                [false, false, true, false, true],
                WorkerState::Stopping,
            ),
            (
                Terminating { was_ready: true },
                [false, true, true, false, true],
                WorkerState::Stopping,
            ),
        ];
        for &(state, answers, shown) in table {
            let got = [
                state.is_ready(),
                state.was_ready(),
                state.stop_requested(),
                state.left_by_itself(),
                state.is_draining(),
            ];
            assert_eq!(got, answers, "{state:?}");
            assert_eq!(state.shown_as(), shown, "{state:?}");
        }
    }
}
