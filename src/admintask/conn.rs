//! Admin task connections: framed TCP on monoio (io_uring), a per-node idle pool, and the
//! send path shared by sync and async tasks (write retried, reply under a deadline).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mast_wire::{Frame, FrameDecoder};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::proto::{
    decode_packet, decode_reply, encode_packet, encode_reply, result, TaskPacket, TaskReply,
};

/// Bytes asked of each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// One TCP connection carrying admin frames.
pub struct FramedConn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("read: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] mast_wire::FrameError),
}

impl FramedConn {
    pub fn new(stream: TcpStream, frame_bytes_max: usize) -> FramedConn {
        let _ = stream.set_nodelay(true);
        FramedConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: FrameDecoder::new(frame_bytes_max),
        }
    }

    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        frame_bytes_max: usize,
    ) -> io::Result<FramedConn> {
        match monoio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => Ok(FramedConn::new(s, frame_bytes_max)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {} ms", timeout.as_millis()),
            )),
        }
    }

    pub async fn write(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let (res, _) = self.stream.write_all(bytes).await;
        res.map(|_| ())
    }

    /// Reads one whole frame (no deadline: callers wrap it in one).
    pub async fn read_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(frame);
            }
            self.buf
                .reserve(self.decoder.bytes_missing(&self.buf).max(READ_CHUNK_BYTES));
            let buf = std::mem::take(&mut self.buf);
            let (start, end) = (buf.len(), buf.capacity());
            let (res, slice) = self.stream.read(buf.slice_mut(start..end)).await;
            self.buf = slice.into_inner();
            if res? == 0 {
                return Err(ReadError::Eof);
            }
        }
    }

    /// Node side: the next task packet (bytecheck-validated).
    pub async fn read_packet(&mut self) -> Result<TaskPacket, String> {
        let frame = self.read_frame().await.map_err(|e| e.to_string())?;
        decode_packet(&frame).map_err(|e| e.to_string())
    }

    /// Node side: answers a packet.
    pub async fn write_reply(&mut self, reply: &TaskReply) -> io::Result<()> {
        let mut out = BytesMut::new();
        encode_reply(reply, &mut out).map_err(|e| io::Error::other(e.to_string()))?;
        self.write(out.to_vec()).await
    }
}

/// Why a task did not reach the node or the node refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("node address {0:?} is not ip:port")]
    BadAddr(String),
    #[error("cannot send to {addr} after {attempts} attempts: {reason}")]
    Write {
        addr: String,
        attempts: u32,
        reason: String,
    },
    #[error("no reply from {addr} within {ms} ms")]
    NoReply { addr: String, ms: u64 },
    #[error("bad reply from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    /// The node answered with an error result code (CubeFS: `result code[…],msg[…]`).
    #[error("result code[{code:#x}],msg[{message}]")]
    Failed { code: u8, message: String },
    #[error("task cannot be encoded: {0}")]
    Encode(String),
}

/// Tunables of the send path (from [`super::AdminTaskConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    pub connect_timeout_ms: u64,
    pub write_attempts: u32,
    pub write_retry_ms: u64,
    pub reply_timeout_ms: u64,
    pub frame_bytes_max: usize,
}

/// Idle connections per node, reused by later sends.
pub struct ConnPool {
    idle: RefCell<HashMap<SocketAddr, Vec<(FramedConn, Instant)>>>,
    idle_per_node_max: usize,
    idle_timeout: Duration,
    next_req_id: Cell<u64>,
}

impl ConnPool {
    pub fn new(idle_per_node_max: usize, idle_timeout_ms: u64) -> ConnPool {
        // Like CubeFS, request IDs start from the clock so a restarted master does not
        // reuse the previous run's.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() << 32)
            .unwrap_or(1);
        ConnPool {
            idle: RefCell::new(HashMap::new()),
            idle_per_node_max,
            idle_timeout: Duration::from_millis(idle_timeout_ms),
            next_req_id: Cell::new(seed),
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<FramedConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, conn: FramedConn) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < self.idle_per_node_max {
            list.push((conn, Instant::now()));
        }
    }

    /// Closes idle connections past the idle timeout, and every one of nodes not in `keep`.
    pub fn sweep(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|addr, list| {
            list.retain(|(_, since)| since.elapsed() < self.idle_timeout);
            keep(addr) && !list.is_empty()
        });
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Sends a task and waits for the node's reply frame (the ack of an async task or the
    /// result of a sync one). The write is tried `write_attempts` times, `write_retry_ms`
    /// apart, each on a fresh connection after a failure; a reused idle connection the node
    /// closed meanwhile counts as a failed write. A reply with a result code other than
    /// OpOk is [`TaskError::Failed`].
    pub async fn send(
        &self,
        addr_text: &str,
        mut packet: TaskPacket,
        opts: SendOptions,
    ) -> Result<TaskReply, TaskError> {
        let addr: SocketAddr = addr_text
            .parse()
            .map_err(|_| TaskError::BadAddr(addr_text.to_string()))?;
        let req_id = self.next_req_id.get().wrapping_add(1);
        self.next_req_id.set(req_id);
        packet.req_id = req_id;
        let mut bytes = BytesMut::new();
        encode_packet(&packet, &mut bytes).map_err(|e| TaskError::Encode(e.to_string()))?;
        if bytes.len() > opts.frame_bytes_max {
            return Err(TaskError::Encode(format!(
                "frame of {} bytes exceeds {} bytes",
                bytes.len(),
                opts.frame_bytes_max
            )));
        }
        let bytes = bytes.to_vec();
        let attempts = opts.write_attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                monoio::time::sleep(Duration::from_millis(opts.write_retry_ms)).await;
            }
            let (mut conn, reused) = match self.take(addr) {
                Some(c) => (c, true),
                None => match FramedConn::connect(
                    addr,
                    Duration::from_millis(opts.connect_timeout_ms),
                    opts.frame_bytes_max,
                )
                .await
                {
                    Ok(c) => (c, false),
                    Err(e) => {
                        last = format!("connect: {e}");
                        continue;
                    }
                },
            };
            if let Err(e) = conn.write(bytes.clone()).await {
                last = format!("write: {e}");
                continue;
            }
            let read = monoio::time::timeout(
                Duration::from_millis(opts.reply_timeout_ms),
                conn.read_frame(),
            )
            .await;
            let frame = match read {
                Err(_) => {
                    return Err(TaskError::NoReply {
                        addr: addr_text.to_string(),
                        ms: opts.reply_timeout_ms,
                    })
                }
                // A pooled connection the node closed while idle: the write went into
                // the void, so this is a failed write, tried again.
                Ok(Err(ReadError::Eof)) if reused => {
                    last = "idle connection closed by the node".into();
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(TaskError::Protocol {
                        addr: addr_text.to_string(),
                        reason: e.to_string(),
                    })
                }
                Ok(Ok(f)) => f,
            };
            let reply = decode_reply(&frame).map_err(|e| TaskError::Protocol {
                addr: addr_text.to_string(),
                reason: e.to_string(),
            })?;
            if reply.req_id != req_id {
                return Err(TaskError::Protocol {
                    addr: addr_text.to_string(),
                    reason: format!("reply to request {} for request {req_id}", reply.req_id),
                });
            }
            self.give_back(addr, conn);
            if reply.result_code != result::OP_OK {
                return Err(TaskError::Failed {
                    code: reply.result_code,
                    message: reply.data,
                });
            }
            return Ok(reply);
        }
        Err(TaskError::Write {
            addr: addr_text.to_string(),
            attempts,
            reason: last,
        })
    }
}
