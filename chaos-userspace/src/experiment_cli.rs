//! `chaos-bpf experiment run FILE`: reads the experiment, runs it in this process's engine or
//! a node agent, shows it live on the terminal, and writes the verdict's files.
use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use chaos::{
    engine::{Engine, EngineConfig, EngineEvent, Sink},
    error::ChaosError,
    experiment::{EngineInjector, Live, report, run::Report},
    workload::PodNames,
};
use chaos_model::experiment::{Experiment, parse_experiment};

use crate::{
    agent::Listen,
    cli::CriArgs,
    client::{AgentClient, AgentInjector},
};

pub struct Outputs {
    pub report: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// The engine's events are the report's business, not the terminal's.
struct Quiet;

impl Sink for Quiet {
    fn send(&self, event: EngineEvent) {
        if let EngineEvent::Warning(warning) = event {
            eprintln!("chaos-bpf: {warning}");
        }
    }
}

/// Runs the experiment in FILE; the verdict's exit code (0, 1 or 3).
pub fn run(
    file: &Path,
    outputs: Outputs,
    agent: Option<Listen>,
    token_file: Option<PathBuf>,
    cri: &CriArgs,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|err| ChaosError::io(format!("reading {name}"), err))?;
    // file:line:column: field: problem; accepted: ... (exit 2)
    let mut experiment =
        parse_experiment(&text).map_err(|err| ChaosError::Usage(format!("{name}:{err}")))?;
    if dry_run {
        for timed in &mut experiment.faults {
            timed.fault.dry_run = true;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let terminal = std::io::stderr().is_terminal();
    let mut view = LiveView::new(terminal);
    let in_file = |err: ChaosError| match err {
        // A fault this host cannot arm: named by its place in the file, as a parse error is.
        ChaosError::Field(field) => {
            let at = chaos_model::experiment::locate(&text, &field.path);
            let error = chaos_model::experiment::ExperimentError { field, at };
            ChaosError::Usage(format!("{name}:{error}"))
        }
        other => other,
    };
    let report = match agent {
        Some(agent) => {
            let mut injector = AgentInjector {
                client: AgentClient { agent, token_file },
                armed: Vec::new(),
            };
            let report = runtime.block_on(until_signal(chaos::experiment::run(
                &experiment,
                &mut injector,
                |live| view.show(live),
            )));
            // Interrupted: what it armed in the agent goes now, not at its deadline.
            runtime.block_on(injector.stop_armed());
            report
        }
        None => {
            if !nix::unistd::geteuid().is_root() {
                return Err(ChaosError::NotRoot.into());
            }
            let engine = Engine::new(
                EngineConfig {
                    max_duration: longest(&experiment),
                    max_faults: 1024,
                    history: usize::MAX,
                },
                Arc::new(Quiet),
            );
            let mut injector =
                EngineInjector::new(engine, PodNames::cri(cri.cri_socket.as_deref()));
            runtime.block_on(until_signal(chaos::experiment::run(
                &experiment,
                &mut injector,
                |live| view.show(live),
            )))
        }
    };
    let report = match report {
        Some(report) => report.map_err(in_file)?,
        None => {
            // The run's future is gone, and with it the engine's faults (its objects detach as
            // they drop); an agent's are stopped by their deadlines.
            eprintln!("\nchaos-bpf: interrupted: every fault was reverted; no verdict");
            return Ok(3);
        }
    };
    view.finish();
    eprint!("{}", summary(&report));
    write_outputs(&report, &outputs)?;
    Ok(report.exit_code)
}

/// The experiment, unless SIGTERM or Ctrl-C comes first.
async fn until_signal<T>(run: impl Future<Output = T>) -> Option<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Some(run.await);
    };
    tokio::select! {
        report = run => Some(report),
        _ = term.recv() => None,
        _ = int.recv() => None,
    }
}

/// The longest a fault of this experiment can live: the whole injection phase.
fn longest(experiment: &Experiment) -> Duration {
    experiment.schedule.duration.0 + Duration::from_secs(1)
}

fn write_outputs(report: &Report, outputs: &Outputs) -> anyhow::Result<()> {
    let write = |path: &Option<PathBuf>, contents: String| -> anyhow::Result<()> {
        if let Some(path) = path {
            std::fs::write(path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    };
    write(&outputs.report, serde_json::to_string_pretty(report)?)?;
    write(&outputs.junit, report::junit(report))?;
    write(&outputs.html, report::html(report))?;
    Ok(())
}

/// The verdict for people: each condition, the faults, the outcome.
fn summary(report: &Report) -> String {
    let mut out = format!("\nexperiment {}: ", report.name);
    out.push_str(
        match &report.outcome {
            chaos::experiment::run::Outcome::Held => "the hypothesis held\n".to_string(),
            chaos::experiment::run::Outcome::NotHeld => "the hypothesis did NOT hold\n".to_string(),
            chaos::experiment::run::Outcome::SteadyStateFailed => {
                "the steady state did not hold in warm-up; nothing was injected\n".to_string()
            }
            chaos::experiment::run::Outcome::Aborted { reason } => format!("ABORTED: {reason}\n"),
        }
        .as_str(),
    );
    for condition in &report.conditions {
        out.push_str(&format!(
            "  {:4} {:9} {:32} {}\n",
            if condition.held { "ok" } else { "FAIL" },
            condition.phase.name(),
            condition.condition,
            condition.message
        ));
    }
    for fault in &report.faults {
        out.push_str(&format!(
            "  fault {} from {:.1}s to {}: matched {} {} {}{}\n",
            fault.name(),
            fault.start_s,
            fault.end_s.map_or("-".into(), |e| format!("{e:.1}s")),
            fault.matched,
            fault.verb(),
            fault.injected,
            fault
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    for line in &report.rollback {
        out.push_str(&format!("  rollback: {line}\n"));
    }
    out.push_str(&format!("exit code {}\n", report.exit_code));
    out
}

/// Once a second: on a terminal, the block is redrawn in place; otherwise one plain line.
struct LiveView {
    terminal: bool,
    drawn: usize,
}

impl LiveView {
    fn new(terminal: bool) -> Self {
        Self { terminal, drawn: 0 }
    }

    fn show(&mut self, live: &Live) {
        let probes: Vec<String> = live
            .last
            .iter()
            .map(|(name, check)| match check {
                Some(c) if c.ok => format!("{name} ok {:.0}ms", c.latency_ms),
                Some(c) => format!("{name} FAIL {}", c.error.as_deref().unwrap_or("failed")),
                None => format!("{name} -"),
            })
            .collect();
        let faults: Vec<String> = live
            .faults
            .iter()
            .map(|f| {
                format!(
                    "{} {} matched {} injected {}",
                    f.name(),
                    if f.end_s.is_some() { "ended" } else { "armed" },
                    f.matched,
                    f.injected
                )
            })
            .collect();
        let head = format!(
            "{:9} {:6.1}s",
            live.phase.name(),
            live.elapsed.as_secs_f64()
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            // Up over the last block, clear it, draw the new one.
            for _ in 0..self.drawn {
                let _ = write!(stderr, "\x1b[1A\x1b[2K");
            }
            let mut lines = vec![head];
            lines.extend(probes.iter().map(|p| format!("  probe {p}")));
            lines.extend(faults.iter().map(|f| format!("  fault {f}")));
            for line in &lines {
                let _ = writeln!(stderr, "{line}");
            }
            self.drawn = lines.len();
        } else {
            let _ = writeln!(
                stderr,
                "{head} | {} | {}",
                probes.join(", "),
                faults.join(", ")
            );
        }
    }

    fn finish(&mut self) {
        self.drawn = 0;
    }
}
