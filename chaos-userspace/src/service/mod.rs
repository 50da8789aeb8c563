//! The fault service: the one way in to the engine for every front end (the command line, run
//! files, the agent's API, the ChaosFault controller, experiments). A front end turns its input
//! into faults of the model and calls this; planning (validation, scopes, guard rails), the
//! engine's limits and arming happen here and nowhere else, so a new fault kind needs the model,
//! its kernel side and the engine, and no front end changes.
//!
//! Like Tetragon's sensor manager it serialises every arm and stop through one lock. The
//! blocking work (probing the kernel, resolving cgroups, loading and verifying programs) runs
//! here, off the async workers, so a front end never has to know which calls block.
pub mod events;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chaos_model::Fault;
use tokio::sync::Mutex;

use crate::{
    engine::{Engine, EngineConfig, FaultId, Sink},
    error::{ChaosError, Result},
    inject::{self, Plan},
    service::events::{EventFeed, Following, Published},
    telemetry::metrics::FaultSample,
    wire::{FaultView, Summary},
    workload::PodNames,
};

/// A fault of a batch that cannot be planned: its place in the batch, and why.
#[derive(Debug)]
pub struct Refused {
    /// `None` when the batch as a whole was refused (names could not be resolved).
    pub index: Option<usize>,
    pub error: ChaosError,
}

/// How often scopes by name are resolved again while such a fault runs: a restarted container
/// gets a new id and cgroup, which its rule then takes.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// A fault that followed its names (to its workloads' new cgroups, or its peers' new
/// addresses), in words, or could not.
pub type Moved = (FaultId, Result<String>);

pub struct FaultService {
    engine: Mutex<Engine>,
    events: Arc<EventFeed>,
    /// Where pods and containers get their names: the runtime's CRI, or the Kubernetes API.
    names: Option<PodNames>,
    config: EngineConfig,
}

impl FaultService {
    pub fn new(config: EngineConfig, names: Option<PodNames>) -> Self {
        // Armed faults hold descriptors (their cgroups, their links): the soft limit's 1,024
        // would refuse a run of 1,000 faults. Raising it to the hard limit cannot fail for
        // want of a privilege; if it fails anyway, arming says so when it runs out.
        let _ = crate::kernel::sys::raise_open_files();
        crate::engine::use_one_allocator_arena();
        crate::kernel::object::prepare_loader();
        let events = Arc::new(EventFeed::default());
        Self {
            engine: Mutex::new(Engine::new(config, Arc::clone(&events) as Arc<dyn Sink>)),
            events,
            names,
            config,
        }
    }

    /// The recent events, then the live ones; a follower too slow to keep up is told how many
    /// it missed.
    pub fn events(&self) -> Following {
        self.events.follow()
    }

    /// Every event from now on, none lost: for a front end in this process that keeps up.
    pub fn every_event(&self) -> tokio::sync::mpsc::UnboundedReceiver<Arc<Published>> {
        self.events.every()
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Plans a batch: names resolved once for all of it, then each fault validated, its scope
    /// resolved and judged by the guard rails. Nothing is armed. The first refusal is returned
    /// with its place in the batch.
    pub async fn plan(&self, faults: Vec<Fault>) -> std::result::Result<Vec<Plan>, Refused> {
        let pods = PodNames::for_faults(self.names.as_ref(), faults.iter())
            .await
            .map_err(|error| Refused { index: None, error })?;
        let peers = PodNames::peers_for_faults(self.names.as_ref(), faults.iter())
            .await
            .map_err(|error| Refused { index: None, error })?;
        let planned = blocking(move || {
            let names = inject::Names {
                pods: pods.as_deref(),
                peers: peers.as_deref(),
            };
            plan_all(faults, names)
        })
        .await
        .map_err(|error| Refused { index: None, error })?;
        if planned.is_err() {
            // What the probes verified for these faults will not be armed.
            crate::kernel::probe::drop_verified_objects();
        }
        planned
    }

    /// Everything the engine would refuse of planned faults (room, lifetimes, shared maps),
    /// without arming them.
    pub async fn check(&self, plans: &[Plan], batch: Option<Duration>) -> Result<()> {
        let checked = self.engine.lock().await.check(plans, batch).map(|_| ());
        if checked.is_err() {
            crate::kernel::probe::drop_verified_objects();
        }
        checked
    }

    /// Arms planned faults together (all or none); their ids in the order given.
    pub async fn arm(&self, plans: Vec<Plan>, batch: Option<Duration>) -> Result<Vec<FaultId>> {
        let mut engine = self.engine.lock().await;
        // Loading and verifying blocks: the runtime's other worker keeps serving meanwhile.
        let armed = tokio::task::block_in_place(|| engine.arm(plans, batch));
        // Objects the probes verified were taken over by this arm, or never will be.
        crate::kernel::probe::drop_verified_objects();
        armed
    }

    /// Plans and arms one fault; its view.
    pub async fn create(&self, fault: Fault) -> Result<FaultView> {
        let plans = self.plan(vec![fault]).await.map_err(|r| r.error)?;
        let ids = self.arm(plans, None).await?;
        let engine = self.engine.lock().await;
        ids.first()
            .and_then(|id| engine.view(*id))
            .ok_or(ChaosError::NotFound(0))
    }

    pub async fn stop(&self, id: FaultId, by: &'static str) -> Result<FaultView> {
        self.engine.lock().await.stop(id, by).await
    }

    /// Several faults, under one lock; those already gone are skipped.
    pub async fn stop_each(&self, ids: &[FaultId], by: &'static str) {
        let mut engine = self.engine.lock().await;
        for id in ids {
            let _ = engine.stop(*id, by).await;
        }
    }

    /// The kill switch: every fault stops; how many.
    pub async fn stop_all(&self, by: &'static str) -> usize {
        self.engine.lock().await.stop_all(by).await
    }

    pub async fn view(&self, id: FaultId) -> Option<FaultView> {
        self.engine.lock().await.view(id)
    }

    /// Every fault, armed and recently ended.
    pub async fn list(&self) -> Vec<FaultView> {
        self.engine.lock().await.list()
    }

    pub async fn active(&self) -> usize {
        self.engine.lock().await.active()
    }

    pub async fn summaries(&self, ids: &[FaultId]) -> Vec<Summary> {
        self.engine.lock().await.summaries(ids)
    }

    /// Every fault's counters, read from the kernel.
    pub async fn samples(&self) -> Vec<FaultSample> {
        self.engine.lock().await.samples()
    }

    pub async fn next_deadline(&self) -> Option<Instant> {
        self.engine.lock().await.next_deadline()
    }

    /// Ends the faults whose deadlines have passed, and kills whose rounds are done.
    pub async fn expire(&self) {
        self.engine.lock().await.expire().await;
    }

    /// Moves faults scoped by name to where the names are now. The names are asked without
    /// holding the engine, so the other calls keep answering meanwhile.
    pub async fn follow_names(&self) -> std::result::Result<Vec<Moved>, ChaosError> {
        let Some(names) = &self.names else {
            return Ok(Vec::new());
        };
        if !self.engine.lock().await.follows_names() {
            return Ok(Vec::new());
        }
        let (scopes, peers) = {
            let engine = self.engine.lock().await;
            (engine.follows_scopes(), engine.follows_peers())
        };
        let pods = if scopes {
            names.pods().await?
        } else {
            Vec::new()
        };
        let peers = if peers {
            names.peers().await?
        } else {
            Vec::new()
        };
        Ok(self.engine.lock().await.follow(&pods, &peers))
    }

    /// Whether some fault's scope names workloads, so [`FaultService::follow_names`] has work.
    pub async fn follows_names(&self) -> bool {
        self.names.is_some() && self.engine.lock().await.follows_names()
    }
}

fn plan_all(faults: Vec<Fault>, names: inject::Names) -> std::result::Result<Vec<Plan>, Refused> {
    // The guard rails' view of the node, read once for the whole batch.
    let guard = crate::guard::Guard::default();
    // Each fault moves into its plan, and the plans' room is taken once: a batch of 10,000
    // held its faults twice and its plans in a vector grown by doubling.
    let mut plans = Vec::with_capacity(faults.len());
    for (index, fault) in faults.into_iter().enumerate() {
        let plan = inject::plan(fault, names, &guard).map_err(|error| Refused {
            index: Some(index),
            error,
        })?;
        plans.push(plan);
    }
    Ok(plans)
}

/// Blocking work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ChaosError::io("planning", std::io::Error::other(err)))
}

/// Follow results as lines for a log: where faults moved, or why they could not.
pub fn moves_in_words(moves: std::result::Result<Vec<Moved>, ChaosError>) -> Vec<String> {
    match moves {
        Ok(moves) => moves
            .into_iter()
            .map(|(id, moved)| match moved {
                Ok(change) => format!("fault {id} {change}"),
                Err(err) => format!("fault {id} could not follow its workloads: {err}"),
            })
            .collect(),
        Err(err) => vec![format!("resolving names again: {err}")],
    }
}
