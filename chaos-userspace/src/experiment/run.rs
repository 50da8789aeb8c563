//! The experiment's clock: probes, phases, faults on schedule, abort, verdict.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chaos_model::{
    Fault, HumanDuration,
    experiment::{Experiment, Metric, RollbackWhen},
};
use serde::Serialize;

use super::probes::{Check, check, seconds};
use crate::{
    engine::FaultId,
    error::{ChaosError, Result},
    inject::Plan,
    service::{FaultService, Refused},
    wire::Counters,
};

/// Arms and stops the experiment's faults: this process's fault service, or a node agent.
pub trait Injector {
    /// Whether the faults can be armed here, checked together before the experiment starts
    /// (scopes exist, the guard rails pass, the kernel has the mechanisms); nothing is armed.
    fn check(&mut self, _faults: &[Fault]) -> impl Future<Output = Result<(), Refused>> {
        async { Ok(()) }
    }
    /// Arms the experiment's fault number `index` for at most `lifetime` (the kernel's
    /// deadline); its id.
    fn arm(
        &mut self,
        index: usize,
        fault: Fault,
        lifetime: Duration,
    ) -> impl Future<Output = Result<FaultId>>;
    /// Stops it; its final counters.
    fn stop(&mut self, id: FaultId) -> impl Future<Output = Result<Counters>>;
    fn counters(&mut self, id: FaultId) -> impl Future<Output = Option<Counters>>;
    /// Every fault at once (the kill switch first).
    fn stop_all(&mut self) -> impl Future<Output = ()>;
}

/// The faults in this process's fault service, kills among them. Each is planned once, when
/// the experiment is checked; a scope by name follows its workloads once armed.
pub struct ServiceInjector {
    service: FaultService,
    plans: Vec<Option<Plan>>,
}

impl ServiceInjector {
    pub fn new(service: FaultService) -> Self {
        Self {
            service,
            plans: Vec::new(),
        }
    }
}

impl Injector for ServiceInjector {
    async fn check(&mut self, faults: &[Fault]) -> Result<(), Refused> {
        let plans = self.service.plan(faults.to_vec()).await?;
        self.service
            .check(&plans, None)
            .await
            .map_err(|error| Refused { index: None, error })?;
        self.plans = plans.into_iter().map(Some).collect();
        Ok(())
    }

    async fn arm(&mut self, index: usize, fault: Fault, lifetime: Duration) -> Result<FaultId> {
        let mut plan = match self.plans.get_mut(index).and_then(Option::take) {
            Some(plan) => plan,
            // Not checked first (a caller that skipped it): planned now.
            None => {
                let mut planned = self.service.plan(vec![fault]).await.map_err(|r| r.error)?;
                planned.pop().ok_or(ChaosError::NotFound(0))?
            }
        };
        plan.fault.duration = Some(HumanDuration(lifetime));
        plan.duration = Some(lifetime);
        let ids = self.service.arm(vec![plan], None).await?;
        // Planned when the experiment began: a container that restarted since is found now.
        if let Ok(moves) = self.service.follow_names().await {
            for (id, moved) in moves {
                if let Err(err) = moved {
                    eprintln!("chaos-bpf: fault {id} could not follow its workloads: {err}");
                }
            }
        }
        ids.first().copied().ok_or(ChaosError::NotFound(0))
    }

    async fn stop(&mut self, id: FaultId) -> Result<Counters> {
        Ok(self.service.stop(id, "experiment").await?.counters)
    }

    async fn counters(&mut self, id: FaultId) -> Option<Counters> {
        self.service.view(id).await.map(|view| view.counters)
    }

    async fn stop_all(&mut self) {
        self.service.stop_all("experiment").await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Warmup,
    Injection,
    Cooldown,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Warmup, Phase::Injection, Phase::Cooldown];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Injection => "injection",
            Phase::Cooldown => "cooldown",
        }
    }
}

/// One check of one probe, when and in which phase it started.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub probe: String,
    pub at_s: f64,
    pub phase: Phase,
    #[serde(flatten)]
    pub check: Check,
}

/// A fault of the experiment as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultWindow {
    pub index: usize,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<FaultId>,
    pub start_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    pub matched: u64,
    /// In a dry run: what it would have injected.
    pub injected: u64,
    /// Shadow mode: counted, nothing injected.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FaultWindow {
    /// How every view names it: `connect-error#3`, by the id the engine or agent gave it (the
    /// id `list`, `show` and the events use), or by its place in the file while it has none.
    pub fn name(&self) -> String {
        match self.id {
            Some(id) => format!("{}#{id}", self.kind),
            None => format!("{} faults[{}]", self.kind, self.index),
        }
    }

    /// "injected", or "would inject" in a dry run.
    pub fn verb(&self) -> &'static str {
        if self.dry_run {
            "would inject"
        } else {
            "injected"
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every condition held: exit 0.
    Held,
    /// Some condition did not: exit 1.
    NotHeld,
    /// The steady state did not hold in warm-up; nothing was injected: exit 3.
    SteadyStateFailed,
    /// A probe broke an abort rule and every fault was reverted: exit 3.
    Aborted { reason: String },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Held => 0,
            Outcome::NotHeld => 1,
            Outcome::SteadyStateFailed | Outcome::Aborted { .. } => 3,
        }
    }
}

/// A probe's checks over one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub checks: usize,
    pub failures: usize,
    pub error_ratio: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub max_latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
}

impl Stats {
    fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Stats {
        let samples: Vec<&Sample> = samples.collect();
        let mut latencies: Vec<f64> = samples.iter().map(|s| s.check.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        let failures = samples.iter().filter(|s| !s.check.ok).count();
        let values: Vec<f64> = samples.iter().filter_map(|s| s.check.value).collect();
        Stats {
            checks: samples.len(),
            failures,
            error_ratio: if samples.is_empty() {
                0.0
            } else {
                failures as f64 / samples.len() as f64
            },
            p50_latency_ms: quantile(0.5),
            p99_latency_ms: quantile(0.99),
            max_latency_ms: latencies.last().copied().unwrap_or(0.0),
            value: values.last().copied(),
            max_value: values.iter().copied().reduce(f64::max),
        }
    }

    fn measure(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::ErrorRatio | Metric::Success => Some(self.error_ratio),
            Metric::P50Latency => Some(self.p50_latency_ms),
            Metric::P99Latency => Some(self.p99_latency_ms),
            Metric::MaxLatency => Some(self.max_latency_ms),
            Metric::Value => self.value,
            Metric::MaxValue => self.max_value,
        }
    }
}

/// One condition of the hypothesis in one phase: one JUnit testcase.
#[derive(Clone, Debug, Serialize)]
pub struct ConditionResult {
    pub phase: Phase,
    pub condition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    pub held: bool,
    pub message: String,
}

/// Everything the experiment saw, and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub started_at: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub exit_code: u8,
    /// (phase, start, end) in seconds from the start; phases not reached are absent.
    pub phases: Vec<(Phase, f64, f64)>,
    pub conditions: Vec<ConditionResult>,
    /// Per probe, per phase.
    pub stats: BTreeMap<String, BTreeMap<Phase, Stats>>,
    pub faults: Vec<FaultWindow>,
    pub rollback: Vec<String>,
    pub samples: Vec<Sample>,
}

/// What the live view shows each second.
pub struct Live<'a> {
    pub phase: Phase,
    pub elapsed: Duration,
    /// Each probe's last check.
    pub last: Vec<(&'a str, Option<&'a Check>)>,
    /// Each armed or ended fault with its counters.
    pub faults: &'a [FaultWindow],
}

enum Event {
    WarmupEnds,
    Arm(usize),
    Stop(usize),
    InjectionEnds,
    End,
}

/// Runs the experiment to its verdict. `live` is called about once a second. A fault that
/// cannot be armed here is refused before anything starts (its path named), never discovered
/// halfway through.
pub async fn run<I: Injector>(
    experiment: &Experiment,
    injector: &mut I,
    mut live: impl FnMut(&Live),
) -> Result<Report> {
    let faults: Vec<Fault> = experiment.faults.iter().map(|t| t.fault.clone()).collect();
    injector
        .check(&faults)
        .await
        .map_err(|refused| match refused.index {
            Some(index) => refused.error.within(&format!("faults[{index}].fault")),
            None => refused.error,
        })?;
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let schedule = &experiment.schedule;
    let warmup_end = schedule.warmup.0;
    let injection_end = warmup_end + schedule.duration.0;
    let end = injection_end + schedule.cooldown.0;

    // The timetable: every event at its offset from the start.
    let mut events: Vec<(Duration, Event)> = vec![
        (warmup_end, Event::WarmupEnds),
        (injection_end, Event::InjectionEnds),
        (end, Event::End),
    ];
    for (index, timed) in experiment.faults.iter().enumerate() {
        let at = warmup_end + timed.at.map_or(Duration::ZERO, |d| d.0);
        events.push((at, Event::Arm(index)));
        if let Some(lasts) = timed.lasts {
            events.push(((at + lasts.0).min(injection_end), Event::Stop(index)));
        }
    }
    // Stable: at one instant, the order above (a warm-up's verdict before the first arm).
    events.sort_by_key(|(at, _)| *at);
    let mut events = events.into_iter().peekable();

    let (results, mut checks) = tokio::sync::mpsc::unbounded_channel::<(usize, Duration, Check)>();
    let mut probe_tasks = Vec::new();
    for (index, probe) in experiment.steady_state.probes.iter().enumerate() {
        let probe = probe.clone();
        let results = results.clone();
        probe_tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(probe.interval.0);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let at = started.elapsed();
                let result = check(&probe).await;
                if results.send((index, at, result)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(results);

    let names: Vec<&str> = experiment
        .steady_state
        .probes
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last: Vec<Option<Check>> = vec![None; names.len()];
    let mut failing_in_a_row = vec![0u32; names.len()];
    let mut windows: Vec<FaultWindow> = Vec::new();
    let mut outcome: Option<Outcome> = None;
    let mut reached = Phase::Warmup;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let phase_at = |at: Duration| {
        if at < warmup_end {
            Phase::Warmup
        } else if at < injection_end {
            Phase::Injection
        } else {
            Phase::Cooldown
        }
    };

    while outcome.is_none() {
        let next = events
            .peek()
            .map_or(end, |(at, _)| *at)
            .saturating_sub(started.elapsed());
        tokio::select! {
            Some((index, at, result)) = checks.recv() => {
                failing_in_a_row[index] = if result.ok { 0 } else { failing_in_a_row[index] + 1 };
                samples.push(Sample {
                    probe: names[index].to_string(),
                    at_s: seconds(at),
                    phase: phase_at(at),
                    check: result.clone(),
                });
                last[index] = Some(result);
                let breached = experiment.abort.iter().find(|rule| {
                    rule.probe == names[index] && failing_in_a_row[index] >= rule.consecutive_failures
                });
                if let Some(rule) = breached.filter(|_| reached != Phase::Warmup) {
                    injector.stop_all().await;
                    close_windows(&mut windows, injector, started).await;
                    outcome = Some(Outcome::Aborted {
                        reason: format!(
                            "{} failed {} checks in a row at {:.1}s: every fault was reverted",
                            rule.probe, failing_in_a_row[index], started.elapsed().as_secs_f64()
                        ),
                    });
                }
            }
            () = tokio::time::sleep(next) => {
                let Some((_, event)) = events.next() else { break };
                match event {
                    Event::WarmupEnds => {
                        reached = Phase::Injection;
                        let warmup = verdicts(experiment, &samples, Phase::Warmup);
                        if warmup.iter().any(|c| !c.held) {
                            outcome = Some(Outcome::SteadyStateFailed);
                        }
                    }
                    Event::Arm(index) => {
                        let timed = &experiment.faults[index];
                        let lifetime = timed
                            .lasts
                            .map_or(injection_end, |lasts| started.elapsed() + lasts.0)
                            .min(injection_end)
                            .saturating_sub(started.elapsed());
                        let mut window = FaultWindow {
                            index,
                            kind: timed.fault.kind.to_string(),
                            id: None,
                            start_s: seconds(started.elapsed()),
                            end_s: None,
                            matched: 0,
                            injected: 0,
                            dry_run: timed.fault.dry_run,
                            error: None,
                        };
                        match injector.arm(index, timed.fault.clone(), lifetime).await {
                            Ok(id) => window.id = Some(id),
                            Err(err) => {
                                // A hypothesis judged without its fault would be a false pass.
                                window.error = Some(err.to_string());
                                window.end_s = Some(window.start_s);
                                injector.stop_all().await;
                                close_windows(&mut windows, injector, started).await;
                                outcome = Some(Outcome::Aborted {
                                    reason: format!(
                                        "faults[{index}] ({}) could not be armed: {err}",
                                        timed.fault.kind
                                    ),
                                });
                            }
                        }
                        windows.push(window);
                    }
                    Event::Stop(index) => {
                        if let Some(window) = windows.iter_mut().find(|w| w.index == index && w.end_s.is_none()) {
                            stop_window(window, injector, started).await;
                        }
                    }
                    Event::InjectionEnds => {
                        reached = Phase::Cooldown;
                        injector.stop_all().await;
                        close_windows(&mut windows, injector, started).await;
                    }
                    Event::End => break,
                }
            }
            _ = ticker.tick() => {
                for window in windows.iter_mut().filter(|w| w.end_s.is_none()) {
                    if let Some(id) = window.id
                        && let Some(counters) = injector.counters(id).await
                    {
                        window.matched = counters.matched;
                        window.injected = counters.injected;
                    }
                }
                let view: Vec<(&str, Option<&Check>)> =
                    names.iter().copied().zip(last.iter().map(Option::as_ref)).collect();
                live(&Live {
                    phase: phase_at(started.elapsed()),
                    elapsed: started.elapsed(),
                    last: view,
                    faults: &windows,
                });
            }
        }
    }
    for task in probe_tasks {
        task.abort();
    }
    // Whatever ended the experiment, nothing stays armed.
    injector.stop_all().await;
    close_windows(&mut windows, injector, started).await;
    let ended_at = started.elapsed();

    let mut conditions = Vec::new();
    for phase in Phase::ALL {
        if phase <= reached {
            conditions.extend(verdicts(experiment, &samples, phase));
        }
    }
    let outcome = outcome.unwrap_or(if conditions.iter().all(|c| c.held) {
        Outcome::Held
    } else {
        Outcome::NotHeld
    });
    let mut stats: BTreeMap<String, BTreeMap<Phase, Stats>> = BTreeMap::new();
    for name in &names {
        for phase in Phase::ALL {
            let phase_samples = samples
                .iter()
                .filter(|s| s.probe == *name && s.phase == phase);
            let phase_stats = Stats::of(phase_samples);
            if phase_stats.checks > 0 {
                stats
                    .entry(name.to_string())
                    .or_default()
                    .insert(phase, phase_stats);
            }
        }
    }
    let phases = [
        (Phase::Warmup, Duration::ZERO, warmup_end),
        (Phase::Injection, warmup_end, injection_end),
        (Phase::Cooldown, injection_end, end),
    ]
    .into_iter()
    .filter(|(_, start, _)| *start <= ended_at)
    .map(|(phase, start, stop)| (phase, seconds(start), seconds(stop.min(ended_at))))
    .collect();
    let rollback = match &experiment.rollback {
        Some(rollback) if rollback.when == RollbackWhen::Always || outcome != Outcome::Held => {
            run_rollback(&rollback.commands).await
        }
        _ => Vec::new(),
    };
    Ok(Report {
        name: experiment.metadata.name.clone(),
        description: experiment.metadata.description.clone(),
        started_at,
        exit_code: outcome.exit_code(),
        outcome,
        phases,
        conditions,
        stats,
        faults: windows,
        rollback,
        samples,
    })
}

async fn stop_window<I: Injector>(window: &mut FaultWindow, injector: &mut I, started: Instant) {
    window.end_s = Some(seconds(started.elapsed()));
    if let Some(id) = window.id {
        match injector.stop(id).await {
            Ok(counters) => {
                window.matched = counters.matched;
                window.injected = counters.injected;
            }
            // Already ended (stop-all, its deadline): the last counts read stand, or the
            // engine's final ones.
            Err(_) => {
                if let Some(counters) = injector.counters(id).await {
                    window.matched = counters.matched;
                    window.injected = counters.injected;
                }
            }
        }
    }
}

async fn close_windows<I: Injector>(
    windows: &mut [FaultWindow],
    injector: &mut I,
    started: Instant,
) {
    for window in windows.iter_mut().filter(|w| w.end_s.is_none()) {
        stop_window(window, injector, started).await;
    }
}

/// The hypothesis' conditions for one phase, against the probes' checks in it.
fn verdicts(experiment: &Experiment, samples: &[Sample], phase: Phase) -> Vec<ConditionResult> {
    let conditions = match phase {
        Phase::Warmup => &experiment.hypothesis.warmup,
        Phase::Injection => &experiment.hypothesis.injection,
        Phase::Cooldown => &experiment.hypothesis.cooldown,
    };
    conditions
        .iter()
        .map(|condition| {
            let stats = Stats::of(
                samples
                    .iter()
                    .filter(|s| s.phase == phase && s.probe == condition.probe),
            );
            let measured = (stats.checks > 0)
                .then(|| stats.measure(condition.metric))
                .flatten();
            let (held, message) = match measured {
                None if stats.checks == 0 => (
                    false,
                    format!("no check of {} in {}", condition.probe, phase.name()),
                ),
                None => (false, format!("{} has no value", condition.probe)),
                Some(value) => (
                    condition.comparison.holds(value),
                    in_words(condition.metric, value, &stats),
                ),
            };
            ConditionResult {
                phase,
                condition: condition.to_string(),
                measured,
                held,
                message,
            }
        })
        .collect()
}

/// A condition's measurement in the words that fit its metric.
fn in_words(metric: Metric, value: f64, stats: &Stats) -> String {
    let rounded = (value * 10_000.0).round() / 10_000.0;
    let (checks, failed) = (stats.checks, stats.failures);
    match metric {
        Metric::Success => format!("{} of {checks} checks ok", checks - failed),
        Metric::ErrorRatio => format!("error ratio {rounded} ({failed} of {checks} checks failed)"),
        Metric::P50Latency | Metric::P99Latency | Metric::MaxLatency => {
            let name = match metric {
                Metric::P50Latency => "p50",
                Metric::P99Latency => "p99",
                _ => "max",
            };
            format!("{name} latency {rounded} ms over {checks} checks")
        }
        Metric::Value => format!("last value {rounded} ({checks} checks)"),
        Metric::MaxValue => format!("largest value {rounded} ({checks} checks)"),
    }
}

/// Runs the rollback commands in order, each bounded; what each did, for the report.
async fn run_rollback(commands: &[Vec<String>]) -> Vec<String> {
    let mut done = Vec::new();
    for command in commands {
        let Some((program, args)) = command.split_first() else {
            continue;
        };
        let run = tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output();
        let outcome = match tokio::time::timeout(Duration::from_secs(60), run).await {
            Ok(Ok(output)) => format!("exit {}", output.status.code().unwrap_or(-1)),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "still running after 60 s: killed".into(),
        };
        done.push(format!("{}: {outcome}", command.join(" ")));
    }
    done
}
