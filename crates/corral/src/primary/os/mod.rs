//! What the primary asks of the operating system beside spawning: signals,
//! reaping what workers leave behind, systemd's notifications, and reads of
//! /proc (a worker's memory, the sockets it bound itself), and the file
//! changes `--watch` turns into reloads.

pub(crate) mod health;
pub(crate) mod own_sockets;
pub(crate) mod reaper;
pub(crate) mod signals;
pub(crate) mod systemd;
pub(crate) mod watch;
