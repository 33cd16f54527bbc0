//! systemd socket activation of the primary: started with `LISTEN_FDS` (by a
//! `.socket` unit, or `systemd-socket-activate`), the primary uses the
//! listening sockets it was given instead of binding, so a port outlives a
//! restart of corral itself and no connection is refused meanwhile.
//!
//! A `--listen` address is served by the inherited socket bound to the same
//! address, or names one with `systemd:NAME` (its `LISTEN_FDNAMES` entry,
//! the unit's `FileDescriptorName=`); with no `--listen` at all, every
//! inherited socket is used. Binding (`bind.rs`) asks here first.
//!
//! The descriptors belong to the process, so the registry is too: it is
//! read once, the first time it is asked, before any worker starts.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use socket2::Socket;

use crate::error::Error;

/// A listening socket the primary inherited.
#[derive(Debug)]
pub(crate) struct Activated {
    /// Its `LISTEN_FDNAMES` entry (systemd's default is `unknown`).
    pub name: String,
    pub address: SocketAddr,
    socket: Socket,
}

static ACTIVATED: OnceLock<Vec<Activated>> = OnceLock::new();

/// The sockets this process was started with, in `LISTEN_FDS` order; empty
/// when it was not socket-activated (`LISTEN_PID` is not its pid).
pub(crate) fn activated() -> &'static [Activated] {
    ACTIVATED.get_or_init(|| match adopt() {
        Ok(sockets) => sockets,
        Err(err) => {
            tracing::error!("ignoring the sockets passed by systemd (LISTEN_FDS): {err}");
            Vec::new()
        }
    })
}

fn adopt() -> Result<Vec<Activated>, String> {
    // A worker's LISTEN_FDS are its own (the library's worker side takes them).
    if crate::is_worker() {
        return Ok(Vec::new());
    }
    let passed: Vec<(i32, String)> = sd_notify::listen_fds_with_names()
        .map_err(|err| err.to_string())?
        .collect();
    if passed.is_empty() {
        return Ok(Vec::new());
    }
    let numbers: Vec<i32> = passed.iter().map(|(fd, _)| *fd).collect();
    let fds = crate::sys::adopt_inherited_fds(&numbers).map_err(|err| err.to_string())?;
    let mut sockets = Vec::new();
    for (fd, (number, name)) in fds.into_iter().zip(passed) {
        match listening_tcp(fd) {
            Ok((socket, address)) => {
                tracing::info!("using the socket passed by systemd for {address} ({name})");
                sockets.push(Activated {
                    name,
                    address,
                    socket,
                });
            }
            Err(why) => tracing::warn!("ignoring descriptor {number} ({name}) from systemd: {why}"),
        }
    }
    Ok(sockets)
}

/// Checks that `fd` is a listening TCP socket; returns it with its address.
fn listening_tcp(fd: OwnedFd) -> Result<(Socket, SocketAddr), String> {
    let socket = Socket::from(fd);
    let listening = socket.is_listener().map_err(|err| err.to_string())?;
    let stream = socket.r#type().map_err(|err| err.to_string())? == socket2::Type::STREAM;
    let address = socket
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket());
    match address {
        Some(address) if listening && stream => Ok((socket, address)),
        _ => Err("not a listening TCP socket (corral serves TCP: use ListenStream=)".into()),
    }
}

/// The address of the inherited socket named `name` (`systemd:NAME`).
pub(crate) fn address_named(name: &str) -> Result<SocketAddr, Error> {
    let sockets = activated();
    sockets
        .iter()
        .find(|socket| socket.name == name)
        .map(|socket| socket.address)
        .ok_or_else(|| {
            let names: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
            Error::InvalidAddress {
                address: format!("systemd:{name}"),
                reason: if names.is_empty() {
                    "corral was not started with sockets from systemd (LISTEN_FDS)".into()
                } else {
                    format!(
                        "systemd passed no socket of that name (LISTEN_FDNAMES: {})",
                        names.join(", ")
                    )
                },
            }
        })
}

/// A new descriptor of the inherited socket bound to `address`, if any.
pub(crate) fn duplicate(address: SocketAddr) -> Option<Result<Socket, Error>> {
    let inherited = activated()
        .iter()
        .find(|socket| socket.address == address)?;
    Some(
        inherited
            .socket
            .try_clone()
            .map_err(Error::io("cannot duplicate a socket passed by systemd")),
    )
}
