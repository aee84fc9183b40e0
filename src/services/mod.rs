//! Leader-only services: the cluster-wide timestamp oracle and ID allocator, served by group
//! 0's leader and reachable from any connection on any shard of any node.
//!
//! A request lands on any shard → a cross-shard call to shard 0 → if this node leads group 0
//! it is served here, otherwise it is relayed to the leader over the peer transport
//! (`replica::calls`, batched). The leader serves it in three steps:
//! 1. a read barrier (ReadIndex, batched with every request that arrived meanwhile): the
//!    leader proves it still leads *after* the request arrived, so a deposed leader that has
//!    not noticed yet answers nothing, and real-time order holds across clients;
//! 2. the pure core (`tso`, `ids`) hands out a range from the window the leader persisted in
//!    its term, never past the bound applied through raft;
//! 3. when the window runs low, one proposal (single flight) extends it in the background; a
//!    request finds it exhausted only if the stream outruns a raft commit.
//!
//! Time is read here (the I/O layer), never in the cores or in apply.

pub mod api;
pub mod ids;
pub mod tso;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use tracing::{info, warn};

use crate::codec;
use crate::meta::global::{GlobalCommand, GlobalOutcome};
use crate::meta::{MetaCommand, MetaOutcome, MetaTable};
use crate::replica::{CallResult, Group, GroupError, LeaderEvent};
use ids::{IdCore, IdError};
use tso::{TsoCore, TsoError};

/// Service numbers on the leader-call wire. Fixed forever.
pub const SERVICE_TSO: u16 = 1;
pub const SERVICE_IDS: u16 = 2;
/// Window extensions a request may wait for before it gives up (each is a raft commit).
const EXTENSIONS_PER_REQUEST_MAX: usize = 4;

/// A request to a leader service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ServiceCall {
    Tso { count: u64 },
    Ids { count: u64 },
}

impl ServiceCall {
    fn service(&self) -> u16 {
        match self {
            ServiceCall::Tso { .. } => SERVICE_TSO,
            ServiceCall::Ids { .. } => SERVICE_IDS,
        }
    }
}

/// `[first, first + count)`: timestamps or ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Range {
    pub first: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("{0}")]
    BadRequest(String),
}

/// Facts for `/status` and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServiceStats {
    pub serving_term: u64,
    pub tso_window_bound_ms: u64,
    pub tso_last_physical_ms: u64,
    pub tso_persisted_bound_ms: u64,
    pub tso_allocations: u64,
    pub tso_timestamps: u64,
    pub tso_window_extensions: u64,
    pub ids_high_water: u64,
    pub ids_next: u64,
    pub ids_persisted_high_water: u64,
    pub ids_allocations: u64,
    pub ids_block_extensions: u64,
    pub relayed_calls: u64,
}

/// A bound to persist through group 0 before handing out what lies below it.
#[derive(Debug, Clone, Copy)]
enum Extension {
    Tso { bound_ms: u64 },
    Ids { high_water: u64 },
}

/// Waiters on the one window extension in flight.
type Flight = RefCell<Option<Vec<oneshot::Sender<()>>>>;

/// The leader services' memory on one shard (only shard 0's is used).
#[derive(Default)]
pub struct LeaderServices {
    tso: RefCell<TsoCore>,
    ids: RefCell<IdCore>,
    tso_flight: Flight,
    ids_flight: Flight,
    tso_extensions: Cell<u64>,
    ids_extensions: Cell<u64>,
    relayed: Cell<u64>,
}

/// Joins the extension in flight (its completion), or starts one (None: the caller runs it).
fn join_flight(flight: &Flight) -> Option<oneshot::Receiver<()>> {
    let mut f = flight.borrow_mut();
    match f.as_mut() {
        Some(waiters) => {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            Some(rx)
        }
        None => {
            *f = Some(Vec::new());
            None
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl LeaderServices {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self, group: &Group<MetaTable>) -> ServiceStats {
        let tso = self.tso.borrow();
        let ids = self.ids.borrow();
        let state = group.state();
        ServiceStats {
            serving_term: tso.serving_term().unwrap_or(0),
            tso_window_bound_ms: tso.window_bound_ms(),
            tso_last_physical_ms: tso.last_physical_ms(),
            tso_persisted_bound_ms: state.global.tso_bound_ms,
            tso_allocations: tso.allocations(),
            tso_timestamps: tso.timestamps_issued(),
            tso_window_extensions: self.tso_extensions.get(),
            ids_high_water: ids.high_water(),
            ids_next: ids.next_id(),
            ids_persisted_high_water: state.global.id_high_water,
            ids_allocations: ids.allocations(),
            ids_block_extensions: self.ids_extensions.get(),
            relayed_calls: self.relayed.get(),
        }
    }

    /// Wires the services to group 0's replica: serves calls relayed by other nodes, and
    /// opens a window as soon as this replica becomes a ready leader, so the first request
    /// of a new term does not wait for it.
    pub fn attach(self: &Rc<Self>, group: &Rc<Group<MetaTable>>) {
        let (me, g) = (self.clone(), Rc::downgrade(group));
        group.set_call_handler(Rc::new(move |service, body| {
            let (me, g) = (me.clone(), g.clone());
            Box::pin(async move {
                let Some(g) = g.upgrade() else {
                    return CallResult::NotLeader { leader: 0 };
                };
                let call = match codec::decode::<ServiceCall>(&body) {
                    Ok(c) if c.service() == service => c,
                    _ => return CallResult::Refused(format!("bad call to service {service}")),
                };
                match me.serve_local(&g, call).await {
                    Ok(r) => CallResult::Ok(codec::encode(&r)),
                    Err(ServiceError::BadRequest(m)) => CallResult::Refused(m),
                    Err(ServiceError::Group(e)) => match e {
                        GroupError::Overloaded => CallResult::Overloaded,
                        GroupError::Timeout => CallResult::Timeout,
                        _ => CallResult::NotLeader { leader: g.leader() },
                    },
                }
            })
        }));
        let events = group.subscribe_leader_events();
        let (me, g) = (self.clone(), Rc::downgrade(group));
        monoio::spawn(async move {
            while let Ok(ev) = events.recv_async().await {
                let Some(g) = g.upgrade() else { return };
                match ev {
                    LeaderEvent::Ready { term } => me.warm_up(&g, term).await,
                    LeaderEvent::SteppedDown => {
                        me.tso.borrow_mut().step_down();
                        me.ids.borrow_mut().step_down();
                        info!("group 0: stepped down; TSO and ID allocator stop serving here");
                    }
                }
            }
        });
    }

    async fn warm_up(&self, g: &Group<MetaTable>, term: u64) {
        self.begin_term(g, term);
        // Ask the cores what to persist rather than allocating: nothing is handed out here.
        let need_tso = self.tso.borrow().window_to_open(term, wall_ms());
        if let Some(b) = need_tso {
            if let Err(e) = self.extend(g, term, Extension::Tso { bound_ms: b }).await {
                warn!(term, %e, "TSO window not opened yet; the next request retries");
            }
        }
        let need_ids = self.ids.borrow().block_to_reserve(term);
        if let Some(h) = need_ids {
            if let Err(e) = self.extend(g, term, Extension::Ids { high_water: h }).await {
                warn!(term, %e, "ID block not reserved yet; the next request retries");
            }
        }
        let tso = self.tso.borrow();
        let ids = self.ids.borrow();
        info!(
            term,
            tso_window_bound_ms = tso.window_bound_ms(),
            tso_last_physical_ms = tso.last_physical_ms(),
            ids_next = ids.next_id(),
            ids_high_water = ids.high_water(),
            "group 0 leader: TSO window and ID block in force"
        );
    }

    /// Starts serving `term` from the bounds every earlier leader persisted (idempotent).
    fn begin_term(&self, g: &Group<MetaTable>, term: u64) {
        let (tso_bound, id_hw) = {
            let s = g.state();
            (s.global.tso_bound_ms, s.global.id_high_water)
        };
        let mut tso = self.tso.borrow_mut();
        if tso.serving_term() != Some(term) {
            tso.begin_term(term, tso_bound);
            info!(
                term,
                persisted_bound_ms = tso_bound,
                "TSO: new leadership starts above the persisted window"
            );
        }
        let mut ids = self.ids.borrow_mut();
        if ids.serving_term() != Some(term) {
            ids.begin_term(term, id_hw);
        }
    }

    /// Serves `call` on this node: locally if it leads group 0, else through the leader.
    /// Runs on shard 0.
    pub async fn serve(
        self: &Rc<Self>,
        g: &Rc<Group<MetaTable>>,
        call: ServiceCall,
    ) -> Result<Range, ServiceError> {
        let deadline = std::time::Instant::now() + Duration::from_millis(g.request_timeout_ms());
        loop {
            let r = if g.is_leader() {
                self.serve_local(g, call).await
            } else {
                self.relayed.set(self.relayed.get() + 1);
                match g.call_leader(call.service(), codec::encode(&call)).await {
                    Ok(bytes) => codec::decode::<Range>(&bytes).map_err(|e| {
                        ServiceError::Group(GroupError::Refused(format!(
                            "bad answer from the leader: {e}"
                        )))
                    }),
                    Err(GroupError::Refused(m)) => Err(ServiceError::BadRequest(m)),
                    Err(e) => Err(e.into()),
                }
            };
            // A leader change under way: answer once it settles, within the deadline.
            let retry = matches!(
                r,
                Err(ServiceError::Group(
                    GroupError::NoLeader { .. } | GroupError::NotLeader { .. }
                ))
            );
            if !retry || std::time::Instant::now() + Duration::from_millis(50) > deadline {
                return r;
            }
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves `call` as group 0's leader (see the module docs for the steps).
    pub async fn serve_local(
        self: &Rc<Self>,
        g: &Rc<Group<MetaTable>>,
        call: ServiceCall,
    ) -> Result<Range, ServiceError> {
        match call {
            ServiceCall::Tso { count } if count == 0 || count > tso::COUNT_MAX => {
                return Err(ServiceError::BadRequest(format!(
                    "count must be in 1..={}",
                    tso::COUNT_MAX
                )))
            }
            ServiceCall::Ids { count } if count == 0 || count > ids::COUNT_MAX => {
                return Err(ServiceError::BadRequest(format!(
                    "count must be in 1..={}",
                    ids::COUNT_MAX
                )))
            }
            _ => {}
        }
        g.read_barrier().await?;
        for _ in 0..EXTENSIONS_PER_REQUEST_MAX {
            let term = g
                .leader_ready_term()
                .ok_or(GroupError::NotLeader { leader: g.leader() })?;
            self.begin_term(g, term);
            match call {
                ServiceCall::Tso { count } => {
                    let r = self.tso.borrow_mut().allocate(term, wall_ms(), count);
                    match r {
                        Ok(a) => {
                            if let Some(b) = a.renew_bound_ms {
                                self.extend_in_background(g, term, Extension::Tso { bound_ms: b });
                            }
                            return Ok(Range {
                                first: a.timestamp,
                                count: a.count,
                            });
                        }
                        Err(TsoError::NeedWindow { bound_ms }) => {
                            self.extend(g, term, Extension::Tso { bound_ms }).await?
                        }
                        Err(TsoError::NotServing) => {
                            return Err(GroupError::NotLeader { leader: g.leader() }.into())
                        }
                        Err(TsoError::BadCount) => {
                            return Err(ServiceError::BadRequest(format!(
                                "count must be in 1..={}",
                                tso::COUNT_MAX
                            )))
                        }
                    }
                }
                ServiceCall::Ids { count } => {
                    let r = self.ids.borrow_mut().allocate(term, count);
                    match r {
                        Ok(a) => {
                            if let Some(h) = a.renew_high_water {
                                self.extend_in_background(
                                    g,
                                    term,
                                    Extension::Ids { high_water: h },
                                );
                            }
                            return Ok(Range {
                                first: a.first,
                                count: a.count,
                            });
                        }
                        Err(IdError::NeedBlock { high_water }) => {
                            self.extend(g, term, Extension::Ids { high_water }).await?
                        }
                        Err(IdError::NotServing) => {
                            return Err(GroupError::NotLeader { leader: g.leader() }.into())
                        }
                        Err(IdError::BadCount) => {
                            return Err(ServiceError::BadRequest(format!(
                                "count must be in 1..={}",
                                ids::COUNT_MAX
                            )))
                        }
                    }
                }
            }
        }
        Err(GroupError::Timeout.into())
    }

    fn extend_in_background(self: &Rc<Self>, g: &Rc<Group<MetaTable>>, term: u64, ext: Extension) {
        if self.flight(ext).borrow().is_some() {
            return;
        }
        let (me, g) = (self.clone(), g.clone());
        monoio::spawn(async move {
            if let Err(e) = me.extend(&g, term, ext).await {
                tracing::debug!(term, ?ext, %e, "extension failed; a request will retry");
            }
        });
    }

    fn flight(&self, ext: Extension) -> &Flight {
        match ext {
            Extension::Tso { .. } => &self.tso_flight,
            Extension::Ids { .. } => &self.ids_flight,
        }
    }

    /// Persists a TSO bound or an ID high-water mark proposed in `term`: one raft commit of
    /// each kind in flight at a time; callers arriving meanwhile wait for it instead.
    async fn extend(
        &self,
        g: &Group<MetaTable>,
        term: u64,
        ext: Extension,
    ) -> Result<(), GroupError> {
        let flight = self.flight(ext);
        if let Some(rx) = join_flight(flight) {
            // The extension in flight may be smaller than this one needs: the caller's loop
            // asks again if so.
            let _ = rx.await;
            return Ok(());
        }
        let command = match ext {
            Extension::Tso { bound_ms } => GlobalCommand::ExtendTsoWindow { bound_ms },
            Extension::Ids { high_water } => GlobalCommand::ExtendIdBlock { high_water },
        };
        let r = g
            .propose_as_leader(&MetaCommand::Global(command), term)
            .await;
        match &r {
            Ok(MetaOutcome::Global(GlobalOutcome::TsoBound { bound_ms })) => {
                self.tso.borrow_mut().window_applied(term, *bound_ms);
                self.tso_extensions.set(self.tso_extensions.get() + 1);
            }
            Ok(MetaOutcome::Global(GlobalOutcome::IdHighWater { high_water })) => {
                self.ids.borrow_mut().block_applied(term, *high_water);
                self.ids_extensions.set(self.ids_extensions.get() + 1);
            }
            _ => {}
        }
        for w in flight.borrow_mut().take().unwrap_or_default() {
            let _ = w.send(());
        }
        r.map(|_| ())
    }
}
