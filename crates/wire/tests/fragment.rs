//! Transparent fragmentation through the transport: messages larger than a frame arrive
//! whole and in order, the send queue never holds half a message, and bad fragment
//! streams close only their own connection. Every wait is bounded by a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mast_wire::{
    encode_fragments, encode_frame, encode_message, fragment_plan, FragmentHeader, FrameDecoder,
    FrameKind, Handshake, PeerStats, PeerTransport, SendError, TransportConfig,
    FRAGMENT_HEADER_BYTES, HEADER_BYTES, PROTOCOL_VERSION,
};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

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

/// Frames of 1 MiB, so anything larger is fragmented.
fn config(node_id: u64) -> TransportConfig {
    let mut cfg = TransportConfig::new(1, node_id, 0, "127.0.0.1:0".parse().unwrap());
    cfg.frame_bytes_max = MIB;
    cfg.send_queue_bytes_max = 64 * MIB;
    cfg.connect_timeout_ms = 500;
    cfg.handshake_timeout_ms = 500;
    cfg.backoff_min_ms = 5;
    cfg.backoff_max_ms = 100;
    cfg
}

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

/// A payload whose every byte depends on `seq` and its position, so a lost, repeated or
/// reordered fragment shows.
fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq * 7) as u8 ^ (i >> 12) as u8)
        .collect();
    if len >= 4 {
        p[..4].copy_from_slice(&seq.to_le_bytes());
    }
    p
}

fn seq_of(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[..4].try_into().unwrap())
}

#[test]
fn large_message_arrives_whole_and_in_order_with_small_ones() {
    run(async {
        let a = PeerTransport::new(config(1)).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        mesh(&[(1, &a), (2, &b)]);
        let big = 20 * MIB;
        let sizes = [10, 300, big, 17, big + 5, 4];
        for (seq, &len) in sizes.iter().enumerate() {
            let p = payload(seq as u32, len);
            if seq == 4 {
                // The typed path: serialized into the queue, then cut into fragments.
                a.send_message(2, FrameKind::AdminTask, &p).unwrap();
            } else {
                a.send(2, FrameKind::Raft, &p).unwrap();
            }
        }
        for (seq, &len) in sizes.iter().enumerate() {
            let (from, frame) = within("messages", b.recv()).await.unwrap();
            assert_eq!(from, 1);
            let expected = payload(seq as u32, len);
            if seq == 4 {
                assert_eq!(frame.kind, FrameKind::AdminTask);
                let got = frame.decode::<Vec<u8>>().unwrap();
                assert!(got == expected, "typed message {seq} differs");
            } else {
                assert_eq!(frame.kind, FrameKind::Raft);
                assert_eq!(frame.payload.len(), len, "message {seq}");
                assert!(
                    frame.payload.as_slice() == &expected[..],
                    "message {seq} differs"
                );
            }
            assert_eq!(frame.payload.as_ptr() as usize % 16, 0);
        }
        assert!(b.try_recv().is_none());
        let sa = peer(&a, 2);
        assert_eq!(sa.messages_fragmented, 2);
        let sb = peer(&b, 1);
        assert_eq!(sb.messages_reassembled, 2);
        // 20 MiB in fragments of just under 1 MiB: 21 fragments each, plus 4 frames.
        assert_eq!(sb.frames_received, 4 + 21 + 21);
        wait_until("sent counters", || peer(&a, 2).frames_sent == 46).await;
        assert_eq!(peer(&a, 2).bytes_sent, sb.bytes_received);
        assert_eq!(peer(&a, 2).queued_bytes, 0);
        let st = b.stats();
        assert_eq!(
            (st.fragment_errors_total, st.malformed_frames_total),
            (0, 0)
        );
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn several_large_messages_to_two_peers() {
    run(async {
        let a = PeerTransport::new(config(1)).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        let c = PeerTransport::new(config(3)).unwrap();
        mesh(&[(1, &a), (2, &b), (3, &c)]);
        let count = 3u32;
        for seq in 0..count {
            for to in [2, 3] {
                let big = payload(seq * 10 + to as u32, 3 * MIB + 1000 * to as usize);
                a.send(to, FrameKind::Raft, &big).unwrap();
                a.send(to, FrameKind::Raft, &payload(seq * 10 + 5, 8))
                    .unwrap();
            }
        }
        // b answers with a large message of its own while receiving.
        b.send(1, FrameKind::Raft, &payload(99, 2 * MIB)).unwrap();
        for (t, id) in [(&b, 2u64), (&c, 3u64)] {
            for seq in 0..count {
                let (from, frame) = within("large", t.recv()).await.unwrap();
                assert_eq!(from, 1);
                let expected = payload(seq * 10 + id as u32, 3 * MIB + 1000 * id as usize);
                assert!(
                    frame.payload.as_slice() == &expected[..],
                    "large {seq} to {id}"
                );
                let (_, frame) = within("small", t.recv()).await.unwrap();
                assert_eq!(seq_of(&frame.payload), seq * 10 + 5);
            }
            assert_eq!(peer(t, 1).messages_reassembled, count as u64);
        }
        let (from, frame) = within("answer", a.recv()).await.unwrap();
        assert_eq!(from, 2);
        assert!(frame.payload.as_slice() == &payload(99, 2 * MIB)[..]);
        assert_eq!(peer(&a, 2).messages_fragmented, count as u64);
        assert_eq!(peer(&a, 3).messages_fragmented, count as u64);
        a.shutdown().await;
        b.shutdown().await;
        c.shutdown().await;
    });
}

#[test]
fn message_over_the_limit_is_refused_at_send() {
    run(async {
        let mut cfg = config(1);
        cfg.message_bytes_max = 4 * MIB;
        let a = PeerTransport::new(cfg).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        mesh(&[(1, &a), (2, &b)]);
        let over = vec![7u8; 4 * MIB - HEADER_BYTES + 1];
        match a.send(2, FrameKind::Raft, &over) {
            Err(SendError::TooLarge {
                frame_bytes,
                frame_bytes_max,
            }) => assert_eq!((frame_bytes, frame_bytes_max), (4 * MIB + 1, 4 * MIB)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            a.send_message(2, FrameKind::Raft, &over),
            Err(SendError::TooLarge { .. })
        ));
        let s = peer(&a, 2);
        assert_eq!(
            (s.queued_bytes, s.queued_frames, s.frames_dropped),
            (0, 0, 0)
        );
        // Exactly at the limit passes.
        let at = payload(1, 4 * MIB - HEADER_BYTES);
        a.send(2, FrameKind::Raft, &at).unwrap();
        let (_, frame) = within("message at the limit", b.recv()).await.unwrap();
        assert!(frame.payload.as_slice() == &at[..]);
        // Fragment frames are the transport's own.
        assert!(matches!(
            a.send(2, FrameKind::Fragment, b"x"),
            Err(SendError::ReservedKind(FrameKind::Fragment))
        ));
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// A registered peer address nothing listens on: the queue only grows.
fn dead_addr() -> SocketAddr {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    dead.local_addr().unwrap()
}

#[test]
fn send_queue_counts_whole_messages_and_never_holds_half() {
    run(async {
        let fragment = config(1).fragment_data_bytes();
        let wire = |len: usize| fragment_plan(len, fragment).1;

        let mut cfg = config(1);
        cfg.send_queue_bytes_max = 8 * MIB;
        let a = PeerTransport::new(cfg.clone()).unwrap();
        let addr = dead_addr();
        a.set_peer(2, addr).unwrap();
        a.send(2, FrameKind::Raft, &payload(0, 3 * MIB)).unwrap();
        a.send(2, FrameKind::Raft, &payload(1, 3 * MIB)).unwrap();
        let before = peer(&a, 2);
        assert_eq!(before.queued_bytes, 2 * wire(3 * MIB));
        assert_eq!(before.queued_frames, 2 * fragment_plan(3 * MIB, fragment).0);
        // A third does not fit as a whole: dropped whole, nothing of it queued.
        assert!(matches!(
            a.send_message(2, FrameKind::Raft, &payload(2, 3 * MIB)),
            Err(SendError::QueueFull { node_id: 2 })
        ));
        assert!(matches!(
            a.send(2, FrameKind::Raft, &payload(2, 3 * MIB)),
            Err(SendError::QueueFull { node_id: 2 })
        ));
        let after = peer(&a, 2);
        assert_eq!(after.queued_bytes, before.queued_bytes);
        assert_eq!(after.queued_frames, before.queued_frames);
        assert_eq!(after.frames_dropped, 2);
        // Small frames still fit beside them.
        a.send(2, FrameKind::Raft, &payload(3, 100)).unwrap();
        a.shutdown().await;

        // A message larger than the whole queue passes alone into an empty queue, and
        // nothing else is taken while it waits.
        let a = PeerTransport::new(cfg).unwrap();
        a.set_peer(2, addr).unwrap();
        a.send(2, FrameKind::Raft, &payload(0, 20 * MIB)).unwrap();
        assert_eq!(peer(&a, 2).queued_bytes, wire(20 * MIB));
        assert!(matches!(
            a.send(2, FrameKind::Raft, b"small"),
            Err(SendError::QueueFull { node_id: 2 })
        ));
        assert!(matches!(
            a.send(2, FrameKind::Raft, &payload(1, 20 * MIB)),
            Err(SendError::QueueFull { node_id: 2 })
        ));
        assert_eq!(peer(&a, 2).queued_bytes, wire(20 * MIB));
        a.shutdown().await;
    });
}

#[test]
fn a_large_message_behind_a_queue_limit_arrives_once_the_queue_drains() {
    run(async {
        let mut cfg = config(1);
        cfg.send_queue_bytes_max = 2 * MIB;
        let a = PeerTransport::new(cfg).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        mesh(&[(1, &a), (2, &b)]);
        let big = payload(5, 12 * MIB);
        a.send(2, FrameKind::Raft, &big).unwrap();
        let (_, frame) = within("oversized message", b.recv()).await.unwrap();
        assert!(frame.payload.as_slice() == &big[..]);
        // Once written, the queue takes ordinary traffic and the next large message.
        wait_until("queue drained", || peer(&a, 2).frames_sent > 0).await;
        a.send(2, FrameKind::Raft, b"after").unwrap();
        let (_, frame) = within("small after", b.recv()).await.unwrap();
        assert_eq!(frame.payload.as_slice(), b"after");
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

async fn handshake_by_hand(addr: SocketAddr, node_id: u64) -> TcpStream {
    let mut stream = TcpStream::connect_addr(addr).await.unwrap();
    let mut out = BytesMut::new();
    let hs = Handshake {
        cluster_id: 1,
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

/// The fragment frames of `payload` (1000-byte fragments), each as its own byte vector.
fn fragment_frames(kind: FrameKind, id: u64, payload: &[u8]) -> Vec<Vec<u8>> {
    let mut wire = BytesMut::new();
    encode_fragments(kind, id, payload, 1000, &mut wire).unwrap();
    let per = HEADER_BYTES + FRAGMENT_HEADER_BYTES + 1000;
    wire.chunks(per).map(|c| c.to_vec()).collect()
}

fn fragment_frame(head: FragmentHeader, data: &[u8]) -> Vec<u8> {
    let mut p = head.to_bytes().to_vec();
    p.extend_from_slice(data);
    let mut out = BytesMut::new();
    encode_frame(FrameKind::Fragment, &p, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn bad_fragment_streams_close_only_their_connection() {
    run(async {
        let mut b_cfg = config(2);
        b_cfg.accept_unknown_nodes = true;
        b_cfg.message_bytes_max = 4 * MIB;
        let b = PeerTransport::new(b_cfg).unwrap();
        let a = PeerTransport::new(config(1)).unwrap();
        mesh(&[(1, &a), (2, &b)]);
        let msg = payload(1, 3500);
        let frags = fragment_frames(FrameKind::Raft, 1, &msg);
        assert_eq!(frags.len(), 4);
        let mut small = BytesMut::new();
        encode_frame(FrameKind::Raft, b"intruder", &mut small).unwrap();
        let head = |index, count, total_bytes| FragmentHeader {
            message_id: 9,
            total_bytes,
            index,
            count,
            kind: FrameKind::Raft,
        };
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("out of order", vec![frags[0].clone(), frags[2].clone()]),
            ("not starting at 0", vec![frags[1].clone()]),
            ("repeated", vec![frags[0].clone(), frags[0].clone()]),
            ("interleaved", vec![frags[0].clone(), small.to_vec()]),
            (
                "over message_bytes_max",
                vec![fragment_frame(head(0, 8, 8 * MIB as u64), &[1u8; 100])],
            ),
            (
                "count beyond length",
                vec![fragment_frame(head(0, 100, 10), &[1u8; 1])],
            ),
            (
                "last fragment short",
                vec![
                    fragment_frame(head(0, 2, 300), &[1u8; 100]),
                    fragment_frame(head(1, 2, 300), &[1u8; 100]),
                ],
            ),
            (
                "another message id",
                vec![
                    fragment_frame(head(0, 2, 200), &[1u8; 100]),
                    fragment_frame(
                        FragmentHeader {
                            message_id: 10,
                            ..head(1, 2, 200)
                        },
                        &[1u8; 100],
                    ),
                ],
            ),
        ];
        for (i, (what, frames)) in cases.into_iter().enumerate() {
            let mut s = handshake_by_hand(b.local_addr(), 70 + i as u64).await;
            let bytes: Vec<u8> = frames.concat();
            let (res, _) = s.write_all(bytes).await;
            res.unwrap();
            within(what, read_until_closed(&mut s)).await;
            wait_until(what, || b.stats().fragment_errors_total == i as u64 + 1).await;
            assert!(b.try_recv().is_none(), "{what}: something was delivered");
        }
        // A corrupted fragment is a frame-level error.
        let mut s = handshake_by_hand(b.local_addr(), 90).await;
        let mut bad = frags[1].clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let (res, _) = s.write_all([frags[0].clone(), bad].concat()).await;
        res.unwrap();
        within("corrupt fragment", read_until_closed(&mut s)).await;
        wait_until("malformed counted", || {
            b.stats().malformed_frames_total == 1
        })
        .await;

        // A correct hand-made sequence is delivered, and the real peer is unaffected.
        let mut s = handshake_by_hand(b.local_addr(), 91).await;
        let (res, _) = s.write_all(frags.concat()).await;
        res.unwrap();
        let (from, frame) = within("hand-made message", b.recv()).await.unwrap();
        assert_eq!((from, frame.kind), (91, FrameKind::Raft));
        assert!(frame.payload.as_slice() == &msg[..]);
        let big = payload(3, 3 * MIB);
        a.send(2, FrameKind::Raft, &big).unwrap();
        let (from, frame) = within("real peer", b.recv()).await.unwrap();
        assert_eq!(from, 1);
        assert!(frame.payload.as_slice() == &big[..]);
        assert_eq!(peer(&a, 2).connects, 1);
        drop(s);
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn fragment_config_is_checked_and_clamped() {
    let mut cfg = config(1);
    assert_eq!(
        cfg.fragment_data_bytes(),
        MIB - HEADER_BYTES - FRAGMENT_HEADER_BYTES
    );
    cfg.fragment_bytes = 1000;
    assert_eq!(cfg.fragment_data_bytes(), 1000);
    assert!(cfg.validate().is_ok());
    cfg.fragment_bytes = 0;
    assert!(cfg.validate().is_err());
    let mut cfg = config(1);
    cfg.message_bytes_max = cfg.frame_bytes_max - 1;
    assert!(cfg.validate().is_err());
    assert!(PeerTransport::new(cfg).is_err());
    let mut cfg = config(1);
    cfg.message_bytes_max = usize::MAX;
    assert!(cfg.validate().is_err());
    let defaults = TransportConfig::new(1, 1, 0, "127.0.0.1:0".parse().unwrap());
    assert_eq!(defaults.message_bytes_max, 1 << 30);
    assert_eq!(defaults.fragment_bytes, 4 << 20);
    assert!(defaults.validate().is_ok());
}
