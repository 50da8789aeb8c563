//! The engine: the kernel objects chaos-bpf has loaded and the faults armed in them, in a process
//! that lives as long as one run (`inject`, `run`) or as long as the node (the agent). It prints
//! nothing and handles no signal: every change (a fault armed, an injection, a fault ended) goes
//! to one [`Sink`], and its owner decides when faults stop. Whatever happens to the owner, the
//! kernel stops each rule at its deadline, and the objects go with the process.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use chaos_model::Fault;
use serde::Serialize;
use tokio::{io::unix::AsyncFd, sync::oneshot, task::JoinHandle};

use crate::{
    error::{ChaosError, Result},
    inject::{Plan, check_tc_capacity},
    instance::{Instance, RuleSpec},
    mechanism::Mechanism,
    metrics::FaultSample,
    telemetry::{Clock, Counters, EventRecord, Summary},
};

pub type FaultId = u32;

/// Where a fault is in its life. Arming and stopping are transient: the engine does both before
/// it answers, so they are seen only by a sink while they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    Arming,
    Armed,
    Stopping,
    Ended,
    /// Its object could not be disarmed and was detached early.
    Failed,
}

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

/// A fault as the engine reports it: the JSON `armed` record, the API's fault resource.
#[derive(Clone, Debug, Serialize)]
pub struct FaultView {
    pub id: FaultId,
    pub state: FaultState,
    pub kind: &'static str,
    pub mechanism: &'static str,
    /// Kernel ids of the programs realising it: listed by `bpftool prog show` while it runs.
    pub program_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// RFC 3339.
    pub armed_at: String,
    /// When the kernel stops it at the latest (RFC 3339).
    pub expires_at: String,
    pub counters: Counters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub spec: Fault,
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
    Injection(EventRecord),
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
    rule: usize,
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

/// A loaded object while any of its faults is armed, with the task reading its events.
struct LiveObject {
    instance: Instance,
    stop_reader: oneshot::Sender<()>,
    reader: JoinHandle<HashMap<u32, u64>>,
}

pub struct Engine {
    config: EngineConfig,
    sink: Arc<dyn Sink>,
    objects: HashMap<usize, LiveObject>,
    next_object: usize,
    faults: BTreeMap<FaultId, ArmedFault>,
    next_id: FaultId,
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
        }
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Faults armed now.
    pub fn active(&self) -> usize {
        self.faults.values().filter(|f| f.live()).count()
    }

    /// Arms planned faults together: the TC faults among them share one object (their rules
    /// combine per packet), every other fault has its own. Each fault lives its own duration,
    /// else `batch_duration`, else the maximum, never longer. Nothing stays attached if any of
    /// them fails. Ids count from 1 in the order given.
    pub fn arm(
        &mut self,
        plans: Vec<Plan>,
        batch_duration: Option<Duration>,
    ) -> Result<Vec<FaultId>> {
        let lifetimes = self.check(&plans, batch_duration)?;
        let first_id = self.next_id;
        let mut tc: Option<(Mechanism, Vec<(RuleSpec, Fault)>)> = None;
        let mut singles = Vec::new();
        for (offset, (plan, lifetime)) in plans.into_iter().zip(lifetimes).enumerate() {
            let chosen = plan.choice.chosen;
            let rule = RuleSpec {
                fault_id: first_id + offset as FaultId,
                lifetime,
                events_per_sec: plan.events_per_sec,
                spec: plan.spec,
                cgroup: plan.scopes.cgroup,
                interfaces: plan.scopes.interfaces,
            };
            if !chosen.is_tc() {
                singles.push((chosen, vec![(rule, plan.fault)]));
                continue;
            }
            match &mut tc {
                Some((mechanism, _)) if *mechanism != chosen => {
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
                Some((_, rules)) => rules.push((rule, plan.fault)),
                None => tc = Some((chosen, vec![(rule, plan.fault)])),
            }
        }
        // Armed here, registered only once all succeeded: on an error the instances armed so far
        // are dropped, and with them every attachment.
        let mut armed = Vec::new();
        for (mechanism, rules) in singles.into_iter().chain(tc) {
            let (rules, specs): (Vec<RuleSpec>, Vec<Fault>) = rules.into_iter().unzip();
            armed.push((Instance::arm(rules, mechanism)?, specs));
        }
        let mut ids = Vec::new();
        for (instance, specs) in armed {
            ids.extend(self.register(instance, specs)?);
        }
        ids.sort_unstable();
        self.next_id = first_id + ids.len() as FaultId;
        Ok(ids)
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
        check_tc_capacity(
            plans
                .iter()
                .filter(|plan| plan.choice.chosen.is_tc())
                .map(|plan| &plan.spec),
        )?;
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

    /// Starts the object's event reader and takes its faults in.
    fn register(&mut self, mut instance: Instance, specs: Vec<Fault>) -> Result<Vec<FaultId>> {
        let object = self.next_object;
        self.next_object += 1;
        let ring = instance.take_events()?;
        let (stop_reader, stop) = oneshot::channel();
        let reader = tokio::spawn(read_events(ring, Arc::clone(&self.sink), stop));
        let program_ids: Vec<u32> = instance.programs.iter().map(|(_, id)| *id).collect();
        let armed_at = Instant::now();
        let armed_wall = SystemTime::now();
        let mut ids = Vec::new();
        for (index, (rule, spec)) in instance.rules.iter().zip(specs).enumerate() {
            let mut summary = Summary::armed(rule.spec.name(), rule.fault_id, program_ids.clone());
            summary.cgroup = rule.cgroup.as_ref().map(|c| c.path.display().to_string());
            summary.cgroup_id = rule.cgroup.as_ref().map(|c| c.id);
            summary.interface = (!rule.interfaces.is_empty()).then(|| {
                let names: Vec<&str> = rule.interfaces.iter().map(|i| i.name.as_str()).collect();
                names.join(",")
            });
            let line = crate::inject::armed_line(rule, &instance);
            let programs = crate::inject::program_names(&instance);
            self.faults.insert(
                rule.fault_id,
                ArmedFault {
                    spec,
                    object,
                    rule: index,
                    armed_at,
                    armed_wall,
                    deadline: armed_at + rule.lifetime,
                    mechanism: instance.mechanism.id(),
                    summary,
                    state: FaultState::Armed,
                    reason: None,
                },
            );
            ids.push(rule.fault_id);
            if let Some(fault) = self.view_of(rule.fault_id, &instance) {
                self.sink.send(EngineEvent::Armed {
                    fault: Box::new(fault),
                    line,
                    programs,
                });
            }
        }
        self.objects.insert(
            object,
            LiveObject {
                instance,
                stop_reader,
                reader,
            },
        );
        Ok(ids)
    }

    /// The earliest deadline of an armed fault.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.faults
            .values()
            .filter(|f| f.live())
            .map(|f| f.deadline)
            .min()
    }

    /// Ends every armed fault whose deadline has passed (the kernel already stopped injecting).
    pub async fn expire(&mut self) {
        let now = Instant::now();
        let due: Vec<FaultId> = self
            .faults
            .iter()
            .filter(|(_, f)| f.live() && f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.end(id, "duration");
        }
        self.finish_objects().await;
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
    /// at once), then each rule, then the objects are detached.
    pub async fn stop_all(&mut self, by: &'static str) -> usize {
        for object in self.objects.values_mut() {
            // If it fails, the per-rule disarm below still runs.
            let _ = object.instance.kill();
        }
        let live: Vec<FaultId> = self
            .faults
            .iter()
            .filter(|(_, f)| f.live())
            .map(|(id, _)| *id)
            .collect();
        for id in &live {
            self.end(*id, by);
        }
        self.finish_objects().await;
        live.len()
    }

    /// Disarms one fault's rule and marks it ended. If the disarm fails, its whole object is
    /// detached (the one sure way to stop the rule), and its other faults fail with it.
    fn end(&mut self, id: FaultId, by: &'static str) {
        let Some(fault) = self.faults.get_mut(&id).filter(|f| f.live()) else {
            return;
        };
        fault.state = FaultState::Stopping;
        fault.summary.ended_by = by;
        fault.summary.duration_ms = fault.armed_at.elapsed().as_millis() as u64;
        let (object, rule) = (fault.object, fault.rule);
        let disarmed = match self.objects.get_mut(&object) {
            Some(live) => live.instance.disarm(rule),
            None => Ok(()),
        };
        match disarmed {
            Ok(()) => {
                if let Some(fault) = self.faults.get_mut(&id) {
                    fault.state = FaultState::Ended;
                }
            }
            Err(err) => {
                let reason = format!("disarming failed ({err}); its programs were detached");
                self.sink.send(EngineEvent::Warning(format!(
                    "{}#{id}: {reason}",
                    self.faults.get(&id).map_or("fault", |f| f.summary.fault)
                )));
                for fault in self.faults.values_mut().filter(|f| f.object == object) {
                    if fault.live() || fault.state == FaultState::Stopping {
                        fault.state = FaultState::Failed;
                        fault.summary.ended_by = "error";
                        fault.summary.duration_ms = fault.armed_at.elapsed().as_millis() as u64;
                        fault.reason = Some(reason.clone());
                    }
                }
            }
        }
    }

    /// Detaches the objects none of whose faults is armed any more, records the final counts
    /// and tells the sink each of their faults ended.
    async fn finish_objects(&mut self) {
        let finished: Vec<usize> = self
            .objects
            .keys()
            .copied()
            .filter(|object| {
                !self
                    .faults
                    .values()
                    .any(|f| f.object == *object && f.live())
            })
            .collect();
        for object in finished {
            let Some(live) = self.objects.remove(&object) else {
                continue;
            };
            let counters = live.instance.stop();
            let _ = live.stop_reader.send(());
            let emitted = live.reader.await.unwrap_or_default();
            let mut ended = Vec::new();
            for (id, fault) in self.faults.iter_mut().filter(|(_, f)| f.object == object) {
                match counters.get(fault.rule) {
                    Some(Ok(final_counts)) => fault.summary.record(final_counts),
                    // The summary keeps what was read last; the other faults are unaffected.
                    Some(Err(err)) => self.sink.send(EngineEvent::Warning(format!(
                        "{}#{id}: reading the final counters: {err}",
                        fault.summary.fault
                    ))),
                    None => {}
                }
                fault.summary.events_emitted = emitted.get(id).copied().unwrap_or(0);
                ended.push(fault.summary.clone());
            }
            for summary in ended {
                self.sink.send(EngineEvent::Ended(summary));
            }
        }
        self.forget_old();
    }

    /// Keeps at most `history` ended faults.
    fn forget_old(&mut self) {
        let ended: Vec<FaultId> = self
            .faults
            .iter()
            .filter(|(_, f)| !f.live() && !self.objects.contains_key(&f.object))
            .map(|(id, _)| *id)
            .collect();
        for id in ended
            .iter()
            .take(ended.len().saturating_sub(self.config.history))
        {
            self.faults.remove(id);
        }
    }

    /// A fault's counters now: live from the kernel while its object is loaded, else final.
    fn counters(&self, fault: &ArmedFault) -> Counters {
        self.objects
            .get(&fault.object)
            .and_then(|live| live.instance.counters(fault.rule).ok())
            .unwrap_or(Counters {
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

    fn view_of(&self, id: FaultId, instance: &Instance) -> Option<FaultView> {
        let fault = self.faults.get(&id)?;
        let counters = instance.counters(fault.rule).unwrap_or_default();
        Some(self.describe(id, fault, counters))
    }

    fn describe(&self, id: FaultId, fault: &ArmedFault, counters: Counters) -> FaultView {
        let summary = &fault.summary;
        let expires = fault.armed_wall + (fault.deadline - fault.armed_at);
        FaultView {
            id,
            state: fault.state,
            kind: summary.fault,
            mechanism: fault.mechanism,
            program_ids: summary.program_ids.clone(),
            cgroup: summary.cgroup.clone(),
            cgroup_id: summary.cgroup_id,
            interface: summary.interface.clone(),
            armed_at: humantime::format_rfc3339_millis(fault.armed_wall).to_string(),
            expires_at: humantime::format_rfc3339_millis(expires).to_string(),
            counters,
            ended_by: (!fault.live()).then_some(summary.ended_by),
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
                fault: fault.summary.fault,
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

/// Hands the object's events to the sink until told to stop, then drains the ring. Returns how
/// many it read per fault.
async fn read_events(
    ring: RingBuf<MapData>,
    sink: Arc<dyn Sink>,
    mut stop: oneshot::Receiver<()>,
) -> HashMap<u32, u64> {
    let clock = Clock::now();
    let mut emitted = HashMap::new();
    // SAFETY: the ring owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    let Ok(mut ring) =
        (unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) })
    else {
        return emitted;
    };
    loop {
        let stopping = tokio::select! {
            _ = &mut stop => true,
            guard = ring.readable_mut() => match guard {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut(), sink.as_ref(), &clock, &mut emitted);
                    guard.clear_ready();
                    false
                }
                Err(_) => true,
            },
        };
        if stopping {
            drain(ring.get_mut(), sink.as_ref(), &clock, &mut emitted);
            return emitted;
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    sink: &dyn Sink,
    clock: &Clock,
    emitted: &mut HashMap<u32, u64>,
) {
    while let Some(item) = ring.next() {
        if let Some(record) = EventRecord::from_bytes(&item, clock) {
            *emitted.entry(record.fault_id).or_default() += 1;
            sink.send(EngineEvent::Injection(record));
        }
    }
}
