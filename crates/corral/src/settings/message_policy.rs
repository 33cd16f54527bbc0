//! What the primary does with the messages workers send (`--on-message`).

/// What the primary does with user messages besides handing them to the
/// user's primary task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagePolicy {
    /// Log each one (`message from worker 2: {...}`).
    pub log: bool,
    /// Relay each one to every other worker.
    pub rebroadcast: bool,
}
