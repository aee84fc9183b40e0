//! The per-node async task map: a pure core driven with an explicit clock (milliseconds on
//! any monotonic scale), so its rules are tested without sleeping.
//!
//! Rules (CubeFS's `AdminTaskManager`, reference §4/§8):
//! - tasks are keyed by ID: a task whose ID is already queued is not queued again;
//! - each tick hands out at most `tasks_per_tick_max` tasks: heartbeats first, then
//!   partition creation/load/update tasks, then the rest, each class in queueing order;
//! - a task is handed out when never sent, or again when `resend_after_ms` passed since its
//!   last send;
//! - a task is dropped once `sends_max` sends went unanswered (when the next resend would
//!   be due) or `drop_after_ms` passed since it was queued;
//! - the map holds at most `tasks_per_node_max` tasks; further ones are refused.

use std::collections::{BTreeMap, HashMap};

use super::proto::op;

/// Limits of one map (copied from [`super::AdminTaskConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMapLimits {
    pub tasks_per_tick_max: usize,
    pub resend_after_ms: u64,
    pub sends_max: u8,
    pub drop_after_ms: u64,
    pub tasks_per_node_max: usize,
}

impl Default for TaskMapLimits {
    fn default() -> Self {
        TaskMapLimits {
            tasks_per_tick_max: 30,
            resend_after_ms: 5_000,
            sends_max: 5,
            drop_after_ms: 100_000,
            tasks_per_node_max: 1_024,
        }
    }
}

/// Send order class: lower goes first.
pub fn priority(op_code: u8) -> u8 {
    match op_code {
        op::DATA_NODE_HEARTBEAT | op::META_NODE_HEARTBEAT => 0,
        op::CREATE_DATA_PARTITION
        | op::CREATE_META_PARTITION
        | op::LOAD_DATA_PARTITION
        | op::LOAD_META_PARTITION
        | op::UPDATE_META_PARTITION => 1,
        _ => 2,
    }
}

/// Outcome of [`TaskMap::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// A task with this ID is already queued; the new one is ignored.
    Duplicate,
    /// The map is at `tasks_per_node_max`.
    Full,
    /// This node is not the master: nothing would send it (the manager refuses it before
    /// it reaches a map).
    NotMaster,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    op_code: u8,
    seq: u64,
    queued_ms: u64,
    last_send_ms: Option<u64>,
    sends: u8,
    task: T,
}

/// A task handed out by [`TaskMap::tick`] for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due<T> {
    pub id: String,
    pub op_code: u8,
    /// Sends before this one.
    pub sends: u8,
    /// When it was last sent before this one (for [`TaskMap::unsend`]).
    pub prev_send_ms: Option<u64>,
    pub task: T,
}

/// What one tick decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickPlan<T> {
    /// To send now, in order. Each is already marked sent at the tick's time.
    pub send: Vec<Due<T>>,
    /// Dropped: (ID, opcode).
    pub dropped: Vec<(String, u8)>,
}

/// One node's async tasks. `T` is the task payload (the [`super::AdminTask`] in mast).
#[derive(Debug, Clone)]
pub struct TaskMap<T> {
    limits: TaskMapLimits,
    entries: HashMap<String, Entry<T>>,
    /// (priority, seq) → ID: the send order.
    order: BTreeMap<(u8, u64), String>,
    next_seq: u64,
}

impl<T: Clone> TaskMap<T> {
    pub fn new(limits: TaskMapLimits) -> Self {
        TaskMap {
            limits,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Sends so far of a queued task.
    pub fn sends(&self, id: &str) -> Option<u8> {
        self.entries.get(id).map(|e| e.sends)
    }

    /// Queues a task unless its ID is queued already or the map is full.
    pub fn push(&mut self, id: &str, op_code: u8, task: T, now_ms: u64) -> Pushed {
        if self.entries.contains_key(id) {
            return Pushed::Duplicate;
        }
        if self.entries.len() >= self.limits.tasks_per_node_max {
            return Pushed::Full;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((priority(op_code), seq), id.to_string());
        self.entries.insert(
            id.to_string(),
            Entry {
                op_code,
                seq,
                queued_ms: now_ms,
                last_send_ms: None,
                sends: 0,
                task,
            },
        );
        Pushed::Queued
    }

    /// Removes a task (its response arrived). Returns its opcode and payload.
    pub fn complete(&mut self, id: &str) -> Option<(u8, T)> {
        let e = self.entries.remove(id)?;
        self.order.remove(&(priority(e.op_code), e.seq));
        Some((e.op_code, e.task))
    }

    /// Takes back a send handed out by [`TaskMap::tick`] that never went out (an earlier
    /// task of the batch found the node unreachable), so it counts neither as a send nor
    /// towards the resend time.
    pub fn unsend(&mut self, due: &Due<T>) {
        if let Some(e) = self.entries.get_mut(&due.id) {
            if e.sends == due.sends.saturating_add(1) {
                e.sends = due.sends;
                e.last_send_ms = due.prev_send_ms;
            }
        }
    }

    /// Drops expired tasks and hands out the ones to send now, marking them sent at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> TickPlan<T> {
        let mut send = Vec::new();
        let mut dropped = Vec::new();
        let mut expired = Vec::new();
        for (key, id) in &self.order {
            let Some(e) = self.entries.get(id) else {
                continue;
            };
            let resend_due = match e.last_send_ms {
                None => true,
                Some(t) => now_ms.saturating_sub(t) >= self.limits.resend_after_ms,
            };
            let too_old = now_ms.saturating_sub(e.queued_ms) >= self.limits.drop_after_ms;
            if too_old || (resend_due && e.sends >= self.limits.sends_max) {
                expired.push(*key);
                continue;
            }
            if resend_due && send.len() < self.limits.tasks_per_tick_max {
                send.push(id.clone());
            }
        }
        for key in expired {
            if let Some(id) = self.order.remove(&key) {
                if let Some(e) = self.entries.remove(&id) {
                    dropped.push((id, e.op_code));
                }
            }
        }
        let send = send
            .into_iter()
            .filter_map(|id| {
                let e = self.entries.get_mut(&id)?;
                let due = Due {
                    id,
                    op_code: e.op_code,
                    sends: e.sends,
                    prev_send_ms: e.last_send_ms,
                    task: e.task.clone(),
                };
                e.sends = e.sends.saturating_add(1);
                e.last_send_ms = Some(now_ms);
                Some(due)
            })
            .collect();
        TickPlan { send, dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> TaskMap<u32> {
        TaskMap::new(TaskMapLimits::default())
    }

    fn ids(plan: &TickPlan<u32>) -> Vec<&str> {
        plan.send.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn a_queued_id_is_never_queued_twice() {
        let mut m = map();
        assert_eq!(m.push("a", 0x61, 1, 0), Pushed::Queued);
        assert_eq!(m.push("a", 0x61, 2, 10), Pushed::Duplicate);
        assert_eq!(m.len(), 1);
        let plan = m.tick(10);
        assert_eq!(plan.send.len(), 1);
        assert_eq!(plan.send[0].task, 1, "the first task is kept");
        // Once answered, the same ID may be queued again.
        assert_eq!(m.complete("a").map(|(op, _)| op), Some(0x61));
        assert_eq!(m.push("a", 0x61, 3, 20), Pushed::Queued);
    }

    #[test]
    fn heartbeats_go_first_then_creates_then_the_rest_in_queue_order() {
        let mut m = map();
        m.push("del1", op::DELETE_DATA_PARTITION, 0, 0);
        m.push("create", op::CREATE_DATA_PARTITION, 0, 0);
        m.push("del2", op::DELETE_DATA_PARTITION, 0, 0);
        m.push("hb", op::DATA_NODE_HEARTBEAT, 0, 0);
        m.push("load", op::LOAD_DATA_PARTITION, 0, 0);
        assert_eq!(ids(&m.tick(0)), ["hb", "create", "load", "del1", "del2"]);
    }

    #[test]
    fn a_tick_hands_out_at_most_the_bound_and_the_rest_next_tick() {
        let mut m = TaskMap::new(TaskMapLimits {
            tasks_per_tick_max: 3,
            ..TaskMapLimits::default()
        });
        for i in 0..7 {
            m.push(&format!("t{i}"), 0x61, i, 0);
        }
        m.push("hb", op::META_NODE_HEARTBEAT, 99, 0);
        assert_eq!(ids(&m.tick(0)), ["hb", "t0", "t1"]);
        assert_eq!(ids(&m.tick(1)), ["t2", "t3", "t4"]);
        assert_eq!(ids(&m.tick(2)), ["t5", "t6"]);
        assert!(
            m.tick(3).send.is_empty(),
            "nothing is due before the resend time"
        );
    }

    #[test]
    fn resent_only_after_the_resend_interval() {
        let mut m = map();
        m.push("a", 0x61, 0, 0);
        assert_eq!(m.tick(0).send.len(), 1);
        assert!(m.tick(2_000).send.is_empty());
        assert!(m.tick(4_999).send.is_empty());
        let plan = m.tick(5_000);
        assert_eq!(plan.send.len(), 1);
        assert_eq!(plan.send[0].sends, 1);
        assert_eq!(m.sends("a"), Some(2));
    }

    #[test]
    fn dropped_after_five_unanswered_sends() {
        let mut m = map();
        m.push("a", 0x61, 0, 0);
        for i in 0..5u64 {
            let plan = m.tick(i * 5_000);
            assert_eq!(plan.send.len(), 1, "send {i}");
            assert!(plan.dropped.is_empty());
        }
        // The sixth send would be due: dropped instead.
        assert!(m.tick(24_999).dropped.is_empty());
        let plan = m.tick(25_000);
        assert!(plan.send.is_empty());
        assert_eq!(plan.dropped, vec![("a".to_string(), 0x61)]);
        assert!(m.is_empty());
    }

    #[test]
    fn dropped_after_the_age_limit_even_if_rarely_sent() {
        let mut m = TaskMap::new(TaskMapLimits {
            resend_after_ms: 60_000,
            ..TaskMapLimits::default()
        });
        m.push("a", 0x61, 0, 1_000);
        assert_eq!(m.tick(1_000).send.len(), 1);
        assert_eq!(m.tick(61_000).send.len(), 1);
        assert!(m.tick(100_999).dropped.is_empty());
        assert_eq!(m.tick(101_000).dropped.len(), 1);
    }

    #[test]
    fn an_answer_stops_resends_and_drops() {
        let mut m = map();
        m.push("a", 0x61, 0, 0);
        m.tick(0);
        assert!(m.complete("a").is_some());
        assert!(m.complete("a").is_none(), "a second answer finds nothing");
        let plan = m.tick(200_000);
        assert!(plan.send.is_empty() && plan.dropped.is_empty());
    }

    #[test]
    fn a_send_that_never_went_out_is_taken_back() {
        let mut m = map();
        m.push("a", 0x61, 0, 0);
        let first = m.tick(0).send.remove(0);
        assert_eq!(m.sends("a"), Some(1));
        m.unsend(&first);
        assert_eq!(m.sends("a"), Some(0));
        assert_eq!(m.tick(1).send.len(), 1, "due again at once");
        let second = m.tick(5_001).send.remove(0);
        assert_eq!(second.sends, 1);
        m.unsend(&second);
        assert!(m.tick(5_002).send.len() == 1, "resend time restored");
        assert_eq!(m.sends("a"), Some(2));
    }

    #[test]
    fn the_map_is_bounded() {
        let mut m = TaskMap::new(TaskMapLimits {
            tasks_per_node_max: 2,
            ..TaskMapLimits::default()
        });
        assert_eq!(m.push("a", 1, 0, 0), Pushed::Queued);
        assert_eq!(m.push("b", 1, 0, 0), Pushed::Queued);
        assert_eq!(m.push("c", 1, 0, 0), Pushed::Full);
        assert_eq!(m.push("a", 1, 0, 0), Pushed::Duplicate);
        m.complete("a");
        assert_eq!(m.push("c", 1, 0, 0), Pushed::Queued);
    }

    #[test]
    fn dropped_tasks_do_not_count_against_the_tick_bound() {
        let mut m = TaskMap::new(TaskMapLimits {
            tasks_per_tick_max: 1,
            drop_after_ms: 10,
            ..TaskMapLimits::default()
        });
        m.push("old", 1, 0, 0);
        m.push("new", 1, 0, 10);
        let plan = m.tick(10);
        assert_eq!(plan.dropped, vec![("old".to_string(), 1)]);
        assert_eq!(ids(&plan), ["new"]);
    }
}
