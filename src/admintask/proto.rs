//! The AdminTask of CubeFS (`proto/admin_task.go`, reference §8) as an rkyv type, its
//! opcodes, statuses and result codes, the frames that carry it between master and node,
//! and its JSON form (the body of `/dataNode/response` and `/metaNode/response`).
//!
//! Frames use mast's peer frame header (crates/wire): an `AdminTask` frame carries a
//! [`TaskPacket`], an `AdminTaskReply` frame a [`TaskReply`]. Both are validated with
//! bytecheck before use; a frame over [`ADMIN_FRAME_BYTES_MAX`] is refused from its header.

use bytes::BytesMut;
use mast_wire::{encode_message, Frame, FrameKind, MessageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest admin task frame (header included) either side accepts. A heartbeat request is
/// a few hundred bytes; partition tasks carry a handful of peers.
pub const ADMIN_FRAME_BYTES_MAX: usize = 1024 * 1024;
/// Partition reports kept per heartbeat answer (more are cut, and counted as cut).
pub const PARTITION_REPORTS_MAX: usize = 10_000;
/// Longest text field (addresses, names, error text) taken from a node's answer.
pub const TEXT_BYTES_MAX: usize = 4096;

/// Opcodes of §8 (master → node). Values are CubeFS's wire values.
pub mod op {
    pub const CREATE_META_PARTITION: u8 = 0x40;
    pub const META_NODE_HEARTBEAT: u8 = 0x41;
    pub const DELETE_META_PARTITION: u8 = 0x42;
    pub const UPDATE_META_PARTITION: u8 = 0x43;
    pub const LOAD_META_PARTITION: u8 = 0x44;
    pub const DECOMMISSION_META_PARTITION: u8 = 0x45;
    pub const ADD_META_PARTITION_RAFT_MEMBER: u8 = 0x46;
    pub const REMOVE_META_PARTITION_RAFT_MEMBER: u8 = 0x47;
    pub const META_PARTITION_TRY_TO_LEADER: u8 = 0x48;
    pub const CREATE_DATA_PARTITION: u8 = 0x60;
    pub const DELETE_DATA_PARTITION: u8 = 0x61;
    pub const LOAD_DATA_PARTITION: u8 = 0x62;
    pub const DATA_NODE_HEARTBEAT: u8 = 0x63;
    pub const DECOMMISSION_DATA_PARTITION: u8 = 0x66;
    pub const ADD_DATA_PARTITION_RAFT_MEMBER: u8 = 0x67;
    pub const REMOVE_DATA_PARTITION_RAFT_MEMBER: u8 = 0x68;
    pub const DATA_PARTITION_TRY_TO_LEADER: u8 = 0x69;
    pub const VERSION_OPERATION: u8 = 0xD5;

    /// Every opcode mast sends or accepts, with its name for metrics and logs.
    pub const NAMES: [(u8, &str); 18] = [
        (CREATE_META_PARTITION, "create_meta_partition"),
        (META_NODE_HEARTBEAT, "meta_node_heartbeat"),
        (DELETE_META_PARTITION, "delete_meta_partition"),
        (UPDATE_META_PARTITION, "update_meta_partition"),
        (LOAD_META_PARTITION, "load_meta_partition"),
        (DECOMMISSION_META_PARTITION, "decommission_meta_partition"),
        (
            ADD_META_PARTITION_RAFT_MEMBER,
            "add_meta_partition_raft_member",
        ),
        (
            REMOVE_META_PARTITION_RAFT_MEMBER,
            "remove_meta_partition_raft_member",
        ),
        (META_PARTITION_TRY_TO_LEADER, "meta_partition_try_to_leader"),
        (CREATE_DATA_PARTITION, "create_data_partition"),
        (DELETE_DATA_PARTITION, "delete_data_partition"),
        (LOAD_DATA_PARTITION, "load_data_partition"),
        (DATA_NODE_HEARTBEAT, "data_node_heartbeat"),
        (DECOMMISSION_DATA_PARTITION, "decommission_data_partition"),
        (
            ADD_DATA_PARTITION_RAFT_MEMBER,
            "add_data_partition_raft_member",
        ),
        (
            REMOVE_DATA_PARTITION_RAFT_MEMBER,
            "remove_data_partition_raft_member",
        ),
        (DATA_PARTITION_TRY_TO_LEADER, "data_partition_try_to_leader"),
        (VERSION_OPERATION, "version_operation"),
    ];

    /// The metrics label of an opcode ("other" for one mast does not know).
    pub fn name(code: u8) -> &'static str {
        NAMES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, n)| *n)
            .unwrap_or("other")
    }

    /// True for the two heartbeat opcodes (sent first in every tick).
    pub fn is_heartbeat(code: u8) -> bool {
        code == META_NODE_HEARTBEAT || code == DATA_NODE_HEARTBEAT
    }
}

/// Task status (`AdminTask.Status`): CubeFS's `TaskStart`, `TaskSucceeds`, `TaskFailed`,
/// `TaskRunning`.
pub mod status {
    pub const START: i8 = 0;
    pub const SUCCEEDS: i8 = 1;
    pub const FAILED: i8 = 2;
    pub const RUNNING: i8 = 3;
}

/// Result codes a node answers in a reply frame (`proto/packet.go`).
pub mod result {
    pub const OP_OK: u8 = 0xF0;
    pub const OP_ARG_MISMATCH_ERR: u8 = 0xF4;
    pub const OP_NOT_EXIST_ERR: u8 = 0xF5;
    pub const OP_DISK_NO_SPACE_ERR: u8 = 0xF6;
    pub const OP_ERR: u8 = 0xF8;
    pub const OP_AGAIN: u8 = 0xF9;
    pub const OP_EXIST_ERR: u8 = 0xFA;
}

/// Which kind of storage node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum Role {
    Data,
    Meta,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Meta => "meta",
        }
    }

    pub fn heartbeat_op(self) -> u8 {
        match self {
            Role::Data => op::DATA_NODE_HEARTBEAT,
            Role::Meta => op::META_NODE_HEARTBEAT,
        }
    }
}

/// A partition replica's peer (`proto.Peer`).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Peer {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub addr: String,
}

/// The request of a task, typed for what mast's nodes execute; anything else travels as
/// CubeFS's JSON text.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum TaskRequest {
    /// `HeartBeatRequest`: the fields a node uses (the vol lists of §7 are empty in mast).
    Heartbeat {
        curr_time: i64,
        master_addr: String,
    },
    CreatePartition {
        partition_id: u64,
        vol_name: String,
        /// Data partitions: bytes. Meta partitions: 0.
        partition_size: u64,
        /// Meta partitions: the inode range.
        start: u64,
        end: u64,
        members: Vec<Peer>,
    },
    DeletePartition {
        partition_id: u64,
    },
    LoadPartition {
        partition_id: u64,
    },
    UpdateMetaPartition {
        partition_id: u64,
        vol_name: String,
        start: u64,
        end: u64,
    },
    AddRaftMember {
        partition_id: u64,
        peer: Peer,
    },
    RemoveRaftMember {
        partition_id: u64,
        peer: Peer,
    },
    TryToLeader {
        partition_id: u64,
    },
    /// Any other opcode: CubeFS's request object as JSON text.
    Json(String),
}

/// One partition as a node reports it in a heartbeat (both `DataPartitionReport` and
/// `MetaPartitionReport`; the fields a master uses).
#[derive(Debug, Clone, PartialEq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionReport {
    pub partition_id: u64,
    pub vol_name: String,
    pub status: i8,
    pub total: u64,
    pub used: u64,
    pub is_leader: bool,
    /// Meta partitions: inode range end and the largest inode.
    pub end: u64,
    pub max_inode_id: u64,
}

/// The answer part of a finished task.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum TaskResponse {
    /// `DataNodeHeartbeatResponse` / `MetaNodeHeartbeatResponse` (memory bytes for meta
    /// nodes in total/used).
    Heartbeat {
        status: u8,
        result: String,
        total: u64,
        used: u64,
        available: u64,
        zone_name: String,
        partition_count: u64,
        reports: Vec<PartitionReport>,
    },
    /// Every other task: `{PartitionID, Status, Result}`.
    Generic {
        status: u8,
        result: String,
        partition_id: u64,
    },
}

impl TaskResponse {
    /// CubeFS's response `Status`: 1 ok, 2 failed.
    pub fn status(&self) -> u8 {
        match self {
            TaskResponse::Heartbeat { status, .. } | TaskResponse::Generic { status, .. } => {
                *status
            }
        }
    }

    pub fn result(&self) -> &str {
        match self {
            TaskResponse::Heartbeat { result, .. } | TaskResponse::Generic { result, .. } => result,
        }
    }
}

/// CubeFS's AdminTask (§8).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AdminTask {
    /// `addr[<addr>]_op[<opcode>]` plus `_pid[<id>]` for partition tasks: the dedup key.
    pub id: String,
    pub partition_id: u64,
    pub op_code: u8,
    /// The node the task is for, `ip:port` of its admin task port.
    pub operator_addr: String,
    pub status: i8,
    /// Unix seconds.
    pub send_time: i64,
    pub create_time: i64,
    pub send_count: u8,
    pub request: TaskRequest,
    pub response: Option<TaskResponse>,
    pub request_id: String,
}

impl AdminTask {
    /// A new task with CubeFS's ID rules.
    pub fn new(
        op_code: u8,
        operator_addr: &str,
        partition_id: Option<u64>,
        request: TaskRequest,
        now_unix_s: i64,
    ) -> AdminTask {
        AdminTask {
            id: task_id(operator_addr, op_code, partition_id),
            partition_id: partition_id.unwrap_or(0),
            op_code,
            operator_addr: operator_addr.to_string(),
            status: status::START,
            send_time: 0,
            create_time: now_unix_s,
            send_count: 0,
            request,
            response: None,
            request_id: String::new(),
        }
    }
}

/// CubeFS's task ID: `addr[ADDR]_op[OP]`, `_pid[ID]` for partition tasks.
pub fn task_id(addr: &str, op_code: u8, partition_id: Option<u64>) -> String {
    match partition_id {
        Some(pid) => format!("addr[{addr}]_op[{op_code}]_pid[{pid}]"),
        None => format!("addr[{addr}]_op[{op_code}]"),
    }
}

/// What an `AdminTask` frame carries: the task and the request ID its reply must echo
/// (CubeFS's packet `ReqID`).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TaskPacket {
    pub req_id: u64,
    /// True when the master waits for the result on this connection; false for an async
    /// task, which the node acks at once and answers later over HTTP.
    pub sync: bool,
    pub task: AdminTask,
}

/// What an `AdminTaskReply` frame carries: the packet's result code and, for sync tasks, a
/// result payload (CubeFS: the chosen disk path of a new data partition, load results) or
/// the error text.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TaskReply {
    pub req_id: u64,
    pub result_code: u8,
    pub data: String,
}

/// Appends a frame of `kind` carrying `value`.
pub fn encode_packet(packet: &TaskPacket, out: &mut BytesMut) -> Result<(), MessageError> {
    encode_message(FrameKind::AdminTask, packet, out)
}

pub fn encode_reply(reply: &TaskReply, out: &mut BytesMut) -> Result<(), MessageError> {
    encode_message(FrameKind::AdminTaskReply, reply, out)
}

/// Why a received admin frame is unusable. The connection carrying it is closed.
#[derive(Debug, thiserror::Error)]
pub enum AdminFrameError {
    #[error("expected a {expected:?} frame, got {got:?}")]
    WrongKind { expected: FrameKind, got: FrameKind },
    #[error(transparent)]
    Payload(#[from] MessageError),
}

/// Validates (bytecheck) and decodes an `AdminTask` frame.
pub fn decode_packet(frame: &Frame) -> Result<TaskPacket, AdminFrameError> {
    if frame.kind != FrameKind::AdminTask {
        return Err(AdminFrameError::WrongKind {
            expected: FrameKind::AdminTask,
            got: frame.kind,
        });
    }
    Ok(frame.decode::<TaskPacket>()?)
}

/// Validates (bytecheck) and decodes an `AdminTaskReply` frame.
pub fn decode_reply(frame: &Frame) -> Result<TaskReply, AdminFrameError> {
    if frame.kind != FrameKind::AdminTaskReply {
        return Err(AdminFrameError::WrongKind {
            expected: FrameKind::AdminTaskReply,
            got: frame.kind,
        });
    }
    Ok(frame.decode::<TaskReply>()?)
}

// ---------------------------------------------------------------------------------------
// JSON form (CubeFS's field names).

/// The AdminTask as CubeFS serializes it; `Request` and `Response` stay JSON until the
/// opcode says what they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JsonAdminTask {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "PartitionID", default)]
    pub partition_id: u64,
    #[serde(default)]
    pub op_code: u8,
    #[serde(default)]
    pub operator_addr: String,
    #[serde(default)]
    pub status: i8,
    #[serde(default)]
    pub send_time: i64,
    #[serde(default)]
    pub create_time: i64,
    #[serde(default)]
    pub send_count: u8,
    #[serde(default)]
    pub request: Value,
    #[serde(default)]
    pub response: Value,
    #[serde(rename = "RequestID", default)]
    pub request_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonHeartbeatResponse {
    #[serde(default)]
    status: u8,
    #[serde(default)]
    result: String,
    #[serde(default)]
    total: u64,
    #[serde(default)]
    used: u64,
    #[serde(default)]
    available: u64,
    #[serde(default)]
    zone_name: String,
    #[serde(default)]
    created_partition_cnt: u64,
    #[serde(default)]
    partition_reports: Vec<JsonPartitionReport>,
    #[serde(default)]
    meta_partition_reports: Vec<JsonPartitionReport>,
    /// Generic responses only; lets this struct decode any response in one pass.
    #[serde(
        rename = "PartitionID",
        alias = "PartitionId",
        default,
        skip_serializing
    )]
    partition_id: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonPartitionReport {
    #[serde(rename = "PartitionID", default)]
    partition_id: u64,
    #[serde(default)]
    vol_name: String,
    #[serde(default)]
    partition_status: i8,
    #[serde(default)]
    status: i8,
    #[serde(default)]
    total: u64,
    #[serde(default)]
    used: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    is_leader: bool,
    #[serde(default)]
    end: u64,
    #[serde(rename = "MaxInodeID", default)]
    max_inode_id: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonGenericResponse {
    #[serde(default)]
    status: u8,
    #[serde(default)]
    result: String,
    #[serde(rename = "PartitionID", alias = "PartitionId", default)]
    partition_id: u64,
}

fn clip(mut s: String) -> String {
    if s.len() > TEXT_BYTES_MAX {
        let mut cut = TEXT_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A heartbeat response in its typed form (`op_code` says data or meta node).
fn heartbeat_response(r: JsonHeartbeatResponse, op_code: u8) -> TaskResponse {
    let meta = op_code == op::META_NODE_HEARTBEAT;
    let raw = if meta {
        r.meta_partition_reports
    } else {
        r.partition_reports
    };
    let partition_count = if meta {
        raw.len() as u64
    } else {
        r.created_partition_cnt
    };
    let reports = raw
        .into_iter()
        .take(PARTITION_REPORTS_MAX)
        .map(|p| PartitionReport {
            partition_id: p.partition_id,
            vol_name: clip(p.vol_name),
            status: if meta { p.status } else { p.partition_status },
            total: p.total,
            used: if meta { p.size } else { p.used },
            is_leader: p.is_leader,
            end: p.end,
            max_inode_id: p.max_inode_id,
        })
        .collect();
    // Meta nodes report no AvailableSpace: memory left is Total - Used.
    let available = if meta {
        r.total.saturating_sub(r.used)
    } else {
        r.available
    };
    TaskResponse::Heartbeat {
        status: r.status,
        result: clip(r.result),
        total: r.total,
        used: r.used,
        available,
        zone_name: clip(r.zone_name),
        partition_count,
        reports,
    }
}

/// A task answer as `/…/response` decodes it in one pass: every field of any response
/// shape, `Request` and the rest skipped, no `serde_json::Value` built.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonAnswer {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "PartitionID", default)]
    partition_id: u64,
    #[serde(default)]
    op_code: u8,
    #[serde(default)]
    operator_addr: String,
    #[serde(default)]
    response: Option<JsonHeartbeatResponse>,
}

/// A node's answer to a task, as the master applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    pub partition_id: u64,
    pub op_code: u8,
    pub operator_addr: String,
    /// Typed by opcode; a missing or malformed response reads as a failure (see
    /// [`JsonAdminTask::typed_response`]).
    pub response: TaskResponse,
}

impl Answer {
    /// Decodes a `/…/response` body. Well-formed answers take one typed pass; anything
    /// else (no response, a field of the wrong type) goes through [`JsonAdminTask`] so it
    /// reads exactly as before: a refusal or a failed response.
    pub fn parse(body: &[u8]) -> Result<Answer, JsonTaskError> {
        match serde_json::from_slice::<JsonAnswer>(body) {
            Ok(JsonAnswer {
                id,
                partition_id,
                op_code,
                operator_addr,
                response: Some(r),
            }) => {
                check_ids(&operator_addr, &id)?;
                let response = if op::is_heartbeat(op_code) {
                    heartbeat_response(r, op_code)
                } else {
                    TaskResponse::Generic {
                        status: r.status,
                        result: clip(r.result),
                        partition_id: r.partition_id,
                    }
                };
                Ok(Answer {
                    id,
                    partition_id,
                    op_code,
                    operator_addr,
                    response,
                })
            }
            _ => {
                let t = JsonAdminTask::parse(body)?;
                let response = t.typed_response();
                Ok(Answer {
                    id: t.id,
                    partition_id: t.partition_id,
                    op_code: t.op_code,
                    operator_addr: t.operator_addr,
                    response,
                })
            }
        }
    }
}

fn check_ids(operator_addr: &str, id: &str) -> Result<(), JsonTaskError> {
    if operator_addr.is_empty() {
        return Err(JsonTaskError::NoAddr);
    }
    if operator_addr.len() > TEXT_BYTES_MAX {
        return Err(JsonTaskError::TooLong {
            field: "OperatorAddr",
        });
    }
    if id.len() > TEXT_BYTES_MAX {
        return Err(JsonTaskError::TooLong { field: "ID" });
    }
    Ok(())
}

/// Why a JSON AdminTask body was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonTaskError {
    #[error("body is not a JSON AdminTask: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("OperatorAddr is empty")]
    NoAddr,
    #[error("{field} is longer than {TEXT_BYTES_MAX} bytes")]
    TooLong { field: &'static str },
}

impl JsonAdminTask {
    /// Parses a `/…/response` body.
    pub fn parse(body: &[u8]) -> Result<JsonAdminTask, JsonTaskError> {
        let t: JsonAdminTask = serde_json::from_slice(body)?;
        check_ids(&t.operator_addr, &t.id)?;
        Ok(t)
    }

    /// The typed response, by opcode. A missing or malformed response reads as a failure
    /// with the reason in `result`, so a broken node never counts as answering.
    pub fn typed_response(&self) -> TaskResponse {
        if op::is_heartbeat(self.op_code) {
            match serde_json::from_value::<JsonHeartbeatResponse>(self.response.clone()) {
                Ok(r) => heartbeat_response(r, self.op_code),
                Err(e) => TaskResponse::Generic {
                    status: 2,
                    result: format!("malformed heartbeat response: {e}"),
                    partition_id: 0,
                },
            }
        } else {
            match serde_json::from_value::<JsonGenericResponse>(self.response.clone()) {
                Ok(r) => TaskResponse::Generic {
                    status: r.status,
                    result: clip(r.result),
                    partition_id: r.partition_id,
                },
                Err(e) => TaskResponse::Generic {
                    status: 2,
                    result: format!("malformed response: {e}"),
                    partition_id: self.partition_id,
                },
            }
        }
    }

    /// The JSON form of a finished task, as a node posts it.
    pub fn from_task(task: &AdminTask) -> JsonAdminTask {
        let response = match &task.response {
            None => Value::Null,
            Some(TaskResponse::Generic {
                status,
                result,
                partition_id,
            }) => {
                serde_json::json!({"Status": status, "Result": result, "PartitionID": partition_id})
            }
            Some(TaskResponse::Heartbeat {
                status,
                result,
                total,
                used,
                available,
                zone_name,
                partition_count,
                reports,
            }) => {
                let meta = task.op_code == op::META_NODE_HEARTBEAT;
                let reports: Vec<Value> = reports
                    .iter()
                    .map(|p| {
                        if meta {
                            serde_json::json!({"PartitionID": p.partition_id, "VolName": p.vol_name,
                                "Status": p.status, "Size": p.used, "IsLeader": p.is_leader,
                                "End": p.end, "MaxInodeID": p.max_inode_id})
                        } else {
                            serde_json::json!({"PartitionID": p.partition_id, "VolName": p.vol_name,
                                "PartitionStatus": p.status, "Total": p.total, "Used": p.used,
                                "IsLeader": p.is_leader})
                        }
                    })
                    .collect();
                if meta {
                    serde_json::json!({"Status": status, "Result": result, "Total": total,
                        "Used": used, "ZoneName": zone_name, "MetaPartitionReports": reports})
                } else {
                    serde_json::json!({"Status": status, "Result": result, "Total": total,
                        "Used": used, "Available": available, "ZoneName": zone_name,
                        "CreatedPartitionCnt": partition_count, "PartitionReports": reports})
                }
            }
        };
        JsonAdminTask {
            id: task.id.clone(),
            partition_id: task.partition_id,
            op_code: task.op_code,
            operator_addr: task.operator_addr.clone(),
            status: task.status,
            send_time: task.send_time,
            create_time: task.create_time,
            send_count: task.send_count,
            request: Value::Null,
            response,
            request_id: task.request_id.clone(),
        }
    }
}

/// The JSON body a node posts for a finished task: the same document as
/// `serde_json::to_vec(&JsonAdminTask::from_task(task))`, written straight from the task
/// (a simulated node posts 1,666 of these a second at 10,000 nodes; no `Value` tree).
pub fn answer_body(task: &AdminTask) -> Result<Vec<u8>, serde_json::Error> {
    let meta = task.op_code == op::META_NODE_HEARTBEAT;
    let response = match &task.response {
        None => ResponseOut::None(()),
        Some(TaskResponse::Generic {
            status,
            result,
            partition_id,
        }) => ResponseOut::Generic {
            status: *status,
            result,
            partition_id: *partition_id,
        },
        Some(TaskResponse::Heartbeat {
            status,
            result,
            total,
            used,
            zone_name,
            reports,
            ..
        }) if meta => ResponseOut::MetaHeartbeat {
            status: *status,
            result,
            total: *total,
            used: *used,
            zone_name,
            meta_partition_reports: MetaReports(reports),
        },
        Some(TaskResponse::Heartbeat {
            status,
            result,
            total,
            used,
            available,
            zone_name,
            partition_count,
            reports,
        }) => ResponseOut::DataHeartbeat {
            status: *status,
            result,
            total: *total,
            used: *used,
            available: *available,
            zone_name,
            created_partition_cnt: *partition_count,
            partition_reports: DataReports(reports),
        },
    };
    serde_json::to_vec(&AnswerOut {
        id: &task.id,
        partition_id: task.partition_id,
        op_code: task.op_code,
        operator_addr: &task.operator_addr,
        status: task.status,
        send_time: task.send_time,
        create_time: task.create_time,
        send_count: task.send_count,
        request: (),
        response,
        request_id: &task.request_id,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AnswerOut<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "PartitionID")]
    partition_id: u64,
    op_code: u8,
    operator_addr: &'a str,
    status: i8,
    send_time: i64,
    create_time: i64,
    send_count: u8,
    request: (),
    response: ResponseOut<'a>,
    #[serde(rename = "RequestID")]
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResponseOut<'a> {
    None(()),
    #[serde(rename_all = "PascalCase")]
    Generic {
        status: u8,
        result: &'a str,
        #[serde(rename = "PartitionID")]
        partition_id: u64,
    },
    #[serde(rename_all = "PascalCase")]
    DataHeartbeat {
        status: u8,
        result: &'a str,
        total: u64,
        used: u64,
        available: u64,
        zone_name: &'a str,
        created_partition_cnt: u64,
        partition_reports: DataReports<'a>,
    },
    #[serde(rename_all = "PascalCase")]
    MetaHeartbeat {
        status: u8,
        result: &'a str,
        total: u64,
        used: u64,
        zone_name: &'a str,
        meta_partition_reports: MetaReports<'a>,
    },
}

struct DataReports<'a>(&'a [PartitionReport]);
struct MetaReports<'a>(&'a [PartitionReport]);

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DataReportOut<'a> {
    #[serde(rename = "PartitionID")]
    partition_id: u64,
    vol_name: &'a str,
    partition_status: i8,
    total: u64,
    used: u64,
    is_leader: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetaReportOut<'a> {
    #[serde(rename = "PartitionID")]
    partition_id: u64,
    vol_name: &'a str,
    status: i8,
    size: u64,
    is_leader: bool,
    end: u64,
    #[serde(rename = "MaxInodeID")]
    max_inode_id: u64,
}

impl Serialize for DataReports<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| DataReportOut {
            partition_id: p.partition_id,
            vol_name: &p.vol_name,
            partition_status: p.status,
            total: p.total,
            used: p.used,
            is_leader: p.is_leader,
        }))
    }
}

impl Serialize for MetaReports<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| MetaReportOut {
            partition_id: p.partition_id,
            vol_name: &p.vol_name,
            status: p.status,
            size: p.used,
            is_leader: p.is_leader,
            end: p.end,
            max_inode_id: p.max_inode_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mast_wire::FrameDecoder;

    fn sample() -> AdminTask {
        let mut t = AdminTask::new(
            op::DATA_NODE_HEARTBEAT,
            "127.0.0.1:17310",
            None,
            TaskRequest::Heartbeat {
                curr_time: 5,
                master_addr: "127.0.0.1:17010".into(),
            },
            5,
        );
        t.response = Some(TaskResponse::Heartbeat {
            status: 1,
            result: String::new(),
            total: 100,
            used: 40,
            available: 60,
            zone_name: "z1".into(),
            partition_count: 1,
            reports: vec![PartitionReport {
                partition_id: 9,
                vol_name: "v".into(),
                status: 2,
                total: 10,
                used: 4,
                is_leader: true,
                end: 0,
                max_inode_id: 0,
            }],
        });
        t
    }

    #[test]
    fn task_ids_follow_cubefs() {
        assert_eq!(task_id("1.2.3.4:5", 99, None), "addr[1.2.3.4:5]_op[99]");
        assert_eq!(
            task_id("1.2.3.4:5", 0x60, Some(7)),
            "addr[1.2.3.4:5]_op[96]_pid[7]"
        );
    }

    #[test]
    fn packet_round_trips_through_a_frame() {
        let packet = TaskPacket {
            req_id: 42,
            sync: true,
            task: sample(),
        };
        let mut out = BytesMut::new();
        encode_packet(&packet, &mut out).unwrap();
        let frame = FrameDecoder::new(ADMIN_FRAME_BYTES_MAX)
            .decode(&mut out)
            .unwrap()
            .unwrap();
        assert_eq!(decode_packet(&frame).unwrap(), packet);
        assert!(decode_reply(&frame).is_err(), "kind is checked");
    }

    #[test]
    fn json_form_round_trips_the_heartbeat_answer() {
        let t = sample();
        let json = serde_json::to_vec(&JsonAdminTask::from_task(&t)).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.contains("\"OperatorAddr\":\"127.0.0.1:17310\""),
            "{text}"
        );
        assert!(text.contains("\"ID\":"), "{text}");
        let back = JsonAdminTask::parse(&json).unwrap();
        assert_eq!(Some(back.typed_response()), t.response);
    }

    #[test]
    fn malformed_json_response_reads_as_failure() {
        let body = br#"{"ID":"x","OpCode":99,"OperatorAddr":"a:1","Response":{"Total":"big"}}"#;
        let t = JsonAdminTask::parse(body).unwrap();
        assert_eq!(t.typed_response().status(), 2);
        assert!(JsonAdminTask::parse(br#"{"OpCode":99}"#).is_err());
        assert!(JsonAdminTask::parse(b"[1,2").is_err());
    }

    #[test]
    fn typed_answer_body_is_the_value_form() {
        let mut t = sample();
        for op_code in [op::DATA_NODE_HEARTBEAT, op::META_NODE_HEARTBEAT] {
            t.op_code = op_code;
            let typed: Value = serde_json::from_slice(&answer_body(&t).unwrap()).unwrap();
            let value = serde_json::to_value(JsonAdminTask::from_task(&t)).unwrap();
            assert_eq!(typed, value, "opcode {op_code:#x}");
        }
        t.op_code = op::CREATE_DATA_PARTITION;
        t.response = Some(TaskResponse::Generic {
            status: 2,
            result: "no disk".into(),
            partition_id: 7,
        });
        let typed: Value = serde_json::from_slice(&answer_body(&t).unwrap()).unwrap();
        assert_eq!(
            typed,
            serde_json::to_value(JsonAdminTask::from_task(&t)).unwrap()
        );
        t.response = None;
        let typed: Value = serde_json::from_slice(&answer_body(&t).unwrap()).unwrap();
        assert_eq!(
            typed,
            serde_json::to_value(JsonAdminTask::from_task(&t)).unwrap()
        );
    }

    #[test]
    fn one_pass_answer_reads_as_the_value_path() {
        let mut t = sample();
        for op_code in [
            op::DATA_NODE_HEARTBEAT,
            op::META_NODE_HEARTBEAT,
            op::CREATE_DATA_PARTITION,
        ] {
            t.op_code = op_code;
            if op_code == op::CREATE_DATA_PARTITION {
                t.response = Some(TaskResponse::Generic {
                    status: 1,
                    result: String::new(),
                    partition_id: 9,
                });
            }
            let body = answer_body(&t).unwrap();
            let a = Answer::parse(&body).unwrap();
            let slow = JsonAdminTask::parse(&body).unwrap();
            assert_eq!(a.response, slow.typed_response(), "opcode {op_code:#x}");
            assert_eq!(a.id, slow.id);
            assert_eq!(a.operator_addr, "127.0.0.1:17310");
            // A meta node's report has no Total in CubeFS's form.
            if op_code != op::META_NODE_HEARTBEAT {
                assert_eq!(Some(a.response), t.response);
            }
        }
        // Shapes the one pass refuses fall back to the Value path: still failures, and
        // the envelope checks still apply.
        let body = br#"{"ID":"x","OpCode":99,"OperatorAddr":"a:1","Response":{"Total":"big"}}"#;
        assert_eq!(Answer::parse(body).unwrap().response.status(), 2);
        let body = br#"{"ID":"x","OpCode":99,"OperatorAddr":"a:1"}"#;
        assert_eq!(Answer::parse(body).unwrap().response.status(), 2);
        assert!(Answer::parse(br#"{"OpCode":99,"Response":{}}"#).is_err());
        let long = "a".repeat(TEXT_BYTES_MAX + 1);
        let body = format!(r#"{{"ID":"{long}","OperatorAddr":"a:1","Response":{{}}}}"#);
        assert!(Answer::parse(body.as_bytes()).is_err());
    }
}
