//! The per-shard peer transport on monoio (single-threaded, `!Send`).
//!
//! Outbound: one writer task per peer. It dials lazily (when something is queued),
//! handshakes, then writes everything queued since its last write in one `write_all`
//! (many frames per syscall). A failed dial or handshake backs off exponentially with
//! jitter. [`PeerTransport::send`] never awaits: it appends the encoded frame to the peer's
//! bounded queue, or drops it (and counts the drop) when the queue is full; raft retries.
//! A small watcher task reads the outbound connection, on which the acceptor never sends
//! after its ack, so a peer that goes away is noticed before the next write fails.
//!
//! Inbound: an accept loop; per connection a task that runs the acceptor side of the
//! handshake, then decodes frames and pushes `(from_node, Frame)` into one bounded inbound
//! queue consumed by [`PeerTransport::recv`]. When that queue is full the reader waits, so
//! the kernel's socket buffers fill and TCP pushes back on the sender; nothing grows
//! without bound. A malformed frame is logged and counted and its connection closed.
//!
//! Messages too large for one frame (up to `message_bytes_max`) are queued whole as
//! fragment frames and reassembled per inbound connection before they reach the inbound
//! queue; see [`crate::fragment`] and the README for the queue accounting.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRentExt, Canceller, Splitable,
};
use monoio::net::tcp::TcpOwnedReadHalf;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio::time::Instant;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use crate::fragment::{encode_fragments, fragment_plan, Reassembler, FRAGMENT_HEADER_BYTES};
use crate::frame::{
    begin_frame, encode_frame, finish_frame, frame_bytes, Frame, FrameDecoder, FrameError,
    FrameKind, HEADER_BYTES,
};
use crate::message::{
    encode_message, serialize_payload, Handshake, HandshakeAck, HandshakeReject, MessageError,
    PayloadWriter, RejectReason, PROTOCOL_VERSION,
};

/// Largest handshake frame accepted, so an unauthenticated connection cannot make us
/// buffer a big frame before it has identified itself.
const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;

/// Pause after a failed accept (EMFILE and friends), doubled per consecutive failure up
/// to `ACCEPT_BACKOFF_MAX_MS`, so the accept loop does not spin.
const ACCEPT_BACKOFF_MIN_MS: u64 = 10;
const ACCEPT_BACKOFF_MAX_MS: u64 = 1000;

/// Default [`TransportConfig::message_bytes_max`]: 1 GiB.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 1 << 30;
/// Default [`TransportConfig::fragment_bytes`]: 4 MiB.
pub const FRAGMENT_BYTES_DEFAULT: usize = 4 << 20;

/// Largest single `write_all` of a batch: the write stall timeout applies to each, so a
/// batch holding a large fragmented message is not abandoned merely for being large.
const WRITE_CHUNK_BYTES: usize = 4 << 20;

/// Settings of one shard's transport. Limits carry their unit in their name.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Cluster this node belongs to; handshakes from other clusters are refused.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: u64,
    /// This shard's index; it only talks to the same shard on other nodes.
    pub shard: u32,
    /// Address of this shard's peer listener (`peer_port + shard`).
    pub listen_addr: SocketAddr,
    /// Largest frame (16-byte header + payload) sent or accepted.
    pub frame_bytes_max: usize,
    /// Largest logical message sent or accepted, counted like a frame (16-byte header +
    /// payload). A message that does not fit one frame travels as fragments and is
    /// reassembled by the receiver, holding at most this much per inbound connection.
    /// Must be at least `frame_bytes_max`.
    pub message_bytes_max: usize,
    /// Message bytes carried by each fragment of a message too large for one frame;
    /// clamped to what fits in a frame (`frame_bytes_max - HEADER_BYTES -
    /// FRAGMENT_HEADER_BYTES`), see [`TransportConfig::fragment_data_bytes`].
    pub fragment_bytes: usize,
    /// Frames queued for one peer before further sends to it are dropped.
    pub send_queue_frames_max: usize,
    /// Bytes queued for one peer before further sends to it are dropped. A whole
    /// fragmented message counts (all its fragment frames); one larger than this limit is
    /// only accepted alone, into an empty queue with no such message being written (see
    /// the crate README), so a peer holds at most about `send_queue_bytes_max +
    /// message_bytes_max`.
    pub send_queue_bytes_max: usize,
    /// Frames received but not yet taken by [`PeerTransport::recv`]; beyond this, readers
    /// stop reading (TCP backpressure).
    pub recv_queue_frames_max: usize,
    /// Payload bytes received but not yet taken; same backpressure as
    /// `recv_queue_frames_max` (a single frame larger than this still passes alone).
    pub recv_queue_bytes_max: usize,
    /// Inbound connections kept at once; further ones are closed on accept.
    pub inbound_connections_max: usize,
    /// Size of each read on an inbound connection (more when a larger frame is pending).
    pub read_chunk_bytes: usize,
    /// Limit on establishing a TCP connection to a peer.
    pub connect_timeout_ms: u64,
    /// Limit on the handshake exchange, on either side.
    pub handshake_timeout_ms: u64,
    /// A batch write to a peer that makes no complete progress for this long (peer not
    /// reading, or gone without a reset) abandons the connection and redials, instead of
    /// waiting out the kernel's retransmission timeout (many minutes).
    pub write_stall_timeout_ms: u64,
    /// First reconnect delay after a failed dial or handshake.
    pub backoff_min_ms: u64,
    /// Largest reconnect delay.
    pub backoff_max_ms: u64,
    /// Accept handshakes from node ids not registered with [`PeerTransport::set_peer`]
    /// (storage-node agents, members not yet known here). When false only registered
    /// peers are accepted. A node claiming this node's own id is always refused.
    pub accept_unknown_nodes: bool,
    /// Address sent to peers in our handshake as where this shard listens. `None`: the
    /// listener's bound address (so port 0 becomes the real port); when that IP is
    /// unspecified (`0.0.0.0`), acceptors substitute the IP our connection comes from.
    pub advertise_addr: Option<SocketAddr>,
    /// When a handshake is accepted from a node with no address registered here, register
    /// the address it advertises (as [`PeerTransport::set_peer`] would), so that replies
    /// to it can be sent. An address set with `set_peer` is never overridden. Only matters
    /// for nodes that pass the handshake, i.e. with `accept_unknown_nodes`.
    pub learn_peer_addrs: bool,
    /// Learned peers kept at once; beyond this, further nodes are accepted but not
    /// learned (with `accept_unknown_nodes`, anyone completing a handshake could
    /// otherwise make us hold a writer and a send queue per node id it claims).
    pub learned_peers_max: usize,
}

impl TransportConfig {
    /// A configuration with the default limits.
    pub fn new(cluster_id: u64, node_id: u64, shard: u32, listen_addr: SocketAddr) -> Self {
        TransportConfig {
            cluster_id,
            node_id,
            shard,
            listen_addr,
            frame_bytes_max: crate::frame::FRAME_BYTES_MAX_DEFAULT,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            fragment_bytes: FRAGMENT_BYTES_DEFAULT,
            send_queue_frames_max: 4096,
            send_queue_bytes_max: 32 * 1024 * 1024,
            recv_queue_frames_max: 4096,
            recv_queue_bytes_max: 64 * 1024 * 1024,
            inbound_connections_max: 256,
            read_chunk_bytes: 64 * 1024,
            connect_timeout_ms: 1000,
            handshake_timeout_ms: 1000,
            write_stall_timeout_ms: 10_000,
            backoff_min_ms: 20,
            backoff_max_ms: 2000,
            accept_unknown_nodes: false,
            advertise_addr: None,
            learn_peer_addrs: true,
            learned_peers_max: 256,
        }
    }

    /// Message bytes per fragment actually used: `fragment_bytes`, clamped so a fragment
    /// frame fits `frame_bytes_max`.
    pub fn fragment_data_bytes(&self) -> usize {
        let room = self
            .frame_bytes_max
            .saturating_sub(HEADER_BYTES + FRAGMENT_HEADER_BYTES);
        self.fragment_bytes.min(room).max(1)
    }

    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("frame_bytes_max", self.frame_bytes_max as u64),
            ("message_bytes_max", self.message_bytes_max as u64),
            ("fragment_bytes", self.fragment_bytes as u64),
            ("send_queue_frames_max", self.send_queue_frames_max as u64),
            ("send_queue_bytes_max", self.send_queue_bytes_max as u64),
            ("recv_queue_frames_max", self.recv_queue_frames_max as u64),
            ("recv_queue_bytes_max", self.recv_queue_bytes_max as u64),
            (
                "inbound_connections_max",
                self.inbound_connections_max as u64,
            ),
            ("read_chunk_bytes", self.read_chunk_bytes as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("write_stall_timeout_ms", self.write_stall_timeout_ms),
            ("backoff_min_ms", self.backoff_min_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        if self.frame_bytes_max < HANDSHAKE_FRAME_BYTES_MAX {
            return Err(ConfigError(format!(
                "frame_bytes_max {} is below the handshake frame limit {HANDSHAKE_FRAME_BYTES_MAX}",
                self.frame_bytes_max
            )));
        }
        if self.frame_bytes_max > frame_bytes(u32::MAX as usize) {
            return Err(ConfigError(
                "frame_bytes_max exceeds what the 32-bit length field can describe".into(),
            ));
        }
        if self.send_queue_bytes_max < self.frame_bytes_max {
            return Err(ConfigError(format!(
                "send_queue_bytes_max {} is below frame_bytes_max {}: the largest frame could never be queued",
                self.send_queue_bytes_max, self.frame_bytes_max
            )));
        }
        if self.message_bytes_max < self.frame_bytes_max {
            return Err(ConfigError(format!(
                "message_bytes_max {} is below frame_bytes_max {}",
                self.message_bytes_max, self.frame_bytes_max
            )));
        }
        // Keeps the receiver's buffer allocatable and the fragment count within its u32.
        let fragments = self.message_bytes_max.div_ceil(self.fragment_data_bytes());
        if self.message_bytes_max > isize::MAX as usize / 2 || fragments > u32::MAX as usize {
            return Err(ConfigError(format!(
                "message_bytes_max {} is too large (or fragment_bytes too small)",
                self.message_bytes_max
            )));
        }
        if let Some(addr) = self.advertise_addr {
            if let Err(e) = check_peer_addr(addr) {
                return Err(ConfigError(format!("advertise_addr {addr}: {e}")));
            }
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            return Err(ConfigError(format!(
                "backoff_max_ms {} is below backoff_min_ms {}",
                self.backoff_max_ms, self.backoff_min_ms
            )));
        }
        Ok(())
    }
}

/// Why an address cannot be dialed (port 0, multicast or broadcast IP).
fn check_peer_addr(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Err("port 0".into());
    }
    let bad_ip = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_multicast() || ip.is_broadcast(),
        std::net::IpAddr::V6(ip) => ip.is_multicast(),
    };
    if bad_ip {
        return Err(format!("{} is not a unicast IP", addr.ip()));
    }
    Ok(())
}

/// The address a handshake advertises, validated; an unspecified IP is replaced by the
/// IP the connection comes from (`remote`).
fn advertised_addr(text: &str, remote: SocketAddr) -> Result<SocketAddr, String> {
    if text.len() > crate::message::LISTEN_ADDR_BYTES_MAX {
        return Err(format!(
            "listen address of {} bytes is too long",
            text.len()
        ));
    }
    let mut addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("listen address {text:?} is not a socket address"))?;
    check_peer_addr(addr).map_err(|e| format!("listen address {addr}: {e}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(remote.ip());
    }
    Ok(addr)
}

/// An unusable [`TransportConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport config: {0}")]
pub struct ConfigError(pub String);

/// Failures of transport management calls.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The peer listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// [`PeerTransport::set_peer`] was given this node's own id.
    #[error("node {0} is this node; it cannot be its own peer")]
    SelfPeer(u64),
    /// The transport has been closed.
    #[error("transport closed")]
    Closed,
}

/// Why [`PeerTransport::send`] did not queue a frame. None of these block or retry.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No peer with this id was registered with [`PeerTransport::set_peer`].
    #[error("unknown peer {node_id}")]
    UnknownPeer {
        /// The destination asked for.
        node_id: u64,
    },
    /// The peer's send queue is full (slow or unreachable peer); the frame was dropped and
    /// counted in [`PeerStats::frames_dropped`].
    #[error("send queue to peer {node_id} is full; frame dropped")]
    QueueFull {
        /// The destination.
        node_id: u64,
    },
    /// The message exceeds [`TransportConfig::message_bytes_max`] (messages up to that
    /// size that do not fit one frame are fragmented, not refused).
    #[error("message of {frame_bytes} bytes exceeds the limit of {frame_bytes_max} bytes")]
    TooLarge {
        /// Size of the refused message as one frame, header included.
        frame_bytes: usize,
        /// The limit that applied: `message_bytes_max`.
        frame_bytes_max: usize,
    },
    /// Handshake and fragment kinds are sent by the transport only.
    #[error("frame kind {0:?} is reserved for the transport")]
    ReservedKind(FrameKind),
    /// The message could not be serialized.
    #[error(transparent)]
    Encode(#[from] MessageError),
    /// The transport has been closed.
    #[error("transport closed")]
    Closed,
}

/// Counters of one peer, from [`PeerTransport::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's node id.
    pub node_id: u64,
    /// Where it is dialed; `None` for a node that only dialed in and whose address was
    /// neither registered nor learned.
    pub addr: Option<SocketAddr>,
    /// `addr` was learned from the node's handshake (`learn_peer_addrs`), not set with
    /// [`PeerTransport::set_peer`].
    pub addr_learned: bool,
    /// An outbound connection is established and handshaken.
    pub connected: bool,
    /// The peer currently has a handshaken inbound connection to us.
    pub inbound_connected: bool,
    /// Frames waiting in the send queue.
    pub queued_frames: usize,
    /// Bytes waiting in the send queue.
    pub queued_bytes: usize,
    /// Frames handed to the kernel.
    pub frames_sent: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// `write_all` calls that carried them; `frames_sent / batches_written` is the
    /// batching factor.
    pub batches_written: u64,
    /// Frames dropped: one per send refused with `QueueFull` (whatever its size), plus the
    /// wire frames lost with a connection that failed mid-write.
    pub frames_dropped: u64,
    /// Messages too large for one frame that were queued as fragments.
    pub messages_fragmented: u64,
    /// Fragmented messages received from this node and reassembled.
    pub messages_reassembled: u64,
    /// Frames received from this node.
    pub frames_received: u64,
    /// Bytes (headers included) received from this node.
    pub bytes_received: u64,
    /// Outbound connections established (dial + handshake), the first one included.
    pub connects: u64,
    /// Outbound connections established after the first one.
    pub reconnects: u64,
    /// Failed dials or handshakes.
    pub connect_failures: u64,
    /// Handshakes this peer refused (wrong cluster, shard ...).
    pub handshakes_refused: u64,
}

/// Transport-wide counters and the per-peer ones, from [`PeerTransport::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// The listener's bound address.
    pub local_addr: Option<SocketAddr>,
    /// Registered peers and nodes that dialed in, by node id.
    pub peers: Vec<PeerStats>,
    /// Inbound connections currently open (handshaken or not).
    pub inbound_connections: usize,
    /// Connections accepted by the listener.
    pub accepted_total: u64,
    /// Connections closed on accept because `inbound_connections_max` was reached.
    pub inbound_refused_total: u64,
    /// Inbound handshakes answered with a reject.
    pub handshakes_rejected_total: u64,
    /// Inbound connections that failed before completing a handshake (timeout, garbage).
    pub handshake_failures_total: u64,
    /// Handshaken inbound connections closed because of a malformed frame.
    pub malformed_frames_total: u64,
    /// Handshaken inbound connections closed because their fragments could not be
    /// reassembled (out of order, inconsistent, over `message_bytes_max`, interleaved).
    pub fragment_errors_total: u64,
    /// Peer addresses registered from inbound handshakes (`learn_peer_addrs`).
    pub peers_learned_total: u64,
    /// Frames waiting in the inbound queue.
    pub recv_queued_frames: usize,
    /// Payload bytes waiting in the inbound queue.
    pub recv_queued_bytes: usize,
}

/// One-waiter wake-up flag: `notify` before `wait` is not lost.
#[derive(Default)]
struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.notified.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// The bounded inbound queue: many reader tasks push, the shard's loop pops.
struct InboundQueue {
    inner: RefCell<InboundInner>,
}

struct InboundInner {
    items: VecDeque<(u64, Frame)>,
    frames_max: usize,
    /// Payload bytes queued.
    bytes: usize,
    bytes_max: usize,
    closed: bool,
    receiver: Option<Waker>,
    /// Readers waiting for room, by connection id (one entry per connection at most).
    senders: HashMap<u64, Waker>,
}

impl InboundQueue {
    fn new(frames_max: usize, bytes_max: usize) -> Self {
        InboundQueue {
            inner: RefCell::new(InboundInner {
                items: VecDeque::new(),
                frames_max,
                bytes: 0,
                bytes_max,
                closed: false,
                receiver: None,
                senders: HashMap::new(),
            }),
        }
    }

    /// Waits for room, then queues; `Err` once the transport is closed.
    fn push(&self, conn_id: u64, item: (u64, Frame)) -> impl Future<Output = Result<(), ()>> + '_ {
        let item_bytes = item.1.payload.len();
        let mut item = Some(item);
        poll_fn(move |cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.closed {
                return Poll::Ready(Err(()));
            }
            // An empty queue takes any frame, so one larger than bytes_max still passes.
            let full = inner.items.len() >= inner.frames_max
                || (!inner.items.is_empty()
                    && inner.bytes.saturating_add(item_bytes) > inner.bytes_max);
            if full {
                inner.senders.insert(conn_id, cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(item) = item.take() {
                inner.bytes = inner.bytes.saturating_add(item_bytes);
                inner.items.push_back(item);
            }
            inner.senders.remove(&conn_id);
            let receiver = inner.receiver.take();
            drop(inner);
            if let Some(receiver) = receiver {
                receiver.wake();
            }
            Poll::Ready(Ok(()))
        })
    }

    fn try_pop(&self) -> Option<(u64, Frame)> {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return None;
        }
        let item = inner.items.pop_front()?;
        inner.bytes = inner.bytes.saturating_sub(item.1.payload.len());
        let waiting = std::mem::take(&mut inner.senders);
        drop(inner);
        // Readers only wait when the queue was full, so waking them all is rare and cheap.
        for (_, waker) in waiting {
            waker.wake();
        }
        Some(item)
    }

    fn pop(&self) -> impl Future<Output = Option<(u64, Frame)>> + '_ {
        poll_fn(move |cx| {
            if let Some(item) = self.try_pop() {
                return Poll::Ready(Some(item));
            }
            let mut inner = self.inner.borrow_mut();
            if inner.closed {
                return Poll::Ready(None);
            }
            inner.receiver = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn len(&self) -> (usize, usize) {
        let inner = self.inner.borrow();
        (inner.items.len(), inner.bytes)
    }

    fn close(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        inner.items.clear();
        inner.bytes = 0;
        let receiver = inner.receiver.take();
        let senders = std::mem::take(&mut inner.senders);
        drop(inner);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        for (_, waker) in senders {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct SendQueue {
    buf: BytesMut,
    /// Wire frames in `buf` (each fragment counts).
    frames: usize,
    /// Bytes of the batch the writer is writing now (taken out of `buf`).
    in_flight_bytes: usize,
    /// Id of the next fragmented message.
    next_message_id: u64,
}

impl SendQueue {
    /// Whether `frames` more frames of `bytes` may be queued. A message over the limits
    /// passes alone into an empty queue, unless a batch over the byte limit is still being
    /// written: at most one oversized message is held per peer at a time.
    /// `queued_bytes` is the queue's length before this message.
    fn admits(
        &self,
        cfg: &TransportConfig,
        queued_bytes: usize,
        frames: usize,
        bytes: usize,
    ) -> bool {
        let fits = self.frames.saturating_add(frames) <= cfg.send_queue_frames_max
            && queued_bytes.saturating_add(bytes) <= cfg.send_queue_bytes_max;
        fits || (self.frames == 0 && self.in_flight_bytes <= cfg.send_queue_bytes_max)
    }
}

#[derive(Default)]
struct OutCounters {
    frames_sent: Cell<u64>,
    bytes_sent: Cell<u64>,
    batches_written: Cell<u64>,
    frames_dropped: Cell<u64>,
    messages_fragmented: Cell<u64>,
    connects: Cell<u64>,
    connect_failures: Cell<u64>,
    handshakes_refused: Cell<u64>,
}

#[derive(Default, Clone, Copy)]
struct InCounters {
    frames_received: u64,
    bytes_received: u64,
    messages_reassembled: u64,
}

struct Peer {
    node_id: u64,
    addr: Cell<SocketAddr>,
    /// Registered from the node's handshake rather than by `set_peer`.
    learned: Cell<bool>,
    addr_changed: Cell<bool>,
    removed: Cell<bool>,
    connected: Cell<bool>,
    queue: RefCell<SendQueue>,
    /// Wakes the writer: something queued, connection broken, address changed, closing.
    wake: Notify,
    /// Id of the outbound connection the watcher saw end.
    broken_conn: Cell<u64>,
    counters: OutCounters,
}

#[derive(Default)]
struct Counters {
    accepted: Cell<u64>,
    inbound_refused: Cell<u64>,
    handshakes_rejected: Cell<u64>,
    handshake_failures: Cell<u64>,
    malformed_frames: Cell<u64>,
    fragment_errors: Cell<u64>,
    peers_learned: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().saturating_add(by));
}

struct Shared {
    cfg: TransportConfig,
    local_addr: SocketAddr,
    /// Sent in our handshakes as where we listen.
    advertise_addr: SocketAddr,
    closed: Cell<bool>,
    peers: RefCell<HashMap<u64, Rc<Peer>>>,
    inbound: InboundQueue,
    /// Cancellers of live connections (and the listener), by connection id; cancelling one
    /// ends every pending read/write/accept of that connection.
    conns: RefCell<HashMap<u64, Canceller>>,
    next_conn_id: Cell<u64>,
    /// Newest handshaken inbound connection of each node.
    inbound_by_node: RefCell<HashMap<u64, u64>>,
    inbound_open: Cell<usize>,
    in_counters: RefCell<HashMap<u64, InCounters>>,
    counters: Counters,
    tasks_live: Cell<usize>,
    idle: Notify,
}

impl Shared {
    fn register_conn(&self) -> Option<(u64, CancelHandle)> {
        if self.closed.get() {
            return None;
        }
        let id = self.next_conn_id.get().wrapping_add(1);
        self.next_conn_id.set(id);
        let canceller = Canceller::new();
        let handle = canceller.handle();
        self.conns.borrow_mut().insert(id, canceller);
        Some((id, handle))
    }

    fn cancel_conn(&self, id: u64) {
        let canceller = self.conns.borrow_mut().remove(&id);
        if let Some(canceller) = canceller {
            let _ = canceller.cancel();
        }
    }

    fn forget_conn(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    fn spawn<F: Future<Output = ()> + 'static>(self: &Rc<Self>, fut: F) {
        self.tasks_live.set(self.tasks_live.get() + 1);
        let guard = TaskGuard(self.clone());
        monoio::spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.inbound.close();
        let cancellers: Vec<Canceller> = self.conns.borrow_mut().drain().map(|(_, c)| c).collect();
        for canceller in cancellers {
            let _ = canceller.cancel();
        }
        let peers: Vec<Rc<Peer>> = self.peers.borrow().values().cloned().collect();
        for peer in peers {
            peer.wake.notify();
        }
    }

    /// Accepts or refuses a handshake; on success, the dialer's listen address.
    fn check_handshake(
        &self,
        hs: &Handshake,
        remote: SocketAddr,
    ) -> Result<SocketAddr, HandshakeReject> {
        let cfg = &self.cfg;
        let reject = |reason, detail: String| Err(HandshakeReject { reason, detail });
        if hs.protocol_version != PROTOCOL_VERSION {
            return reject(
                RejectReason::ProtocolVersion,
                format!(
                    "protocol version {} != {PROTOCOL_VERSION}",
                    hs.protocol_version
                ),
            );
        }
        if hs.cluster_id != cfg.cluster_id {
            return reject(
                RejectReason::ClusterMismatch,
                format!("cluster {} != {}", hs.cluster_id, cfg.cluster_id),
            );
        }
        if hs.shard != cfg.shard {
            return reject(
                RejectReason::ShardMismatch,
                format!("shard {} != {}", hs.shard, cfg.shard),
            );
        }
        if hs.node_id == cfg.node_id {
            return reject(
                RejectReason::SelfConnection,
                format!("node id {} is the acceptor's own", hs.node_id),
            );
        }
        let listen_addr = match advertised_addr(&hs.listen_addr, remote) {
            Ok(addr) => addr,
            Err(detail) => return reject(RejectReason::BadAddress, detail),
        };
        if !cfg.accept_unknown_nodes && !self.peers.borrow().contains_key(&hs.node_id) {
            return reject(
                RejectReason::UnknownNode,
                format!("node {} is not a known member", hs.node_id),
            );
        }
        Ok(listen_addr)
    }

    /// Registers a peer (or changes its address) and starts its writer. An explicit
    /// registration (`learned == false`) always wins; a learned one only fills a gap.
    fn register_peer(self: &Rc<Self>, node_id: u64, addr: SocketAddr, learned: bool) {
        let existing = self.peers.borrow().get(&node_id).cloned();
        if let Some(peer) = existing {
            if learned {
                return;
            }
            peer.learned.set(false);
            if peer.addr.get() != addr {
                peer.addr.set(addr);
                peer.addr_changed.set(true);
                peer.wake.notify();
            }
            return;
        }
        let peer = Rc::new(Peer {
            node_id,
            addr: Cell::new(addr),
            learned: Cell::new(learned),
            addr_changed: Cell::new(false),
            removed: Cell::new(false),
            connected: Cell::new(false),
            queue: RefCell::new(SendQueue::default()),
            wake: Notify::default(),
            broken_conn: Cell::new(0),
            counters: OutCounters::default(),
        });
        self.peers.borrow_mut().insert(node_id, peer.clone());
        if learned {
            bump(&self.counters.peers_learned, 1);
        }
        self.spawn(writer_task(self.clone(), peer, SmallRng::from_entropy()));
    }

    /// The peer a send goes to, after the checks every send makes.
    fn send_target(&self, to: u64, kind: FrameKind) -> Result<Rc<Peer>, SendError> {
        if self.closed.get() {
            return Err(SendError::Closed);
        }
        if kind.is_transport_only() {
            return Err(SendError::ReservedKind(kind));
        }
        self.peers
            .borrow()
            .get(&to)
            .cloned()
            .ok_or(SendError::UnknownPeer { node_id: to })
    }

    fn check_message_size(&self, message_bytes: usize) -> Result<(), SendError> {
        if message_bytes > self.cfg.message_bytes_max {
            return Err(SendError::TooLarge {
                frame_bytes: message_bytes,
                frame_bytes_max: self.cfg.message_bytes_max,
            });
        }
        Ok(())
    }

    fn send(&self, to: u64, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        let peer = self.send_target(to, kind)?;
        let cfg = &self.cfg;
        let size = HEADER_BYTES.saturating_add(payload.len());
        self.check_message_size(size)?;
        let mut queue = peer.queue.borrow_mut();
        let queued = queue.buf.len();
        if size <= cfg.frame_bytes_max {
            if !queue.admits(cfg, queued, 1, size) {
                drop(queue);
                return Err(queue_full(&peer));
            }
            encode_frame(kind, payload, &mut queue.buf).map_err(|e| SendError::Encode(e.into()))?;
            queue.frames += 1;
        } else {
            let fragment_bytes = cfg.fragment_data_bytes();
            let (count, wire_bytes) = fragment_plan(payload.len(), fragment_bytes);
            if !queue.admits(cfg, queued, count, wire_bytes) {
                drop(queue);
                return Err(queue_full(&peer));
            }
            let id = queue.next_message_id;
            encode_fragments(kind, id, payload, fragment_bytes, &mut queue.buf)
                .map_err(|e| SendError::Encode(e.into()))?;
            queue.next_message_id = id.wrapping_add(1);
            queue.frames += count;
            bump(&peer.counters.messages_fragmented, 1);
        }
        drop(queue);
        peer.wake.notify();
        Ok(())
    }

    /// Serializes straight into the queue (no copy for a message that fits one frame);
    /// a larger one is then cut into fragments, which costs one copy.
    fn send_message<T>(&self, to: u64, kind: FrameKind, value: &T) -> Result<(), SendError>
    where
        T: for<'o, 'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                PayloadWriter<'o>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        let peer = self.send_target(to, kind)?;
        let cfg = &self.cfg;
        let mut queue = peer.queue.borrow_mut();
        let start = queue.buf.len();
        // Refuse before serializing when even the smallest frame would not be admitted.
        if !queue.admits(cfg, start, 1, HEADER_BYTES) {
            drop(queue);
            return Err(queue_full(&peer));
        }
        begin_frame(&mut queue.buf);
        if let Err(e) = serialize_payload(value, &mut queue.buf) {
            queue.buf.truncate(start);
            return Err(SendError::Encode(e));
        }
        let size = queue.buf.len() - start;
        if let Err(e) = self.check_message_size(size) {
            queue.buf.truncate(start);
            return Err(e);
        }
        if size <= cfg.frame_bytes_max {
            if !queue.admits(cfg, start, 1, size) {
                queue.buf.truncate(start);
                drop(queue);
                return Err(queue_full(&peer));
            }
            finish_frame(&mut queue.buf, start, kind).map_err(|e| SendError::Encode(e.into()))?;
            queue.frames += 1;
        } else {
            let fragment_bytes = cfg.fragment_data_bytes();
            let (count, wire_bytes) = fragment_plan(size - HEADER_BYTES, fragment_bytes);
            if !queue.admits(cfg, start, count, wire_bytes) {
                queue.buf.truncate(start);
                drop(queue);
                return Err(queue_full(&peer));
            }
            let payload = queue.buf.split_off(start + HEADER_BYTES);
            queue.buf.truncate(start);
            let id = queue.next_message_id;
            encode_fragments(kind, id, &payload, fragment_bytes, &mut queue.buf)
                .map_err(|e| SendError::Encode(e.into()))?;
            queue.next_message_id = id.wrapping_add(1);
            queue.frames += count;
            bump(&peer.counters.messages_fragmented, 1);
        }
        drop(queue);
        peer.wake.notify();
        Ok(())
    }
}

/// Counts a send refused because the peer's queue is full.
fn queue_full(peer: &Peer) -> SendError {
    bump(&peer.counters.frames_dropped, 1);
    SendError::QueueFull {
        node_id: peer.node_id,
    }
}

struct TaskGuard(Rc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let live = self.0.tasks_live.get().saturating_sub(1);
        self.0.tasks_live.set(live);
        if live == 0 {
            self.0.idle.notify();
        }
    }
}

/// Forgets a connection's canceller once every task using it has ended.
struct ConnReg {
    shared: Rc<Shared>,
    id: u64,
}

impl Drop for ConnReg {
    fn drop(&mut self) {
        self.shared.forget_conn(self.id);
    }
}

/// One shard's peer transport. Create it inside the shard's monoio runtime; dropping it
/// (or [`PeerTransport::close`]) stops its tasks. It must be dropped on that runtime's
/// thread while the runtime is running, because stopping cancels in-flight I/O.
pub struct PeerTransport {
    shared: Rc<Shared>,
}

/// A cheap clonable handle for sending from other tasks of the same shard. It does not
/// keep the transport running: once the [`PeerTransport`] is dropped, sends fail with
/// [`SendError::Closed`].
#[derive(Clone)]
pub struct PeerSender {
    shared: Rc<Shared>,
}

impl PeerSender {
    /// See [`PeerTransport::send`].
    pub fn send(&self, to: u64, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        self.shared.send(to, kind, payload)
    }

    /// See [`PeerTransport::send_message`].
    pub fn send_message<T>(&self, to: u64, kind: FrameKind, value: &T) -> Result<(), SendError>
    where
        T: for<'o, 'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                PayloadWriter<'o>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        self.shared.send_message(to, kind, value)
    }
}

impl PeerTransport {
    /// Binds the peer listener and starts the accept loop. Must run inside a monoio
    /// runtime with timers enabled.
    pub fn new(cfg: TransportConfig) -> Result<PeerTransport, TransportError> {
        cfg.validate()?;
        // No SO_REUSEPORT: a second process on the same peer port must fail loudly rather
        // than silently receive half of the connections.
        let opts = ListenerOpts::new().reuse_port(false).reuse_addr(true);
        let listener = TcpListener::bind_with_config(cfg.listen_addr, &opts).map_err(|source| {
            TransportError::Bind {
                addr: cfg.listen_addr,
                source,
            }
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: cfg.listen_addr,
                source,
            })?;
        let advertise_addr = cfg.advertise_addr.unwrap_or(local_addr);
        let shared = Rc::new(Shared {
            inbound: InboundQueue::new(cfg.recv_queue_frames_max, cfg.recv_queue_bytes_max),
            cfg,
            local_addr,
            advertise_addr,
            closed: Cell::new(false),
            peers: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            next_conn_id: Cell::new(0),
            inbound_by_node: RefCell::new(HashMap::new()),
            inbound_open: Cell::new(0),
            in_counters: RefCell::new(HashMap::new()),
            counters: Counters::default(),
            tasks_live: Cell::new(0),
            idle: Notify::default(),
        });
        let Some((id, handle)) = shared.register_conn() else {
            return Err(TransportError::Closed);
        };
        let reg = ConnReg {
            shared: shared.clone(),
            id,
        };
        shared.spawn(accept_loop(shared.clone(), listener, handle, reg));
        info!(
            shard = shared.cfg.shard,
            node = shared.cfg.node_id,
            %local_addr,
            "peer transport listening"
        );
        Ok(PeerTransport { shared })
    }

    /// The listener's bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The configuration in use.
    pub fn config(&self) -> &TransportConfig {
        &self.shared.cfg
    }

    /// A clonable sending handle for other tasks of this shard.
    pub fn sender(&self) -> PeerSender {
        PeerSender {
            shared: self.shared.clone(),
        }
    }

    /// Registers a peer, or changes its address (the current connection is dropped and
    /// the new address dialed). Queued frames are kept across an address change.
    pub fn set_peer(&self, node_id: u64, addr: SocketAddr) -> Result<(), TransportError> {
        if self.shared.closed.get() {
            return Err(TransportError::Closed);
        }
        if node_id == self.shared.cfg.node_id {
            return Err(TransportError::SelfPeer(node_id));
        }
        self.shared.register_peer(node_id, addr, false);
        Ok(())
    }

    /// Forgets a peer (registered or learned): its queue is discarded and its outbound
    /// connection closed. A learned node that connects again is learned again. When
    /// `accept_unknown_nodes` is off, its inbound connection is closed too. Returns
    /// whether it was registered.
    pub fn remove_peer(&self, node_id: u64) -> bool {
        let peer = self.shared.peers.borrow_mut().remove(&node_id);
        let Some(peer) = peer else {
            return false;
        };
        peer.removed.set(true);
        peer.wake.notify();
        let inbound = self.shared.inbound_by_node.borrow().get(&node_id).copied();
        match inbound {
            Some(conn) if !self.shared.cfg.accept_unknown_nodes => self.shared.cancel_conn(conn),
            // Still connected: its counters go when that connection ends.
            Some(_) => {}
            None => {
                self.shared.in_counters.borrow_mut().remove(&node_id);
            }
        }
        true
    }

    /// Queues `payload` as one frame of `kind` for peer `to`. Never awaits: when the
    /// peer's queue is full the frame is dropped, counted, and `QueueFull` returned.
    pub fn send(&self, to: u64, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        self.shared.send(to, kind, payload)
    }

    /// Serializes `value` with rkyv straight into peer `to`'s queue as one frame; same
    /// policy as [`PeerTransport::send`].
    pub fn send_message<T>(&self, to: u64, kind: FrameKind, value: &T) -> Result<(), SendError>
    where
        T: for<'o, 'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                PayloadWriter<'o>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        self.shared.send_message(to, kind, value)
    }

    /// The next inbound frame and the node it came from; `None` once closed. Meant for
    /// one consumer (the shard's event loop).
    pub async fn recv(&self) -> Option<(u64, Frame)> {
        self.shared.inbound.pop().await
    }

    /// An inbound frame if one is waiting, without awaiting (to drain in batches).
    pub fn try_recv(&self) -> Option<(u64, Frame)> {
        self.shared.inbound.try_pop()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        let shared = &self.shared;
        let in_counters = shared.in_counters.borrow();
        let inbound_by_node = shared.inbound_by_node.borrow();
        let mut peers: Vec<PeerStats> = shared
            .peers
            .borrow()
            .values()
            .map(|peer| {
                let queue = peer.queue.borrow();
                let c = &peer.counters;
                let inc = in_counters.get(&peer.node_id).copied().unwrap_or_default();
                PeerStats {
                    node_id: peer.node_id,
                    addr: Some(peer.addr.get()),
                    addr_learned: peer.learned.get(),
                    connected: peer.connected.get(),
                    inbound_connected: inbound_by_node.contains_key(&peer.node_id),
                    queued_frames: queue.frames,
                    queued_bytes: queue.buf.len(),
                    frames_sent: c.frames_sent.get(),
                    bytes_sent: c.bytes_sent.get(),
                    batches_written: c.batches_written.get(),
                    frames_dropped: c.frames_dropped.get(),
                    messages_fragmented: c.messages_fragmented.get(),
                    messages_reassembled: inc.messages_reassembled,
                    frames_received: inc.frames_received,
                    bytes_received: inc.bytes_received,
                    connects: c.connects.get(),
                    reconnects: c.connects.get().saturating_sub(1),
                    connect_failures: c.connect_failures.get(),
                    handshakes_refused: c.handshakes_refused.get(),
                }
            })
            .collect();
        let registered = shared.peers.borrow();
        for (&node_id, inc) in in_counters.iter() {
            if !registered.contains_key(&node_id) {
                peers.push(PeerStats {
                    node_id,
                    inbound_connected: inbound_by_node.contains_key(&node_id),
                    frames_received: inc.frames_received,
                    bytes_received: inc.bytes_received,
                    messages_reassembled: inc.messages_reassembled,
                    ..PeerStats::default()
                });
            }
        }
        peers.sort_by_key(|p| p.node_id);
        let c = &shared.counters;
        let (recv_queued_frames, recv_queued_bytes) = shared.inbound.len();
        TransportStats {
            local_addr: Some(shared.local_addr),
            peers,
            inbound_connections: shared.inbound_open.get(),
            accepted_total: c.accepted.get(),
            inbound_refused_total: c.inbound_refused.get(),
            handshakes_rejected_total: c.handshakes_rejected.get(),
            handshake_failures_total: c.handshake_failures.get(),
            malformed_frames_total: c.malformed_frames.get(),
            fragment_errors_total: c.fragment_errors.get(),
            peers_learned_total: c.peers_learned.get(),
            recv_queued_frames,
            recv_queued_bytes,
        }
    }

    /// Stops everything: the listener, every connection, every writer. Queued and
    /// undelivered frames are discarded; `recv` returns `None` from now on. Idempotent.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether [`PeerTransport::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get()
    }

    /// Closes, then waits until every task of the transport has ended (the listening
    /// socket is released once this returns). Tasks end promptly except a dial in
    /// progress, which ends within `connect_timeout_ms`.
    pub async fn shutdown(self) {
        self.shared.close();
        while self.shared.tasks_live.get() > 0 {
            self.shared.idle.wait().await;
        }
    }
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("node_id", &self.shared.cfg.node_id)
            .field("shard", &self.shared.cfg.shard)
            .field("local_addr", &self.shared.local_addr)
            .field("closed", &self.shared.closed.get())
            .finish()
    }
}

/// Reads once into the spare capacity of `buf` (callers reserve first).
async fn read_some<R: CancelableAsyncReadRent>(
    reader: &mut R,
    buf: BytesMut,
    handle: &CancelHandle,
) -> (io::Result<usize>, BytesMut) {
    let start = buf.len();
    let end = buf.capacity();
    let (res, slice) = reader
        .cancelable_read(buf.slice_mut(start..end), handle.clone())
        .await;
    (res, slice.into_inner())
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed by peer")]
    Eof,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads until one whole frame is decoded; bytes after it stay in `buf`.
async fn read_frame<R: CancelableAsyncReadRent>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
    read_chunk_bytes: usize,
    handle: &CancelHandle,
) -> Result<Frame, ReadError> {
    loop {
        if let Some(frame) = decoder.decode(buf)? {
            return Ok(frame);
        }
        buf.reserve(decoder.bytes_missing(buf).max(read_chunk_bytes));
        let (res, b) = read_some(reader, std::mem::take(buf), handle).await;
        *buf = b;
        if res? == 0 {
            return Err(ReadError::Eof);
        }
    }
}

async fn accept_loop(
    shared: Rc<Shared>,
    listener: TcpListener,
    handle: CancelHandle,
    _reg: ConnReg,
) {
    let mut failures: u32 = 0;
    loop {
        if shared.closed.get() {
            break;
        }
        match listener.cancelable_accept(handle.clone()).await {
            Ok((stream, addr)) => {
                failures = 0;
                bump(&shared.counters.accepted, 1);
                if shared.inbound_open.get() >= shared.cfg.inbound_connections_max {
                    bump(&shared.counters.inbound_refused, 1);
                    warn!(shard = shared.cfg.shard, %addr, "inbound connection limit reached; closing");
                    drop(stream);
                    continue;
                }
                shared.inbound_open.set(shared.inbound_open.get() + 1);
                shared.spawn(inbound_conn(shared.clone(), stream, addr));
            }
            Err(e) => {
                if shared.closed.get() {
                    break;
                }
                failures = failures.saturating_add(1);
                let pause_ms = ACCEPT_BACKOFF_MIN_MS
                    .saturating_mul(1u64 << failures.min(16))
                    .min(ACCEPT_BACKOFF_MAX_MS);
                warn!(shard = shared.cfg.shard, error = %e, pause_ms, "accept failed");
                monoio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
        }
    }
    debug!(shard = shared.cfg.shard, "accept loop stopped");
}

/// Ends an inbound connection's bookkeeping however its task ends.
struct InboundGuard {
    shared: Rc<Shared>,
    conn_id: u64,
    node_id: Option<u64>,
}

impl Drop for InboundGuard {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared
            .inbound_open
            .set(shared.inbound_open.get().saturating_sub(1));
        shared.forget_conn(self.conn_id);
        if let Some(node_id) = self.node_id {
            let mut by_node = shared.inbound_by_node.borrow_mut();
            if by_node.get(&node_id) == Some(&self.conn_id) {
                by_node.remove(&node_id);
                // Counters of unregistered nodes live only as long as their connection,
                // so nodes cycling through ids cannot grow the map without bound.
                if !shared.peers.borrow().contains_key(&node_id) {
                    shared.in_counters.borrow_mut().remove(&node_id);
                }
            }
        }
    }
}

async fn write_frame_timeout(
    stream: &mut TcpStream,
    frame: BytesMut,
    handle: &CancelHandle,
    timeout: Duration,
) -> io::Result<()> {
    match monoio::time::timeout(timeout, stream.write_all(frame, handle.clone())).await {
        Ok((res, _)) => res.map(|_| ()),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

async fn inbound_conn(shared: Rc<Shared>, mut stream: TcpStream, addr: SocketAddr) {
    let Some((conn_id, handle)) = shared.register_conn() else {
        shared
            .inbound_open
            .set(shared.inbound_open.get().saturating_sub(1));
        return;
    };
    let mut guard = InboundGuard {
        shared: shared.clone(),
        conn_id,
        node_id: None,
    };
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let hs_timeout = Duration::from_millis(cfg.handshake_timeout_ms);
    let mut buf = BytesMut::with_capacity(HANDSHAKE_FRAME_BYTES_MAX);
    let hs_decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let first = monoio::time::timeout(
        hs_timeout,
        read_frame(
            &mut stream,
            &mut buf,
            &hs_decoder,
            HANDSHAKE_FRAME_BYTES_MAX,
            &handle,
        ),
    )
    .await;
    let hs = match first {
        Ok(Ok(frame)) if frame.kind == FrameKind::Handshake => frame.decode::<Handshake>(),
        Ok(Ok(frame)) => {
            bump(&shared.counters.handshake_failures, 1);
            warn!(shard = cfg.shard, %addr, kind = ?frame.kind, "inbound connection did not start with a handshake");
            return;
        }
        Ok(Err(e)) => {
            bump(&shared.counters.handshake_failures, 1);
            debug!(shard = cfg.shard, %addr, error = %e, "inbound connection failed before handshake");
            return;
        }
        Err(_) => {
            bump(&shared.counters.handshake_failures, 1);
            debug!(shard = cfg.shard, %addr, "inbound handshake timed out");
            return;
        }
    };
    let hs = match hs {
        Ok(hs) => hs,
        Err(e) => {
            bump(&shared.counters.handshake_failures, 1);
            warn!(shard = cfg.shard, %addr, error = %e, "malformed handshake");
            return;
        }
    };
    let mut reply = BytesMut::with_capacity(256);
    let listen_addr = match shared.check_handshake(&hs, addr) {
        Ok(listen_addr) => listen_addr,
        Err(reject) => {
            bump(&shared.counters.handshakes_rejected, 1);
            warn!(shard = cfg.shard, %addr, node = hs.node_id, reason = ?reject.reason, detail = %reject.detail, "handshake rejected");
            if encode_message(FrameKind::HandshakeReject, &reject, &mut reply).is_ok() {
                let _ = write_frame_timeout(&mut stream, reply, &handle, hs_timeout).await;
            }
            return;
        }
    };
    let ack = HandshakeAck {
        cluster_id: cfg.cluster_id,
        node_id: cfg.node_id,
        shard: cfg.shard,
    };
    if let Err(e) = encode_message(FrameKind::HandshakeAck, &ack, &mut reply) {
        warn!(error = %e, "cannot encode handshake ack");
        return;
    }
    if let Err(e) = write_frame_timeout(&mut stream, reply, &handle, hs_timeout).await {
        debug!(shard = cfg.shard, %addr, error = %e, "cannot send handshake ack");
        return;
    }
    let from = hs.node_id;
    // We answer over our own outbound connection: without an address for this node its
    // messages would be stepped but every reply would fail with UnknownPeer.
    if cfg.learn_peer_addrs && !shared.closed.get() {
        let (known, learned) = {
            let peers = shared.peers.borrow();
            let learned = peers.values().filter(|p| p.learned.get()).count();
            (peers.contains_key(&from), learned)
        };
        if !known && learned >= cfg.learned_peers_max {
            warn!(shard = cfg.shard, node = from, %listen_addr, "learned_peers_max reached; peer address not learned");
        } else if !known {
            info!(shard = cfg.shard, node = from, %listen_addr, "learned peer address from handshake");
            shared.register_peer(from, listen_addr, true);
        }
    }
    // A newer connection from the same node replaces the older one, which is usually a
    // half-dead leftover of a peer restart.
    let older = shared.inbound_by_node.borrow_mut().insert(from, conn_id);
    guard.node_id = Some(from);
    if let Some(older) = older {
        shared.cancel_conn(older);
    }
    debug!(shard = cfg.shard, %addr, node = from, "inbound peer connected");

    let decoder = FrameDecoder::new(cfg.frame_bytes_max);
    let mut reassembler = Reassembler::new(cfg.message_bytes_max);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if frame.kind.is_handshake() {
                        bump(&shared.counters.malformed_frames, 1);
                        warn!(shard = cfg.shard, node = from, kind = ?frame.kind, "handshake frame on an established connection; closing");
                        return;
                    }
                    let fragment = frame.kind == FrameKind::Fragment;
                    {
                        let mut in_counters = shared.in_counters.borrow_mut();
                        let c = in_counters.entry(from).or_default();
                        c.frames_received = c.frames_received.saturating_add(1);
                        c.bytes_received = c
                            .bytes_received
                            .saturating_add(frame_bytes(frame.payload.len()) as u64);
                    }
                    let frame = match reassembler.push(frame) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => continue,
                        Err(e) => {
                            bump(&shared.counters.fragment_errors, 1);
                            warn!(shard = cfg.shard, node = from, error = %e, "bad fragment; closing connection");
                            return;
                        }
                    };
                    if fragment {
                        let mut in_counters = shared.in_counters.borrow_mut();
                        let c = in_counters.entry(from).or_default();
                        c.messages_reassembled = c.messages_reassembled.saturating_add(1);
                    }
                    if shared.inbound.push(conn_id, (from, frame)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bump(&shared.counters.malformed_frames, 1);
                    warn!(shard = cfg.shard, node = from, error = %e, "malformed frame; closing connection");
                    return;
                }
            }
        }
        buf.reserve(decoder.bytes_missing(&buf).max(cfg.read_chunk_bytes));
        let (res, b) = read_some(&mut stream, buf, &handle).await;
        buf = b;
        match res {
            Ok(0) => {
                debug!(shard = cfg.shard, node = from, "inbound peer closed");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(shard = cfg.shard, node = from, error = %e, "inbound read ended");
                return;
            }
        }
    }
}

/// An established outbound connection.
struct OutConn {
    id: u64,
    write: monoio::net::tcp::TcpOwnedWriteHalf,
    handle: CancelHandle,
    _reg: Rc<ConnReg>,
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("handshake failed: {0}")]
    Handshake(#[from] ReadError),
    #[error("handshake refused: {reason:?}: {detail}")]
    Refused {
        reason: RejectReason,
        detail: String,
    },
    #[error("unexpected handshake answer: {0}")]
    Protocol(String),
    #[error("transport closed")]
    Closed,
}

async fn dial(shared: &Rc<Shared>, peer: &Rc<Peer>) -> Result<OutConn, DialError> {
    let cfg = &shared.cfg;
    let addr = peer.addr.get();
    let connect = monoio::time::timeout(
        Duration::from_millis(cfg.connect_timeout_ms),
        TcpStream::connect_addr(addr),
    )
    .await;
    let mut stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(DialError::Connect(e)),
        Err(_) => return Err(DialError::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    let (id, handle) = shared.register_conn().ok_or(DialError::Closed)?;
    let reg = Rc::new(ConnReg {
        shared: shared.clone(),
        id,
    });
    let exchange = monoio::time::timeout(
        Duration::from_millis(cfg.handshake_timeout_ms),
        handshake_dialer(shared, peer, &mut stream, &handle),
    )
    .await;
    match exchange {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(DialError::HandshakeTimeout),
    }
    let (read, write) = stream.into_split();
    shared.spawn(watch_outbound(
        peer.clone(),
        read,
        handle.clone(),
        id,
        reg.clone(),
    ));
    Ok(OutConn {
        id,
        write,
        handle,
        _reg: reg,
    })
}

async fn handshake_dialer(
    shared: &Shared,
    peer: &Peer,
    stream: &mut TcpStream,
    handle: &CancelHandle,
) -> Result<(), DialError> {
    let cfg = &shared.cfg;
    let hs = Handshake {
        cluster_id: cfg.cluster_id,
        node_id: cfg.node_id,
        shard: cfg.shard,
        protocol_version: PROTOCOL_VERSION,
        listen_addr: shared.advertise_addr.to_string(),
    };
    let mut out = BytesMut::with_capacity(192);
    encode_message(FrameKind::Handshake, &hs, &mut out)
        .map_err(|e| DialError::Protocol(e.to_string()))?;
    let (res, _) = stream.write_all(out, handle.clone()).await;
    res.map_err(ReadError::Io)?;
    let mut buf = BytesMut::with_capacity(512);
    let decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let frame = read_frame(stream, &mut buf, &decoder, 512, handle).await?;
    match frame.kind {
        FrameKind::HandshakeAck => {
            let ack = frame
                .decode::<HandshakeAck>()
                .map_err(|e| DialError::Protocol(e.to_string()))?;
            if ack.cluster_id != cfg.cluster_id
                || ack.node_id != peer.node_id
                || ack.shard != cfg.shard
            {
                return Err(DialError::Protocol(format!(
                    "expected cluster {} node {} shard {}, reached cluster {} node {} shard {}",
                    cfg.cluster_id, peer.node_id, cfg.shard, ack.cluster_id, ack.node_id, ack.shard
                )));
            }
            Ok(())
        }
        FrameKind::HandshakeReject => {
            let reject = frame
                .decode::<HandshakeReject>()
                .map_err(|e| DialError::Protocol(e.to_string()))?;
            bump(&peer.counters.handshakes_refused, 1);
            Err(DialError::Refused {
                reason: reject.reason,
                detail: reject.detail,
            })
        }
        other => Err(DialError::Protocol(format!(
            "expected a handshake answer, got {other:?}"
        ))),
    }
}

/// The acceptor never writes after its ack, so any completion of this read (end of
/// stream, error, stray bytes, cancellation) means the connection is over.
async fn watch_outbound(
    peer: Rc<Peer>,
    mut read: TcpOwnedReadHalf,
    handle: CancelHandle,
    conn_id: u64,
    _reg: Rc<ConnReg>,
) {
    let (res, _) = read.cancelable_read(vec![0u8; 64], handle).await;
    debug!(node = peer.node_id, result = ?res.map_err(|e| e.kind()), "outbound connection ended");
    peer.broken_conn.set(conn_id);
    peer.wake.notify();
}

/// Writes `batch` in slices of at most `WRITE_CHUNK_BYTES`, each bounded by `stall`.
/// Returns the buffer for reuse (a new one if a write was cancelled with it).
async fn write_batch(
    c: &mut OutConn,
    batch: BytesMut,
    stall: Duration,
) -> (io::Result<()>, BytesMut) {
    let len = batch.len();
    let mut batch = batch;
    let mut at = 0;
    while at < len {
        let end = len.min(at.saturating_add(WRITE_CHUNK_BYTES));
        let write = c.write.write_all(batch.slice(at..end), c.handle.clone());
        match monoio::time::timeout(stall, write).await {
            Ok((res, slice)) => {
                batch = slice.into_inner();
                if let Err(e) = res {
                    return (Err(e), batch);
                }
            }
            Err(_) => {
                // The buffer went with the cancelled write; the next batch gets a new one.
                let e = io::Error::new(io::ErrorKind::TimedOut, "write stalled; peer not reading");
                return (Err(e), BytesMut::new());
            }
        }
        at = end;
    }
    (Ok(()), batch)
}

fn backoff_delay(cfg: &TransportConfig, failures: u32, rng: &mut SmallRng) -> Duration {
    let exp = cfg
        .backoff_min_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
        .min(cfg.backoff_max_ms);
    // Full jitter over the upper half: peers that failed together do not retry together.
    let ms = rng.gen_range(exp / 2..=exp).max(1);
    Duration::from_millis(ms)
}

/// Waits `delay`, or less if the transport closes, the peer is removed or its address
/// changes.
async fn backoff_wait(shared: &Shared, peer: &Peer, delay: Duration) {
    let deadline = Instant::now() + delay;
    loop {
        if shared.closed.get() || peer.removed.get() || peer.addr_changed.get() {
            return;
        }
        if monoio::time::timeout_at(deadline, peer.wake.wait())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn writer_task(shared: Rc<Shared>, peer: Rc<Peer>, mut rng: SmallRng) {
    let mut failures: u32 = 0;
    let mut conn: Option<OutConn> = None;
    let mut spare = BytesMut::new();
    let drop_conn = |conn: &mut Option<OutConn>| {
        if let Some(c) = conn.take() {
            shared.cancel_conn(c.id);
            peer.connected.set(false);
        }
    };
    loop {
        if shared.closed.get() || peer.removed.get() {
            break;
        }
        if peer.addr_changed.replace(false) {
            drop_conn(&mut conn);
            failures = 0;
        }
        if conn
            .as_ref()
            .is_some_and(|c| peer.broken_conn.get() == c.id)
        {
            drop_conn(&mut conn);
        }
        if peer.queue.borrow().frames == 0 {
            peer.wake.wait().await;
            continue;
        }
        let Some(c) = conn.as_mut() else {
            match dial(&shared, &peer).await {
                Ok(c) => {
                    failures = 0;
                    bump(&peer.counters.connects, 1);
                    peer.connected.set(true);
                    debug!(
                        shard = shared.cfg.shard,
                        node = peer.node_id,
                        "outbound peer connected"
                    );
                    conn = Some(c);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    bump(&peer.counters.connect_failures, 1);
                    let delay = backoff_delay(&shared.cfg, failures, &mut rng);
                    if matches!(e, DialError::Refused { .. }) {
                        warn!(shard = shared.cfg.shard, node = peer.node_id, error = %e, ?delay, "peer refused our handshake");
                    } else {
                        debug!(shard = shared.cfg.shard, node = peer.node_id, error = %e, ?delay, "dial failed");
                    }
                    backoff_wait(&shared, &peer, delay).await;
                }
            }
            continue;
        };
        let frames = {
            let mut queue = peer.queue.borrow_mut();
            std::mem::swap(&mut queue.buf, &mut spare);
            queue.in_flight_bytes = spare.len();
            std::mem::take(&mut queue.frames)
        };
        let bytes = spare.len();
        let stall = Duration::from_millis(shared.cfg.write_stall_timeout_ms);
        let (res, buf) = write_batch(c, spare, stall).await;
        spare = buf;
        peer.queue.borrow_mut().in_flight_bytes = 0;
        spare.clear();
        // A batch that held a large fragmented message must not pin its memory for good.
        if spare.capacity() > shared.cfg.send_queue_bytes_max {
            spare = BytesMut::new();
        }
        match res {
            Ok(_) => {
                bump(&peer.counters.frames_sent, frames as u64);
                bump(&peer.counters.bytes_sent, bytes as u64);
                bump(&peer.counters.batches_written, 1);
            }
            Err(e) => {
                bump(&peer.counters.frames_dropped, frames as u64);
                debug!(shard = shared.cfg.shard, node = peer.node_id, error = %e, frames, "write failed; reconnecting");
                drop_conn(&mut conn);
            }
        }
    }
    drop_conn(&mut conn);
}
