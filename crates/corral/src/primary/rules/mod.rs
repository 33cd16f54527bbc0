//! The supervisor's decisions as plain functions and small state machines,
//! tested without a process: a worker's lifecycle, what an exit means, the
//! backoff and crash-loop rules, when a start counts as ready, the rolling
//! reload's plan, the restart record.

pub(crate) mod backoff;
pub(crate) mod crash_loop;
pub(crate) mod exit;
pub(crate) mod lifecycle;
pub(crate) mod ready_plan;
pub(crate) mod reload_plan;
pub(crate) mod restarts;
