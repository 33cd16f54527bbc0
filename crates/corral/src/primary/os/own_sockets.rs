//! A COMMAND that expects a listening socket, run under a hand-off policy
//! (`round-robin`, `least-connections`). Such a worker gets no socket
//! (`LISTEN_FDS=0`) and finds its message channel on fd 3: uvicorn `--fd 3`
//! or Python's `socket(fileno=3)` crash on it, gunicorn binds
//! 127.0.0.1:8000 by itself. Neither will ever take a connection from
//! corral, so the primary stops at once with one line naming the policy and
//! `--policy reuseport`, instead of restarting it in a loop or waiting out
//! the ready timeout.
//!
//! It applies only before any worker has said it is ready: a command that
//! worked once (a real hand-off worker) is not judged by a later crash. A
//! run's length proves nothing here: a worker that never says it is ready
//! never gets a connection.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// How often workers not yet ready are checked for sockets of their own.
pub(crate) const CHECK_PERIOD: std::time::Duration = std::time::Duration::from_millis(200);

/// The TCP addresses process `pid` listens on. Each of its socket
/// descriptors is looked at through a copy (`pidfd_getfd`), which costs a
/// few system calls per socket, never a read of the machine's whole TCP
/// table. Empty when the process cannot be looked at.
pub(crate) fn own_listeners(pid: u32) -> Vec<SocketAddr> {
    let Some(pidfd) = rustix::process::Pid::from_raw(pid as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    }) else {
        return Vec::new();
    };
    socket_fds(pid)
        .into_iter()
        .filter_map(|number| {
            let flags = rustix::process::PidfdGetfdFlags::empty();
            let copy = rustix::process::pidfd_getfd(&pidfd, number, flags).ok()?;
            listening_tcp(&copy)
        })
        .collect()
}

/// The numbers of `pid`'s descriptors that are sockets.
fn socket_fds(pid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            target.to_str()?.starts_with("socket:[").then_some(())?;
            entry.file_name().to_str()?.parse().ok()
        })
        .collect()
}

/// The address of `fd` if it is a listening TCP socket.
fn listening_tcp(fd: &OwnedFd) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(fd);
    let listening = socket.is_listener().ok()? && socket.r#type().ok()? == socket2::Type::STREAM;
    let address = socket.local_addr().ok()?.as_socket()?;
    listening.then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_listening_by_itself_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let found = own_listeners(std::process::id());
        assert!(found.contains(&address), "{found:?} lacks {address}");
        drop(listener);
        assert!(!own_listeners(std::process::id()).contains(&address));
    }
}
