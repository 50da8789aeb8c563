use std::process::ExitCode;

use anyhow::Context as _;
use chaos::{
    cli::{Cli, Command, one_line_usage_error},
    doctor,
    error::ChaosError,
    inject,
    runner::RunOptions,
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
            if !nix::unistd::geteuid().is_root() {
                return Err(ChaosError::NotRoot.into());
            }
            let report = chaos::tc_records::cleanup_stale().context("cleaning up")?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Doctor { json } => {
            if !nix::unistd::geteuid().is_root() {
                return Err(ChaosError::NotRoot.into());
            }
            let report = doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Inject { fault } => {
            let mut spec = fault.spec()?;
            let common = fault.common();
            let packet = fault.packet();
            let (scopes, choice) = inject::preflight(
                &mut spec,
                common.cgroup.as_deref(),
                packet.and_then(|p| p.iface.as_deref()),
                packet.and_then(|p| p.netns.as_deref()),
            )?;
            let options = RunOptions {
                duration: common.duration,
                events: common.events,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let summary = runtime.block_on(inject::inject(
                spec,
                scopes,
                choice,
                if common.events.is_some() {
                    common.events_per_cpu_per_sec
                } else {
                    0
                },
                options,
            ))?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
    }
}
