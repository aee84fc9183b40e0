//! A linearizability checker for histories of a key-value map, in the style of Wing & Gong as
//! improved by Lowe and by Porcupine: depth-first search for a total order of the operations
//! that respects real time and the sequential specification, with a cache of
//! (set of linearized operations, state) pairs already explored, run separately per key.
//!
//! Why per key: the KV is a map of independent registers, and linearizability is
//! compositional (Herlihy & Wing), so a history is linearizable iff every key's sub-history is.
//! That turns one search over n operations into many small ones.
//!
//! Why CAS compares values, not revisions: a write whose outcome is unknown never told us the
//! revision it would get, so a model that tracks revisions could not say what a later CAS on
//! that revision means. Instead every written value is unique in a history (the test clients
//! make them so), which makes "the key holds value v" and "the key is at the revision of the
//! write of v" the same fact; a client that CASes with the revision it saw together with value
//! v records the operation as `Cas { expected: Some(v), .. }`. [`check_revisions`] separately
//! checks that the server's revisions agree with that one-to-one mapping.
//!
//! The cache holds 128-bit Zobrist hashes of (linearized set, state) rather than the sets
//! themselves: O(1) per step instead of O(n), and 16 bytes per entry, so the step limit also
//! bounds memory (~200 MB at the default). Two different configurations sharing a hash would
//! prune a branch wrongly; at 5 million entries per key the chance is below 2^-80.
//!
//! Unknown outcomes (a timeout, a 504, a dropped connection after the request was sent) follow
//! the literature: the operation may take effect at any point after its invocation or never,
//! modelled as a return time of +infinity with its result unchecked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Put(String),
    Get,
    /// Write `new` only if the key holds `expected` (`None`: only if the key is absent).
    Cas {
        expected: Option<String>,
        new: String,
    },
    Delete,
}

/// What the client heard back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The write (put or delete) was acknowledged.
    Ok,
    /// A read returned this value (`None`: absent).
    Value(Option<String>),
    /// A CAS was acknowledged as applied (`true`) or refused with 412 (`false`).
    CasResult(bool),
    /// No definite answer: the write may or may not have been applied.
    Unknown,
}

/// One operation of a history. Times are nanoseconds on one monotonic clock shared by all
/// clients; `call` is taken before the request is sent, `ret` after the response is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    /// The node the request was sent to (0: not recorded).
    pub node: u64,
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub call: u64,
    /// `None` for an unknown outcome (returns at +infinity).
    pub ret: Option<u64>,
    /// The revision the server reported (ETag), when it reported one.
    pub revision: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = match self.ret {
            Some(r) => format!("{:.3}ms", r as f64 / 1e6),
            None => "inf".into(),
        };
        write!(
            f,
            "[{:.3}ms..{ret}] client {}{} {:?} {:?} -> {:?}",
            self.call as f64 / 1e6,
            self.client,
            if self.node == 0 {
                String::new()
            } else {
                format!(" via node {}", self.node)
            },
            self.key,
            self.input,
            self.output
        )?;
        if let Some(rev) = self.revision {
            write!(f, " rev {rev}")?;
        }
        Ok(())
    }
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Some key's sub-history has no linearization. `explanation` lists the operations and
    /// the longest linearizable prefix found, for a human.
    Illegal {
        key: String,
        explanation: String,
    },
    /// The search hit its step limit on these keys before deciding (and no key was illegal).
    Undecided {
        keys: Vec<String>,
    },
}

/// Search steps per key before giving up with [`Verdict::Undecided`]; also bounds the cache
/// (at most one entry per step).
pub const STEPS_PER_KEY_MAX: u64 = 5_000_000;

/// Problems with the history itself (not with the system under test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError(pub String);

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed history: {}", self.0)
    }
}

/// Checks a history with the default step limit.
pub fn check(history: &[Operation]) -> Result<Verdict, HistoryError> {
    check_with_limit(history, STEPS_PER_KEY_MAX)
}

/// Checks a history, giving up on a key after `steps_max` search steps.
pub fn check_with_limit(history: &[Operation], steps_max: u64) -> Result<Verdict, HistoryError> {
    validate(history)?;
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut undecided = Vec::new();
    for (key, ops) in by_key {
        match check_key(&ops, steps_max) {
            KeyVerdict::Ok => {}
            KeyVerdict::Illegal(explanation) => {
                return Ok(Verdict::Illegal {
                    key: key.to_string(),
                    explanation,
                })
            }
            KeyVerdict::Undecided => undecided.push(key.to_string()),
        }
    }
    Ok(if undecided.is_empty() {
        Verdict::Linearizable
    } else {
        Verdict::Undecided { keys: undecided }
    })
}

/// Written values must be unique (see the module comment), reads must not be unknown, and an
/// operation must not return before it was called.
fn validate(history: &[Operation]) -> Result<(), HistoryError> {
    let mut written: HashSet<(&str, &str)> = HashSet::new();
    for op in history {
        if let Some(ret) = op.ret {
            if ret < op.call {
                return Err(HistoryError(format!("returns before its call: {op}")));
            }
        }
        let ok = matches!(
            (&op.input, &op.output),
            (Input::Put(_) | Input::Delete, Output::Ok | Output::Unknown)
                | (Input::Get, Output::Value(_))
                | (Input::Cas { .. }, Output::CasResult(_) | Output::Unknown)
        );
        if !ok || (op.output == Output::Unknown) != op.ret.is_none() {
            return Err(HistoryError(format!(
                "output does not fit the input (or unknown without ret=inf): {op}"
            )));
        }
        let value = match &op.input {
            Input::Put(v) => Some(v),
            Input::Cas { new, .. } => Some(new),
            _ => None,
        };
        if let Some(v) = value {
            if !written.insert((&op.key, v)) {
                return Err(HistoryError(format!(
                    "value {v:?} written twice to key {:?}",
                    op.key
                )));
            }
        }
    }
    Ok(())
}

/// Checks that the revisions the server reported are consistent with unique values: each
/// (key, value) was seen with one revision only, and no two values of a key share a revision.
/// Returns the inconsistencies found (empty when consistent).
pub fn check_revisions(history: &[Operation]) -> Vec<String> {
    let mut rev_of: HashMap<(&str, &str), (u64, &Operation)> = HashMap::new();
    let mut value_of: HashMap<(&str, u64), (&str, &Operation)> = HashMap::new();
    let mut problems = Vec::new();
    for op in history {
        let Some(rev) = op.revision else { continue };
        let value = match (&op.input, &op.output) {
            (Input::Put(v), Output::Ok) => v.as_str(),
            (Input::Cas { new, .. }, Output::CasResult(true)) => new.as_str(),
            (Input::Get, Output::Value(Some(v))) => v.as_str(),
            _ => continue,
        };
        if let Some((seen, first)) = rev_of.insert((&op.key, value), (rev, op)) {
            if seen != rev {
                problems.push(format!(
                    "value {value:?} of key {:?} seen with revision {seen} ({first}) and {rev} ({op})",
                    op.key
                ));
            }
        }
        if let Some((other, first)) = value_of.insert((&op.key, rev), (value, op)) {
            if other != value {
                problems.push(format!(
                    "revision {rev} of key {:?} names two values: {other:?} ({first}) and {value:?} ({op})",
                    op.key
                ));
            }
        }
    }
    problems
}

enum KeyVerdict {
    Ok,
    Illegal(String),
    Undecided,
}

/// The register's state: the interned id of its value, or `None` when absent.
type State = Option<u32>;

/// The sequential specification. Returns the state after `op` if `op`'s output is possible
/// from `state`, else `None`.
fn step(state: State, op: &Op) -> Option<State> {
    match (&op.input, op.output) {
        (OpInput::Put(v), _) => Some(Some(*v)),
        (OpInput::Delete, _) => Some(None),
        (OpInput::Get, OpOutput::Value(v)) => (v == state).then_some(state),
        (OpInput::Get, _) => None,
        (OpInput::Cas { expected, new }, out) => {
            let applies = *expected == state;
            match out {
                OpOutput::Cas(true) => applies.then_some(Some(*new)),
                OpOutput::Cas(false) => (!applies).then_some(state),
                // Unknown: whatever happened is what the specification says would happen.
                OpOutput::Unknown => Some(if applies { Some(*new) } else { state }),
                _ => None,
            }
        }
    }
}

#[derive(Clone, Copy)]
enum OpInput {
    Put(u32),
    Get,
    Cas { expected: Option<u32>, new: u32 },
    Delete,
}

#[derive(Clone, Copy)]
enum OpOutput {
    Done,
    Value(Option<u32>),
    Cas(bool),
    Unknown,
}

struct Op {
    input: OpInput,
    output: OpOutput,
}

/// Interns values so that a state is a small copyable id.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, v: &'a str) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(v).or_insert(next)
    }
}

/// Doubly linked list over call/return events, with O(1) removal and re-insertion of an
/// operation's pair (Knuth's dancing links), as in Lowe's and Porcupine's search.
struct Events {
    /// Node 0 is the head sentinel; node `1 + e` is event `e`.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For node `1 + e`: the operation and whether this is its call.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For each operation: the node of its return event.
    ret_node: Vec<usize>,
}

const NIL: usize = usize::MAX;

impl Events {
    fn new(ops: &[&Operation]) -> Self {
        // (time, is return, op): at equal times calls come first, so operations that touch in
        // time count as concurrent (the permissive reading of an ambiguous clock).
        let mut evs: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            evs.push((op.call, false, i));
            evs.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        evs.sort();
        let n = evs.len() + 1;
        let mut list = Events {
            next: vec![NIL; n],
            prev: vec![NIL; n],
            op: vec![0; n],
            is_call: vec![false; n],
            ret_node: vec![0; ops.len()],
        };
        for (pos, &(_, is_ret, i)) in evs.iter().enumerate() {
            let node = pos + 1;
            list.op[node] = i;
            list.is_call[node] = !is_ret;
            if is_ret {
                list.ret_node[i] = node;
            }
            list.prev[node] = pos;
            list.next[pos] = node;
        }
        list
    }

    fn first(&self) -> usize {
        self.next[0]
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes an operation (its call node and its return node) from the list.
    fn lift(&mut self, call_node: usize) {
        let ret = self.ret_node[self.op[call_node]];
        self.unlink(call_node);
        self.unlink(ret);
    }

    /// Undoes the matching [`Events::lift`] (they must be undone in reverse order).
    fn unlift(&mut self, call_node: usize) {
        let ret = self.ret_node[self.op[call_node]];
        self.relink(ret);
        self.relink(call_node);
    }
}

fn check_key(ops: &[&Operation], steps_max: u64) -> KeyVerdict {
    let mut interner = Interner::default();
    let model: Vec<Op> = ops
        .iter()
        .map(|o| {
            let input = match &o.input {
                Input::Put(v) => OpInput::Put(interner.id(v)),
                Input::Get => OpInput::Get,
                Input::Cas { expected, new } => OpInput::Cas {
                    expected: expected.as_deref().map(|e| interner.id(e)),
                    new: interner.id(new),
                },
                Input::Delete => OpInput::Delete,
            };
            let output = match &o.output {
                Output::Ok => OpOutput::Done,
                Output::Value(v) => OpOutput::Value(v.as_deref().map(|v| interner.id(v))),
                Output::CasResult(b) => OpOutput::Cas(*b),
                Output::Unknown => OpOutput::Unknown,
            };
            Op { input, output }
        })
        .collect();

    let mut events = Events::new(ops);
    // Zobrist keys: the linearized set's hash is the XOR of its operations' keys.
    let op_keys: Vec<u128> = (0..ops.len() as u64).map(|i| zobrist(i, 0)).collect();
    let mut linearized: u128 = 0;
    let mut cache: HashSet<u128> = HashSet::new();
    // (call node of the linearized op, state before it)
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut best: Vec<usize> = Vec::new();
    let mut node = events.first();
    let mut steps = 0u64;

    while events.first() != NIL {
        steps += 1;
        if steps > steps_max {
            return KeyVerdict::Undecided;
        }
        if node == NIL {
            // Cannot happen: the list always ends with a return event, which backtracks.
            return KeyVerdict::Undecided;
        }
        let i = events.op[node];
        if events.is_call[node] {
            if let Some(next_state) = step(state, &model[i]) {
                linearized ^= op_keys[i];
                if cache.insert(linearized ^ state_key(next_state)) {
                    stack.push((node, state));
                    state = next_state;
                    events.lift(node);
                    node = events.first();
                    if stack.len() > best.len() {
                        best = stack.iter().map(|&(n, _)| events.op[n]).collect();
                    }
                    continue;
                }
                linearized ^= op_keys[i];
            }
            node = events.next[node];
        } else {
            // A return of an operation not yet linearized: everything before it has been
            // tried in this position, so undo the last choice.
            let Some((call_node, prev_state)) = stack.pop() else {
                return KeyVerdict::Illegal(explain(ops, &best));
            };
            linearized ^= op_keys[events.op[call_node]];
            state = prev_state;
            events.unlift(call_node);
            node = events.next[call_node];
        }
    }
    KeyVerdict::Ok
}

/// A pseudo-random 128-bit key for (index, domain): two rounds of splitmix64.
fn zobrist(index: u64, domain: u64) -> u128 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let seed = index.wrapping_mul(4).wrapping_add(domain);
    let hi = splitmix(seed);
    let lo = splitmix(hi ^ 0xD1B5_4A32_D192_ED03);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The key of a state, from a domain disjoint from the operations' keys.
fn state_key(state: State) -> u128 {
    match state {
        None => zobrist(0, 1),
        Some(v) => zobrist(u64::from(v) + 1, 1),
    }
}

/// Operations shown around the point where the search got stuck.
const EXPLAIN_OPS_MAX: usize = 40;

/// Describes the deepest point the search reached: the last operations of the longest
/// linearizable prefix, the register's value after it, and the operations pending there (called
/// before the first of the remaining operations returned), none of which could be placed next.
fn explain(ops: &[&Operation], best: &[usize]) -> String {
    let mut out = String::new();
    let done: HashSet<usize> = best.iter().copied().collect();
    out.push_str(&format!(
        "longest linearizable prefix: {} of {} operations; its last steps:\n",
        best.len(),
        ops.len()
    ));
    for &i in best.iter().skip(best.len().saturating_sub(10)) {
        out.push_str(&format!("  {}\n", ops[i]));
    }
    let mut state: Option<&str> = None;
    for &i in best {
        state = match (&ops[i].input, &ops[i].output) {
            (Input::Put(v), _) => Some(v),
            (Input::Delete, _) => None,
            (Input::Cas { expected, new }, out) if expected.as_deref() == state => match out {
                Output::CasResult(false) => state,
                _ => Some(new),
            },
            _ => state,
        };
    }
    out.push_str(&format!("after it the key holds {state:?}\n"));
    let rest: Vec<usize> = (0..ops.len()).filter(|i| !done.contains(i)).collect();
    let first_ret = rest
        .iter()
        .filter_map(|&i| ops[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    let mut pending: Vec<usize> = rest
        .into_iter()
        .filter(|&i| ops[i].call <= first_ret)
        .collect();
    pending.sort_by_key(|&i| ops[i].call);
    out.push_str("pending there, none of which could come next:\n");
    for &i in pending.iter().take(EXPLAIN_OPS_MAX) {
        out.push_str(&format!("  {}\n", ops[i]));
    }
    if pending.len() > EXPLAIN_OPS_MAX {
        out.push_str(&format!("  ... {} more\n", pending.len() - EXPLAIN_OPS_MAX));
    }
    out
}
