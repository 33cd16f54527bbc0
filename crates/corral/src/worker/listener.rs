//! The worker's side of a listening port. A [`Listener`] yields accepted
//! connections whatever the cluster's policy: from an inherited listening
//! socket (`shared`, `reuseport`) or from the primary over the hand-off
//! channel (`round-robin`, `least-connections`). A server written against it
//! runs unchanged when the policy changes. With the `axum` feature it is an
//! `axum::serve::Listener`, so `axum::serve(listener, app)` works as with a
//! `tokio::net::TcpListener`.
//!
//! Once the worker is asked to stop, a listener hands out nothing more (see
//! [`crate::worker::drain`] for why and in which order).

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::log::rate::warn_limited;
use crate::worker::connection::{CloseCounter, Connection};
use crate::worker::drain::{Drain, Stopping, Unread};
use crate::worker::incoming::ConnectionQueue;

/// A source of accepted TCP connections for a worker.
#[derive(Debug)]
pub struct Listener {
    source: Source,
    closes: Option<Arc<CloseCounter>>,
    /// The worker's stop sequence; `None` outside a cluster.
    drain: Option<Arc<Drain>>,
}

#[derive(Debug)]
enum Source {
    /// A listening socket this worker accepts on itself.
    Socket(TcpListener),
    /// Connections the primary accepted and handed over.
    HandOff {
        queue: Arc<ConnectionQueue>,
        local_addr: SocketAddr,
    },
}

impl Listener {
    /// Wraps an inherited listening socket. Must run inside a tokio runtime.
    pub(crate) fn from_inherited(
        fd: OwnedFd,
        closes: Option<Arc<CloseCounter>>,
        drain: Arc<Drain>,
    ) -> io::Result<Self> {
        let socket = std::net::TcpListener::from(fd);
        // The flag is shared with every process holding the socket; all the
        // workers of one cluster run the same program and want it set.
        socket.set_nonblocking(true)?;
        Ok(Listener {
            source: Source::Socket(TcpListener::from_std(socket)?),
            closes,
            drain: Some(drain),
        })
    }

    /// Wraps the queue of connections handed over for one listen address.
    pub(crate) fn from_handoff(
        queue: Arc<ConnectionQueue>,
        local_addr: SocketAddr,
        closes: Option<Arc<CloseCounter>>,
        drain: Arc<Drain>,
    ) -> Self {
        Listener {
            source: Source::HandOff { queue, local_addr },
            closes,
            drain: Some(drain),
        }
    }

    /// Wraps a listener the program bound itself (outside a cluster).
    pub fn from_tokio(socket: TcpListener) -> Self {
        Listener {
            source: Source::Socket(socket),
            closes: None,
            drain: None,
        }
    }

    /// Waits for the next connection. Fails with `NotConnected` once no
    /// more connections will come: the worker is stopping (the connections
    /// not taken stay in the kernel's queue, or go back to the primary for
    /// another worker), or the primary is gone.
    pub async fn accept(&self) -> io::Result<(Connection, SocketAddr)> {
        let Some(drain) = &self.drain else {
            let (stream, peer) = match &self.source {
                Source::Socket(socket) => socket.accept().await?,
                Source::HandOff { queue, .. } => next_handed(queue, None).await?.0,
            };
            return Ok((Connection::new(stream, self.closes.clone(), None), peer));
        };
        let mut stop = drain.stop_receiver();
        let ((stream, peer), unread) = tokio::select! {
            biased;
            accepted = self.accept_admitted(drain) => accepted?,
            _ = stop.wait_for(|stopping| *stopping) => return Err(stopping_error()),
        };
        Ok((Connection::new(stream, self.closes.clone(), unread), peer))
    }

    /// The next connection, counted unread by the worker's stop sequence.
    async fn accept_admitted(
        &self,
        drain: &Arc<Drain>,
    ) -> io::Result<((TcpStream, SocketAddr), Option<Unread>)> {
        match &self.source {
            Source::Socket(socket) => {
                std::future::poll_fn(|cx| {
                    let admitted = drain.admit(|| match socket.poll_accept(cx) {
                        Poll::Ready(accepted) => Some(accepted),
                        Poll::Pending => None,
                    });
                    match admitted {
                        Err(Stopping) => Poll::Ready(Err(stopping_error())),
                        Ok(None) => Poll::Pending,
                        Ok(Some((accepted, unread))) => {
                            Poll::Ready(accepted.map(|accepted| (accepted, Some(unread))))
                        }
                    }
                })
                .await
            }
            Source::HandOff { queue, .. } => next_handed(queue, Some(drain)).await,
        }
    }

    /// The address the cluster listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.source {
            Source::Socket(socket) => socket.local_addr(),
            Source::HandOff { local_addr, .. } => Ok(*local_addr),
        }
    }

    /// Waits for the next connection, riding out errors that concern one
    /// connection or a passing shortage of descriptors. Once no connection
    /// can come any more, it waits forever: pair it with
    /// [`crate::Worker::stopped`].
    pub async fn accept_retrying(&self) -> (Connection, SocketAddr) {
        loop {
            match self.accept().await {
                Ok(accepted) => return accepted,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                    std::future::pending::<()>().await;
                }
                Err(err) => {
                    warn_limited!("accept failed: {err}; retrying in 50ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The next handed-over connection that is still connected.
async fn next_handed(
    queue: &ConnectionQueue,
    drain: Option<&Arc<Drain>>,
) -> io::Result<((TcpStream, SocketAddr), Option<Unread>)> {
    loop {
        let (fd, unread) = match queue.next(drain).await {
            Ok(Some(next)) => next,
            Ok(None) | Err(Stopping) => return Err(stopping_error()),
        };
        let stream = std::net::TcpStream::from(fd);
        // The client may have given up while the connection was on its way.
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        stream.set_nonblocking(true)?;
        return Ok(((TcpStream::from_std(stream)?, peer), unread));
    }
}

fn stopping_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "no more connections will come to this worker: it is stopping or its primary is gone",
    )
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
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_retrying().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(self)
    }
}
