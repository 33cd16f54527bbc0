//! Who may use a cluster's control socket: the user the cluster runs as,
//! and root. The socket file's mode (0600) already keeps others out; the
//! peer credentials (`SO_PEERCRED`) the kernel records for every connection
//! are checked as well, so a socket made reachable by mistake (a `chmod`, a
//! directory shared on purpose) still serves nobody else.

use std::os::fd::AsFd;

/// The uid of the process at the other end of a Unix socket connection.
///
/// Read with nix rather than rustix: a client in an ancestor PID namespace
/// (`corral status` on the host against a container's socket) has pid 0 as
/// the kernel reports it here, which rustix's `socket_peercred` refuses
/// (its `Pid` cannot be 0); only the uid matters to the check.
pub(crate) fn peer_uid(connection: impl AsFd) -> std::io::Result<u32> {
    let credentials =
        nix::sys::socket::getsockopt(&connection, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(credentials.uid())
}

/// Whether a client running as `peer` may control a cluster running as
/// `cluster`.
pub(crate) fn may_control(peer: u32, cluster: u32) -> bool {
    peer == cluster || peer == 0
}

/// The refusal a client of another user gets.
pub(crate) fn refusal(peer: u32, cluster: u32) -> String {
    format!(
        "permission denied: uid {peer} may not control this cluster (only uid {cluster} and root may)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_and_root_may_control_and_nobody_else() {
        assert!(may_control(1000, 1000));
        assert!(may_control(0, 1000));
        assert!(may_control(0, 0));
        assert!(!may_control(65534, 1000));
        assert!(!may_control(1000, 0));
    }

    #[test]
    fn a_connection_reports_this_process_as_its_peer() {
        let (one, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&one).unwrap(), rustix::process::geteuid().as_raw());
    }
}
