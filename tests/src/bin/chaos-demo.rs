//! The demo: a small service (HTTP and a UDP echo) in one cgroup and its client in another, then
//! connect-error and drop against the client's cgroup, with the loss the client measured beside
//! the share chaos-bpf says it injected, per phase.
//! It checks its own result, so `cargo xtask test` can run it as a test. `cargo xtask demo`
//! builds it after setup and runs it as a subprocess, so the xtask never links chaos-bpf's crates.
use std::{
    io::{BufRead, BufReader},
    path::Path,
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

/// How the client talks to the service in a phase. HTTP opens a connection per request, so each
/// request is one connect() for connect-error. For drop, each UDP request is exactly one
/// datagram out of the client's cgroup with a 50 ms answer timeout, so the requests the client
/// saw fail are the packets lost: its failure share should match chaos-bpf's injected share.
#[derive(Clone, Copy)]
enum Load {
    Http,
    Udp,
}

struct Phase {
    name: &'static str,
    load: Load,
    fault: Option<&'static [&'static str]>,
    seconds: u64,
}

const PHASES: &[Phase] = &[
    Phase {
        name: "baseline (HTTP)",
        load: Load::Http,
        fault: None,
        seconds: 3,
    },
    Phase {
        name: "connect-error ECONNREFUSED p=0.5",
        load: Load::Http,
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
        name: "baseline (UDP)",
        load: Load::Udp,
        fault: None,
        seconds: 3,
    },
    Phase {
        name: "drop egress p=0.2",
        load: Load::Udp,
        fault: Some(&["drop", "--direction", "egress", "--probability", "0.2"]),
        seconds: 4,
    },
    Phase {
        name: "after (reverted)",
        load: Load::Http,
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

    /// What the client measured: the share of its requests that failed.
    fn client_loss(&self) -> f64 {
        1.0 - self.success_rate()
    }

    /// What chaos-bpf says: injected / matched, from its summary.
    fn injected_share(&self) -> Option<f64> {
        let summary = self.chaos.as_ref()?;
        let matched = summary["matched"].as_u64()?;
        Some(summary["injected"].as_u64()? as f64 / matched.max(1) as f64)
    }
}

/// The service's two listeners.
struct Service {
    http: String,
    udp: String,
    children: Vec<Child>,
}

fn start_server(
    cgroup: &TestCgroup,
    testkit: &Path,
    args: &[&str],
) -> anyhow::Result<(Child, String)> {
    let mut child = cgroup
        .command(testkit)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the demo server {args:?}"))?;
    let mut ready = String::new();
    BufReader::new(child.stdout.as_mut().context("server stdout")?).read_line(&mut ready)?;
    let addr = ready
        .trim()
        .strip_prefix("ready ")
        .with_context(|| format!("server {args:?} did not start"))?
        .to_string();
    Ok((child, addr))
}

fn main() -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the demo attaches eBPF programs: run it as root (sudo -E cargo xtask demo)"
    );
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    // Ctrl-C lets the current phase end and the cleanup run instead of leaving the cgroup behind.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));

    let service_cgroup = TestCgroup::new("demo-service");
    let client_cgroup = TestCgroup::new("demo-client");
    let testkit = chaos_tests::testkit_bin();
    let chaos = chaos_tests::chaos_bin();

    let (http_server, http) =
        start_server(&service_cgroup, &testkit, &["http-serve", "127.0.0.1:0"])?;
    let (udp_server, udp) = start_server(&service_cgroup, &testkit, &["udp-echo", "127.0.0.1:0"])?;
    let mut service = Service {
        http,
        udp,
        children: vec![http_server, udp_server],
    };
    println!(
        "demo: service (HTTP {}, UDP echo {}) in cgroup {}\n      client in cgroup {}, the faults' target\n",
        service.http,
        service.udp,
        service_cgroup.path.display(),
        client_cgroup.path.display()
    );

    let mut results = Vec::new();
    for phase in PHASES {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        println!("demo: phase {} ({} s)", phase.name, phase.seconds);
        results.push(run_phase(
            phase,
            &client_cgroup,
            &chaos,
            &testkit,
            &service,
        )?);
    }
    for child in &mut service.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted; cleaned up");
    }

    println!(
        "\n{:34} {:>6} {:>7} {:>12}   {:>16} {:>15}",
        "phase", "ok", "failed", "client loss", "matched/injected", "injected share"
    );
    for (phase, result) in PHASES.iter().zip(&results) {
        let (counts, share) = match (&result.chaos, result.injected_share()) {
            (Some(s), Some(share)) => (
                format!("{}/{}", s["matched"], s["injected"]),
                format!("{:.1}%", share * 100.0),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:34} {:>6} {:>7} {:>11.1}%   {counts:>16} {share:>15}",
            phase.name,
            result.ok,
            result.failed,
            result.client_loss() * 100.0
        );
    }
    check(&results)
}

fn run_phase(
    phase: &Phase,
    cgroup: &TestCgroup,
    chaos: &Path,
    testkit: &Path,
    service: &Service,
) -> anyhow::Result<PhaseResult> {
    let fault = match phase.fault {
        Some(args) => Some(start_fault(chaos, &cgroup.path, args)?),
        None => None,
    };
    let (command, addr) = match phase.load {
        Load::Http => ("http-load", &service.http),
        Load::Udp => ("udp-load", &service.udp),
    };
    let load = cgroup
        .command(testkit)
        .args([command, addr, &(phase.seconds * 1000).to_string()])
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

/// The demo is also a test: each fault must visibly hurt the client, by about the share
/// chaos-bpf injected, and the revert must heal it.
fn check(results: &[PhaseResult]) -> anyhow::Result<()> {
    let [http_baseline, connect_error, udp_baseline, drop, after] = results else {
        bail!("not every phase ran");
    };
    for (name, phase) in [
        ("HTTP baseline", http_baseline),
        ("UDP baseline", udp_baseline),
    ] {
        ensure!(phase.success_rate() > 0.99, "the {name} is not healthy");
    }
    ensure!(
        after.success_rate() > 0.99,
        "the service did not recover after the faults were removed"
    );
    for (name, phase) in [("connect-error", connect_error), ("drop", drop)] {
        let share = phase.injected_share().unwrap_or(0.0);
        ensure!(share > 0.0, "{name} injected nothing");
        // The client's loss is the injected share, give or take what a few hundred requests
        // spread (and a reply that arrives after its 50 ms timeout).
        ensure!(
            (phase.client_loss() - share).abs() < 0.08,
            "{name}: the client lost {:.1}% but chaos-bpf injected {:.1}%",
            phase.client_loss() * 100.0,
            share * 100.0
        );
    }
    println!(
        "\ndemo: each fault cost the client what chaos-bpf says it injected, and the service recovered after revert"
    );
    Ok(())
}
