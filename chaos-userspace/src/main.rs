//! chaos-bpf: wires the command line to the library's engine and front ends.
mod agent;
mod cli;
mod client;
mod experiment_cli;
mod foreground;

use std::process::ExitCode;

use anyhow::Context as _;
use chaos::{
    doctor,
    error::ChaosError,
    inject::{self, Plan},
    metrics::MetricsListener,
    workload::PodNames,
};
use chaos_model::workloads::PodInfo;
use clap::Parser as _;
use cli::{
    Cli, Command, DEFAULT_MAX_DURATION, EventFormat, Origin, on_the_command_line,
    one_line_usage_error, read_run_file,
};
use foreground::RunOptions;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            eprintln!("chaos-bpf: error: {}", one_line_usage_error(&err));
            return ExitCode::from(2);
        }
        Err(help_or_version) => {
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chaos-bpf: error: {err:#}");
            let code = err
                .downcast_ref::<ChaosError>()
                .map_or(1, ChaosError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cleanup => {
            require_root()?;
            let report = chaos::tc_records::cleanup_stale().context("cleaning up")?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Doctor { json } => {
            require_root()?;
            let report = doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Agent {
            listen,
            token_file,
            metrics,
            max_duration,
            max_faults,
            cri,
            kubernetes,
            node_name,
        } => {
            require_root()?;
            let kubernetes_node = match (kubernetes, node_name) {
                (false, _) => None,
                (true, Some(node)) => Some(node),
                (true, None) => Err(ChaosError::input(
                    "--node-name",
                    "missing: --kubernetes arms the ChaosFaults of one node",
                    "--node-name NAME or NODE_NAME (the downward API's spec.nodeName)",
                ))?,
            };
            let metrics = metrics.map(MetricsListener::bind).transpose()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(agent::run(agent::AgentOptions {
                listen,
                token_file,
                metrics,
                max_duration: max_duration.0,
                max_faults,
                names: chaos::workload::PodNames::cri(cri.cri_socket.as_deref()),
                kubernetes_node,
            }))?;
            Ok(())
        }
        Command::Fault {
            agent,
            token_file,
            command,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let client = client::AgentClient { agent, token_file };
            runtime.block_on(client.run(command))?;
            Ok(())
        }
        Command::Crd => {
            print!("{}", chaos_kube::crd_yaml());
            Ok(())
        }
        Command::Schema { of } => {
            let schema = match of {
                cli::SchemaOf::Fault => chaos_model::fault_schema(),
                cli::SchemaOf::Experiment => chaos_model::experiment_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
        Command::Experiment {
            command:
                cli::ExperimentCommand::Run {
                    file,
                    report,
                    junit,
                    html,
                    agent,
                    token_file,
                    cri,
                    dry_run,
                },
        } => {
            let outputs = experiment_cli::Outputs {
                report,
                junit,
                html,
            };
            let code = experiment_cli::run(&file, outputs, agent, token_file, &cri, dry_run)?;
            // The verdict's own exit code: 0 held, 1 not held, 3 aborted.
            std::process::exit(i32::from(code));
        }
        Command::Inject { fault } => {
            let common = fault.common();
            let options = RunOptions {
                duration: None,
                max_duration: common.max_duration.map_or(DEFAULT_MAX_DURATION, |d| d.0),
                events: common.events,
                metrics: common.metrics.map(MetricsListener::bind).transpose()?,
                names: None,
            };
            let model = fault.to_fault();
            let (names, pods) = node_pods(&common.cri, [&model].into_iter())?;
            let plan = inject::plan(&model, pods.as_deref()).map_err(on_the_command_line)?;
            execute(vec![plan], RunOptions { names, ..options })
        }
        Command::Run {
            file,
            duration,
            events,
            events_per_cpu_per_sec,
            metrics,
            max_duration,
            cri,
        } => {
            let metrics = metrics.map(MetricsListener::bind).transpose()?;
            let faults = read_run_file(&file).map_err(on_the_command_line)?;
            let (names, pods) = node_pods(&cri, faults.iter().map(|(_, fault)| fault))?;
            let name = file.display().to_string();
            let plans = faults
                .into_iter()
                .map(|(origin, mut fault)| {
                    // Events are the run's to print: every fault reports, or none.
                    fault.events = events.map(|_: EventFormat| chaos_model::Events {
                        per_cpu_per_sec: events_per_cpu_per_sec,
                    });
                    inject::plan(&fault, pods.as_deref()).map_err(|source| match origin {
                        Origin::Line(line) => on_the_command_line(ChaosError::AtLine {
                            file: name.clone(),
                            line,
                            problem: Box::new(source),
                        }),
                        Origin::Index(index) => ChaosError::InFile {
                            file: name.clone(),
                            problem: Box::new(within(source, &format!("faults[{index}]"))),
                        },
                    })
                })
                .collect::<Result<Vec<Plan>, _>>()?;
            let options = RunOptions {
                duration: duration.map(|d| d.0),
                max_duration: max_duration.map_or(DEFAULT_MAX_DURATION, |d| d.0),
                events,
                metrics,
                names,
            };
            execute(plans, options)
        }
    }
}

/// Where names come from, and the node's pods by name, when some fault's scope names
/// workloads (the CRI socket given, else the runtime's default one).
fn node_pods<'a>(
    cri: &cli::CriArgs,
    faults: impl Iterator<Item = &'a chaos_model::Fault>,
) -> anyhow::Result<(Option<PodNames>, Option<Vec<PodInfo>>)> {
    let faults: Vec<&chaos_model::Fault> = faults.collect();
    let names = PodNames::cri(cri.cri_socket.as_deref());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pods = runtime
        .block_on(PodNames::for_faults(names.as_ref(), faults.iter().copied()))
        .map_err(on_the_command_line)?;
    // Kept only where a scope's names may move (a restarted container): it is followed.
    let follows = faults.iter().any(|f| f.scope.needs_names());
    Ok((names.filter(|_| follows), pods))
}

/// A fault's error inside a fault set, named by its place there (`faults[2].scope.cgroup`).
fn within(error: ChaosError, parent: &str) -> ChaosError {
    match error {
        ChaosError::Field(field) => ChaosError::Field(field.within(parent)),
        ChaosError::Input {
            field,
            problem,
            accepted,
        } => {
            ChaosError::Field(chaos_model::FieldError::new(field, problem, accepted).within(parent))
        }
        other => other,
    }
}

fn require_root() -> Result<(), ChaosError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(ChaosError::NotRoot)
    }
}

/// Arms and runs the planned faults, then prints one summary line per fault.
fn execute(plans: Vec<Plan>, options: RunOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summaries = runtime
        .block_on(foreground::run(plans, options))
        .map_err(on_the_command_line)?;
    for summary in summaries {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
