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

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Supervisor;
use crate::Error;

/// How often workers not yet ready are checked for sockets of their own.
pub(super) const CHECK_PERIOD: std::time::Duration = std::time::Duration::from_millis(200);

impl Supervisor {
    /// Whether this cluster can have the misfit: a hand-off policy, workers
    /// that are a COMMAND speaking neither corral's library nor Node's
    /// cluster protocol, and no worker ready yet.
    pub(super) fn watches_misfits(&self) -> bool {
        self.settings.policy.hands_off()
            && !self.launcher.program.speaks_channel()
            && self.node.is_none()
            && !self.ever_ready
    }

    /// Stops the cluster when a worker not yet ready listens on a TCP port
    /// of its own.
    pub(super) fn check_misfits(&self) -> Result<(), Error> {
        if !self.watches_misfits() {
            return Ok(());
        }
        for slot in self.slots.values() {
            let Some(worker) = slot.worker().filter(|worker| !worker.is_ready()) else {
                continue;
            };
            if let Some(address) = own_listeners(worker.pid).into_iter().next() {
                return Err(
                    self.misfit(worker.key.slot, &format!("listens on {address} by itself"))
                );
            }
        }
        Ok(())
    }

    /// The error for worker `id`, which did `what` instead of taking
    /// connections from corral.
    pub(super) fn misfit(&self, id: u32, what: &str) -> Error {
        let policy = self.settings.policy;
        Error::NeverReady(format!(
            "worker {id} {what}: under --policy {policy} corral accepts connections and \
             hands them over on CORRAL_HANDOFF_FD, and fd 3 is the message channel, not a \
             listening socket; a server that expects a socket (LISTEN_FDS, fd 3: gunicorn, \
             uvicorn --fd 3) needs --policy reuseport"
        ))
    }
}

/// The TCP addresses process `pid` listens on, from its descriptors and
/// `/proc/PID/net/tcp{,6}`. Empty when they cannot be read.
pub(super) fn own_listeners(pid: u32) -> Vec<SocketAddr> {
    let inodes = socket_inodes(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| listening(&text, &inodes))
        .collect()
}

/// The inodes of the sockets among `pid`'s descriptors.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The local addresses of the listening sockets in a `/proc/net/tcp{,6}`
/// table whose inode is among `inodes`.
fn listening(table: &str, inodes: &HashSet<u64>) -> Vec<SocketAddr> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let inode: u64 = inode.parse().ok()?;
            (*state == LISTEN && inodes.contains(&inode))
                .then(|| parse_address(local))
                .flatten()
        })
        .collect()
}

/// `0100007F:1F40` (IPv4) or 32 hex digits and a port (IPv6), as the
/// kernel prints them: each 32-bit word in the host's byte order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_be_bytes()).collect();
    match bytes.len() {
        4 => Some(SocketAddr::from((
            Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?),
            port,
        ))),
        16 => Some(SocketAddr::from((
            Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?),
            port,
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_parse() {
        // What the kernel prints on a little-endian machine.
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_address("0100007F:1F40"),
                Some("127.0.0.1:8000".parse().unwrap())
            );
            assert_eq!(
                parse_address("00000000000000000000000001000000:0050"),
                Some("[::1]:80".parse().unwrap())
            );
        }
        assert_eq!(parse_address("zz:1"), None);
    }

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
