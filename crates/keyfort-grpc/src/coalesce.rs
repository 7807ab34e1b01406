//! Write coalescing for a server connection: what the HTTP layer writes between two flushes
//! reaches the stream below (TLS) as one write, and a flush first lets the runtime run the
//! other tasks that are ready, once, so that the responses they complete go out with it.
//!
//! HTTP/2 (h2) flushes the connection every time its task runs. Under concurrent calls that
//! task runs once per finished response, so each response took its own TLS record and its own
//! `send` on the socket. Behind [`Coalesced`], the responses that are ready in the same round of
//! the scheduler share one record and one system call; an idle connection pays one extra poll
//! of its task per flush (a reschedule on the same worker, no timer).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes kept before they are written out without waiting for a flush.
pub const MAX_BUFFERED: usize = 64 * 1024;
/// Largest buffer an idle connection keeps allocated between flushes.
pub const RETAINED: usize = 16 * 1024;

/// A connection stream whose writes are buffered until a flush; see the module documentation.
/// Reads pass through.
#[derive(Debug)]
pub struct Coalesced<T> {
    inner: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    /// Whether this flush already let the other ready tasks run.
    yielded: bool,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T) -> Coalesced<T> {
        Coalesced {
            inner,
            buf: Vec::new(),
            written: 0,
            yielded: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes written but not yet passed to the inner stream.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes the buffered bytes to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        if self.buf.capacity() > RETAINED {
            self.buf = Vec::new();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: drains first when they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.buffered() > 0 && self.buf.len() + len > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx, data.len()))?;
        if data.len() >= MAX_BUFFERED {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        ready!(this.poll_room(cx, len))?;
        if len >= MAX_BUFFERED {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered() > 0 && !this.yielded {
            // Once per flush, tokio's yield: this task runs again after the worker has run its
            // other ready tasks (other streams finishing their responses, which add their
            // frames) and polled the socket readiness, without waking another worker thread.
            this.yielded = true;
            let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An in-memory stream that records each write it receives and can refuse writes.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        blocked: bool,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.blocked {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Accepts at most 100 000 bytes per call, as a socket may.
            let n = data.len().min(100_000);
            self.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_between_flushes_reach_the_stream_as_one() {
        let mut c = Coalesced::new(Recorder::default());
        c.write_all(b"HEADERS").await.unwrap();
        c.write_all(b"DATA").await.unwrap();
        let slices = [io::IoSlice::new(b"TRAI"), io::IoSlice::new(b"LERS")];
        let n = poll_fn(|cx| Pin::new(&mut c).poll_write_vectored(cx, &slices))
            .await
            .unwrap();
        assert_eq!(n, 8);
        assert!(c.get_ref().writes.is_empty());
        assert_eq!(c.buffered(), 19);
        c.flush().await.unwrap();
        assert_eq!(c.get_ref().writes, vec![b"HEADERSDATATRAILERS".to_vec()]);
        assert_eq!(c.get_ref().flushes, 1);
        assert_eq!(c.buffered(), 0);
    }

    #[tokio::test]
    async fn a_flush_lets_other_tasks_run_once_before_writing() {
        let mut c = Coalesced::new(Recorder::default());
        c.write_all(b"one").await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert!(c.get_ref().writes.is_empty());
        // Another response written while the flush waited goes out with it.
        c.write_all(b"two").await.unwrap();
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.get_ref().writes, vec![b"onetwo".to_vec()]);
        // With nothing buffered a flush does not wait.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.get_ref().flushes, 2);
    }

    /// As h2's connection task does: each poll writes the frames queued so far, then flushes.
    /// Responses that other tasks finish while the flush waits for its turn go out with it.
    #[tokio::test]
    async fn responses_ready_in_the_same_round_share_one_write() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static [u8]>();
        tx.send(b"first ").unwrap();
        for part in [&b"second "[..], b"third"] {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(part).unwrap() });
        }
        drop(tx);
        let mut c = Coalesced::new(Recorder::default());
        let mut open = true;
        poll_fn(|cx| {
            while open {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(frame)) => {
                        assert!(Pin::new(&mut c).poll_write(cx, frame).is_ready());
                    }
                    Poll::Ready(None) => open = false,
                    Poll::Pending => break,
                }
            }
            Pin::new(&mut c).poll_flush(cx)
        })
        .await
        .unwrap();
        assert_eq!(c.get_ref().writes, vec![b"first second third".to_vec()]);
    }

    #[tokio::test]
    async fn a_blocked_stream_keeps_the_bytes_until_it_accepts_them() {
        let mut c = Coalesced::new(Recorder {
            blocked: true,
            ..Recorder::default()
        });
        c.write_all(b"response").await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert_eq!(c.buffered(), 8);
        c.inner.blocked = false;
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.get_ref().writes, vec![b"response".to_vec()]);
    }

    #[tokio::test]
    async fn large_writes_are_bounded_and_keep_their_order() {
        let mut c = Coalesced::new(Recorder::default());
        c.write_all(b"head").await.unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        c.write_all(&big).await.unwrap();
        assert!(c.buffered() < MAX_BUFFERED);
        c.write_all(b"tail").await.unwrap();
        c.flush().await.unwrap();
        let all: Vec<u8> = c.get_ref().writes.concat();
        assert_eq!(all.len(), 4 + big.len() + 4);
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[4..4 + big.len()], &big[..]);
        assert_eq!(&all[4 + big.len()..], b"tail");
        assert!(c.get_ref().writes.iter().all(|w| w.len() <= 100_000));
    }

    #[tokio::test]
    async fn many_small_writes_never_hold_more_than_the_bound() {
        let mut c = Coalesced::new(Recorder::default());
        for _ in 0..1000 {
            c.write_all(&[7u8; 100]).await.unwrap();
            assert!(c.buffered() <= MAX_BUFFERED);
        }
        c.flush().await.unwrap();
        assert_eq!(c.get_ref().writes.concat(), vec![7u8; 100_000]);
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_a_small_buffer() {
        let mut c = Coalesced::new(Recorder::default());
        for _ in 0..50 {
            c.write_all(&[1u8; 1000]).await.unwrap();
        }
        assert!(c.buf.capacity() >= 50_000);
        c.flush().await.unwrap();
        assert!(c.buf.capacity() <= RETAINED);
        c.write_all(&[2u8; 1000]).await.unwrap();
        c.flush().await.unwrap();
        // A small buffer stays allocated for the next response.
        assert!((1000..=RETAINED).contains(&c.buf.capacity()));
        assert_eq!(c.get_ref().writes.concat().len(), 51_000);
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_buffered_first() {
        let mut c = Coalesced::new(Recorder::default());
        c.write_all(b"goaway").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(c.get_ref().writes, vec![b"goaway".to_vec()]);
        assert!(c.get_ref().shut);
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut c = Coalesced::new(a);
        b.write_all(b"request").await.unwrap();
        let mut got = [0u8; 7];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
        c.write_all(b"response").await.unwrap();
        c.flush().await.unwrap();
        let mut back = [0u8; 8];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"response");
    }
}
