//! CubeFS master workloads against mast's CubeFS API: `/admin/createVol` of small new
//! volumes, `/client/partitions` of one volume (what every client polls), and
//! `/dataPartition/get` of that volume's partitions. A reply counts as ok only with HTTP 200
//! and CubeFS code 0 (CubeFS answers errors as HTTP 200 with a non-zero code).

use crate::api::status_outcome;
use crate::http::Response;
use crate::stats::{ErrorKind, OpKind, Outcome};
use crate::workload::{ConnInfo, Op, Workload, WorkloadFactory};

/// Which request a connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CubefsOp {
    /// `/admin/createVol` of a new volume (3 data partitions, 10 GB) each time.
    CreateVol,
    /// `/client/partitions?name=VOL`.
    ClientPartitions,
    /// `/dataPartition/get?id=` of the volume's partitions in turn (learned first from
    /// `/client/partitions`).
    DpGet,
}

/// Data partition ids one connection keeps for [`CubefsOp::DpGet`] at most.
pub const DP_IDS_MAX: usize = 100_000;

/// The factory of [`CubefsOp`] workloads.
#[derive(Debug, Clone)]
pub struct CubefsWorkloadSpec {
    pub op: CubefsOp,
    /// The volume read by `ClientPartitions` and `DpGet`.
    pub vol: String,
    /// Prefix of created volume names, so runs do not collide (letters and digits).
    pub prefix: String,
    /// The rest of `/admin/createVol`'s query (owner, capacity, counts, zones).
    pub create_args: String,
}

impl WorkloadFactory for CubefsWorkloadSpec {
    fn build(&self, conn: ConnInfo) -> Box<dyn Workload> {
        Box::new(CubefsWorkload {
            spec: self.clone(),
            conn,
            seq: 0,
            ids: Vec::new(),
            setup_sent: false,
        })
    }

    fn describe(&self) -> String {
        format!("cubefs {:?} (vol {})", self.op, self.vol)
    }
}

struct CubefsWorkload {
    spec: CubefsWorkloadSpec,
    conn: ConnInfo,
    seq: u64,
    /// `DpGet`: the partition ids to cycle through.
    ids: Vec<u64>,
    setup_sent: bool,
}

/// Key of the setup request (`DpGet` learning its ids).
const SETUP_KEY: u64 = 1;

fn render_get(out: &mut Vec<u8>, host: &str, path: &str) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Is this CubeFS's success envelope? mast writes `code` first, so a prefix check spares
/// parsing a large body; anything else is parsed to be sure.
fn code_ok(body: &[u8]) -> bool {
    if body.starts_with(br#"{"code":0,"#) {
        return true;
    }
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["code"] == 0)
}

impl Workload for CubefsWorkload {
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op> {
        let vol = &self.spec.vol;
        if self.spec.op == CubefsOp::DpGet && self.ids.is_empty() {
            // Learn the ids once; a connection whose setup failed has nothing to send.
            if self.setup_sent {
                return None;
            }
            self.setup_sent = true;
            render_get(out, host, &format!("/client/partitions?name={vol}"));
            return Some(Op {
                kind: OpKind::Request,
                key: SETUP_KEY,
            });
        }
        let seq = self.seq;
        self.seq += 1;
        match self.spec.op {
            CubefsOp::CreateVol => {
                let path = format!(
                    "/admin/createVol?name={}c{}n{seq}&{}",
                    self.spec.prefix, self.conn.index, self.spec.create_args
                );
                render_get(out, host, &path);
            }
            CubefsOp::ClientPartitions => {
                render_get(out, host, &format!("/client/partitions?name={vol}"));
            }
            CubefsOp::DpGet => {
                // Connections start at different offsets so they do not read in lockstep.
                let i = (seq as usize + self.conn.index * 7919) % self.ids.len();
                render_get(out, host, &format!("/dataPartition/get?id={}", self.ids[i]));
            }
        }
        Some(Op {
            kind: OpKind::Request,
            key: 0,
        })
    }

    fn on_response(&mut self, op: Op, response: &Response<'_>) -> Outcome {
        if response.status != 200 {
            return status_outcome(response.status);
        }
        if op.key == SETUP_KEY {
            let ids: Vec<u64> = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| {
                    v["data"]["DataPartitions"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|d| d["PartitionID"].as_u64())
                            .take(DP_IDS_MAX)
                            .collect()
                    })
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return Outcome::Error(ErrorKind::BadBody);
            }
            self.ids = ids;
            return Outcome::Ok;
        }
        if code_ok(&response.body) {
            Outcome::Ok
        } else {
            Outcome::Error(ErrorKind::BadBody)
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

    fn conn() -> ConnInfo {
        ConnInfo {
            index: 2,
            count: 4,
            seed: 0,
        }
    }

    #[test]
    fn create_vol_names_are_new_and_codes_judged() {
        let spec = CubefsWorkloadSpec {
            op: CubefsOp::CreateVol,
            vol: "v".into(),
            prefix: "p7".into(),
            create_args: "owner=perf&capacity=10".into(),
        };
        let mut w = spec.build(conn());
        let mut out = Vec::new();
        let op = w.next_request("h", &mut out).unwrap();
        let first = String::from_utf8(out.clone()).unwrap();
        assert!(
            first.starts_with("GET /admin/createVol?name=p7c2n0&"),
            "{first}"
        );
        out.clear();
        w.next_request("h", &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("name=p7c2n1&"));
        let ok = reply(200, br#"{"code":0,"msg":"success","data":"x"}"#);
        assert_eq!(w.on_response(op, &ok), Outcome::Ok);
        let dup = reply(200, br#"{"code":14,"msg":"duplicate vol","data":null}"#);
        assert_eq!(w.on_response(op, &dup), Outcome::Error(ErrorKind::BadBody));
    }

    #[test]
    fn dp_get_learns_ids_then_cycles_them() {
        let spec = CubefsWorkloadSpec {
            op: CubefsOp::DpGet,
            vol: "v1".into(),
            prefix: String::new(),
            create_args: String::new(),
        };
        let mut w = spec.build(conn());
        let mut out = Vec::new();
        let setup = w.next_request("h", &mut out).unwrap();
        assert!(String::from_utf8(out.clone())
            .unwrap()
            .starts_with("GET /client/partitions?name=v1 "));
        let body = br#"{"code":0,"msg":"success","data":{"DataPartitions":[{"PartitionID":5},{"PartitionID":9}]}}"#;
        assert_eq!(w.on_response(setup, &reply(200, body)), Outcome::Ok);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            out.clear();
            w.next_request("h", &mut out).unwrap();
            let text = String::from_utf8(out.clone()).unwrap();
            let id = text
                .strip_prefix("GET /dataPartition/get?id=")
                .and_then(|r| r.split(' ').next())
                .unwrap()
                .to_string();
            seen.insert(id);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["5", "9"]);
    }

    #[test]
    fn dp_get_without_partitions_stops() {
        let spec = CubefsWorkloadSpec {
            op: CubefsOp::DpGet,
            vol: "v1".into(),
            prefix: String::new(),
            create_args: String::new(),
        };
        let mut w = spec.build(conn());
        let mut out = Vec::new();
        let setup = w.next_request("h", &mut out).unwrap();
        let body = br#"{"code":7,"msg":"vol not exists","data":null}"#;
        assert_eq!(
            w.on_response(setup, &reply(200, body)),
            Outcome::Error(ErrorKind::BadBody)
        );
        assert!(w.next_request("h", &mut out).is_none());
    }
}
