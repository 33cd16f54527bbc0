//! Binding listening sockets. The primary binds every socket itself, before
//! any worker starts, so that a port in use is one clear error at start and
//! so that the sockets outlive every worker; or, when systemd passed it a
//! socket for the address (`activation.rs`), uses that one.

use crate::balance::activation;

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Options shared by every listening socket of a cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
}

/// Binds and listens on `address`. The socket is left blocking, as systemd
/// passes sockets: a blocking server can use it as it is, and an event-loop
/// server switches it to non-blocking itself.
pub(crate) fn bind_listener(address: SocketAddr, options: BindOptions) -> Result<Socket, Error> {
    if let Some(inherited) = activation::duplicate(address) {
        return inherited;
    }
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(Error::io("cannot create a socket"))?;
    let configure = |socket: &Socket| -> std::io::Result<()> {
        socket.set_reuse_address(true)?;
        if options.reuse_port {
            socket.set_reuse_port(true)?;
        }
        Ok(())
    };
    configure(&socket).map_err(Error::io("cannot set socket options"))?;
    socket
        .bind(&address.into())
        .map_err(|err| Error::bind(address, err))?;
    socket
        .listen(options.backlog)
        .map_err(|err| Error::bind(address, err))?;
    Ok(socket)
}

/// Fails with the bind error if another process already listens on
/// `address`. `SO_REUSEPORT` would otherwise let corral silently join another
/// program's port group (same user) and split its traffic.
pub(crate) fn ensure_port_free(address: SocketAddr, backlog: i32) -> Result<(), Error> {
    if address.port() == 0 || activation::duplicate(address).is_some() {
        return Ok(());
    }
    let probe = BindOptions {
        backlog,
        reuse_port: false,
    };
    bind_listener(address, probe).map(drop)
}

/// The address a socket is bound to (the real port when 0 was asked).
pub(crate) fn local_addr(socket: &Socket) -> Result<SocketAddr, Error> {
    socket
        .local_addr()
        .map_err(Error::io("cannot read a socket's address"))?
        .as_socket()
        .ok_or(Error::Config(
            "a listening socket is not an IP socket".into(),
        ))
}
