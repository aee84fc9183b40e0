//! Property tests of the admin task frames: every task round-trips through the frame codec
//! and bytecheck validation, and no byte string (random, or a valid frame with bytes
//! flipped or cut) makes the decoders panic or accept a frame of the wrong kind.

use mast::admintask::proto::{
    decode_packet, decode_reply, encode_packet, encode_reply, AdminTask, Answer, JsonAdminTask,
    PartitionReport, Peer, TaskPacket, TaskReply, TaskRequest, TaskResponse, ADMIN_FRAME_BYTES_MAX,
};
use mast_wire::bytes::BytesMut;
use mast_wire::{FrameDecoder, FrameKind};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9.:_\\[\\]]{0,24}"
}

fn peer() -> impl Strategy<Value = Peer> {
    (any::<u64>(), text()).prop_map(|(id, addr)| Peer { id, addr })
}

fn request() -> impl Strategy<Value = TaskRequest> {
    prop_oneof![
        (any::<i64>(), text()).prop_map(|(curr_time, master_addr)| TaskRequest::Heartbeat {
            curr_time,
            master_addr
        }),
        (
            any::<u64>(),
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(peer(), 0..4)
        )
            .prop_map(
                |(partition_id, vol_name, partition_size, start, end, members)| {
                    TaskRequest::CreatePartition {
                        partition_id,
                        vol_name,
                        partition_size,
                        start,
                        end,
                        members,
                    }
                }
            ),
        any::<u64>().prop_map(|partition_id| TaskRequest::DeletePartition { partition_id }),
        (any::<u64>(), peer())
            .prop_map(|(partition_id, peer)| TaskRequest::AddRaftMember { partition_id, peer }),
        text().prop_map(TaskRequest::Json),
    ]
}

fn response() -> impl Strategy<Value = Option<TaskResponse>> {
    prop_oneof![
        Just(None),
        (any::<u8>(), text(), any::<u64>()).prop_map(|(status, result, partition_id)| Some(
            TaskResponse::Generic {
                status,
                result,
                partition_id
            }
        )),
        (
            any::<u64>(),
            any::<u64>(),
            text(),
            prop::collection::vec((any::<u64>(), any::<i8>(), any::<bool>()), 0..5)
        )
            .prop_map(
                |(total, used, zone_name, reports)| Some(TaskResponse::Heartbeat {
                    status: 1,
                    result: String::new(),
                    total,
                    used,
                    available: total.saturating_sub(used),
                    zone_name,
                    partition_count: reports.len() as u64,
                    reports: reports
                        .into_iter()
                        .map(|(partition_id, status, is_leader)| PartitionReport {
                            partition_id,
                            status,
                            is_leader,
                            ..PartitionReport::default()
                        })
                        .collect(),
                })
            ),
    ]
}

fn packet() -> impl Strategy<Value = TaskPacket> {
    (
        any::<u64>(),
        any::<bool>(),
        any::<u8>(),
        text(),
        any::<u64>(),
        request(),
        response(),
    )
        .prop_map(|(req_id, sync, op_code, addr, pid, request, response)| {
            let mut task = AdminTask::new(op_code, &addr, Some(pid), request, 7);
            task.response = response;
            TaskPacket { req_id, sync, task }
        })
}

fn decode_all(bytes: &[u8]) {
    let decoder = FrameDecoder::new(ADMIN_FRAME_BYTES_MAX);
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let p = decode_packet(&frame);
        let r = decode_reply(&frame);
        // A frame is a packet or a reply by its kind, never both.
        assert!(!(p.is_ok() && r.is_ok()));
        if p.is_ok() {
            assert_eq!(frame.kind, FrameKind::AdminTask);
        }
        if r.is_ok() {
            assert_eq!(frame.kind, FrameKind::AdminTaskReply);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn packets_and_replies_round_trip(p in packet(), code in any::<u8>(), data in text()) {
        let mut out = BytesMut::new();
        encode_packet(&p, &mut out).unwrap();
        let reply = TaskReply { req_id: p.req_id, result_code: code, data };
        encode_reply(&reply, &mut out).unwrap();
        let decoder = FrameDecoder::new(ADMIN_FRAME_BYTES_MAX);
        let f1 = decoder.decode(&mut out).unwrap().unwrap();
        let f2 = decoder.decode(&mut out).unwrap().unwrap();
        prop_assert!(out.is_empty());
        prop_assert_eq!(decode_packet(&f1).unwrap(), p);
        prop_assert_eq!(decode_reply(&f2).unwrap(), reply);
    }

    #[test]
    fn damaged_frames_never_panic(p in packet(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut out = BytesMut::new();
        encode_packet(&p, &mut out).unwrap();
        let mut bytes = out.to_vec();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        decode_all(&bytes);
        decode_all(&bytes[..cut.index(bytes.len())]);
    }

    #[test]
    fn random_payloads_in_valid_frames_never_panic(payload in prop::collection::vec(any::<u8>(), 0..512), reply in any::<bool>()) {
        let kind = if reply { FrameKind::AdminTaskReply } else { FrameKind::AdminTask };
        let mut out = BytesMut::new();
        mast_wire::encode_frame(kind, &payload, &mut out).unwrap();
        decode_all(&out);
    }

    #[test]
    fn json_answers_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), op in any::<u8>()) {
        if let Ok(t) = JsonAdminTask::parse(&body) {
            let _ = t.typed_response();
        }
        let _ = Answer::parse(&body);
        let body = format!(r#"{{"ID":"x","OpCode":{op},"OperatorAddr":"a:1","Response":{}}}"#,
            String::from_utf8_lossy(&body));
        if let Ok(t) = JsonAdminTask::parse(body.as_bytes()) {
            let _ = t.typed_response();
        }
        let _ = Answer::parse(body.as_bytes());
    }
}
