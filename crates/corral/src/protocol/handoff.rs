//! The hand-off channel of the `round-robin`, `least-connections` and
//! `sticky` policies: a Unix `SOCK_SEQPACKET` socket per worker (`CORRAL_HANDOFF_FD`)
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
                "a hand-off message has {} index bytes but carried {} descriptors",
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

/// Decodes a worker's report. Only its form is checked here; whether the
/// worker may say it is [`check_returned`] and the dispatcher's count.
pub(crate) fn decode_report(received: Received) -> io::Result<Report> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    match received.data.split_first() {
        Some((b'C', _)) if !received.fds.is_empty() => Err(invalid(format!(
            "a close report (C) carried {} descriptors; it carries none",
            received.fds.len()
        ))),
        Some((b'C', count)) => std::str::from_utf8(count)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse().ok())
            .map(Report::Closed)
            .ok_or_else(|| invalid("a close report (C) is not C followed by a count".into())),
        Some((b'R', [])) => Err(invalid(
            "a return (R) carried no connection: R is followed by one index byte per descriptor"
                .into(),
        )),
        Some((b'R', indices)) => pair_up(indices, received.fds)
            .map(Report::Returned)
            .map_err(|err| invalid(format!("a return (R) is malformed: {err}"))),
        Some((first, _)) => Err(invalid(format!(
            "a report must start with C (closed) or R (returned), not byte {first:#04x}"
        ))),
        None => Err(invalid(format!(
            "a report with no data but {} descriptors",
            received.fds.len()
        ))),
    }
}

/// Checks that a connection a worker returns is one corral could have
/// handed it: a connected TCP socket accepted on listener `handed.listener`
/// (whose port is `ports[listener]`). Anything else (a pipe, a file, a Unix
/// socket, a listening socket, a connection it made itself) is refused,
/// with what it is.
pub(crate) fn check_returned(handed: &Handed, ports: &[u16]) -> Result<(), String> {
    let index = usize::from(handed.listener);
    let Some(&port) = ports.get(index) else {
        return Err(format!(
            "listener index {index}, but the cluster has {} listeners",
            ports.len()
        ));
    };
    let socket = socket2::SockRef::from(&handed.fd);
    match socket.r#type() {
        Ok(socket2::Type::STREAM) => {}
        Ok(_) => return Err("a socket that is not a stream socket".into()),
        Err(_) => return Err("a descriptor that is not a socket".into()),
    }
    let local = socket.local_addr().ok().and_then(|addr| addr.as_socket());
    let Some(local) = local else {
        return Err("a socket that is not a TCP connection (a Unix socket?)".into());
    };
    if socket.peer_addr().is_err() {
        return Err(format!(
            "a TCP socket on {local} that is not connected (a listening socket?)"
        ));
    }
    if local.port() != port {
        return Err(format!(
            "a TCP connection on {local}, not one accepted on listener {index} (port {port})"
        ));
    }
    Ok(())
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
        rustix::net::send(worker.as_fd(), b"R", SendFlags::empty()).unwrap();
        let bare = decode_report(receive(primary.as_fd()).unwrap().unwrap()).unwrap_err();
        assert!(
            bare.to_string()
                .contains("return (R) carried no connection")
        );
        rustix::net::send(worker.as_fd(), b"C+5", SendFlags::empty()).unwrap();
        assert!(decode_report(receive(primary.as_fd()).unwrap().unwrap()).is_err());
        let with_fd = [Handed {
            fd: connection(),
            listener: 0,
        }];
        send_batch(worker.as_fd(), b"C", &with_fd).unwrap();
        let named = decode_report(receive(primary.as_fd()).unwrap().unwrap()).unwrap_err();
        assert!(named.to_string().contains("close report (C) carried 1"));
    }

    #[test]
    fn only_tcp_connections_accepted_on_the_listener_may_be_returned() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let check = |fd: OwnedFd, listener: u8| check_returned(&Handed { fd, listener }, &[port]);
        assert_eq!(check(accepted.try_clone().unwrap().into(), 0), Ok(()));
        let out_of_range = check(accepted.into(), 1).unwrap_err();
        assert!(out_of_range.contains("listener index 1"), "{out_of_range}");
        let own_client = check(client.into(), 0).unwrap_err();
        assert!(
            own_client.contains("not one accepted on listener 0"),
            "{own_client}"
        );
        let listening = check(listener.into(), 0).unwrap_err();
        assert!(listening.contains("not connected"), "{listening}");
        let unix = check(connection(), 0).unwrap_err();
        assert!(unix.contains("not a stream socket"), "{unix}");
        let (stream_a, _stream_b) = std::os::unix::net::UnixStream::pair().unwrap();
        let unix_stream = check(stream_a.into(), 0).unwrap_err();
        assert!(
            unix_stream.contains("not a TCP connection"),
            "{unix_stream}"
        );
        let null = check(std::fs::File::open("/dev/null").unwrap().into(), 0).unwrap_err();
        assert!(null.contains("not a socket"), "{null}");
    }

    #[test]
    fn a_closed_peer_reads_as_the_end() {
        let (primary, worker) = socket_pair().unwrap();
        drop(worker);
        assert!(receive(primary.as_fd()).unwrap().is_none());
    }
}
