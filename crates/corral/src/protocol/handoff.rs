//! The hand-off channel of the `round-robin` and `least-connections`
//! policies: a Unix `SOCK_SEQPACKET` socket per worker (`CORRAL_HANDOFF_FD`)
//! carrying accepted connections as `SCM_RIGHTS` descriptors, many per
//! message. It is separate from the message channel so that a connection
//! never waits behind a user message.
//!
//! Primary → worker: 1 to [`MAX_FDS_PER_MESSAGE`] descriptors, and as data
//! one byte per descriptor: the index (0-based) of the listen address the
//! connection came in on.
//!
//! Worker → primary (both optional):
//! * `C` followed by a decimal count: that many handed connections closed
//!   (least-connections balances on it);
//! * `R` followed by one index byte per attached descriptor: connections the
//!   worker received but will not serve (it is stopping), to hand to another.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The kernel's limit of descriptors in one message (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// One connection on its way: the descriptor and its listener's index.
#[derive(Debug)]
pub(crate) struct Handed {
    pub fd: OwnedFd,
    pub listener: u8,
}

/// What a worker reports to the primary.
#[derive(Debug)]
pub(crate) enum Report {
    Closed(u64),
    Returned(Vec<Handed>),
}

/// Sends `batch` (at most [`MAX_FDS_PER_MESSAGE`]) with `prefix` before the
/// index bytes, without blocking. On success the descriptors were duplicated
/// into the peer; the caller's copies may be closed.
pub(crate) fn send_batch(
    socket: BorrowedFd<'_>,
    prefix: &[u8],
    batch: &[Handed],
) -> io::Result<()> {
    debug_assert!(!batch.is_empty() && batch.len() <= MAX_FDS_PER_MESSAGE);
    let mut data = Vec::with_capacity(prefix.len() + batch.len());
    data.extend_from_slice(prefix);
    data.extend(batch.iter().map(|handed| handed.listener));
    let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|handed| handed.fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    rustix::net::sendmsg(socket, &[IoSlice::new(&data)], &mut control, flags)?;
    Ok(())
}

/// Sends a report of `count` closed connections, without blocking.
pub(crate) fn send_closed(socket: BorrowedFd<'_>, count: u64) -> io::Result<()> {
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    rustix::net::send(socket, format!("C{count}").as_bytes(), flags)?;
    Ok(())
}

/// One message received: its data bytes and the descriptors it carried.
pub(crate) struct Received {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Receives one message without blocking. `Ok(None)` at end of stream. The
/// descriptors arrive close-on-exec, and a truncated message is an error
/// (its descriptors, if any, are closed).
pub(crate) fn receive(socket: BorrowedFd<'_>) -> io::Result<Option<Received>> {
    let mut data = [0u8; 1 + MAX_FDS_PER_MESSAGE + 32];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
    let message = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        flags,
    )?;
    let mut fds = Vec::new();
    for ancillary in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = ancillary {
            fds.extend(received);
        }
    }
    if message
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a hand-off message was truncated",
        ));
    }
    if message.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(Received {
        data: data[..message.bytes].to_vec(),
        fds,
    }))
}

/// Pairs each descriptor with its index byte; fails unless the counts match.
pub(crate) fn pair_up(indices: &[u8], fds: Vec<OwnedFd>) -> io::Result<Vec<Handed>> {
    if indices.len() != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a hand-off message announced {} connections but carried {}",
                indices.len(),
                fds.len()
            ),
        ));
    }
    Ok(fds
        .into_iter()
        .zip(indices)
        .map(|(fd, &listener)| Handed { fd, listener })
        .collect())
}

/// Decodes a worker's report.
pub(crate) fn decode_report(received: Received) -> io::Result<Report> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match received.data.split_first() {
        Some((b'C', count)) if received.fds.is_empty() => std::str::from_utf8(count)
            .ok()
            .and_then(|text| text.parse().ok())
            .map(Report::Closed)
            .ok_or_else(|| invalid("a close report is not C followed by a number")),
        Some((b'R', indices)) => pair_up(indices, received.fds).map(Report::Returned),
        _ => Err(invalid("a hand-off report must start with C or R")),
    }
}

/// A connected pair of hand-off sockets (primary end, worker end), both
/// close-on-exec. The primary's end is non-blocking; the worker's end is
/// blocking, as a worker in another language may expect (corral's own reads
/// and writes pass `MSG_DONTWAIT` whatever the mode).
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (primary, worker) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::ioctl_fionbio(&primary, true)?;
    Ok((primary, worker))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> OwnedFd {
        let (a, _b) = socket_pair().unwrap();
        a
    }

    #[test]
    fn batches_carry_descriptors_with_their_listener_index() {
        let (primary, worker) = socket_pair().unwrap();
        let batch: Vec<Handed> = (0..200)
            .map(|i| Handed {
                fd: connection(),
                listener: (i % 3) as u8,
            })
            .collect();
        send_batch(primary.as_fd(), b"", &batch).unwrap();
        let received = receive(worker.as_fd()).unwrap().unwrap();
        let handed = pair_up(&received.data, received.fds).unwrap();
        assert_eq!(handed.len(), 200);
        assert_eq!(handed[4].listener, 1);
        let flags = rustix::io::fcntl_getfd(&handed[0].fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn reports_decode_and_bad_ones_are_errors() {
        let (primary, worker) = socket_pair().unwrap();
        send_closed(worker.as_fd(), 42).unwrap();
        let report = decode_report(receive(primary.as_fd()).unwrap().unwrap()).unwrap();
        assert!(matches!(report, Report::Closed(42)));
        let returned = [Handed {
            fd: connection(),
            listener: 0,
        }];
        send_batch(worker.as_fd(), b"R", &returned).unwrap();
        let report = decode_report(receive(primary.as_fd()).unwrap().unwrap()).unwrap();
        assert!(matches!(report, Report::Returned(handed) if handed.len() == 1));
        rustix::net::send(worker.as_fd(), b"Cxyz", SendFlags::empty()).unwrap();
        assert!(decode_report(receive(primary.as_fd()).unwrap().unwrap()).is_err());
        rustix::net::send(worker.as_fd(), b"R\x00\x00", SendFlags::empty()).unwrap();
        assert!(decode_report(receive(primary.as_fd()).unwrap().unwrap()).is_err());
    }

    #[test]
    fn a_closed_peer_reads_as_the_end() {
        let (primary, worker) = socket_pair().unwrap();
        drop(worker);
        assert!(receive(primary.as_fd()).unwrap().is_none());
    }
}
