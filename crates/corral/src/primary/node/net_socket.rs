//! TCP and UDP sockets bound as Node's primary binds them, and the copies
//! of sockets sent to workers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::bind_failure::BindFailure;

/// Binds a TCP socket as Node's primary does: "any address" is dual-stack
/// `[::]`, or `0.0.0.0` where the machine has no IPv6.
pub(super) fn bind_any(
    host: Option<IpAddr>,
    port: u16,
    ipv6_only: bool,
    reuse_port: bool,
    backlog: i32,
) -> Result<(Socket, SocketAddr), BindFailure> {
    let fail = |address: SocketAddr, err: &io::Error| {
        BindFailure::io(format!("cannot bind {address}"), err)
    };
    let bound = |socket: Socket| -> Result<(Socket, SocketAddr), BindFailure> {
        let address = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .ok_or_else(|| BindFailure {
                errno: -libc::EIO,
                reason: "a bound socket has no address".into(),
            })?;
        Ok((socket, address))
    };
    match host {
        Some(host) => {
            let address = SocketAddr::new(host, port);
            bind_tcp(address, ipv6_only, reuse_port, backlog)
                .map_err(|err| fail(address, &err))
                .and_then(bound)
        }
        None => {
            let dual = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match bind_tcp(dual, ipv6_only, reuse_port, backlog) {
                Ok(socket) => bound(socket),
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                    ) =>
                {
                    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                    bind_tcp(v4, false, reuse_port, backlog)
                        .map_err(|err| fail(v4, &err))
                        .and_then(bound)
                }
                Err(err) => Err(fail(dual, &err)),
            }
        }
    }
}

/// A listening TCP socket on `address`, non-blocking (Node needs it so).
pub(super) fn bind_tcp(
    address: SocketAddr,
    ipv6_only: bool,
    reuse_port: bool,
    backlog: i32,
) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(ipv6_only)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// A UDP socket, bound as Node's primary binds it for `dgram` (`udp4` on
/// `0.0.0.0` when no address is given, `udp6` on `::`).
pub(super) fn bind_udp(host: Option<IpAddr>, port: u16, v6: bool) -> io::Result<Socket> {
    let any = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let address = SocketAddr::new(host.unwrap_or(any), port);
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

pub(super) fn duplicate(socket: &Socket) -> Result<OwnedFd, BindFailure> {
    socket
        .try_clone()
        .map(OwnedFd::from)
        .map_err(|err| BindFailure::io("cannot duplicate a socket".into(), &err))
}

/// A copy of `socket` to send to a Node worker, made non-blocking (the
/// flag belongs to the socket, shared with every copy).
pub(super) fn duplicate_fd(socket: &OwnedFd) -> Result<OwnedFd, BindFailure> {
    let copy = socket
        .try_clone()
        .map_err(|err| BindFailure::io("cannot duplicate a socket".into(), &err))?;
    let socket = Socket::from(copy);
    socket
        .set_nonblocking(true)
        .map_err(|err| BindFailure::io("cannot make a socket non-blocking".into(), &err))?;
    Ok(OwnedFd::from(socket))
}
