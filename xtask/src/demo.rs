//! The demo: a small HTTP service and a client loop in their own cgroup, then connect-error and
//! drop against it, with the client's success rate beside chaos-bpf's counters per phase.
//! It checks its own result, so `cargo xtask test` can run it as a test.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use chaos_tests::TestCgroup;

use anyhow::{Context, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Phase {
    name: &'static str,
    fault: Option<&'static [&'static str]>,
    seconds: u64,
}

const PHASES: &[Phase] = &[
    Phase {
        name: "baseline",
        fault: None,
        seconds: 3,
    },
    Phase {
        name: "connect-error ECONNREFUSED p=0.5",
        fault: Some(&[
            "connect-error",
            "--errno",
            "ECONNREFUSED",
            "--probability",
            "0.5",
        ]),
        seconds: 4,
    },
    Phase {
        name: "drop egress p=0.2",
        fault: Some(&["drop", "--direction", "egress", "--probability", "0.2"]),
        seconds: 4,
    },
    Phase {
        name: "after (reverted)",
        fault: None,
        seconds: 3,
    },
];

struct PhaseResult {
    ok: u64,
    failed: u64,
    chaos: Option<serde_json::Value>,
}

impl PhaseResult {
    fn success_rate(&self) -> f64 {
        self.ok as f64 / (self.ok + self.failed).max(1) as f64
    }
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

pub fn run() -> anyhow::Result<()> {
    ensure!(
        crate::util::is_root(),
        "the demo attaches eBPF programs: run it as root (sudo -E cargo xtask demo)"
    );
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    // Ctrl-C lets the current phase end and the cleanup run instead of leaving the cgroup behind.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));

    let cgroup = TestCgroup::new("demo");
    let testkit = target_dir().join("chaos-testkit");
    let chaos = target_dir().join("chaos-bpf");

    let mut server = cgroup
        .command(&testkit)
        .args(["http-serve", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the demo HTTP server")?;
    let mut ready = String::new();
    BufReader::new(server.stdout.as_mut().context("server stdout")?).read_line(&mut ready)?;
    let addr = ready
        .trim()
        .strip_prefix("ready ")
        .context("server did not start")?
        .to_string();
    println!(
        "demo: HTTP service and client in cgroup {} (server {addr})\n",
        cgroup.path.display()
    );

    let mut results = Vec::new();
    for phase in PHASES {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        println!("demo: phase {} ({} s)", phase.name, phase.seconds);
        results.push(run_phase(phase, &cgroup, &chaos, &testkit, &addr)?);
    }
    let _ = server.kill();
    let _ = server.wait();
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted; cleaned up");
    }

    println!(
        "\n{:34} {:>8} {:>8} {:>9}   chaos-bpf matched / injected",
        "phase", "ok", "failed", "success"
    );
    for (phase, result) in PHASES.iter().zip(&results) {
        let chaos = result.chaos.as_ref().map_or("-".to_string(), |s| {
            format!("{} / {}", s["matched"], s["injected"])
        });
        println!(
            "{:34} {:>8} {:>8} {:>8.1}%   {chaos}",
            phase.name,
            result.ok,
            result.failed,
            result.success_rate() * 100.0
        );
    }
    check(&results)
}

fn run_phase(
    phase: &Phase,
    cgroup: &TestCgroup,
    chaos: &Path,
    testkit: &Path,
    addr: &str,
) -> anyhow::Result<PhaseResult> {
    let fault = match phase.fault {
        Some(args) => Some(start_fault(chaos, &cgroup.path, args)?),
        None => None,
    };
    let load = cgroup
        .command(testkit)
        .args(["http-load", addr, &(phase.seconds * 1000).to_string()])
        .output()
        .context("running the client loop")?;
    let chaos_summary = match fault {
        Some(child) => Some(stop_fault(child)?),
        None => None,
    };
    let client: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&load.stdout)
            .lines()
            .last()
            .unwrap_or("{}")
            .as_bytes(),
    )?;
    Ok(PhaseResult {
        ok: client["ok"].as_u64().unwrap_or(0),
        failed: client["failed"].as_u64().unwrap_or(0),
        chaos: chaos_summary,
    })
}

fn start_fault(chaos: &Path, cgroup: &Path, args: &[&str]) -> anyhow::Result<Child> {
    let mut child = Command::new(chaos)
        .arg("inject")
        .arg(args[0])
        .arg("--cgroup")
        .arg(cgroup)
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting chaos-bpf")?;
    let stderr = child.stderr.take().context("chaos-bpf stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        println!("  {line}");
        if line.contains(" armed ") {
            // Keep draining stderr (status lines) so chaos-bpf never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(child);
        }
    }
    let status = child.wait()?;
    bail!("chaos-bpf exited before arming: {status}")
}

fn stop_fault(mut child: Child) -> anyhow::Result<serde_json::Value> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let mut stdout = String::new();
    std::io::Read::read_to_string(
        child.stdout.as_mut().context("chaos-bpf stdout")?,
        &mut stdout,
    )?;
    let status = child.wait()?;
    ensure!(status.success(), "chaos-bpf failed: {status}");
    let summary = stdout.lines().last().context("no summary")?;
    println!("  summary {summary}");
    Ok(serde_json::from_str(summary)?)
}

/// The demo is also a test: each fault must visibly hurt the client, and the revert must heal it.
fn check(results: &[PhaseResult]) -> anyhow::Result<()> {
    let [baseline, connect_error, drop, after] = results else {
        bail!("not every phase ran");
    };
    ensure!(baseline.success_rate() > 0.99, "baseline is not healthy");
    ensure!(
        after.success_rate() > 0.99,
        "the service did not recover after the faults were removed"
    );
    for (name, phase) in [("connect-error", connect_error), ("drop", drop)] {
        let injected = phase
            .chaos
            .as_ref()
            .and_then(|s| s["injected"].as_u64())
            .unwrap_or(0);
        ensure!(injected > 0, "{name} injected nothing");
        ensure!(
            phase.success_rate() < baseline.success_rate(),
            "{name} did not affect the client"
        );
    }
    println!(
        "\ndemo: every fault hit the client, chaos-bpf counted it, and the service recovered after revert"
    );
    Ok(())
}
