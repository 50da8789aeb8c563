//! chaos-bpf: parses the command line, builds one async runtime, and hands the command to its
//! front end in the library. Errors become one line and an exit code here.
use std::process::ExitCode;

use anyhow::Context as _;
use chaos::{
    error::ChaosError,
    frontend::{
        self,
        cli::{
            args::{Cli, Command},
            flags::one_line_usage_error,
        },
    },
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
    let outcome = tokio::runtime::Builder::new_multi_thread()
        // Two workers: one may block in the fault service (loading programs) while the other
        // keeps serving (the agent's probes, scrapes and event streams; a run's signals).
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("chaos-bpf: error: {err:#}");
            let code = err
                .downcast_ref::<ChaosError>()
                .map_or(1, ChaosError::exit_code);
            ExitCode::from(code)
        }
    }
}

/// The command's exit code: 0, or an experiment's verdict (0 held, 1 not held, 3 aborted).
async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Cleanup => frontend::maintenance::cleanup()?,
        Command::Doctor { json } => frontend::maintenance::doctor(json)?,
        Command::Crd => print!("{}", chaos_kube::crd_yaml()),
        Command::Schema { of } => frontend::maintenance::schema(of)?,
        Command::Agent(options) => chaos::agent::run(options.into_options()?).await?,
        Command::Fault {
            agent,
            token_file,
            command,
        } => {
            let client = frontend::client::AgentClient { agent, token_file };
            client.run(command).await?;
        }
        Command::Experiment { command } => return Ok(frontend::experiment::run(command).await?),
        Command::Inject { fault } => frontend::foreground::inject(&fault).await?,
        Command::Run(run) => frontend::foreground::run_file(run).await?,
    }
    Ok(0)
}
