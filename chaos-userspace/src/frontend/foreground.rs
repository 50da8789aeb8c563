//! `inject` and `run` in the foreground: the fault service in this process, its events rendered
//! on the terminal (stderr for people, stdout JSON for programs), status once per second, every
//! fault ended at its deadline, and all of them on Ctrl-C or SIGTERM, always detached before
//! return.
use std::{
    io::{IsTerminal as _, Write as _},
    sync::Arc,
    time::Duration,
};

use chaos_model::Fault;
use tokio::{sync::mpsc::UnboundedReceiver, task::JoinHandle};

use crate::{
    engine::EngineConfig,
    error::{ChaosError, Result},
    frontend::cli::{
        args::{DEFAULT_MAX_DURATION, EventFormat, InjectCommand, RunArgs},
        flags::on_the_command_line,
        run_file::{Origin, read_run_file, refusal},
    },
    service::{FOLLOW_EVERY, FaultService, Refused, events::Published, moves_in_words},
    telemetry::{
        metrics::{FaultMetrics, FaultSample, MetricsListener, registry_of},
        status_line,
    },
    termination::Termination,
    wire::{Counters, Event},
    workload::PodNames,
};

struct RunOptions {
    /// The whole run's deadline; each fault may also have its own.
    duration: Option<Duration>,
    /// The lifetime of a fault with no duration of its own or of the run's, and the longest any
    /// may have.
    max_duration: Duration,
    events: Option<EventFormat>,
    /// Where Prometheus scrapes the run's counters (`--metrics`), already bound.
    metrics: Option<MetricsListener>,
    /// Where pods get their names, for scopes that name them (followed across restarts).
    names: Option<PodNames>,
}

/// `chaos-bpf inject KIND ...`: one fault from the flags.
pub async fn inject(command: &InjectCommand) -> Result<()> {
    let common = command.common();
    let options = RunOptions {
        duration: None,
        max_duration: common.max_duration.map_or(DEFAULT_MAX_DURATION, |d| d.0),
        events: common.events,
        metrics: common.metrics.map(MetricsListener::bind).transpose()?,
        names: PodNames::cri(common.cri.cri_socket.as_deref()),
    };
    run(vec![command.to_fault()], options, |refused| {
        on_the_command_line(refused.error)
    })
    .await
}

/// `chaos-bpf run FILE`: every fault of the file at once; a refusal names its line or field.
pub async fn run_file(args: RunArgs) -> Result<()> {
    let metrics = args.metrics.map(MetricsListener::bind).transpose()?;
    let read = read_run_file(&args.file).map_err(on_the_command_line)?;
    let (origins, faults): (Vec<Origin>, Vec<Fault>) = read
        .into_iter()
        .map(|(origin, mut fault)| {
            // Events are the run's to print: every fault reports, or none.
            fault.events = args.events.map(|_| chaos_model::Events {
                per_cpu_per_sec: args.events_per_cpu_per_sec,
            });
            (origin, fault)
        })
        .unzip();
    let options = RunOptions {
        duration: args.duration.map(|d| d.0),
        max_duration: args.max_duration.map_or(DEFAULT_MAX_DURATION, |d| d.0),
        events: args.events,
        metrics,
        names: PodNames::cri(args.cri.cri_socket.as_deref()),
    };
    let name = args.file.display().to_string();
    run(faults, options, |refused| {
        let origin = refused.index.and_then(|index| origins.get(index));
        refusal(&name, origin, refused.error)
    })
    .await
}

/// Beyond this many faults the status is one line for all of them, every 10 s.
const FAULTS_WITH_OWN_STATUS_LINES: usize = 8;

/// The terminal follows the service's events on a task of its own, printing each as it comes,
/// so a big batch's records are printed while it arms, not held until it is done: injections as
/// JSON lines on stdout (with `--events json`), the JSON `armed` record on stdout, warnings on
/// stderr. Of the armed lines only what the first line(s) need is kept: a big run prints one
/// line instead of thousands.
struct Terminal {
    events: bool,
    /// What is armed so far, which the run waits on before its armed line(s).
    armed: tokio::sync::watch::Sender<ArmedSoFar>,
}

#[derive(Default)]
struct ArmedSoFar {
    count: usize,
    /// The first lines, printed as they are when the run has few faults.
    lines: Vec<String>,
    programs: std::collections::BTreeSet<String>,
}

impl Terminal {
    fn show(&self, published: &Published) {
        let line = match &published.event {
            Event::Injection(_) if !self.events => None,
            Event::Injection(_) | Event::Armed { .. } | Event::Kill(_) => {
                serde_json::to_string(&published.event).ok()
            }
            Event::Warning { message } => {
                eprintln!("chaos-bpf: {message}");
                None
            }
            Event::Summary(_) | Event::Lagged { .. } => None,
        };
        if let Some(line) = line {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
        if let Some(armed) = &published.armed {
            self.armed.send_modify(|so_far| {
                so_far.count += 1;
                if so_far.lines.len() <= FAULTS_WITH_OWN_STATUS_LINES {
                    so_far.lines.push(armed.line.clone());
                }
                so_far.programs.extend(armed.programs.iter().cloned());
            });
        }
    }

    /// Prints every event until the service and its event readers are gone.
    fn follow(self, mut events: UnboundedReceiver<Arc<Published>>) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(published) = events.recv().await {
                self.show(&published);
            }
        })
    }
}

fn print_armed(so_far: &ArmedSoFar) {
    if so_far.count <= FAULTS_WITH_OWN_STATUS_LINES {
        for line in &so_far.lines {
            eprintln!("{line}");
        }
        return;
    }
    eprintln!(
        "chaos-bpf: armed {} faults via {}",
        so_far.count,
        so_far
            .programs
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// How long the run waits for its events to be printed (the armed records before the armed
/// line, the last ones before the summaries); a bound, never reached in practice.
const LAST_EVENTS: Duration = Duration::from_secs(5);

/// Plans, checks and arms the faults, runs them until each has ended, then prints one summary
/// line per fault. A fault the service refuses is named by `on_refusal`.
async fn run(
    faults: Vec<Fault>,
    options: RunOptions,
    on_refusal: impl Fn(Refused) -> ChaosError,
) -> Result<()> {
    let (armed, mut armed_so_far) = tokio::sync::watch::channel(ArmedSoFar::default());
    let terminal = Terminal {
        events: options.events == Some(EventFormat::Json),
        armed,
    };
    let service = FaultService::new(
        EngineConfig {
            max_duration: options.max_duration,
            max_faults: usize::MAX,
            history: usize::MAX,
        },
        options.names,
    );
    let printer = terminal.follow(service.every_event());
    let plans = service.plan(faults).await.map_err(on_refusal)?;
    // Everything that can refuse the faults together, before anything is printed.
    service
        .check(&plans, options.duration)
        .await
        .map_err(on_the_command_line)?;
    let mut explained = Vec::new();
    for plan in &plans {
        let line = plan.explain();
        if !explained.contains(&line) {
            eprintln!("{line}");
            explained.push(line);
        }
    }
    let mut termination = Termination::install()?;
    let ids = service
        .arm(plans, options.duration)
        .await
        .map_err(on_the_command_line)?;
    // The armed records are printed as they are published; the line(s) saying what is armed
    // come after the last of them.
    let all_armed = armed_so_far.wait_for(|so_far| so_far.count >= ids.len());
    let _ = tokio::time::timeout(LAST_EVENTS, all_armed).await;
    print_armed(&armed_so_far.borrow());

    let metrics = match options.metrics {
        Some(listener) => {
            let shared = Arc::new(FaultMetrics::default());
            if let Some(addr) = listener.local_addr() {
                eprintln!("chaos-bpf: metrics on http://{addr}/metrics");
            }
            listener.serve(
                Arc::new(registry_of(Arc::clone(&shared))),
                axum::Router::new(),
            )?;
            shared.update(service.samples().await);
            Some(shared)
        }
        None => None,
    };
    let on_terminal = std::io::stderr().is_terminal();
    let follows = service.follows_names().await;
    let mut follower = tokio::time::interval(FOLLOW_EVERY);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let started = tokio::time::Instant::now();
    let mut ticks: u64 = 0;
    while service.active().await > 0 {
        let next_deadline = service.next_deadline().await;
        let sleep = async {
            match next_deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => service.expire().await,
            () = termination.recv() => { service.stop_all("signal").await; }
            _ = follower.tick(), if follows => {
                for line in moves_in_words(service.follow_names().await) {
                    eprintln!("chaos-bpf: {line}");
                }
            },
            _ = ticker.tick() => {
                ticks += 1;
                // One read of the kernel's counters serves the status line and the metrics; a
                // tick that prints nothing and serves no metrics reads none.
                let wanted = metrics.is_some()
                    || ids.len() <= FAULTS_WITH_OWN_STATUS_LINES
                    || ticks.is_multiple_of(10);
                if wanted {
                    let samples = service.samples().await;
                    print_status(&samples, ids.len(), (started.elapsed(), ticks), on_terminal);
                    if let Some(metrics) = &metrics {
                        metrics.update(samples);
                    }
                }
            }
        }
    }
    if let Some(metrics) = &metrics {
        metrics.update(service.samples().await);
    }
    if on_terminal {
        eprintln!();
    }
    let summaries = service.summaries(&ids).await;
    // The service gone, its event readers drain and stop, and the printer ends with the last
    // event: the summaries are the last lines.
    drop(service);
    let _ = tokio::time::timeout(LAST_EVENTS, printer).await;
    let mut stdout = std::io::stdout().lock();
    for summary in summaries {
        if let Ok(line) = serde_json::to_string(&Event::Summary(summary)) {
            let _ = writeln!(stdout, "{line}");
        }
    }
    Ok(())
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
            .map(|s| status_line(&s.fault, s.fault_id, s.age, &s.counters))
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
