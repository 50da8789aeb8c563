//! `cargo xtask setup | test | demo | bench`: everything a fresh machine needs, in one place.
//! Every task runs `setup` first, then drives cargo and the project's binaries as subprocesses:
//! nothing here links the crates whose build needs the eBPF toolchain.
mod kernel_build;
mod setup;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "chaos-bpf project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (idempotent; says what it installs).
    Setup,
    /// Setup, then formatting, clippy, unit tests, root integration tests, the demo and the VM
    /// suite.
    Test {
        /// Only the VM suite.
        #[arg(long)]
        vm: bool,
        /// Everything but the VM suite.
        #[arg(long, conflicts_with = "vm")]
        no_vm: bool,
        /// Extra arguments for `cargo test` (a test name filter, for example).
        #[arg(trailing_var_arg = true)]
        cargo_test_args: Vec<String>,
    },
    /// Setup, then run connect-error and drop against a demo service in its own cgroup.
    Demo,
    /// Measure overhead, precision, latency and memory beside iptables and nft (as root).
    Bench,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test {
            vm,
            no_vm,
            cargo_test_args,
        } => {
            setup::run()?;
            if !vm {
                test(&cargo_test_args)?;
            }
            if !no_vm && cargo_test_args.is_empty() {
                println!("\n== VM suite: real Debian kernels under qemu");
                vm::run()?;
            }
            Ok(())
        }
        Task::Bench => {
            setup::run()?;
            bench()
        }
        Task::Demo => {
            setup::run()?;
            demo()
        }
    }
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    util::cargo(&["fmt", "--all", "--", "--check"])?;
    util::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    // The root tests run the chaos-bpf and chaos-testkit binaries: build them first.
    util::cargo(&["build", "--quiet"])?;
    let mut args = vec!["test", "--workspace", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    util::cargo_as_root(&args)?;
    if extra.is_empty() {
        println!("\n== demo (tested: it fails unless the faults visibly hit the demo service)");
        demo()?;
    }
    Ok(())
}

/// Builds chaos-bpf, the testkit and the demo, then runs the demo as root.
fn demo() -> anyhow::Result<()> {
    util::cargo(&["build", "--quiet"])?;
    util::run_as_root(&util::target_dir().join("debug/chaos-demo"), &[])
}

/// The tools to compare against, release builds (arming 10,000 rules and chaos-bpf's footprint
/// as users would run it), the in-VM part (the VM plumbing lives here), then the host part.
fn bench() -> anyhow::Result<()> {
    setup::debian_packages(&["iperf3", "iptables", "nftables"])?;
    util::cargo(&["build", "--quiet", "--release", "--bins"])?;
    // CHAOS_BENCH_ONLY without "delay" skips the VM (the host sections read it too).
    let vm_result = match std::env::var("CHAOS_BENCH_ONLY") {
        Ok(only) if !only.split(',').any(|s| s == "delay") => serde_json::Value::Null,
        _ => {
            println!("bench: delay beside netem in a VM first (Debian 6.12 has both)");
            vm::bench()?
        }
    };
    let out_dir = util::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let vm_file = out_dir.join("vm.json");
    std::fs::write(&vm_file, vm_result.to_string())?;
    util::run_as_root(
        &util::target_dir().join("release/chaos-bench"),
        &[vm_file.as_os_str()],
    )
}
