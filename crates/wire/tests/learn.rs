//! Learning a dialer's address from its handshake (`learn_peer_addrs`), so a node can
//! answer a peer it has no address for. 127.0.0.1 ephemeral ports; every wait is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mast_wire::{
    encode_message, FrameDecoder, FrameKind, Handshake, HandshakeReject, PeerStats, PeerTransport,
    RejectReason, SendError, TransportConfig, PROTOCOL_VERSION,
};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(10);

fn run<F: Future>(fut: F) -> F::Output {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(fut)
}

fn config(node_id: u64) -> TransportConfig {
    let mut cfg = TransportConfig::new(1, node_id, 0, "127.0.0.1:0".parse().unwrap());
    cfg.connect_timeout_ms = 500;
    cfg.handshake_timeout_ms = 500;
    cfg.backoff_min_ms = 5;
    cfg.backoff_max_ms = 100;
    cfg.accept_unknown_nodes = true;
    cfg
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match monoio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn peer(t: &PeerTransport, node_id: u64) -> Option<PeerStats> {
    t.stats().peers.into_iter().find(|p| p.node_id == node_id)
}

/// A sends to B, which knows nobody; B's reply reaches A over B's own connection.
#[test]
fn acceptor_replies_to_a_node_it_only_heard_from() {
    run(async {
        let a = PeerTransport::new(config(1)).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        a.set_peer(2, b.local_addr()).unwrap();
        assert!(matches!(
            b.send(1, FrameKind::Raft, b"early"),
            Err(SendError::UnknownPeer { node_id: 1 })
        ));

        a.send(2, FrameKind::Raft, b"append").unwrap();
        let (from, frame) = within("a's message", b.recv()).await.unwrap();
        assert_eq!((from, frame.payload.as_slice()), (1, &b"append"[..]));

        b.send(1, FrameKind::Raft, b"ack").unwrap();
        let (from, frame) = within("b's reply", a.recv()).await.unwrap();
        assert_eq!((from, frame.payload.as_slice()), (2, &b"ack"[..]));

        let learned = peer(&b, 1).unwrap();
        assert_eq!(learned.addr, Some(a.local_addr()));
        assert!(learned.addr_learned);
        assert_eq!(b.stats().peers_learned_total, 1);
        assert!(!peer(&a, 2).unwrap().addr_learned);
        assert_eq!(a.stats().peers_learned_total, 0);

        // Removing a learned peer stops it like any other.
        assert!(b.remove_peer(1));
        assert!(matches!(
            b.send(1, FrameKind::Raft, b"late"),
            Err(SendError::UnknownPeer { node_id: 1 })
        ));
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn an_address_set_by_the_application_is_not_overridden() {
    run(async {
        let a = PeerTransport::new(config(1)).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        // B's view of node 1 differs from what node 1 advertises; B's view wins.
        let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        b.set_peer(1, elsewhere).unwrap();
        a.set_peer(2, b.local_addr()).unwrap();
        a.send(2, FrameKind::Raft, b"hello").unwrap();
        let (from, _) = within("a's message", b.recv()).await.unwrap();
        assert_eq!(from, 1);
        let p = peer(&b, 1).unwrap();
        assert_eq!(p.addr, Some(elsewhere));
        assert!(!p.addr_learned);
        assert_eq!(b.stats().peers_learned_total, 0);
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn set_peer_takes_over_a_learned_address() {
    run(async {
        let a = PeerTransport::new(config(1)).unwrap();
        let b = PeerTransport::new(config(2)).unwrap();
        a.set_peer(2, b.local_addr()).unwrap();
        a.send(2, FrameKind::Raft, b"hello").unwrap();
        within("a's message", b.recv()).await.unwrap();
        assert!(peer(&b, 1).unwrap().addr_learned);
        b.set_peer(1, a.local_addr()).unwrap();
        let p = peer(&b, 1).unwrap();
        assert_eq!(p.addr, Some(a.local_addr()));
        assert!(!p.addr_learned);
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn learning_off_keeps_replies_unroutable() {
    run(async {
        let a = PeerTransport::new(config(1)).unwrap();
        let mut b_cfg = config(2);
        b_cfg.learn_peer_addrs = false;
        let b = PeerTransport::new(b_cfg).unwrap();
        a.set_peer(2, b.local_addr()).unwrap();
        a.send(2, FrameKind::Raft, b"append").unwrap();
        let (from, _) = within("a's message", b.recv()).await.unwrap();
        assert_eq!(from, 1);
        assert!(matches!(
            b.send(1, FrameKind::Raft, b"ack"),
            Err(SendError::UnknownPeer { node_id: 1 })
        ));
        let p = peer(&b, 1).unwrap();
        assert_eq!(p.addr, None);
        assert_eq!(b.stats().peers_learned_total, 0);
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// Sends a handshake advertising `listen_addr` and returns the acceptor's answer.
async fn raw_handshake(to: SocketAddr, node_id: u64, listen_addr: &str) -> mast_wire::Frame {
    let mut stream = TcpStream::connect_addr(to).await.unwrap();
    let hs = Handshake {
        cluster_id: 1,
        node_id,
        shard: 0,
        protocol_version: PROTOCOL_VERSION,
        listen_addr: listen_addr.to_string(),
    };
    let mut out = BytesMut::new();
    encode_message(FrameKind::Handshake, &hs, &mut out).unwrap();
    let (res, _) = stream.write_all(out).await;
    res.unwrap();
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if let Some(frame) = FrameDecoder::default().decode(&mut buf).unwrap() {
            return frame;
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        assert!(res.unwrap() > 0, "closed during handshake");
    }
}

#[test]
fn bogus_advertised_addresses_are_rejected_and_counted() {
    run(async {
        let b = PeerTransport::new(config(2)).unwrap();
        let too_long = format!("127.0.0.1:{}", "1".repeat(100));
        let bogus = [
            "127.0.0.1:0",
            "not an address",
            "",
            "224.0.0.1:7000",
            too_long.as_str(),
        ];
        for (i, text) in bogus.iter().enumerate() {
            let frame = within("reject", raw_handshake(b.local_addr(), 10 + i as u64, text)).await;
            assert_eq!(frame.kind, FrameKind::HandshakeReject, "{text:?}");
            let reject = frame.decode::<HandshakeReject>().unwrap();
            assert_eq!(reject.reason, RejectReason::BadAddress, "{text:?}");
        }
        let stats = b.stats();
        assert_eq!(stats.handshakes_rejected_total, bogus.len() as u64);
        assert_eq!(stats.peers_learned_total, 0);
        assert!(stats.peers.is_empty());

        // An unspecified IP stands for the connection's source IP.
        let frame = within("ack", raw_handshake(b.local_addr(), 30, "0.0.0.0:7123")).await;
        assert_eq!(frame.kind, FrameKind::HandshakeAck);
        let learned = peer(&b, 30).unwrap();
        assert_eq!(learned.addr, Some("127.0.0.1:7123".parse().unwrap()));
        b.shutdown().await;
    });
}

#[test]
fn a_bogus_advertise_addr_is_a_config_error() {
    let mut cfg = config(1);
    cfg.advertise_addr = Some("127.0.0.1:0".parse().unwrap());
    assert!(cfg.validate().is_err());
    cfg.advertise_addr = Some("127.0.0.1:7100".parse().unwrap());
    assert!(cfg.validate().is_ok());
}

#[test]
fn learning_stops_at_learned_peers_max() {
    run(async {
        let mut cfg = config(2);
        cfg.learned_peers_max = 1;
        let b = PeerTransport::new(cfg).unwrap();
        for node in [40, 41] {
            let frame = within("ack", raw_handshake(b.local_addr(), node, "127.0.0.1:7123")).await;
            assert_eq!(frame.kind, FrameKind::HandshakeAck);
        }
        assert_eq!(b.stats().peers_learned_total, 1);
        assert!(peer(&b, 40).unwrap().addr_learned);
        // Accepted but not learned: no address to dial.
        assert!(matches!(
            b.send(41, FrameKind::Raft, b"x"),
            Err(SendError::UnknownPeer { node_id: 41 })
        ));
        b.shutdown().await;
    });
}
