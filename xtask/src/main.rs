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
    /// Setup, then formatting, clippy, unit tests, root integration tests, the demo, the VM
    /// suite and the bench's quick pass (so a broken bench fails CI).
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
            let whole = !vm && !no_vm && cargo_test_args.is_empty();
            if !vm {
                test(&cargo_test_args)?;
            }
            let mut vm_bench = None;
            if !no_vm && cargo_test_args.is_empty() {
                println!("\n== VM suite: real Debian kernels under qemu");
                vm_bench = vm::run(whole)?;
            }
            if whole {
                println!("\n== bench, quick pass (each section once, small counts)");
                bench_quick(vm_bench.unwrap_or_default())?;
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
    run_bench("release", vm_result, false)
}

/// The bench's quick pass, as `cargo xtask test` runs it: the debug build, every host section
/// once with small counts, beside the in-VM result of the VM suite's shared boot. Its figures
/// are not for the README; it proves the bench runs to the end.
fn bench_quick(vm_result: serde_json::Value) -> anyhow::Result<()> {
    setup::debian_packages(&["iperf3", "iptables", "nftables"])?;
    util::cargo(&["build", "--quiet", "--bins"])?;
    run_bench("debug", vm_result, true)
}

fn run_bench(profile: &str, vm_result: serde_json::Value, quick: bool) -> anyhow::Result<()> {
    let out_dir = util::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let vm_file = out_dir.join(if quick { "vm-quick.json" } else { "vm.json" });
    std::fs::write(&vm_file, vm_result.to_string())?;
    util::run_as_root_with(
        &util::target_dir().join(profile).join("chaos-bench"),
        &[vm_file.as_os_str()],
        &[("CHAOS_BENCH_QUICK", if quick { "1" } else { "0" })],
    )
}
