//! The worker's side of a listening port. A [`Listener`] yields accepted
//! connections whatever the cluster's policy, so a server written against it
//! runs unchanged when the policy changes. With the `axum` feature it is an
//! `axum::serve::Listener`, so `axum::serve(listener, app)` works as with a
//! `tokio::net::TcpListener`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A source of accepted TCP connections for a worker.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
}

impl Listener {
    /// Wraps an inherited listening socket. Must run inside a tokio runtime.
    pub(crate) fn from_inherited(fd: OwnedFd) -> io::Result<Self> {
        let socket = std::net::TcpListener::from(fd);
        // The flag is shared with every process holding the socket; all the
        // workers of one cluster run the same program and want it set.
        socket.set_nonblocking(true)?;
        Ok(Listener {
            socket: TcpListener::from_std(socket)?,
        })
    }

    /// Wraps a listener the program bound itself (outside a cluster).
    pub fn from_tokio(socket: TcpListener) -> Self {
        Listener { socket }
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.socket.accept().await
    }

    /// The address the cluster listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits for the next connection, riding out errors that concern one
    /// connection or a passing shortage of descriptors.
    pub async fn accept_retrying(&self) -> (TcpStream, SocketAddr) {
        loop {
            match self.accept().await {
                Ok(accepted) => return accepted,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::warn!("accept failed: {err}; retrying in 50ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Errors that concern only the connection being accepted.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(feature = "axum")]
impl axum::serve::Listener for Listener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_retrying().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(self)
    }
}
