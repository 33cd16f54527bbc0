//! The primary's traffic with its workers: spawning them, their channels
//! (the outbox to each, the messages from each), their output, the
//! supervisor's inbox of notices, the live table of workers and the user's
//! `Primary` handle over it.

pub(crate) mod app_metrics;
pub(crate) mod handle;
pub(crate) mod live_table;
pub(crate) mod messages;
pub(crate) mod notice;
pub(crate) mod outbox;
pub(crate) mod socketio;
pub(crate) mod spawn;
pub(crate) mod worker_output;
