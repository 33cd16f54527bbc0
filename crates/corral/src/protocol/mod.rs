//! The wire protocol between the primary and its workers: what a worker in
//! any language implements. The environment a worker starts with ([`env`]),
//! the newline-delimited JSON message channel ([`message`] over [`lines`]),
//! and the hand-off channel that carries accepted connections ([`handoff`]).

pub mod env;
pub(crate) mod handoff;
pub(crate) mod lines;
pub(crate) mod message;
pub(crate) mod socket_reader;
