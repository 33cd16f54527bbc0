//! An accepted connection as a worker's server gets it from a
//! [`crate::Listener`]: a `TcpStream` that, under `least-connections`, tells
//! the primary when it closes, so the primary balances on open connections.
//! Its first read tells the worker's stop sequence ([`crate::worker::drain`])
//! that the server has the client's first request in hand.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::worker::drain::Unread;

/// A client connection. Reads and writes go to the TCP stream.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    _close_report: Option<CloseReport>,
    /// Released at the first read that completes.
    unread: Option<Unread>,
}

impl Connection {
    pub(crate) fn new(
        stream: TcpStream,
        closes: Option<Arc<CloseCounter>>,
        unread: Option<Unread>,
    ) -> Self {
        Connection {
            stream,
            _close_report: closes.map(CloseReport),
            unread,
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The address the client connected to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.stream.set_nodelay(nodelay)
    }

    /// The TCP stream, for what this type does not forward.
    pub fn tcp_stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if read.is_ready() {
            // Data, end of file or an error: the server has seen what the
            // client sent first.
            self.unread = None;
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Connections closed since the last report, and the reporter's wake-up.
#[derive(Debug, Default)]
pub(crate) struct CloseCounter {
    pub closed: AtomicU64,
    pub changed: Notify,
}

/// Counts its connection as closed when dropped.
#[derive(Debug)]
struct CloseReport(Arc<CloseCounter>);

impl Drop for CloseReport {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}
