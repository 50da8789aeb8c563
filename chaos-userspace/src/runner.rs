//! Runs armed faults in the foreground: streams events, prints status once per second, ends each
//! fault at its own deadline, and ends them all on the run's deadline, Ctrl-C or SIGTERM, always
//! detaching before it returns.
use std::{
    collections::HashMap,
    io::{IsTerminal as _, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    sync::oneshot,
    task::JoinHandle,
};

use crate::{
    error::{ChaosError, Result},
    instance::Instance,
    metrics::{FaultMetrics, FaultSample, MetricsListener},
    telemetry::{Clock, Counters, EventRecord, Summary, status_line},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Json,
}

pub struct RunOptions {
    /// The whole run's deadline; each fault may also have its own.
    pub duration: Option<Duration>,
    /// The lifetime of a fault with no duration of its own or of the run's, and the longest any
    /// may have.
    pub max_duration: Duration,
    pub events: Option<EventFormat>,
    /// Where Prometheus scrapes the run's counters (`--metrics`), already bound.
    pub metrics: Option<MetricsListener>,
}

/// Beyond this many faults the status is one line for all of them, every 10 s.
const FAULTS_WITH_OWN_STATUS_LINES: usize = 8;

/// SIGTERM and SIGINT, caught from before anything is attached: one arriving while the faults are
/// being armed is delivered once they run, so the stop is a clean one (the default action would
/// kill the process before it could remove clsact state).
pub struct StopSignals {
    sigterm: Signal,
    sigint: Signal,
}

impl StopSignals {
    pub fn install() -> Result<Self> {
        Ok(Self {
            sigterm: signal(SignalKind::terminate())
                .map_err(|err| ChaosError::io("installing the SIGTERM handler", err))?,
            sigint: signal(SignalKind::interrupt())
                .map_err(|err| ChaosError::io("installing the SIGINT handler", err))?,
        })
    }
}

/// A fault of the run: which rule of which instance, its summary so far, and its deadline.
pub struct RunningFault {
    pub instance: usize,
    pub rule: usize,
    pub armed_at: Instant,
    /// Also the kernel's: each rule carries it as an expiry the programs enforce.
    pub deadline: Instant,
    /// The kernel mechanism's id, for the metrics' labels.
    pub mechanism: &'static str,
    /// Filled in with the scope when armed, and with the outcome when the fault ends.
    pub summary: Summary,
    ended: bool,
}

impl RunningFault {
    fn end(&mut self, by: &'static str) {
        self.summary.ended_by = by;
        self.summary.duration_ms = self.armed_at.elapsed().as_millis() as u64;
        self.ended = true;
    }

    pub fn new(
        (instance, rule): (usize, usize),
        mechanism: &'static str,
        summary: Summary,
        lifetime: Duration,
    ) -> Self {
        let armed_at = Instant::now();
        Self {
            instance,
            rule,
            armed_at,
            deadline: armed_at + lifetime,
            mechanism,
            summary,
            ended: false,
        }
    }
}

/// An instance while it runs, with its event reader.
struct LiveInstance {
    instance: Instance,
    stop_reader: oneshot::Sender<()>,
    reader: JoinHandle<HashMap<u32, u64>>,
}

pub async fn run(
    instances: Vec<Instance>,
    mut faults: Vec<RunningFault>,
    options: RunOptions,
    signals: StopSignals,
) -> Result<Vec<Summary>> {
    let mut live: Vec<Option<LiveInstance>> = Vec::with_capacity(instances.len());
    for mut instance in instances {
        let ring = instance.take_events()?;
        let (stop_reader, stop) = oneshot::channel();
        let reader = tokio::spawn(stream_events(ring, options.events, stop));
        live.push(Some(LiveInstance {
            instance,
            stop_reader,
            reader,
        }));
    }
    let StopSignals {
        mut sigterm,
        mut sigint,
    } = signals;
    let metrics = match options.metrics {
        Some(listener) => {
            let shared = Arc::new(FaultMetrics::default());
            if let Some(addr) = listener.local_addr() {
                eprintln!("chaos-bpf: metrics on http://{addr}/metrics");
            }
            listener.serve(Arc::clone(&shared))?;
            Some(shared)
        }
        None => None,
    };
    let sample = |live: &[Option<LiveInstance>], faults: &[RunningFault]| {
        if let Some(metrics) = &metrics {
            metrics.update(samples(faults, &live_counters(live, faults)));
        }
    };
    sample(&live, &faults);
    let terminal = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let started = Instant::now();
    let mut ticks: u64 = 0;

    while faults.iter().any(|f| !f.ended) {
        let next_deadline = faults.iter().filter(|f| !f.ended).map(|f| f.deadline).min();
        let sleep = async {
            match next_deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let signalled = tokio::select! {
            () = sleep => false,
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
            _ = ticker.tick() => {
                ticks += 1;
                // One read of the kernel's counters serves the status line and the metrics; a
                // tick that prints nothing and serves no metrics reads none.
                let wanted = metrics.is_some()
                    || faults.len() <= FAULTS_WITH_OWN_STATUS_LINES
                    || ticks.is_multiple_of(10);
                if wanted {
                    let counters = live_counters(&live, &faults);
                    print_status(&faults, &counters, (started.elapsed(), ticks), terminal);
                    if let Some(metrics) = &metrics {
                        metrics.update(samples(&faults, &counters));
                    }
                }
                continue;
            }
        };
        if signalled {
            // The kill switch first: one map write per object stops every rule at once, before
            // the rules are disarmed and the programs detached one by one. If it fails, the
            // per-rule disarm below still runs.
            for instance in live.iter_mut().flatten() {
                let _ = instance.instance.kill();
            }
        }
        let now = Instant::now();
        let mut undisarmable = Vec::new();
        for fault in faults.iter_mut().filter(|f| !f.ended) {
            let due = signalled || fault.deadline <= now;
            if !due {
                continue;
            }
            if let Some(instance) = live[fault.instance].as_mut()
                && let Err(err) = instance.instance.disarm(fault.rule)
            {
                // Its object goes now: detaching is the one sure way to stop the rule.
                eprintln!(
                    "chaos-bpf: {}#{}: disarming failed ({err}); detaching its programs",
                    fault.summary.fault, fault.summary.fault_id
                );
                undisarmable.push(fault.instance);
            }
            fault.end(if signalled { "signal" } else { "duration" });
        }
        for fault in faults.iter_mut().filter(|f| !f.ended) {
            if undisarmable.contains(&fault.instance) {
                fault.end("error");
            }
        }
        // Instances whose faults have all ended are detached now; the others keep running.
        for (index, slot) in live.iter_mut().enumerate() {
            let finished = faults
                .iter()
                .filter(|f| f.instance == index)
                .all(|f| f.ended);
            if finished && let Some(instance) = slot.take() {
                stop_instance(instance, &mut faults, index).await;
            }
        }
        sample(&live, &faults);
    }
    if terminal {
        eprintln!();
    }
    Ok(faults.into_iter().map(|f| f.summary).collect())
}

/// Each fault's counters as its instance counts them now; `None` once the instance is stopped
/// (the summary holds the final counts then) or where the read failed.
fn live_counters(live: &[Option<LiveInstance>], faults: &[RunningFault]) -> Vec<Option<Counters>> {
    faults
        .iter()
        .map(|fault| {
            live[fault.instance]
                .as_ref()
                .and_then(|l| l.instance.counters(fault.rule).ok())
        })
        .collect()
}

/// Each fault for the metrics: its live counters, or the final ones from its summary.
fn samples(faults: &[RunningFault], counters: &[Option<Counters>]) -> Vec<FaultSample> {
    faults
        .iter()
        .zip(counters)
        .map(|(fault, live)| {
            let summary = &fault.summary;
            let counters = live.unwrap_or(Counters {
                matched: summary.matched,
                injected: summary.injected,
                events_sampled_out: summary.events_sampled_out,
                events_lost: summary.events_lost,
            });
            FaultSample {
                fault_id: summary.fault_id,
                fault: summary.fault,
                mechanism: fault.mechanism,
                scope: summary
                    .cgroup
                    .clone()
                    .or_else(|| summary.interface.clone())
                    .unwrap_or_default(),
                armed: !fault.ended,
                counters,
            }
        })
        .collect()
}

/// Detaches an instance, reads its rules' final counters, and lets its reader drain what the
/// programs emitted before the summaries.
async fn stop_instance(live: LiveInstance, faults: &mut [RunningFault], index: usize) {
    let counters = live.instance.stop();
    let _ = live.stop_reader.send(());
    let emitted = live.reader.await.unwrap_or_default();
    for fault in faults.iter_mut().filter(|f| f.instance == index) {
        let summary = &mut fault.summary;
        match counters.get(fault.rule) {
            Some(Ok(final_counts)) => summary.record(final_counts),
            // The summary keeps the counts read last; the others' summaries are unaffected.
            Some(Err(err)) => eprintln!(
                "chaos-bpf: {}#{}: reading the final counters: {err}",
                summary.fault, summary.fault_id
            ),
            None => {}
        }
        summary.events_emitted = emitted.get(&summary.fault_id).copied().unwrap_or(0);
    }
}

fn print_status(
    faults: &[RunningFault],
    counters: &[Option<Counters>],
    (elapsed, ticks): (Duration, u64),
    terminal: bool,
) {
    let running: Vec<(&RunningFault, &Option<Counters>)> = faults
        .iter()
        .zip(counters)
        .filter(|(f, _)| !f.ended)
        .collect();
    let lines: Vec<String> = if faults.len() <= FAULTS_WITH_OWN_STATUS_LINES {
        // A failed read only costs one status line; the run goes on.
        running
            .iter()
            .filter_map(|(f, counts)| {
                let (name, id) = (f.summary.fault, f.summary.fault_id);
                Some(status_line(
                    name,
                    id,
                    f.armed_at.elapsed(),
                    counts.as_ref()?,
                ))
            })
            .collect()
    } else if ticks.is_multiple_of(10) {
        let total = running
            .iter()
            .filter_map(|(_, counts)| counts.as_ref())
            .fold(Counters::default(), |sum, c| sum.plus(c));
        vec![status_line(
            &format!("{} faults", running.len()),
            0,
            elapsed,
            &total,
        )]
    } else {
        Vec::new()
    };
    if terminal && lines.len() == 1 {
        eprint!("\r{}", lines[0]);
    } else {
        for line in lines {
            eprintln!("{line}");
        }
    }
}

/// Prints events until told to stop, then drains the ring. Returns how many it read per fault.
async fn stream_events(
    ring: RingBuf<MapData>,
    format: Option<EventFormat>,
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
            guard = ring.readable_mut() => {
                match guard {
                    Ok(mut guard) => {
                        drain(guard.get_inner_mut(), format, &clock, &mut emitted);
                        guard.clear_ready();
                        false
                    }
                    Err(_) => true,
                }
            }
        };
        if stopping {
            drain(ring.get_mut(), format, &clock, &mut emitted);
            return emitted;
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    format: Option<EventFormat>,
    clock: &Clock,
    emitted: &mut HashMap<u32, u64>,
) {
    let mut stdout = std::io::stdout().lock();
    while let Some(item) = ring.next() {
        let Some(record) = EventRecord::from_bytes(&item, clock) else {
            continue;
        };
        *emitted.entry(record.fault_id).or_default() += 1;
        if format == Some(EventFormat::Json)
            && let Ok(line) = serde_json::to_string(&record)
        {
            let _ = writeln!(stdout, "{line}");
        }
    }
    let _ = stdout.flush();
}
