//! Streamed response bodies: a handler returns a [`Response`](crate::Response) carrying a
//! [`BodyStream`]; the connection sends it with `transfer-encoding: chunked`, one chunk per
//! [`BodySender::send`], as soon as it is sent, and closes the connection after the
//! terminating chunk (a streamed response is always the connection's last).
//!
//! The buffer between producer and connection is bounded in bytes: a producer that outruns
//! its client gets [`SendError::Full`] and decides what to do (typically end the stream with a
//! reason through [`BodySender::finish_with`]); nothing grows without bound. When the client
//! leaves or the server drains, the connection closes the stream and the producer's next send
//! gets [`SendError::Closed`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

#[derive(Debug, Default)]
struct Inner {
    chunks: VecDeque<Bytes>,
    buffered_bytes: usize,
    buffered_bytes_max: usize,
    /// The producer is done: send what is queued, then the terminating chunk.
    finished: bool,
    /// The connection is gone: sends fail.
    closed: bool,
    waker: Option<Waker>,
}

/// Why a chunk was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client has not taken enough of what was sent: the buffer is at its bound.
    Full,
    /// The connection is gone (client left, server draining) or the stream was finished.
    Closed,
}

/// The producing end of a streamed body.
#[derive(Debug)]
pub struct BodySender {
    inner: Arc<Mutex<Inner>>,
}

/// The body of a streamed response (see the module docs). Clones share one stream.
#[derive(Debug, Clone)]
pub struct BodyStream {
    inner: Arc<Mutex<Inner>>,
}

impl PartialEq for BodyStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for BodyStream {}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding this lock leaves plain data behind: keep using it.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stream whose buffer holds at most `buffered_bytes_max` bytes not yet written.
pub fn body_channel(buffered_bytes_max: usize) -> (BodySender, BodyStream) {
    let inner = Arc::new(Mutex::new(Inner {
        buffered_bytes_max,
        ..Inner::default()
    }));
    (
        BodySender {
            inner: inner.clone(),
        },
        BodyStream { inner },
    )
}

impl BodySender {
    /// Queues one chunk (empty chunks are skipped: an empty chunk would end the body).
    pub fn send(&self, chunk: Bytes) -> Result<(), SendError> {
        let mut g = lock(&self.inner);
        if g.closed || g.finished {
            return Err(SendError::Closed);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if g.buffered_bytes + chunk.len() > g.buffered_bytes_max {
            return Err(SendError::Full);
        }
        g.buffered_bytes += chunk.len();
        g.chunks.push_back(chunk);
        if let Some(w) = g.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Queues a last chunk even past the bound (a reason for ending), then ends the body.
    pub fn finish_with(&self, chunk: Bytes) {
        let mut g = lock(&self.inner);
        if !g.closed && !g.finished && !chunk.is_empty() {
            g.buffered_bytes += chunk.len();
            g.chunks.push_back(chunk);
        }
        g.finished = true;
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    /// Whether the connection is gone (the producer can stop).
    pub fn is_closed(&self) -> bool {
        lock(&self.inner).closed
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        let mut g = lock(&self.inner);
        g.finished = true;
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }
}

impl BodyStream {
    /// The next chunk; `None` once the producer finished and everything was taken.
    pub fn next(&self) -> Next<'_> {
        Next { stream: self }
    }

    /// The connection is gone: later sends fail and queued chunks are dropped.
    pub fn close(&self) {
        let mut g = lock(&self.inner);
        g.closed = true;
        g.chunks.clear();
        g.buffered_bytes = 0;
    }
}

/// Future of [`BodyStream::next`].
#[derive(Debug)]
pub struct Next<'a> {
    stream: &'a BodyStream,
}

impl Future for Next<'_> {
    type Output = Option<Bytes>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut g = lock(&self.stream.inner);
        if let Some(chunk) = g.chunks.pop_front() {
            g.buffered_bytes -= chunk.len();
            return Poll::Ready(Some(chunk));
        }
        if g.finished || g.closed {
            return Poll::Ready(None);
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<F: Future>(f: F) -> Option<F::Output> {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let mut f = std::pin::pin!(f);
        let waker = Waker::from(Arc::new(Noop));
        match f.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn chunks_flow_in_order_and_the_bound_holds() {
        let (tx, rx) = body_channel(8);
        assert_eq!(now(rx.next()), None, "nothing sent yet: pending");
        tx.send(Bytes::from_static(b"abcd")).unwrap();
        tx.send(Bytes::from_static(b"")).unwrap();
        tx.send(Bytes::from_static(b"efgh")).unwrap();
        assert_eq!(tx.send(Bytes::from_static(b"i")), Err(SendError::Full));
        assert_eq!(now(rx.next()), Some(Some(Bytes::from_static(b"abcd"))));
        tx.send(Bytes::from_static(b"i")).unwrap();
        tx.finish_with(Bytes::from_static(b"reason past the bound"));
        assert_eq!(tx.send(Bytes::from_static(b"x")), Err(SendError::Closed));
        assert_eq!(now(rx.next()), Some(Some(Bytes::from_static(b"efgh"))));
        assert_eq!(now(rx.next()), Some(Some(Bytes::from_static(b"i"))));
        assert_eq!(
            now(rx.next()),
            Some(Some(Bytes::from_static(b"reason past the bound")))
        );
        assert_eq!(now(rx.next()), Some(None));
    }

    #[test]
    fn a_closed_connection_stops_the_producer_and_a_dropped_sender_ends_the_body() {
        let (tx, rx) = body_channel(8);
        tx.send(Bytes::from_static(b"a")).unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.send(Bytes::from_static(b"b")), Err(SendError::Closed));
        let (tx, rx) = body_channel(8);
        tx.send(Bytes::from_static(b"a")).unwrap();
        drop(tx);
        assert_eq!(now(rx.next()), Some(Some(Bytes::from_static(b"a"))));
        assert_eq!(now(rx.next()), Some(None));
    }
}
