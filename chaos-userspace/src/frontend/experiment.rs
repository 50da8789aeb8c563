//! `chaos-bpf experiment run FILE`: reads the experiment, runs it in this process's fault
//! service or a node agent, shows it live on the terminal, and writes the verdict's files.
use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::Duration,
};

use chaos_model::experiment::{Experiment, parse_experiment};

use crate::{
    engine::EngineConfig,
    error::{ChaosError, Result},
    experiment::{Live, ServiceInjector, report, run::Report},
    frontend::{
        cli::args::ExperimentCommand,
        client::{AgentClient, AgentInjector},
        maintenance::require_root,
    },
    service::FaultService,
    termination::Termination,
    workload::PodNames,
};

/// Runs the experiment; the verdict's exit code (0 held, 1 not held, 3 aborted).
pub async fn run(command: ExperimentCommand) -> Result<u8> {
    let ExperimentCommand::Run {
        file,
        report,
        junit,
        html,
        agent,
        token_file,
        cri,
        dry_run,
    } = command;
    let name = file.display().to_string();
    let text = std::fs::read_to_string(&file)
        .map_err(|err| ChaosError::io(format!("reading {name}"), err))?;
    // file:line:column: field: problem; accepted: ... (exit 2)
    let mut experiment =
        parse_experiment(&text).map_err(|err| ChaosError::Usage(format!("{name}:{err}")))?;
    if dry_run {
        for timed in &mut experiment.faults {
            timed.fault.dry_run = true;
        }
    }
    let termination = Termination::install()?;
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
    let report_of_run = match agent {
        Some(agent) => {
            let mut injector = AgentInjector {
                client: AgentClient { agent, token_file },
                armed: Vec::new(),
            };
            let report = termination
                .unless(crate::experiment::run(&experiment, &mut injector, |live| {
                    view.show(live)
                }))
                .await;
            // Interrupted: what it armed in the agent goes now, not at its deadline.
            injector.stop_armed().await;
            report
        }
        None => {
            require_root()?;
            let service = FaultService::new(
                EngineConfig {
                    max_duration: longest(&experiment),
                    max_faults: 1024,
                    history: usize::MAX,
                },
                PodNames::cri(cri.cri_socket.as_deref()),
            );
            // The service's events are the report's business, not the terminal's; but for its
            // warnings.
            tokio::spawn(crate::service::events::each_warning(
                service.every_event(),
                |message| eprintln!("chaos-bpf: {message}"),
            ));
            let mut injector = ServiceInjector::new(service);
            termination
                .unless(crate::experiment::run(&experiment, &mut injector, |live| {
                    view.show(live)
                }))
                .await
        }
    };
    let outcome = match report_of_run {
        Some(outcome) => outcome.map_err(in_file)?,
        None => {
            // The run's future is gone, and with it the service's faults (its objects detach
            // as they drop); an agent's are stopped by their deadlines.
            eprintln!("\nchaos-bpf: interrupted: every fault was reverted; no verdict");
            return Ok(3);
        }
    };
    view.finish();
    eprint!("{}", summary(&outcome));
    write_outputs(
        &outcome,
        &[
            (report, Output::Json),
            (junit, Output::Junit),
            (html, Output::Html),
        ],
    )?;
    Ok(outcome.exit_code)
}

/// The longest a fault of this experiment can live: the whole injection phase.
fn longest(experiment: &Experiment) -> Duration {
    experiment.schedule.duration.0 + Duration::from_secs(1)
}

enum Output {
    Json,
    Junit,
    Html,
}

fn write_outputs(report: &Report, outputs: &[(Option<PathBuf>, Output)]) -> Result<()> {
    for (path, output) in outputs {
        let Some(path) = path else { continue };
        let contents = match output {
            Output::Json => serde_json::to_string_pretty(report)
                .map_err(|err| ChaosError::io("encoding the report", std::io::Error::other(err)))?,
            Output::Junit => report::junit(report),
            Output::Html => report::html(report),
        };
        std::fs::write(path, contents)
            .map_err(|err| ChaosError::io(format!("writing {}", path.display()), err))?;
    }
    Ok(())
}

/// The verdict for people: each condition, the faults, the outcome.
fn summary(report: &Report) -> String {
    let mut out = format!("\nexperiment {}: ", report.name);
    out.push_str(
        match &report.outcome {
            crate::experiment::run::Outcome::Held => "the hypothesis held\n".to_string(),
            crate::experiment::run::Outcome::NotHeld => "the hypothesis did NOT hold\n".to_string(),
            crate::experiment::run::Outcome::SteadyStateFailed => {
                "the steady state did not hold in warm-up; nothing was injected\n".to_string()
            }
            crate::experiment::run::Outcome::Aborted { reason } => format!("ABORTED: {reason}\n"),
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
