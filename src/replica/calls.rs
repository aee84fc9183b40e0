//! Calls to a group's leader over the peer transport, for leader-only services (the TSO and
//! the ID allocator now; node liveness and segment grants later) that any connection on any
//! node must reach.
//!
//! The caller's replica queues requests and a flusher task sends everything queued to one
//! destination as one `ForwardRequest` frame (requests that arrive together travel
//! together); the leader's replica runs each through the registered [`CallHandler`] and sends
//! the answers back the same way, batched, as `ForwardResponse` frames. Requests in flight
//! per replica are bounded (`calls_in_flight_max`); a call not answered within the request
//! timeout is an unknown outcome. Batches carry the caller's boot nonce, so an answer meant
//! for an earlier process never completes a call of this one.

use std::future::Future;
use std::pin::Pin;

/// Requests or answers in one frame at most; more go in the next frame.
pub const CALLS_PER_FRAME_MAX: usize = 1024;
/// Body bytes of one call at most (requests and answers).
pub const CALL_BODY_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CallRequest {
    pub id: u64,
    /// Which service (the handler's business).
    pub service: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CallBatch {
    pub boot: u64,
    pub calls: Vec<CallRequest>,
}

/// How the leader answered one call.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum CallResult {
    Ok(Vec<u8>),
    /// The receiver does not lead (any more); `leader` is its hint, 0 if none.
    NotLeader {
        leader: u64,
    },
    Overloaded,
    /// The receiver timed out waiting for consensus: the outcome is unknown.
    Timeout,
    /// Refused for a reason the caller should see (a bad request, a non-member).
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CallReply {
    pub id: u64,
    pub result: CallResult,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReplyBatch {
    /// The caller's boot nonce, echoed.
    pub boot: u64,
    pub replies: Vec<CallReply>,
}

/// Serves calls that reach this replica as the leader: `(service, body) -> result`.
pub type CallHandler =
    std::rc::Rc<dyn Fn(u16, Vec<u8>) -> Pin<Box<dyn Future<Output = CallResult>>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn batches_round_trip(boot in any::<u64>(), ids in prop::collection::vec(any::<u64>(), 0..8), body in prop::collection::vec(any::<u8>(), 0..32)) {
            let b = CallBatch { boot, calls: ids.iter().map(|&id| CallRequest { id, service: (id % 7) as u16, body: body.clone() }).collect() };
            prop_assert_eq!(codec::decode::<CallBatch>(&codec::encode(&b)).unwrap(), b);
            let r = ReplyBatch { boot, replies: ids.iter().map(|&id| CallReply { id, result: if id % 2 == 0 { CallResult::Ok(body.clone()) } else { CallResult::NotLeader { leader: id } } }).collect() };
            prop_assert_eq!(codec::decode::<ReplyBatch>(&codec::encode(&r)).unwrap(), r);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = codec::decode::<CallBatch>(&bytes);
            let _ = codec::decode::<ReplyBatch>(&bytes);
        }
    }
}
