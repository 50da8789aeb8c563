use std::process::ExitCode;

use anyhow::Context as _;
use chaos::{
    cli::{Cli, Command, DEFAULT_MAX_DURATION, one_line_usage_error, read_experiment},
    doctor,
    error::ChaosError,
    inject::{self, Plan},
    metrics::MetricsListener,
    runner::{EventFormat, RunOptions},
};
use clap::Parser as _;

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
        Command::Inject { fault } => {
            let common = fault.common();
            let options = RunOptions {
                duration: None,
                max_duration: common.max_duration.unwrap_or(DEFAULT_MAX_DURATION),
                events: common.events,
                metrics: common.metrics.map(MetricsListener::bind).transpose()?,
            };
            let budget = common.events_budget();
            execute(vec![inject::plan(&fault)?], budget, options)
        }
        Command::Run {
            file,
            duration,
            events,
            events_per_cpu_per_sec,
            metrics,
            max_duration,
        } => {
            let metrics = metrics.map(MetricsListener::bind).transpose()?;
            let faults = read_experiment(&file)?;
            let plans = faults
                .iter()
                .map(|(line, fault)| {
                    inject::plan(fault).map_err(|source| ChaosError::AtLine {
                        file: file.display().to_string(),
                        line: *line,
                        source: Box::new(source),
                    })
                })
                .collect::<Result<Vec<Plan>, _>>()?;
            let budget = events.map_or(0, |_: EventFormat| events_per_cpu_per_sec);
            let options = RunOptions {
                duration,
                max_duration: max_duration.unwrap_or(DEFAULT_MAX_DURATION),
                events,
                metrics,
            };
            execute(plans, budget, options)
        }
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
fn execute(plans: Vec<Plan>, events_per_sec: u32, options: RunOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summaries = runtime.block_on(inject::run(plans, events_per_sec, options))?;
    for summary in summaries {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
