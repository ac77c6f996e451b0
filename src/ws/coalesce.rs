//! One `write` for a whole batch of outbound frames.
//!
//! fastwebsockets writes every frame with its own `write_all`, which on a bare socket is one
//! `sendto` system call per frame: under load that was the daemon's largest single cost. The
//! socket's writer task sends the frames of one outbox batch into a [`Coalesce`] and then
//! flushes once. The buffer is allocated only while frames wait and given back after every
//! flush, so an idle socket holds no buffer at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

/// Buffers writes until [`AsyncWrite::poll_flush`] (or until `limit` bytes wait, so a huge
/// batch does not pile up in memory), then writes them out in as few calls as the socket takes.
#[derive(Debug)]
pub struct Coalesce<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    limit: usize,
}

impl<W> Coalesce<W> {
    pub fn new(inner: W, limit: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
            limit: limit.max(1),
        }
    }
}

impl<W: AsyncWrite + Unpin> Coalesce<W> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        // Kept for the rest of the batch; `poll_flush` gives it back when the batch is out.
        self.buf.clear();
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Coalesce<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() + data.len() > this.limit && !this.buf.is_empty() {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.buf = Vec::new();
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.buf = Vec::new();
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_writes_until_flush_then_sends_them_in_order() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut writer = Coalesce::new(client, 1 << 20);
        writer.write_all(b"one ").await.expect("write");
        writer.write_all(b"two").await.expect("write");
        let mut probe = [0u8; 16];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            server.read(&mut probe),
        )
        .await;
        assert!(
            early.is_err(),
            "nothing reaches the socket before the flush"
        );
        writer.flush().await.expect("flush");
        let n = server.read(&mut probe).await.expect("read");
        assert_eq!(&probe[..n], b"one two");
        assert_eq!(writer.buf.capacity(), 0, "a flushed socket keeps no buffer");
    }

    #[tokio::test]
    async fn a_batch_over_the_limit_goes_out_in_parts_and_frees_its_buffer() {
        // The peer's pipe holds less than the batch: writes must drain as they go.
        let (client, mut server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            server.read_to_end(&mut all).await.expect("read");
            all
        });
        let mut writer = Coalesce::new(client, 8192);
        let chunk = vec![7u8; 3000];
        for _ in 0..10 {
            writer.write_all(&chunk).await.expect("write");
        }
        writer.flush().await.expect("flush");
        assert_eq!(writer.buf.capacity(), 0, "a large buffer is given back");
        writer.shutdown().await.expect("shutdown");
        assert_eq!(reader.await.expect("task"), vec![7u8; 30_000]);
    }
}
