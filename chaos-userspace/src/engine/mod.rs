//! The engine: the kernel objects chaos-bpf has loaded and the faults armed in them, in a process
//! that lives as long as one run (`inject`, `run`) or as long as the node (the agent). It prints
//! nothing and handles no signal: every change (a fault armed, an injection, a fault ended) goes
//! to one [`Sink`], and its owner decides when faults stop. Whatever happens to the owner, the
//! kernel stops each rule at its deadline, and the objects go with the process.
pub mod instance;
pub mod shared;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use chaos_model::{Fault, workloads::PodInfo};
use tokio::{io::unix::AsyncFd, sync::oneshot, task::JoinHandle};

use crate::{
    engine::instance::{Instance, RuleSpec},
    engine::shared::SharedObject,
    error::{ChaosError, Result},
    faults::kill::KillObject,
    inject::{Plan, Realisation},
    kernel::mechanism::Mechanism,
    telemetry::Clock,
    telemetry::metrics::FaultSample,
    wire::{Counters, FaultState, FaultView, Injection, KillRound, Summary},
};

pub use crate::wire::FaultId;

/// Limits an engine enforces for every caller.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// The lifetime of a fault with no duration, and the longest any may have.
    pub max_duration: Duration,
    /// Faults armed at once.
    pub max_faults: usize,
    /// Ended faults kept for `show` and `list`; older ones are forgotten (a run keeps all, for
    /// its summaries; a long-lived agent a bounded number).
    pub history: usize,
}

/// What the engine tells its sink.
#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// A fault is armed: its view, the human line the CLI prints, and its object's programs
    /// as `name (prog id N)`.
    Armed {
        fault: Box<FaultView>,
        line: String,
        programs: Vec<String>,
    },
    /// One injection the kernel reported (sampled by the per-CPU event budget).
    Injection(Injection),
    /// A round of a kill fault: the processes it killed (found, in a dry run).
    KillRound(KillRound),
    /// A fault ended; its summary has the final counts.
    Ended(Summary),
    /// An object's disarm failed; it was detached early (the reason).
    Warning(String),
}

/// Receives every engine event, in order per object. Called from the engine's own tasks, so it
/// must not block for long.
pub trait Sink: Send + Sync + 'static {
    fn send(&self, event: EngineEvent);
}

struct ArmedFault {
    spec: Fault,
    object: usize,
    /// The rule's index in its object (a TC batch's position, a shared object's slot).
    rule: u32,
    armed_at: Instant,
    armed_wall: SystemTime,
    deadline: Instant,
    mechanism: &'static str,
    summary: Summary,
    state: FaultState,
    reason: Option<String>,
}

impl ArmedFault {
    fn live(&self) -> bool {
        matches!(self.state, FaultState::Armed | FaultState::Arming)
    }
}

/// What realises armed faults: a loaded kernel object (a batch of TC faults, or the one object
/// of another mechanism that every fault of it shares), or a kill fault's rounds.
enum Loaded {
    Batch(Instance),
    Shared(SharedObject),
    Kill {
        kill: KillObject,
        fault_id: FaultId,
        lifetime: Duration,
    },
    /// cgroup knobs set for a pressure fault, put back when it ends or the object drops.
    Pressure {
        knobs: crate::faults::pressure::PressureObject,
        fault: crate::faults::pressure::PressureFault,
        fault_id: FaultId,
        lifetime: Duration,
    },
}

/// What the engine records of a rule as it registers it.
struct RuleInfo<'a> {
    fault_id: FaultId,
    name: &'static str,
    cgroups: &'a [crate::scope::CgroupScope],
    workloads: &'a [String],
    interfaces: &'a [crate::net::interface::InterfaceScope],
    lifetime: Duration,
}

impl Loaded {
    /// The mechanism's short name, as views and metrics show it.
    fn mechanism_id(&self) -> &'static str {
        match self {
            Loaded::Batch(instance) => instance.mechanism.id(),
            Loaded::Shared(shared) => shared.mechanism.id(),
            Loaded::Kill { .. } => "cgroup-kill",
            Loaded::Pressure { .. } => "cgroup-knob",
        }
    }

    fn counters(&self, rule: u32) -> Result<Counters> {
        match self {
            Loaded::Batch(instance) => instance.counters(rule as usize),
            Loaded::Shared(shared) => shared.counters(rule),
            Loaded::Kill { kill, .. } => Ok(kill.counters()),
            // Each cgroup whose knob was set (would be, in a dry run).
            Loaded::Pressure { fault, .. } => Ok(Counters {
                matched: fault.cgroups.len() as u64,
                injected: fault.cgroups.len() as u64,
                ..Counters::default()
            }),
        }
    }

    fn kill(&mut self) -> Result<()> {
        match self {
            Loaded::Batch(instance) => instance.kill(),
            Loaded::Shared(shared) => shared.kill(),
            Loaded::Kill { kill, .. } => {
                kill.stop();
                Ok(())
            }
            Loaded::Pressure { knobs, .. } => knobs.restore(),
        }
    }

    /// Moves a rule to other cgroups. A TC batch cannot: it checks one cgroup per rule, fixed
    /// at load.
    fn retarget(&mut self, rule: u32, cgroups: Vec<crate::scope::CgroupScope>) -> Result<()> {
        match self {
            Loaded::Batch(instance) => Err(ChaosError::Unsupported {
                fault: instance
                    .rules
                    .get(rule as usize)
                    .map_or("fault", |r| r.spec.name()),
                mechanism: instance.mechanism.name(),
                reason: "a TC rule's cgroup is fixed while it runs".into(),
            }),
            Loaded::Shared(shared) => shared.retarget(rule, cgroups),
            Loaded::Kill { kill, .. } => {
                kill.retarget(cgroups);
                Ok(())
            }
            Loaded::Pressure { fault, .. } => Err(ChaosError::Unsupported {
                fault: fault.kind.name(),
                mechanism: "cgroup knobs",
                reason: "a pressure fault's knobs are fixed while it runs".into(),
            }),
        }
    }

    /// Stops one rule now; the object and its other rules stay.
    fn disarm(&mut self, rule: u32) -> Result<()> {
        match self {
            Loaded::Batch(instance) => instance.disarm(rule as usize),
            Loaded::Shared(shared) => shared.remove(rule),
            Loaded::Kill { kill, .. } => {
                kill.stop();
                Ok(())
            }
            Loaded::Pressure { knobs, .. } => knobs.restore(),
        }
    }

    /// A kill whose rounds are all done; kernel rules end by their deadline or a stop.
    fn finished(&self) -> bool {
        matches!(self, Loaded::Kill { kill, .. } if kill.finished())
    }

    fn info(&self, rule: u32) -> Option<RuleInfo<'_>> {
        fn of_rule(spec: &RuleSpec) -> RuleInfo<'_> {
            RuleInfo {
                fault_id: spec.fault_id,
                name: spec.spec.name(),
                cgroups: &spec.cgroups,
                workloads: &spec.workloads,
                interfaces: &spec.interfaces,
                lifetime: spec.lifetime,
            }
        }
        match self {
            Loaded::Batch(instance) => instance.rules.get(rule as usize).map(of_rule),
            Loaded::Shared(shared) => shared.rule(rule).map(of_rule),
            Loaded::Kill {
                kill,
                fault_id,
                lifetime,
            } => Some(RuleInfo {
                fault_id: *fault_id,
                name: "kill",
                cgroups: &kill.cgroups,
                workloads: &kill.workloads,
                interfaces: &[],
                lifetime: *lifetime,
            }),
            Loaded::Pressure {
                fault,
                fault_id,
                lifetime,
                ..
            } => Some(RuleInfo {
                fault_id: *fault_id,
                name: fault.kind.name(),
                cgroups: &fault.cgroups,
                workloads: &fault.workloads,
                interfaces: &[],
                lifetime: *lifetime,
            }),
        }
    }

    /// The CLI's human line for an armed rule: built once, as it is armed (`info` serves the
    /// follower every 200 ms, which needs no line).
    fn armed_line(&self, rule: u32, programs: &[(&'static str, u32)]) -> Option<String> {
        match self {
            Loaded::Batch(instance) => instance.rules.get(rule as usize),
            Loaded::Shared(shared) => shared.rule(rule),
            Loaded::Kill {
                kill,
                fault_id,
                lifetime,
            } => {
                return Some(format!(
                    "chaos-bpf: armed kill#{fault_id} {} time(s) on {} for {}",
                    kill.count,
                    kill.cgroups
                        .iter()
                        .map(|c| format!("cgroup {} (id {})", c.path.display(), c.id))
                        .collect::<Vec<_>>()
                        .join(", "),
                    humantime::format_duration(*lifetime)
                ));
            }
            Loaded::Pressure {
                fault,
                fault_id,
                lifetime,
                ..
            } => {
                return Some(format!(
                    "chaos-bpf: armed {}#{fault_id}: {} for {}",
                    fault.kind.name(),
                    fault.describe(),
                    humantime::format_duration(*lifetime)
                ));
            }
        }
        .map(|spec| spec.armed_line(programs))
    }

    /// (name, id) of the programs realising a rule.
    fn programs_of(&self, rule: u32) -> Vec<(&'static str, u32)> {
        match self {
            Loaded::Batch(instance) => instance.programs.clone(),
            Loaded::Shared(shared) => shared.programs_of(rule),
            Loaded::Kill { .. } | Loaded::Pressure { .. } => Vec::new(),
        }
    }
}

/// A loaded object while any of its faults is armed, with the task reading its events.
struct LiveObject {
    loaded: Loaded,
    /// The task reading a kernel object's event ring, and how to stop it (kills have none).
    reader: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Events read so far, per fault id.
    emitted: Arc<Mutex<HashMap<u32, Emitted>>>,
}

/// A fault's events: how many, and per cgroup they came from (per target, for a scope of
/// several pods or containers: a dry run's blast radius, target by target).
#[derive(Clone, Debug, Default)]
struct Emitted {
    total: u64,
    by_cgroup: BTreeMap<u64, u64>,
}

impl LiveObject {
    fn emitted(&self, id: FaultId) -> Emitted {
        self.emitted.lock().map_or_else(
            |_| Emitted::default(),
            |counts| counts.get(&id).cloned().unwrap_or_default(),
        )
    }
}

/// How long after a kill's last round is due the engine waits for it before ending the fault.
const KILL_GRACE: Duration = Duration::from_millis(200);

/// The TC faults of a batch: one object for all of them, with one attach mechanism.
struct TcBatch {
    mechanism: Mechanism,
    rules: Vec<RuleSpec>,
    /// Each rule's fault as asked for, in the same order.
    faults: Vec<Fault>,
}

/// Batches from this many faults return freed memory to the kernel once armed (a trim costs
/// more than a single fault's arm).
const BIG_BATCH: usize = 100;

pub struct Engine {
    config: EngineConfig,
    sink: Arc<dyn Sink>,
    objects: HashMap<usize, LiveObject>,
    next_object: usize,
    /// Boxed: an armed fault is large (its model, its summary), and a B-tree node holds eleven
    /// entries inline, mostly empty slack at 10,000 faults.
    faults: BTreeMap<FaultId, Box<ArmedFault>>,
    next_id: FaultId,
    /// Faults ended since the sink was last told.
    ended: Vec<FaultId>,
}

impl Engine {
    pub fn new(config: EngineConfig, sink: Arc<dyn Sink>) -> Self {
        Self {
            config,
            sink,
            objects: HashMap::new(),
            next_object: 0,
            faults: BTreeMap::new(),
            next_id: 1,
            ended: Vec::new(),
        }
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Faults armed now.
    pub fn active(&self) -> usize {
        self.faults.values().filter(|f| f.live()).count()
    }

    /// Arms planned faults together: each non-TC fault becomes a rule of its mechanism's shared
    /// object (loaded with the first such fault, after that a map write), and the TC faults
    /// among them share one new object (their rules combine per packet). Each fault lives its own
    /// duration, else `batch_duration`, else the maximum, never longer. Nothing of the batch
    /// stays armed if any of it fails. Ids count from 1 in the order given.
    pub fn arm(
        &mut self,
        plans: Vec<Plan>,
        batch_duration: Option<Duration>,
    ) -> Result<Vec<FaultId>> {
        let lifetimes = self.check(&plans, batch_duration)?;
        let first_id = self.next_id;
        let mut tc: Option<TcBatch> = None;
        let mut shared = Vec::new();
        let mut kills = Vec::new();
        let mut pressures = Vec::new();
        let batch = plans.len();
        for (offset, (plan, lifetime)) in plans.into_iter().zip(lifetimes).enumerate() {
            let fault_id = first_id + offset as FaultId;
            let (spec, scopes, choice) = match plan.realisation {
                Realisation::Kill(kill) => {
                    kills.push((fault_id, lifetime, kill, plan.fault));
                    continue;
                }
                Realisation::Pressure(pressure) => {
                    pressures.push((fault_id, lifetime, pressure, plan.fault));
                    continue;
                }
                Realisation::Rule {
                    spec,
                    scopes,
                    choice,
                } => (spec, scopes, choice),
            };
            let chosen = choice.chosen;
            let rule = RuleSpec {
                fault_id,
                lifetime,
                events_per_sec: plan.events_per_sec,
                spec,
                cgroups: scopes.cgroups,
                workloads: scopes.workloads,
                interfaces: scopes.interfaces,
            };
            if !chosen.is_tc() {
                shared.push((chosen, rule, plan.fault));
                continue;
            }
            match &mut tc {
                Some(TcBatch { mechanism, .. }) if *mechanism != chosen => {
                    return Err(ChaosError::input(
                        "mechanism",
                        format!(
                            "TC faults armed together asked for both {} and {}",
                            mechanism.id(),
                            chosen.id()
                        ),
                        "one TC attach mechanism per run (tcx or tc-clsact)",
                    ));
                }
                Some(batch) => {
                    batch.rules.push(rule);
                    batch.faults.push(plan.fault);
                }
                None => {
                    // Room for the rest of the batch at once: 10,000 TC rules grown by
                    // doubling held up to twice their size.
                    let (mut rules, mut faults) = (
                        Vec::with_capacity(batch - offset),
                        Vec::with_capacity(batch - offset),
                    );
                    rules.push(rule);
                    faults.push(plan.fault);
                    tc = Some(TcBatch {
                        mechanism: chosen,
                        rules,
                        faults,
                    });
                }
            }
        }
        // Registered only once all succeeded: on an error the rules armed so far are removed,
        // and objects left without rules are dropped, with every attachment.
        let mut armed: Vec<(usize, u32, Fault)> = Vec::new();
        let result = self
            .arm_pressures(pressures, &mut armed)
            .and_then(|()| self.arm_rules(shared, tc, kills, &mut armed));
        if let Err(err) = result {
            for (object, rule, _) in &armed {
                if let Some(live) = self.objects.get_mut(object) {
                    let _ = live.loaded.disarm(*rule);
                }
            }
            self.drop_unused_objects();
            return Err(err);
        }
        let mut ids = Vec::new();
        for (object, rule, spec) in armed {
            ids.extend(self.register(object, rule, spec));
        }
        ids.sort_unstable();
        self.next_id = first_id + ids.len() as FaultId;
        if ids.len() >= BIG_BATCH {
            // The batch's plans and the object's relocation buffers are freed by now.
            give_back_freed_memory();
        }
        Ok(ids)
    }

    /// Sets the knobs of pressure faults, each an object of its own: dropped, it puts them back.
    fn arm_pressures(
        &mut self,
        pressures: Vec<(
            FaultId,
            Duration,
            crate::faults::pressure::PressureFault,
            Fault,
        )>,
        armed: &mut Vec<(usize, u32, Fault)>,
    ) -> Result<()> {
        for (fault_id, lifetime, fault, spec) in pressures {
            let knobs = crate::faults::pressure::PressureObject::apply(&fault)?;
            let object = self.adopt(Loaded::Pressure {
                knobs,
                fault,
                fault_id,
                lifetime,
            })?;
            armed.push((object, 0, spec));
        }
        Ok(())
    }

    fn arm_rules(
        &mut self,
        shared: Vec<(Mechanism, RuleSpec, Fault)>,
        tc: Option<TcBatch>,
        kills: Vec<(FaultId, Duration, crate::faults::kill::KillFault, Fault)>,
        armed: &mut Vec<(usize, u32, Fault)>,
    ) -> Result<()> {
        for (fault_id, lifetime, kill, spec) in kills {
            // The engine watches for the last round: the fault ends then, or at its lifetime.
            let lifetime = lifetime.min(kill.schedule() + KILL_GRACE);
            let sink = Arc::clone(&self.sink);
            let dry_run = kill.dry_run;
            let kill = KillObject::start(kill, move |round, processes| {
                sink.send(EngineEvent::KillRound(KillRound {
                    fault_id,
                    round,
                    processes,
                    dry_run,
                    time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                }));
            });
            let object = self.adopt(Loaded::Kill {
                kill,
                fault_id,
                lifetime,
            })?;
            armed.push((object, 0, spec));
        }
        for (mechanism, rule, spec) in shared {
            let object = self.shared_object_with_room(mechanism)?;
            let Some(LiveObject {
                loaded: Loaded::Shared(shared),
                ..
            }) = self.objects.get_mut(&object)
            else {
                continue;
            };
            let slot = shared.add(rule)?;
            armed.push((object, slot, spec));
        }
        if let Some(TcBatch {
            mechanism,
            rules,
            faults: specs,
        }) = tc
        {
            let object = self.adopt(Loaded::Batch(Instance::arm(rules, mechanism)?))?;
            armed.extend(
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(index, spec)| (object, index as u32, spec)),
            );
        }
        Ok(())
    }

    /// The loaded object of `mechanism` with a free slot, loaded now if there is none.
    fn shared_object_with_room(&mut self, mechanism: Mechanism) -> Result<usize> {
        let existing = self.objects.iter().find(|(_, live)| {
            matches!(&live.loaded, Loaded::Shared(shared)
                if shared.mechanism == mechanism && shared.has_room())
        });
        if let Some((object, _)) = existing {
            return Ok(*object);
        }
        let capacity =
            self.config
                .max_faults
                .clamp(1, crate::kernel::object::SHARED_CAPACITY as usize) as u32;
        self.adopt(Loaded::Shared(SharedObject::load(mechanism, capacity)?))
    }

    /// Starts the object's event reader (kernel objects have one) and keeps it.
    fn adopt(&mut self, mut loaded: Loaded) -> Result<usize> {
        let ring = match &mut loaded {
            Loaded::Batch(instance) => Some(instance.take_events()?),
            Loaded::Shared(shared) => Some(shared.take_events()?),
            Loaded::Kill { .. } | Loaded::Pressure { .. } => None,
        };
        let object = self.next_object;
        self.next_object += 1;
        let emitted = Arc::new(Mutex::new(HashMap::new()));
        let reader = ring.map(|ring| {
            let (stop_reader, stop) = oneshot::channel();
            let task = tokio::spawn(read_events(
                ring,
                Arc::clone(&self.sink),
                stop,
                Arc::clone(&emitted),
            ));
            (stop_reader, task)
        });
        self.objects.insert(
            object,
            LiveObject {
                loaded,
                reader,
                emitted,
            },
        );
        Ok(object)
    }

    /// Objects with no armed fault left, dropped at once (detaching everything); their readers
    /// drain and stop on their own.
    fn drop_unused_objects(&mut self) {
        for object in self.unused_objects() {
            if let Some((stop_reader, _)) = self.objects.remove(&object).and_then(|l| l.reader) {
                let _ = stop_reader.send(());
            }
        }
    }

    /// Loaded objects none of whose faults is armed any more.
    fn unused_objects(&self) -> Vec<usize> {
        let in_use = |object: usize| self.faults.values().any(|f| f.object == object && f.live());
        self.objects
            .keys()
            .copied()
            .filter(|object| !in_use(*object))
            .collect()
    }

    /// Everything that can refuse a batch before anything is loaded: room for it, each fault's
    /// lifetime, and the TC rules' shared maps. Returns the lifetimes.
    pub fn check(&self, plans: &[Plan], batch: Option<Duration>) -> Result<Vec<Duration>> {
        if self.active() + plans.len() > self.config.max_faults {
            return Err(ChaosError::Capacity {
                limit: self.config.max_faults,
            });
        }
        let lifetimes = self.lifetimes(plans, batch)?;
        crate::faults::tc_packet::check_capacity(plans.iter().filter_map(Plan::tc_fault))?;
        Ok(lifetimes)
    }

    fn lifetimes(&self, plans: &[Plan], batch: Option<Duration>) -> Result<Vec<Duration>> {
        let max = self.config.max_duration;
        let too_long = |field: &'static str, duration: Duration| {
            ChaosError::input(
                field,
                format!(
                    "{} is longer than --max-duration {}",
                    humantime::format_duration(duration),
                    humantime::format_duration(max)
                ),
                "a duration up to --max-duration (raise it with --max-duration D)",
            )
        };
        if let Some(batch) = batch.filter(|d| *d > max) {
            return Err(too_long("--duration", batch));
        }
        plans
            .iter()
            .map(|plan| match plan.duration {
                Some(own) if own > max => Err(too_long("duration", own)),
                own => Ok([own, batch].into_iter().flatten().min().unwrap_or(max)),
            })
            .collect()
    }

    /// Takes an armed rule in as a fault and tells the sink.
    fn register(&mut self, object: usize, rule: u32, spec: Fault) -> Option<FaultId> {
        let live = self.objects.get(&object)?;
        let loaded = &live.loaded;
        let info = loaded.info(rule)?;
        let programs = loaded.programs_of(rule);
        let program_ids: Vec<u32> = programs.iter().map(|(_, id)| *id).collect();
        let id = info.fault_id;
        let mut summary = Summary::armed(info.name, id, program_ids);
        summary.set_cgroups(info.cgroups);
        summary.workloads = info.workloads.to_vec();
        summary.interface = (!info.interfaces.is_empty()).then(|| {
            let names: Vec<&str> = info.interfaces.iter().map(|i| i.name.as_str()).collect();
            names.join(",")
        });
        let armed_at = Instant::now();
        let fault = ArmedFault {
            spec,
            object,
            rule,
            armed_at,
            armed_wall: SystemTime::now(),
            deadline: armed_at + info.lifetime,
            mechanism: loaded.mechanism_id(),
            summary,
            state: FaultState::Armed,
            reason: None,
        };
        let line = loaded.armed_line(rule, &programs).unwrap_or_default();
        let view = self.describe(id, &fault, Counters::default());
        self.faults.insert(id, Box::new(fault));
        self.sink.send(EngineEvent::Armed {
            fault: Box::new(view),
            line,
            programs: crate::telemetry::program_names(&programs),
        });
        Some(id)
    }

    /// Brings faults whose scope names workloads (a pod name, a selector, a container name) to
    /// the cgroups those names have now: a container that restarted has a new id and a new
    /// cgroup, which the rule takes in place of the old one. (A pod's own cgroup never changes,
    /// so a scope of whole pods covers restarts by construction.) Faults with a peer selector
    /// take the addresses its pods have now. Returns what changed, by fault id, in words.
    pub fn follow(
        &mut self,
        pods: &[PodInfo],
        peers: &[PodInfo],
    ) -> Vec<(FaultId, Result<String>)> {
        let named: Vec<(FaultId, Fault, usize, u32)> = self
            .faults
            .iter()
            .filter(|(_, f)| f.live() && f.spec.needs_names())
            .map(|(id, f)| (*id, f.spec.clone(), f.object, f.rule))
            .collect();
        let mut moved = Vec::new();
        for (id, spec, object, rule) in named {
            if spec.scope.needs_names()
                && let Some(change) = self.follow_scope(id, &spec, object, rule, pods)
            {
                moved.push((id, change));
            }
            if !spec.matches.peer_selector.is_empty()
                && let Some(change) = self.follow_peers(&spec, object, rule, peers)
            {
                moved.push((id, change));
            }
        }
        moved
    }

    /// A fault's workloads' cgroups as they are now, where they changed.
    fn follow_scope(
        &mut self,
        id: FaultId,
        spec: &Fault,
        object: usize,
        rule: u32,
        pods: &[PodInfo],
    ) -> Option<Result<String>> {
        // A name that resolves to nothing now (the container is between two lives) keeps the
        // rule where it is until it resolves again.
        let (cgroups, workloads) =
            crate::workload::resolve::cgroups_of(&spec.scope, Some(pods)).ok()?;
        let live = self.objects.get_mut(&object)?;
        let current: Vec<u64> = live
            .loaded
            .info(rule)
            .map(|r| r.cgroups.iter().map(|c| c.id).collect())
            .unwrap_or_default();
        if current == cgroups.iter().map(|c| c.id).collect::<Vec<_>>() {
            return None;
        }
        let fault = self.faults.get_mut(&id)?;
        // The new cgroups pass the same guard rails as the first ones did; the summary says
        // where the rule is only once it is there.
        Some(
            crate::guard::check(spec, &cgroups, &workloads).and_then(|()| {
                let mut next = fault.summary.clone();
                next.set_cgroups(&cgroups);
                next.workloads = workloads.clone();
                live.loaded.retarget(rule, cgroups)?;
                fault.summary = next;
                Ok(format!("now on {}", workloads.join(", ")))
            }),
        )
    }

    /// A fault's peers by selector as its pods are now, where they changed.
    fn follow_peers(
        &mut self,
        spec: &Fault,
        object: usize,
        rule: u32,
        pods: &[PodInfo],
    ) -> Option<Result<String>> {
        let addresses = chaos_model::workloads::peer_addresses(&spec.matches, pods);
        let peers = spec.matches.selected_peers(&addresses);
        let Loaded::Shared(shared) = &mut self.objects.get_mut(&object)?.loaded else {
            return None;
        };
        if shared.rule(rule)?.spec.filters().peers == peers {
            return None;
        }
        let words: Vec<String> = peers.iter().map(ToString::to_string).collect();
        Some(
            shared
                .set_peers(rule, peers)
                .map(|()| format!("peers now {}", or_none(&words))),
        )
    }

    /// Whether any armed fault's scope or peers name workloads ([`Engine::follow`] has work).
    pub fn follows_names(&self) -> bool {
        self.follows_scopes() || self.follows_peers()
    }

    /// Whether any armed fault's scope names workloads.
    pub fn follows_scopes(&self) -> bool {
        self.faults
            .values()
            .any(|f| f.live() && f.spec.scope.needs_names())
    }

    /// Whether any armed fault has peers by label.
    pub fn follows_peers(&self) -> bool {
        self.faults
            .values()
            .any(|f| f.live() && !f.spec.matches.peer_selector.is_empty())
    }

    /// The earliest deadline of an armed fault.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.faults
            .values()
            .filter(|f| f.live())
            .map(|f| f.deadline)
            .min()
    }

    /// Ends every armed fault whose deadline has passed (the kernel already stopped injecting),
    /// and every kill whose rounds are all done.
    pub async fn expire(&mut self) {
        for (id, by) in self.due(Instant::now()) {
            self.end(id, by);
        }
        self.finish_objects().await;
    }

    /// Live faults that end now: kills whose rounds are done, rules past their deadline.
    fn due(&self, now: Instant) -> Vec<(FaultId, &'static str)> {
        let done = |f: &ArmedFault| {
            self.objects
                .get(&f.object)
                .is_some_and(|live| live.loaded.finished())
        };
        self.faults
            .iter()
            .filter(|(_, f)| f.live())
            .filter_map(|(id, f)| match (done(f), f.deadline <= now) {
                (true, _) => Some((*id, "count")),
                (false, true) => Some((*id, "duration")),
                (false, false) => None,
            })
            .collect()
    }

    /// Stops one fault now.
    pub async fn stop(&mut self, id: FaultId, by: &'static str) -> Result<FaultView> {
        if !self.faults.contains_key(&id) {
            return Err(ChaosError::NotFound(id));
        }
        self.end(id, by);
        self.finish_objects().await;
        self.view(id).ok_or(ChaosError::NotFound(id))
    }

    /// Stops every fault: each object's kill switch first (one map write stops all its rules
    /// at once), then each fault's final counts are read, and the objects are detached. An
    /// object whose kill switch is on needs no rule-by-rule disarm: all of its faults end and it
    /// goes, so stopping 1,000 faults costs their counter reads and one detach per object.
    pub async fn stop_all(&mut self, by: &'static str) -> usize {
        let killed: Vec<usize> = self
            .objects
            .iter_mut()
            // If it fails, that object's rules are disarmed one by one below.
            .filter_map(|(object, live)| live.loaded.kill().is_ok().then_some(*object))
            .collect();
        let live: Vec<FaultId> = self
            .faults
            .iter()
            .filter(|(_, f)| f.live())
            .map(|(id, _)| *id)
            .collect();
        for id in &live {
            let switched_off = self
                .faults
                .get(id)
                .is_some_and(|f| killed.contains(&f.object));
            self.end_fault(*id, by, !switched_off);
        }
        self.finish_objects().await;
        live.len()
    }

    /// Disarms one fault's rule, records its final counts and marks it ended. If the disarm
    /// fails, its whole object is detached (the one sure way to stop the rule), and its other
    /// faults fail with it.
    fn end(&mut self, id: FaultId, by: &'static str) {
        self.end_fault(id, by, true);
    }

    /// [`Engine::end`], with the disarm left out where the object's kill switch already stopped
    /// every rule and the object goes with its last fault.
    fn end_fault(&mut self, id: FaultId, by: &'static str, disarm: bool) {
        let Some(fault) = self.faults.get_mut(&id).filter(|f| f.live()) else {
            return;
        };
        fault.state = FaultState::Stopping;
        fault.summary.ended_by = by.to_string();
        fault.summary.duration_ms = fault.armed_at.elapsed().as_millis() as u64;
        let (object, rule) = (fault.object, fault.rule);
        let Some(live) = self.objects.get_mut(&object) else {
            fault.state = FaultState::Ended;
            self.ended.push(id);
            return;
        };
        let disarmed = if disarm {
            live.loaded.disarm(rule)
        } else {
            Ok(())
        };
        // Final: the programs skip a disarmed rule from their next run on.
        let counted = live.loaded.counters(rule);
        let emitted = live.emitted(id);
        match disarmed {
            Ok(()) => {
                match counted {
                    Ok(counts) => fault.summary.record(&counts),
                    // The summary keeps what was read last.
                    Err(err) => self.sink.send(EngineEvent::Warning(format!(
                        "{}#{id}: reading the final counters: {err}",
                        fault.summary.fault
                    ))),
                }
                fault.summary.events_emitted = emitted.total;
                fault.summary.events_by_cgroup = emitted.by_cgroup;
                fault.state = FaultState::Ended;
                self.ended.push(id);
            }
            Err(err) => {
                let reason = format!("disarming failed ({err}); its programs were detached");
                self.sink.send(EngineEvent::Warning(format!(
                    "{}#{id}: {reason}",
                    fault.summary.fault
                )));
                for (other, fault) in self.faults.iter_mut().filter(|(_, f)| f.object == object) {
                    if fault.live() || fault.state == FaultState::Stopping {
                        fault.state = FaultState::Failed;
                        fault.summary.ended_by = "error".into();
                        fault.summary.duration_ms = fault.armed_at.elapsed().as_millis() as u64;
                        fault.reason = Some(reason.clone());
                        self.ended.push(*other);
                    }
                }
            }
        }
    }

    /// Detaches the objects none of whose faults is armed any more, and tells the sink about
    /// each fault that ended, with its final counts.
    async fn finish_objects(&mut self) {
        let unused = self.unused_objects();
        let unloaded = !unused.is_empty();
        for object in unused {
            let Some(live) = self.objects.remove(&object) else {
                continue;
            };
            drop(live.loaded);
            if let Some((stop_reader, reader)) = live.reader {
                let _ = stop_reader.send(());
                let _ = reader.await;
            }
            // The reader drained the ring: the event counts of its faults are final now.
            if let Ok(emitted) = live.emitted.lock() {
                for (id, fault) in self.faults.iter_mut().filter(|(_, f)| f.object == object) {
                    let counts = emitted.get(id).cloned().unwrap_or_default();
                    fault.summary.events_emitted = counts.total;
                    fault.summary.events_by_cgroup = counts.by_cgroup;
                }
            }
        }
        if unloaded {
            give_back_freed_memory();
        }
        let mut ended = std::mem::take(&mut self.ended);
        ended.sort_unstable();
        ended.dedup();
        for id in ended {
            if let Some(fault) = self.faults.get(&id) {
                self.sink.send(EngineEvent::Ended(fault.summary.clone()));
            }
        }
        self.forget_old();
    }

    /// Keeps at most `history` ended faults.
    fn forget_old(&mut self) {
        let ended: Vec<FaultId> = self
            .faults
            .iter()
            .filter(|(_, f)| !f.live())
            .map(|(id, _)| *id)
            .collect();
        for id in ended
            .iter()
            .take(ended.len().saturating_sub(self.config.history))
        {
            self.faults.remove(id);
        }
    }

    /// A fault's counters now: live from the kernel while it is armed, else its final ones (a
    /// shared object's slot may already hold another fault).
    fn counters(&self, fault: &ArmedFault) -> Counters {
        let live = fault
            .live()
            .then(|| self.objects.get(&fault.object))
            .flatten()
            .and_then(|live| live.loaded.counters(fault.rule).ok());
        live.unwrap_or(Counters {
            matched: fault.summary.matched,
            injected: fault.summary.injected,
            events_sampled_out: fault.summary.events_sampled_out,
            events_lost: fault.summary.events_lost,
        })
    }

    pub fn view(&self, id: FaultId) -> Option<FaultView> {
        let fault = self.faults.get(&id)?;
        Some(self.describe(id, fault, self.counters(fault)))
    }

    fn describe(&self, id: FaultId, fault: &ArmedFault, counters: Counters) -> FaultView {
        let summary = &fault.summary;
        let expires = fault.armed_wall + (fault.deadline - fault.armed_at);
        FaultView {
            id,
            state: fault.state,
            kind: summary.fault.clone(),
            mechanism: fault.mechanism.to_string(),
            program_ids: summary.program_ids.clone(),
            cgroup: summary.cgroup.clone(),
            cgroup_id: summary.cgroup_id,
            interface: summary.interface.clone(),
            armed_at: humantime::format_rfc3339_millis(fault.armed_wall).to_string(),
            expires_at: humantime::format_rfc3339_millis(expires).to_string(),
            counters,
            events_by_cgroup: match self.objects.get(&fault.object) {
                Some(live) if fault.live() => live.emitted(id).by_cgroup,
                _ => summary.events_by_cgroup.clone(),
            },
            ended_by: (!fault.live()).then(|| summary.ended_by.clone()),
            reason: fault.reason.clone(),
            spec: fault.spec.clone(),
        }
    }

    /// Every fault the engine knows, armed and recently ended, by id.
    pub fn list(&self) -> Vec<FaultView> {
        self.faults
            .iter()
            .map(|(id, fault)| self.describe(*id, fault, self.counters(fault)))
            .collect()
    }

    /// Final summaries of the given faults (for the CLI's last lines).
    pub fn summaries(&self, ids: &[FaultId]) -> Vec<Summary> {
        ids.iter()
            .filter_map(|id| self.faults.get(id).map(|f| f.summary.clone()))
            .collect()
    }

    /// Every known fault with its counters, read from the kernel once: what the metrics and the
    /// status lines both show.
    pub fn samples(&self) -> Vec<FaultSample> {
        self.faults
            .iter()
            .map(|(id, fault)| FaultSample {
                fault_id: *id,
                fault: fault.summary.fault.clone(),
                mechanism: fault.mechanism,
                scope: fault
                    .summary
                    .cgroup
                    .clone()
                    .or_else(|| fault.summary.interface.clone())
                    .unwrap_or_default(),
                armed: fault.live(),
                age: fault.armed_at.elapsed(),
                counters: self.counters(fault),
            })
            .collect()
    }
}

/// Loading an object allocates tens of megabytes (its ELF, relocations against the kernel's
/// BTF) and frees them; glibc keeps freed memory in its arenas, so a long-lived agent that loads
/// and unloads objects as faults come and go would grow. Returned to the kernel after each
/// unload, RSS stays flat.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One glibc arena for the process. By default each thread that meets contention gets an arena
/// of its own, and memory freed in one is not reused by another: a run planning 10,000 faults
/// on a blocking thread and arming them on a worker held 29 MiB more (90.8 against 62.0 MiB).
/// chaos-bpf allocates little once armed, so one arena costs nothing measurable.
pub fn use_one_allocator_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands the object's events to the sink until told to stop, then drains the ring, counting
/// them per fault.
async fn read_events(
    ring: RingBuf<MapData>,
    sink: Arc<dyn Sink>,
    mut stop: oneshot::Receiver<()>,
    emitted: Arc<Mutex<HashMap<u32, Emitted>>>,
) {
    let clock = Clock::now();
    // SAFETY: the ring owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    let Ok(mut ring) =
        (unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) })
    else {
        return;
    };
    loop {
        let stopping = tokio::select! {
            _ = &mut stop => true,
            guard = ring.readable_mut() => match guard {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut(), sink.as_ref(), &clock, &emitted);
                    guard.clear_ready();
                    false
                }
                Err(_) => true,
            },
        };
        if stopping {
            drain(ring.get_mut(), sink.as_ref(), &clock, &emitted);
            return;
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    sink: &dyn Sink,
    clock: &Clock,
    emitted: &Mutex<HashMap<u32, Emitted>>,
) {
    while let Some(item) = ring.next() {
        if let Some(record) = Injection::from_bytes(&item, clock) {
            if let Ok(mut counts) = emitted.lock() {
                let fault = counts.entry(record.fault_id).or_default();
                fault.total += 1;
                if record.cgroup_id != 0 {
                    *fault.by_cgroup.entry(record.cgroup_id).or_default() += 1;
                }
            }
            sink.send(EngineEvent::Injection(record));
        }
    }
}

/// A list in words, or "none".
fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
