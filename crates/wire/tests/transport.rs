//! Transport tests: several transports on one monoio runtime, on 127.0.0.1 ephemeral ports.
//! Every wait is bounded by a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mast_wire::{
    encode_frame, encode_message, FrameDecoder, FrameKind, Handshake, PeerStats, PeerTransport,
    SendError, TransportConfig, PROTOCOL_VERSION,
};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(10);

/// Runs on io_uring when available (epoll otherwise); `MAST_WIRE_TEST_DRIVER=legacy`
/// forces the epoll driver so both paths can be exercised.
fn run<F: Future>(fut: F) -> F::Output {
    if std::env::var("MAST_WIRE_TEST_DRIVER").as_deref() == Ok("legacy") {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("monoio legacy runtime");
        return rt.block_on(fut);
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(fut)
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(cluster_id: u64, node_id: u64, shard: u32) -> TransportConfig {
    let mut cfg = TransportConfig::new(cluster_id, node_id, shard, any_port());
    cfg.connect_timeout_ms = 500;
    cfg.handshake_timeout_ms = 500;
    cfg.backoff_min_ms = 5;
    cfg.backoff_max_ms = 100;
    cfg
}

fn transport(cluster_id: u64, node_id: u64, shard: u32) -> PeerTransport {
    PeerTransport::new(config(cluster_id, node_id, shard)).expect("transport")
}

/// Registers every transport as a peer of every other.
fn mesh(nodes: &[(u64, &PeerTransport)]) {
    for (id, t) in nodes {
        for (other_id, other) in nodes {
            if id != other_id {
                t.set_peer(*other_id, other.local_addr()).unwrap();
            }
        }
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match monoio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` until it holds; panics at the deadline.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn peer(t: &PeerTransport, node_id: u64) -> PeerStats {
    t.stats()
        .peers
        .into_iter()
        .find(|p| p.node_id == node_id)
        .unwrap_or_default()
}

fn seq_payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.resize(len.max(4), (i % 251) as u8);
    p
}

fn seq_of(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[..4].try_into().unwrap())
}

#[test]
fn messages_arrive_in_order_both_ways() {
    run(async {
        let a = transport(7, 1, 0);
        let b = transport(7, 2, 0);
        mesh(&[(1, &a), (2, &b)]);
        let n = 2000u32;
        for i in 0..n {
            a.send(2, FrameKind::Raft, &seq_payload(i, 4 + (i as usize % 300)))
                .unwrap();
            if i % 500 == 499 {
                // Let the writer run so the queue limit is not what this test measures.
                let (from, frame) = within("first frames", b.recv()).await.unwrap();
                assert_eq!(from, 1);
                assert_eq!(frame.kind, FrameKind::Raft);
                assert_eq!(seq_of(&frame.payload), i - 499);
                for j in i - 498..=i {
                    let (_, frame) = within("frames", b.recv()).await.unwrap();
                    assert_eq!(seq_of(&frame.payload), j);
                    assert_eq!(frame.payload.len(), 4 + (j as usize % 300));
                }
            }
        }
        b.send(1, FrameKind::ForwardResponse, b"pong").unwrap();
        let (from, frame) = within("reply", a.recv()).await.unwrap();
        assert_eq!((from, frame.kind), (2, FrameKind::ForwardResponse));
        assert_eq!(frame.payload.as_slice(), b"pong");

        wait_until("send counters", || peer(&a, 2).frames_sent == n as u64).await;
        let sa = peer(&a, 2);
        assert!(sa.connected);
        assert_eq!(sa.connects, 1);
        assert_eq!(sa.frames_dropped, 0);
        let sb = peer(&b, 1);
        assert_eq!(sb.frames_received, n as u64);
        assert_eq!(sb.bytes_received, sa.bytes_sent);
        assert!(sb.inbound_connected);
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn inbound_queue_is_bounded_in_bytes_too() {
    run(async {
        let a = transport(1, 1, 0);
        let mut b_cfg = config(1, 2, 0);
        b_cfg.recv_queue_bytes_max = 10_000;
        let b = PeerTransport::new(b_cfg).unwrap();
        mesh(&[(1, &a), (2, &b)]);
        // 20 frames of 4000 bytes: at most two fit in b's queue at once.
        for i in 0..20u32 {
            a.send(2, FrameKind::Raft, &seq_payload(i, 4000)).unwrap();
        }
        wait_until("queue filled", || b.stats().recv_queued_frames == 2).await;
        // The reader waits rather than queueing more (it already holds the third frame).
        assert_eq!(b.stats().recv_queued_bytes, 8000);
        for i in 0..20u32 {
            let (_, frame) = within("frames", b.recv()).await.unwrap();
            assert_eq!(seq_of(&frame.payload), i);
            assert!(b.stats().recv_queued_bytes <= 10_000);
        }
        // One frame larger than the byte limit still gets through on its own.
        a.send(2, FrameKind::Raft, &seq_payload(99, 20_000))
            .unwrap();
        let (_, frame) = within("big frame", b.recv()).await.unwrap();
        assert_eq!(frame.payload.len(), 20_000);
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn frames_queued_together_go_out_in_one_write() {
    run(async {
        let a = transport(7, 1, 0);
        let b = transport(7, 2, 0);
        mesh(&[(1, &a), (2, &b)]);
        // Queued before the writer first runs, so they all wait for the same connection.
        for i in 0..100u32 {
            a.send(2, FrameKind::Raft, &seq_payload(i, 100)).unwrap();
        }
        for i in 0..100u32 {
            let (_, frame) = within("batched frames", b.recv()).await.unwrap();
            assert_eq!(seq_of(&frame.payload), i);
        }
        // The writer records its write when it next runs, which may follow b's reads.
        wait_until("send counters", || peer(&a, 2).frames_sent == 100).await;
        let s = peer(&a, 2);
        assert_eq!(s.batches_written, 1);
        assert_eq!(s.bytes_sent, 100 * (16 + 100));
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn three_nodes_all_to_all_with_typed_messages() {
    run(async {
        let ts = [transport(9, 1, 3), transport(9, 2, 3), transport(9, 3, 3)];
        mesh(&[(1, &ts[0]), (2, &ts[1]), (3, &ts[2])]);
        for (i, t) in ts.iter().enumerate() {
            let me = i as u64 + 1;
            for to in 1..=3u64 {
                if to != me {
                    // Any rkyv type works; a Handshake is a convenient one at hand.
                    let msg = Handshake {
                        cluster_id: me,
                        node_id: to,
                        shard: 42,
                        protocol_version: 0,
                        listen_addr: "127.0.0.1:9".to_string(),
                    };
                    t.send_message(to, FrameKind::AdminTask, &msg).unwrap();
                }
            }
        }
        for (i, t) in ts.iter().enumerate() {
            let me = i as u64 + 1;
            let mut froms = Vec::new();
            for _ in 0..2 {
                let (from, frame) = within("typed message", t.recv()).await.unwrap();
                assert_eq!(frame.kind, FrameKind::AdminTask);
                let archived = frame.access::<Handshake>().unwrap();
                assert_eq!(archived.cluster_id, from);
                assert_eq!(archived.node_id, me);
                froms.push(from);
            }
            froms.sort();
            let expected: Vec<u64> = (1..=3).filter(|&n| n != me).collect();
            assert_eq!(froms, expected);
        }
        for t in ts {
            t.shutdown().await;
        }
    });
}

async fn assert_refused(a: &PeerTransport, b: &PeerTransport, b_id: u64) {
    a.send(b_id, FrameKind::Raft, b"hello").unwrap();
    wait_until("handshake refusal", || {
        peer(a, b_id).handshakes_refused >= 1 && b.stats().handshakes_rejected_total >= 1
    })
    .await;
    let sa = peer(a, b_id);
    assert!(!sa.connected);
    assert_eq!(sa.connects, 0);
    assert_eq!(sa.frames_sent, 0);
    assert!(b.try_recv().is_none());
}

#[test]
fn handshake_from_another_cluster_is_refused() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(2, 2, 0);
        a.set_peer(2, b.local_addr()).unwrap();
        b.set_peer(1, a.local_addr()).unwrap();
        assert_refused(&a, &b, 2).await;
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn handshake_from_another_shard_is_refused() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(1, 2, 1);
        a.set_peer(2, b.local_addr()).unwrap();
        b.set_peer(1, a.local_addr()).unwrap();
        assert_refused(&a, &b, 2).await;
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn unknown_node_is_refused_unless_allowed() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(1, 2, 0);
        a.set_peer(2, b.local_addr()).unwrap();
        // b does not know node 1.
        assert_refused(&a, &b, 2).await;

        let mut open_cfg = config(1, 3, 0);
        open_cfg.accept_unknown_nodes = true;
        let c = PeerTransport::new(open_cfg).unwrap();
        a.set_peer(3, c.local_addr()).unwrap();
        a.send(3, FrameKind::AdminTaskReply, b"done").unwrap();
        let (from, frame) = within("frame from unregistered node", c.recv())
            .await
            .unwrap();
        assert_eq!(from, 1);
        assert_eq!(frame.payload.as_slice(), b"done");
        let sc = peer(&c, 1);
        // Learned from the handshake, so c can answer node 1.
        assert_eq!(sc.addr, Some(a.local_addr()));
        assert!(sc.addr_learned);
        assert_eq!(sc.frames_received, 1);
        for t in [a, b, c] {
            t.shutdown().await;
        }
    });
}

#[test]
fn dialing_an_address_that_is_another_node_fails() {
    run(async {
        let a = transport(1, 1, 0);
        let mut c_cfg = config(1, 3, 0);
        c_cfg.accept_unknown_nodes = true;
        let c = PeerTransport::new(c_cfg).unwrap();
        // a believes node 2 lives where node 3 listens.
        a.set_peer(2, c.local_addr()).unwrap();
        a.send(2, FrameKind::Raft, b"x").unwrap();
        wait_until("failed dials", || peer(&a, 2).connect_failures >= 2).await;
        assert_eq!(peer(&a, 2).connects, 0);
        assert!(c.try_recv().is_none());
        a.shutdown().await;
        c.shutdown().await;
    });
}

#[test]
fn a_restarted_peer_is_reconnected_to() {
    run(async {
        let a = transport(5, 1, 0);
        let b = transport(5, 2, 0);
        let b_addr = b.local_addr();
        mesh(&[(1, &a), (2, &b)]);
        a.send(2, FrameKind::Raft, b"before").unwrap();
        let (_, frame) = within("first frame", b.recv()).await.unwrap();
        assert_eq!(frame.payload.as_slice(), b"before");
        wait_until("connected", || peer(&a, 2).connected).await;

        within("b shutdown", b.shutdown()).await;
        // The watcher notices the peer went away without any send.
        wait_until("disconnect noticed", || !peer(&a, 2).connected).await;

        let mut b_cfg = config(5, 2, 0);
        b_cfg.listen_addr = b_addr;
        let deadline = std::time::Instant::now() + DEADLINE;
        let b2 = loop {
            // The old listener's close may complete a moment after its task ended.
            match PeerTransport::new(b_cfg.clone()) {
                Ok(t) => break t,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "cannot rebind: {e}");
                    monoio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        b2.set_peer(1, a.local_addr()).unwrap();
        a.send(2, FrameKind::Raft, b"after").unwrap();
        let (from, frame) = within("frame after restart", b2.recv()).await.unwrap();
        assert_eq!(from, 1);
        assert_eq!(frame.payload.as_slice(), b"after");
        let sa = peer(&a, 2);
        assert_eq!(sa.connects, 2);
        assert_eq!(sa.reconnects, 1);
        assert_eq!(sa.frames_dropped, 0);
        a.shutdown().await;
        b2.shutdown().await;
    });
}

#[test]
fn full_send_queue_drops_instead_of_blocking() {
    run(async {
        // Nothing listens on this port: dials are refused and the queue only grows.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let mut cfg = config(1, 1, 0);
        cfg.send_queue_frames_max = 8;
        // No fragmentation: a payload that does not fit one frame is too large.
        cfg.message_bytes_max = cfg.frame_bytes_max;
        let a = PeerTransport::new(cfg).unwrap();
        a.set_peer(2, dead_addr).unwrap();
        let mut full = 0;
        for i in 0..20u32 {
            match a.send(2, FrameKind::Raft, &i.to_le_bytes()) {
                Ok(()) => assert!(i < 8, "frame {i} accepted past the limit"),
                Err(SendError::QueueFull { node_id: 2 }) => full += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(full, 12);
        let s = peer(&a, 2);
        assert_eq!(s.frames_dropped, 12);
        assert_eq!(s.queued_frames, 8);
        assert_eq!(s.queued_bytes, 8 * (16 + 4));
        wait_until("dial failures", || peer(&a, 2).connect_failures >= 2).await;
        assert!(matches!(
            a.send(9, FrameKind::Raft, b""),
            Err(SendError::UnknownPeer { node_id: 9 })
        ));
        assert!(matches!(
            a.send(2, FrameKind::Handshake, b""),
            Err(SendError::ReservedKind(FrameKind::Handshake))
        ));
        let huge = vec![0u8; a.config().frame_bytes_max];
        assert!(matches!(
            a.send(2, FrameKind::Raft, &huge),
            Err(SendError::TooLarge { .. })
        ));
        a.shutdown().await;
    });
}

#[test]
fn slow_consumer_gets_backpressure_and_loses_nothing_accepted() {
    run(async {
        let mut a_cfg = config(1, 1, 0);
        a_cfg.frame_bytes_max = 128 * 1024;
        a_cfg.send_queue_bytes_max = 1 << 20;
        let a = PeerTransport::new(a_cfg).unwrap();
        let mut b_cfg = config(1, 2, 0);
        b_cfg.recv_queue_frames_max = 4;
        let b = PeerTransport::new(b_cfg).unwrap();
        mesh(&[(1, &a), (2, &b)]);
        // b does not consume; a keeps sending 64 KiB frames, yielding now and then so its
        // writer runs. Socket buffers fill, then a's bounded queue, then sends drop.
        let mut accepted = 0u32;
        let mut since_yield = 0u32;
        let mut saw_full = false;
        let deadline = std::time::Instant::now() + DEADLINE;
        while accepted < 2000 && std::time::Instant::now() < deadline {
            match a.send(2, FrameKind::Raft, &seq_payload(accepted, 64 * 1024)) {
                Ok(()) => accepted += 1,
                Err(SendError::QueueFull { .. }) => {
                    saw_full = true;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
            since_yield += 1;
            if since_yield == 8 {
                since_yield = 0;
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert!(saw_full, "a never filled up after {accepted} frames");
        let stats = b.stats();
        assert!(stats.recv_queued_frames <= 4);
        // Everything a accepted arrives, in order, once b consumes.
        for i in 0..accepted {
            let (_, frame) = within("backlog", b.recv()).await.unwrap();
            assert_eq!(seq_of(&frame.payload), i);
        }
        assert!(peer(&a, 2).frames_dropped >= 1);
        a.shutdown().await;
        b.shutdown().await;
    });
}

async fn read_until_closed(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    // Bounded by the caller's deadline; each read either returns data or ends the loop.
    loop {
        let (res, _) = stream.read(vec![0u8; 4096]).await;
        match res {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

#[test]
fn garbage_closes_only_its_own_connection() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(1, 2, 0);
        mesh(&[(1, &a), (2, &b)]);
        a.send(2, FrameKind::Raft, b"one").unwrap();
        within("first", b.recv()).await.unwrap();

        let mut junk = TcpStream::connect_addr(b.local_addr()).await.unwrap();
        let (res, _) = junk
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())
            .await;
        res.unwrap();
        let answered = within("garbage connection closed", read_until_closed(&mut junk)).await;
        assert_eq!(answered, 0, "nothing is answered to garbage");
        wait_until("failure counted", || {
            b.stats().handshake_failures_total == 1
        })
        .await;

        a.send(2, FrameKind::Raft, b"two").unwrap();
        let (from, frame) = within("frame after garbage", b.recv()).await.unwrap();
        assert_eq!((from, frame.payload.as_slice()), (1, &b"two"[..]));
        assert_eq!(peer(&a, 2).connects, 1);
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// Dials `addr` and completes a handshake by hand, returning the open stream.
async fn handshake_by_hand(addr: SocketAddr, cluster_id: u64, node_id: u64) -> TcpStream {
    let mut stream = TcpStream::connect_addr(addr).await.unwrap();
    let mut out = BytesMut::new();
    let hs = Handshake {
        cluster_id,
        node_id,
        shard: 0,
        protocol_version: PROTOCOL_VERSION,
        listen_addr: "127.0.0.1:9".to_string(),
    };
    encode_message(FrameKind::Handshake, &hs, &mut out).unwrap();
    let (res, _) = stream.write_all(out).await;
    res.unwrap();
    let mut buf = BytesMut::with_capacity(512);
    let frame = loop {
        if let Some(frame) = FrameDecoder::default().decode(&mut buf).unwrap() {
            break frame;
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        assert!(res.unwrap() > 0, "closed during handshake");
    };
    assert_eq!(frame.kind, FrameKind::HandshakeAck);
    stream
}

#[test]
fn malformed_frames_after_handshake_close_the_connection() {
    run(async {
        let mut b_cfg = config(1, 2, 0);
        b_cfg.accept_unknown_nodes = true;
        // Unlearned, an unregistered node's counters go with its connection (checked below).
        b_cfg.learn_peer_addrs = false;
        b_cfg.frame_bytes_max = 64 * 1024;
        let b = PeerTransport::new(b_cfg).unwrap();
        let a = transport(1, 1, 0);
        mesh(&[(1, &a), (2, &b)]);

        // A good frame, then one with a corrupted payload.
        let mut s = handshake_by_hand(b.local_addr(), 1, 77).await;
        let mut out = BytesMut::new();
        encode_frame(FrameKind::Raft, b"good", &mut out).unwrap();
        encode_frame(FrameKind::Raft, b"evil", &mut out).unwrap();
        let last = out.len() - 1;
        out[last] ^= 0x40;
        let (res, _) = s.write_all(out.to_vec()).await;
        res.unwrap();
        within("corrupt connection closed", read_until_closed(&mut s)).await;
        let (from, frame) = within("the good frame", b.recv()).await.unwrap();
        assert_eq!((from, frame.payload.as_slice()), (77, &b"good"[..]));
        assert!(b.try_recv().is_none());
        // Counters of an unregistered node go with its connection.
        wait_until("node 77 forgotten", || {
            !b.stats().peers.iter().any(|p| p.node_id == 77)
        })
        .await;

        // An oversized header is refused before its payload is sent.
        let mut s = handshake_by_hand(b.local_addr(), 1, 78).await;
        let mut header = Vec::new();
        header.extend_from_slice(&mast_wire::MAGIC.to_le_bytes());
        header.extend_from_slice(&mast_wire::VERSION.to_le_bytes());
        header.extend_from_slice(&FrameKind::Raft.as_u16().to_le_bytes());
        header.extend_from_slice(&(1u32 << 20).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let (res, _) = s.write_all(header).await;
        res.unwrap();
        within("oversized connection closed", read_until_closed(&mut s)).await;

        // A second handshake on an established connection is a protocol error too.
        let mut s = handshake_by_hand(b.local_addr(), 1, 79).await;
        let mut out = BytesMut::new();
        encode_frame(FrameKind::Handshake, b"", &mut out).unwrap();
        let (res, _) = s.write_all(out.to_vec()).await;
        res.unwrap();
        within(
            "second-handshake connection closed",
            read_until_closed(&mut s),
        )
        .await;

        wait_until("malformed counted", || {
            b.stats().malformed_frames_total == 3
        })
        .await;
        // The real peer is unaffected.
        a.send(2, FrameKind::Raft, b"still fine").unwrap();
        let (from, frame) = within("frame from the real peer", b.recv()).await.unwrap();
        assert_eq!((from, frame.payload.as_slice()), (1, &b"still fine"[..]));
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn a_peer_that_stops_reading_is_abandoned_and_redialed() {
    run(async {
        // A fake node 2 that acks handshakes and then never reads.
        let fake = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fake_addr = fake.local_addr().unwrap();
        let mut cfg = config(1, 1, 0);
        cfg.write_stall_timeout_ms = 200;
        cfg.frame_bytes_max = 64 * 1024 + 64;
        cfg.send_queue_bytes_max = 1 << 20;
        let a = PeerTransport::new(cfg).unwrap();
        a.set_peer(2, fake_addr).unwrap();
        let sender = a.sender();
        // Keeps a's queue busy until told to stop; bounded by its count.
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let stop2 = stop.clone();
        monoio::spawn(async move {
            let payload = vec![1u8; 64 * 1024];
            for _ in 0..100_000 {
                if stop2.get() {
                    break;
                }
                let _ = sender.send(2, FrameKind::Raft, &payload);
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut held = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = within("dial from a", fake.accept()).await.unwrap();
            let mut buf = BytesMut::with_capacity(512);
            let frame = loop {
                if let Some(frame) = FrameDecoder::default().decode(&mut buf).unwrap() {
                    break frame;
                }
                let (res, b) = s.read(buf).await;
                buf = b;
                assert!(res.unwrap() > 0);
            };
            let hs = frame.decode::<Handshake>().unwrap();
            assert_eq!(hs.node_id, 1);
            let ack = mast_wire::HandshakeAck {
                cluster_id: 1,
                node_id: 2,
                shard: 0,
            };
            let mut out = BytesMut::new();
            encode_message(FrameKind::HandshakeAck, &ack, &mut out).unwrap();
            let (res, _) = s.write_all(out.to_vec()).await;
            res.unwrap();
            // Never read again, but keep the socket open so only the stall can end it.
            held.push(s);
        }
        stop.set(true);
        // a counts the connection once it has read the second ack.
        wait_until("second connection counted", || peer(&a, 2).connects == 2).await;
        let s = peer(&a, 2);
        assert!(s.frames_dropped > 0);
        a.shutdown().await;
    });
}

#[test]
fn silent_connection_is_closed_at_the_handshake_timeout() {
    run(async {
        let mut cfg = config(1, 2, 0);
        cfg.handshake_timeout_ms = 50;
        let b = PeerTransport::new(cfg).unwrap();
        let mut s = TcpStream::connect_addr(b.local_addr()).await.unwrap();
        within("silent connection closed", read_until_closed(&mut s)).await;
        assert_eq!(b.stats().handshake_failures_total, 1);
        wait_until("slot released", || b.stats().inbound_connections == 0).await;
        b.shutdown().await;
    });
}

#[test]
fn removed_peer_is_forgotten_and_closed() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(1, 2, 0);
        mesh(&[(1, &a), (2, &b)]);
        a.send(2, FrameKind::Raft, b"x").unwrap();
        within("frame", b.recv()).await.unwrap();
        assert!(b
            .stats()
            .peers
            .iter()
            .any(|p| p.node_id == 1 && p.inbound_connected));
        // b drops node 1: its inbound connection from 1 is closed, and a notices.
        assert!(b.remove_peer(1));
        wait_until("inbound closed", || b.stats().inbound_connections == 0).await;
        wait_until("a notices", || !peer(&a, 2).connected).await;
        assert!(a.remove_peer(2));
        assert!(!a.remove_peer(2));
        assert!(matches!(
            a.send(2, FrameKind::Raft, b"y"),
            Err(SendError::UnknownPeer { node_id: 2 })
        ));
        assert!(a.set_peer(1, b.local_addr()).is_err(), "own id refused");
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn address_change_redials() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(1, 2, 0);
        let b2 = {
            let mut cfg = config(1, 2, 0);
            cfg.accept_unknown_nodes = true;
            PeerTransport::new(cfg).unwrap()
        };
        mesh(&[(1, &a), (2, &b)]);
        a.send(2, FrameKind::Raft, b"to b").unwrap();
        within("frame at b", b.recv()).await.unwrap();
        a.set_peer(2, b2.local_addr()).unwrap();
        a.send(2, FrameKind::Raft, b"to b2").unwrap();
        let (_, frame) = within("frame at b2", b2.recv()).await.unwrap();
        assert_eq!(frame.payload.as_slice(), b"to b2");
        assert_eq!(peer(&a, 2).connects, 2);
        for t in [a, b, b2] {
            t.shutdown().await;
        }
    });
}

#[test]
fn close_ends_recv_and_sends() {
    run(async {
        let a = transport(1, 1, 0);
        let b = transport(1, 2, 0);
        mesh(&[(1, &a), (2, &b)]);
        let sender = a.sender();
        a.close();
        assert!(a.is_closed());
        assert!(within("recv after close", a.recv()).await.is_none());
        assert!(matches!(
            sender.send(2, FrameKind::Raft, b""),
            Err(SendError::Closed)
        ));
        within("shutdown", a.shutdown()).await;
        within("shutdown", b.shutdown()).await;
    });
}

#[test]
fn invalid_config_is_refused() {
    let mut cfg = config(1, 1, 0);
    cfg.send_queue_frames_max = 0;
    assert!(cfg.validate().is_err());
    let mut cfg = config(1, 1, 0);
    cfg.backoff_max_ms = 1;
    cfg.backoff_min_ms = 2;
    assert!(cfg.validate().is_err());
    let mut cfg = config(1, 1, 0);
    cfg.frame_bytes_max = 100;
    assert!(cfg.validate().is_err());
    let mut cfg = config(1, 1, 0);
    cfg.send_queue_bytes_max = cfg.frame_bytes_max - 1;
    assert!(cfg.validate().is_err());
    assert!(PeerTransport::new(cfg).is_err());
    assert!(config(1, 1, 0).validate().is_ok());
}
