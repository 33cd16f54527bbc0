//! Sockets watched for reading only. tokio registers a `UnixStream` for
//! both reading and writing; then every time the peer reads, the kernel's
//! "write space" wake-up reaches this process's epoll, which wakes it for
//! nothing. On the message and hand-off channels that doubled the wake-ups
//! per message (measured: a third of all CPU time of a ping-pong went to
//! those wake-ups). Here a socket is registered for reading only, writes
//! are non-blocking, and only a write that would block registers interest
//! in writing, on a duplicate descriptor, until the socket is writable.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustix::net::SendFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

use crate::sys::register_async;

/// Waits until `socket` can be written to, without a lasting registration.
pub(crate) async fn writable(socket: BorrowedFd<'_>) -> io::Result<()> {
    let watched = register_async(socket.try_clone_to_owned()?, Interest::WRITABLE)?;
    let mut ready = watched.writable().await?;
    ready.clear_ready();
    Ok(())
}

/// Writes all of `bytes` to the stream socket `socket`, waiting only when
/// its buffer is full. The watch for writability is registered at the first
/// write that would block and kept until all of `bytes` is written: a large
/// message fills the socket's buffer many times (a 16 MiB one about 80),
/// and registering anew each time cost four system calls each.
pub(crate) async fn write_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    let mut watch: Option<AsyncFd<OwnedFd>> = None;
    while !bytes.is_empty() {
        match rustix::net::send(socket, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(written) => bytes = &bytes[written..],
            Err(rustix::io::Errno::AGAIN) => {
                let watched = match watch.as_ref() {
                    Some(watched) => watched,
                    None => watch.insert(register_async(
                        socket.try_clone_to_owned()?,
                        Interest::WRITABLE,
                    )?),
                };
                watched.writable().await?.clear_ready();
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// The read buffer of a message channel: large enough that a large message
/// arrives in few reads (64 KiB, against the 8 KiB default, is 8× fewer
/// `recv` calls for a 1 MiB message), small enough to keep per worker.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// A stream socket read through the reactor, registered for reading only.
pub(crate) struct SocketReader {
    socket: AsyncFd<OwnedFd>,
}

impl SocketReader {
    /// Must run inside a tokio runtime.
    pub(crate) fn new(socket: OwnedFd) -> io::Result<Self> {
        Ok(SocketReader {
            socket: register_async(socket, Interest::READABLE)?,
        })
    }
}

impl AsyncRead for SocketReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            let flags = rustix::net::RecvFlags::DONTWAIT;
            match ready.try_io(|socket| Ok(rustix::net::recv(socket.as_fd(), unfilled, flags)?)) {
                Ok(Ok((read, _))) => {
                    // A short read emptied the socket: forget its readiness
                    // now rather than learn it from one more `recv` that
                    // fails with EAGAIN (one system call per wake-up, as
                    // tokio's own sockets do). Readiness that arrived after
                    // this read is kept: tokio clears only what it reported.
                    if read > 0 && read < wanted {
                        ready.clear_ready();
                    }
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}
