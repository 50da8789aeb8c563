//! `inject` and `run` in the foreground: an engine in this process, its events rendered on the
//! terminal (stderr for people, stdout JSON for programs), status once per second, every fault
//! ended at its deadline, and all of them on Ctrl-C or SIGTERM, always detached before return.
use std::{
    io::{IsTerminal as _, Write as _},
    sync::{Arc, Mutex},
    time::Duration,
};

use chaos::{
    engine::{Engine, EngineConfig, EngineEvent, Sink},
    error::{ChaosError, Result},
    inject::Plan,
    metrics::{FaultMetrics, FaultSample, MetricsListener, registry_of},
    telemetry::{Counters, Summary, status_line},
    workload::PodNames,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::EventFormat;

pub struct RunOptions {
    /// The whole run's deadline; each fault may also have its own.
    pub duration: Option<Duration>,
    /// The lifetime of a fault with no duration of its own or of the run's, and the longest any
    /// may have.
    pub max_duration: Duration,
    pub events: Option<EventFormat>,
    /// Where Prometheus scrapes the run's counters (`--metrics`), already bound.
    pub metrics: Option<MetricsListener>,
    /// Where pods get their names, for scopes that name them (followed across restarts).
    pub names: Option<PodNames>,
}

/// How often scopes by name are resolved again while such a fault runs: a restarted container
/// gets a new id and cgroup, which its rule then takes.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// Moves faults scoped by name to where the names are now, and says so.
pub async fn follow(engine: &mut Engine, names: &PodNames) {
    if !engine.follows_names() {
        return;
    }
    if let Some(pods) = pods_now(names).await {
        report_moves(engine.follow(&pods));
    }
}

/// The node's pods by name now; a runtime that does not answer is said once per try.
pub async fn pods_now(names: &PodNames) -> Option<Vec<chaos_model::workloads::PodInfo>> {
    names
        .pods()
        .await
        .map_err(|err| eprintln!("chaos-bpf: resolving names again: {err}"))
        .ok()
}

/// One line per fault that moved to its workloads' new cgroups, or could not.
pub fn report_moves(moves: Vec<(chaos::engine::FaultId, Result<Vec<String>>)>) {
    for (id, moved) in moves {
        match moved {
            Ok(workloads) => eprintln!("chaos-bpf: fault {id} now on {}", workloads.join(", ")),
            Err(err) => eprintln!("chaos-bpf: fault {id} could not follow its workloads: {err}"),
        }
    }
}

/// Beyond this many faults the status is one line for all of them, every 10 s.
const FAULTS_WITH_OWN_STATUS_LINES: usize = 8;

/// The terminal as the engine's sink: injections as JSON lines on stdout (with `--events json`),
/// the JSON `armed` record on stdout, warnings on stderr. Armed lines are kept until every fault
/// is armed, so a big run prints one line instead of thousands.
struct Terminal {
    events: bool,
    armed: Mutex<Vec<(String, Vec<String>)>>,
}

impl Sink for Terminal {
    fn send(&self, event: EngineEvent) {
        let mut stdout = std::io::stdout().lock();
        match event {
            EngineEvent::Injection(record) if self.events => {
                if let Ok(line) = serde_json::to_string(&record) {
                    let _ = writeln!(stdout, "{line}");
                }
            }
            EngineEvent::Armed {
                fault,
                line,
                programs,
            } => {
                let record = serde_json::json!({ "type": "armed", "fault": fault });
                let _ = writeln!(stdout, "{record}");
                if let Ok(mut armed) = self.armed.lock() {
                    armed.push((line, programs));
                }
            }
            EngineEvent::KillRound(round) => {
                if let Ok(line) = serde_json::to_string(&round) {
                    let _ = writeln!(stdout, "{line}");
                }
            }
            EngineEvent::Warning(warning) => eprintln!("chaos-bpf: {warning}"),
            EngineEvent::Injection(_) | EngineEvent::Ended(_) => {}
        }
        let _ = stdout.flush();
    }
}

impl Terminal {
    fn print_armed(&self) {
        let armed = self.armed.lock().map(|a| a.clone()).unwrap_or_default();
        if armed.len() <= FAULTS_WITH_OWN_STATUS_LINES {
            for (line, _) in &armed {
                eprintln!("{line}");
            }
            return;
        }
        let mut programs: Vec<&String> = armed.iter().flat_map(|(_, p)| p).collect();
        programs.sort();
        programs.dedup();
        eprintln!(
            "chaos-bpf: armed {} faults via {}",
            armed.len(),
            programs
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Arms the planned faults and runs them until each has ended; returns their summaries.
pub async fn run(plans: Vec<Plan>, options: RunOptions) -> Result<Vec<Summary>> {
    let terminal = Arc::new(Terminal {
        events: options.events == Some(EventFormat::Json),
        armed: Mutex::new(Vec::new()),
    });
    let mut engine = Engine::new(
        EngineConfig {
            max_duration: options.max_duration,
            max_faults: usize::MAX,
            history: usize::MAX,
        },
        Arc::clone(&terminal) as Arc<dyn Sink>,
    );
    // Everything that can refuse the faults together, before anything is printed.
    engine.check(&plans, options.duration)?;
    let mut explained = Vec::new();
    for plan in &plans {
        let line = plan.explain();
        if !explained.contains(&line) {
            eprintln!("{line}");
            explained.push(line);
        }
    }
    // Caught from before anything is attached: a signal arriving while the faults are armed is
    // delivered once they run, so the stop is a clean one (the default action would kill the
    // process before it could remove clsact state).
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|err| ChaosError::io("installing the SIGTERM handler", err))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|err| ChaosError::io("installing the SIGINT handler", err))?;
    let ids = engine.arm(plans, options.duration)?;
    terminal.print_armed();

    let metrics = match options.metrics {
        Some(listener) => {
            let shared = Arc::new(FaultMetrics::default());
            if let Some(addr) = listener.local_addr() {
                eprintln!("chaos-bpf: metrics on http://{addr}/metrics");
            }
            listener.serve(Arc::new(registry_of(Arc::clone(&shared))))?;
            shared.update(engine.samples());
            Some(shared)
        }
        None => None,
    };
    let on_terminal = std::io::stderr().is_terminal();
    let mut follower = tokio::time::interval(FOLLOW_EVERY);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let started = tokio::time::Instant::now();
    let mut ticks: u64 = 0;
    while engine.active() > 0 {
        let next_deadline = engine.next_deadline();
        let sleep = async {
            match next_deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => engine.expire().await,
            _ = sigterm.recv() => { engine.stop_all("signal").await; }
            _ = sigint.recv() => { engine.stop_all("signal").await; }
            _ = follower.tick(), if options.names.is_some() => {
                if let Some(names) = &options.names {
                    follow(&mut engine, names).await;
                }
            }
            _ = ticker.tick() => {
                ticks += 1;
                // One read of the kernel's counters serves the status line and the metrics; a
                // tick that prints nothing and serves no metrics reads none.
                let wanted = metrics.is_some()
                    || ids.len() <= FAULTS_WITH_OWN_STATUS_LINES
                    || ticks.is_multiple_of(10);
                if wanted {
                    let samples = engine.samples();
                    print_status(&samples, ids.len(), (started.elapsed(), ticks), on_terminal);
                    if let Some(metrics) = &metrics {
                        metrics.update(samples);
                    }
                }
            }
        }
    }
    if let Some(metrics) = &metrics {
        metrics.update(engine.samples());
    }
    if on_terminal {
        eprintln!();
    }
    Ok(engine.summaries(&ids))
}

fn print_status(
    samples: &[FaultSample],
    faults: usize,
    (elapsed, ticks): (Duration, u64),
    terminal: bool,
) {
    let running: Vec<&FaultSample> = samples.iter().filter(|s| s.armed).collect();
    let lines: Vec<String> = if faults <= FAULTS_WITH_OWN_STATUS_LINES {
        running
            .iter()
            .map(|s| status_line(s.fault, s.fault_id, s.age, &s.counters))
            .collect()
    } else if ticks.is_multiple_of(10) {
        let total = running
            .iter()
            .fold(Counters::default(), |sum, s| sum.plus(&s.counters));
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
