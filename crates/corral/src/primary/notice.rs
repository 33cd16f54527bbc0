//! The supervisor's inbox: what the per-worker tasks and the timers tell the
//! primary's loop. Each notice names the slot and the generation of the
//! worker it is about, so a late notice about a replaced worker is ignored.

use std::process::ExitStatus;

use crate::protocol::message::Control;

#[derive(Debug)]
pub(crate) enum Notice {
    /// The worker sent a control word on its channel.
    Control {
        id: u32,
        generation: u32,
        control: Control,
    },
    /// The worker reported `count` more requests served.
    Served {
        id: u32,
        generation: u32,
        count: u64,
    },
    /// The worker exited and was reaped (`None`: its status was lost).
    Exited {
        id: u32,
        generation: u32,
        status: Option<ExitStatus>,
    },
    /// The slot's restart backoff has elapsed.
    RestartDue { id: u32, generation: u32 },
    /// The worker was asked to stop `grace` ago.
    GraceExpired { id: u32, generation: u32 },
    /// The worker was started `ready_timeout` ago.
    ReadyTimeout { id: u32, generation: u32 },
    /// A rolling reload's replacement was started `ready_timeout` ago.
    ReloadTimeout { id: u32, generation: u32 },
    /// A rolling reload's replacement that cannot say it is ready has run
    /// long enough to count as ready.
    Settled { id: u32, generation: u32 },
}
