//! The wire protocol between the primary and its workers: what a worker in
//! any language implements. The environment a worker starts with ([`env`]),
//! the newline-delimited JSON message channel ([`message`] over [`lines`],
//! a worker's line read by the primary without a tree: [`envelope`]),
//! the hand-off channel that carries accepted connections ([`handoff`]), and
//! Node's cluster dialect for unmodified Node programs ([`node`]).

pub(crate) mod agent_report;
pub mod env;
pub(crate) mod envelope;
pub(crate) mod handoff;
pub(crate) mod lines;
pub(crate) mod message;
pub(crate) mod node;
pub(crate) mod socket_reader;
