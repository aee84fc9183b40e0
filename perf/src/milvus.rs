//! Milvus DDL workloads against mast's REST v2 API (`POST /v2/vectordb/...`): create+drop
//! collection pairs, partition creation, and describe. A reply counts as ok only with HTTP
//! 200 and Milvus code 0 (errors come back as HTTP 200 with a non-zero code).

use crate::api::status_outcome;
use crate::http::Response;
use crate::stats::{ErrorKind, OpKind, Outcome};
use crate::workload::{ConnInfo, Op, Workload, WorkloadFactory};

/// Which DDL a connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilvusOp {
    /// `collections/create` (quick, dimension 8) of a new name, then `collections/drop` of it.
    CreateDropPairs,
    /// `partitions/create` of new partitions, spread over one collection per connection
    /// (created first), so the 1,024-partition cap is not hit for a while.
    CreatePartition,
    /// `collections/describe` of one collection per connection (created first).
    Describe,
    /// `collections/has` of one collection per connection (created first).
    Has,
    /// `collections/list` of the database (each connection's collection created first).
    List,
}

/// The factory of [`MilvusOp`] workloads.
#[derive(Debug, Clone)]
pub struct MilvusWorkloadSpec {
    /// What to send.
    pub op: MilvusOp,
    /// Database of every request (must exist; `default` always does).
    pub db: String,
    /// Prefix of collection names, so runs do not collide.
    pub prefix: String,
}

impl WorkloadFactory for MilvusWorkloadSpec {
    fn build(&self, conn: ConnInfo) -> Box<dyn Workload> {
        Box::new(MilvusWorkload {
            spec: self.clone(),
            conn,
            seq: 0,
            setup_done: self.op == MilvusOp::CreateDropPairs,
            partitions_in_collection: 0,
            collection_gen: 0,
        })
    }

    fn describe(&self) -> String {
        format!("milvus {:?} (db {})", self.op, self.db)
    }
}

struct MilvusWorkload {
    spec: MilvusWorkloadSpec,
    conn: ConnInfo,
    seq: u64,
    /// The per-connection collection exists (describe, partitions).
    setup_done: bool,
    partitions_in_collection: u32,
    /// Partition workloads move to a new collection before the cap.
    collection_gen: u32,
}

/// Partitions created in one collection before moving to the next (below the cap of 1,024).
const PARTITIONS_PER_COLLECTION: u32 = 1000;

fn render(out: &mut Vec<u8>, host: &str, path: &str, body: &str) {
    out.extend_from_slice(b"POST /v2/vectordb/");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
}

impl MilvusWorkload {
    fn own_collection(&self) -> String {
        format!(
            "{}_c{}_g{}",
            self.spec.prefix, self.conn.index, self.collection_gen
        )
    }
}

impl Workload for MilvusWorkload {
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op> {
        let db = &self.spec.db;
        // Key 1 marks the setup request; its reply decides whether the connection goes on.
        if !self.setup_done {
            let body = format!(
                r#"{{"dbName":"{db}","collectionName":"{}","dimension":8}}"#,
                self.own_collection()
            );
            render(out, host, "collections/create", &body);
            self.setup_done = true;
            return Some(Op {
                kind: OpKind::Request,
                key: 1,
            });
        }
        let seq = self.seq;
        self.seq += 1;
        match self.spec.op {
            MilvusOp::CreateDropPairs => {
                let name = format!("{}_{}_{}", self.spec.prefix, self.conn.index, seq / 2);
                if seq % 2 == 0 {
                    let body =
                        format!(r#"{{"dbName":"{db}","collectionName":"{name}","dimension":8}}"#);
                    render(out, host, "collections/create", &body);
                } else {
                    let body = format!(r#"{{"dbName":"{db}","collectionName":"{name}"}}"#);
                    render(out, host, "collections/drop", &body);
                }
            }
            MilvusOp::CreatePartition => {
                if self.partitions_in_collection >= PARTITIONS_PER_COLLECTION {
                    self.partitions_in_collection = 0;
                    self.collection_gen += 1;
                    self.setup_done = false;
                    return self.next_request(host, out);
                }
                self.partitions_in_collection += 1;
                let body = format!(
                    r#"{{"dbName":"{db}","collectionName":"{}","partitionName":"p{seq}"}}"#,
                    self.own_collection()
                );
                render(out, host, "partitions/create", &body);
            }
            MilvusOp::Describe => {
                let body = format!(
                    r#"{{"dbName":"{db}","collectionName":"{}"}}"#,
                    self.own_collection()
                );
                render(out, host, "collections/describe", &body);
            }
            MilvusOp::Has => {
                let body = format!(
                    r#"{{"dbName":"{db}","collectionName":"{}"}}"#,
                    self.own_collection()
                );
                render(out, host, "collections/has", &body);
            }
            MilvusOp::List => {
                let body = format!(r#"{{"dbName":"{db}"}}"#);
                render(out, host, "collections/list", &body);
            }
        }
        Some(Op {
            kind: OpKind::Request,
            key: 0,
        })
    }

    fn on_response(&mut self, _op: Op, response: &Response<'_>) -> Outcome {
        if response.status != 200 {
            return status_outcome(response.status);
        }
        // Only the code is read (the rest is skipped, not built into a tree): the client
        // shares the machine with the server and must not be what the run measures.
        #[derive(serde::Deserialize)]
        struct Envelope {
            code: i64,
        }
        match serde_json::from_slice::<Envelope>(&response.body) {
            Ok(v) if v.code == 0 => Outcome::Ok,
            // Milvus code 1 (not ready) is the 503 of this API.
            Ok(v) if v.code == 1 => Outcome::Error(ErrorKind::Unavailable),
            _ => Outcome::Error(ErrorKind::BadBody),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn reply(status: u16, body: &'static [u8]) -> Response<'static> {
        Response {
            status,
            etag: None,
            location: None,
            body: Cow::Borrowed(body),
            close: false,
        }
    }

    #[test]
    fn pairs_alternate_and_codes_are_judged() {
        let spec = MilvusWorkloadSpec {
            op: MilvusOp::CreateDropPairs,
            db: "default".into(),
            prefix: "bench".into(),
        };
        let mut w = spec.build(ConnInfo {
            index: 3,
            count: 4,
            seed: 0,
        });
        let mut out = Vec::new();
        let op = w.next_request("h", &mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("POST /v2/vectordb/collections/create "),
            "{text}"
        );
        assert!(text.contains(r#""collectionName":"bench_3_0""#), "{text}");
        out.clear();
        w.next_request("h", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("POST /v2/vectordb/collections/drop "),
            "{text}"
        );
        assert_eq!(
            w.on_response(op, &reply(200, br#"{"code":0,"data":{}}"#)),
            Outcome::Ok
        );
        assert_eq!(
            w.on_response(op, &reply(200, br#"{"code":1100,"message":"x"}"#)),
            Outcome::Error(ErrorKind::BadBody)
        );
        assert_eq!(
            w.on_response(op, &reply(200, br#"{"code":1,"message":"x"}"#)),
            Outcome::Error(ErrorKind::Unavailable)
        );
    }
}
