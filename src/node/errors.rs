//! How a replica's failure to answer reads over HTTP, the same for every domain API.

use mast_http::Response;

use crate::replica::GroupError;

/// 503 + Retry-After when the caller should retry; 504 `unknown_outcome` when the request may
/// or may not have taken effect.
pub fn error_response(e: &GroupError) -> Response {
    match e {
        GroupError::NoLeader { .. } => {
            Response::error(503, "no_leader", "no leader is known for this shard; retry")
                .with_header("retry-after", "1")
        }
        GroupError::Overloaded => {
            Response::error(503, "overloaded", "too many requests are waiting; retry")
                .with_header("retry-after", "1")
        }
        GroupError::Timeout => Response::error(
            504,
            "unknown_outcome",
            "timed out waiting for consensus; the request may or may not have taken effect",
        ),
        GroupError::Refused(m) => {
            Response::error(503, "proposal_refused", m).with_header("retry-after", "1")
        }
        GroupError::NotLeader { .. } => {
            Response::error(503, "not_leader", "this node does not lead the shard")
        }
        GroupError::Removed => Response::error(
            503,
            "removed",
            "this node has been removed from the cluster",
        ),
    }
}
