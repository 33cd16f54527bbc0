//! The commands that operate a running cluster through its control socket:
//! `ls`, `status`, `reload`, `scale`, `stop`, `logs`, `events` (and `top`,
//! in its own module). Each finds the cluster (by NAME, by `--control
//! PATH`, or as the one cluster of this user that runs), asks, and prints
//! text or, with `--json`, JSON.
//!
//! Exit codes: 0 done; 1 the cluster refused or the operation failed (an
//! aborted reload, a scale past the limits); 2 bad usage; 3 no cluster
//! could be reached.

mod events;
mod logs;
mod ls;
mod reload;
mod scale;
mod status;
mod stop;

use std::process::ExitCode;

use crate::args::Command;

use crate::target::Unreachable;

/// The exit code for "no cluster could be reached".
pub(crate) const EXIT_UNREACHABLE: u8 = 3;

/// Runs a control command; `None` when `command` is not one.
pub(crate) fn run(command: Command) -> Result<Option<()>, anyhow::Error> {
    let done = match command {
        Command::Ls(args) => ls::run(&args),
        Command::Delete(args) => crate::background::delete(&args.name),
        Command::Status(args) => status::run(&args),
        Command::Reload(args) => reload::run(&args),
        Command::Scale(args) => scale::run(&args),
        Command::Stop(args) => stop::run(&args),
        Command::Logs(args) => logs::run(&args),
        Command::Events(args) => events::run(&args),
        Command::Top(args) => crate::top::run(&args),
        Command::Run(_)
        | Command::Start(_)
        | Command::DemoWorker(_)
        | Command::Check(_)
        | Command::Generate(_)
        | Command::Import(_)
        | Command::Service(_) => {
            return Ok(None);
        }
    };
    done.map(Some)
}

/// An exit code that is not 0 or 1, for main to return.
pub(crate) fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<Unreachable>().is_some() {
        ExitCode::from(EXIT_UNREACHABLE)
    } else {
        ExitCode::FAILURE
    }
}

/// Whether `pid` runs (a zombie, exited and not yet reaped, does not).
/// A process whose main thread is a zombie still runs while its other
/// threads finish exiting (closing its sockets and eBPF objects): until
/// then its parent cannot reap it, so it has not exited yet.
pub(crate) fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
            !zombie || threads_left(pid) > 1
        }
        Err(_) => false,
    }
}

/// How many threads of `pid` are still listed (0 once it is gone).
fn threads_left(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}
