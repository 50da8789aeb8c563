//! `cargo xtask bench`: what chaos-bpf costs and how precise it is, beside the tools users would
//! otherwise pick (iptables `statistic`, nft `numgen`, netem), measured in one run on one machine.
//! Ratios are taken pair by pair (baseline, condition, baseline, condition ...) because these
//! machines drift; every figure has min, median and max over the rounds. Nothing here is a test
//! assertion: it reports, and says where a goal is missed.
//!
//! `cargo xtask bench` installs the tools, builds this binary in release mode beside chaos-bpf,
//! runs the in-VM part (it owns the VM plumbing) and passes its JSON result as the only argument.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use chaos_tests::{ChaosRun, Netns, TempFile, TestCgroup, VethPair, tcp_sink};
use serde_json::json;

const ROUNDS: usize = 3;
/// The idle-overhead ratios are the noisiest figures here: more, shorter rounds.
const IDLE_ROUNDS: usize = 5;
const MEASURE_SECONDS: &str = "2";
const MEASURE_MS: &str = "2000";
const PRECISION_DATAGRAMS: u64 = 100_000;
const RULE_COUNTS: [usize; 3] = [1, 100, 10_000];
/// The idle-overhead goal: at least this fraction of the no-program rate.
const IDLE_GOAL: f64 = 0.97;

/// min, median, max of a series.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            min: values.first().copied().unwrap_or(f64::NAN),
            median: values.get(values.len() / 2).copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let precision = f.precision().unwrap_or(3);
        write!(
            f,
            "{:.p$} ({:.p$}..{:.p$})",
            self.median,
            self.min,
            self.max,
            p = precision
        )
    }
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn exec(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// The report as it is built: JSON for target/bench/bench.json, Markdown for the README.
#[derive(Default)]
struct Report {
    json: BTreeMap<&'static str, serde_json::Value>,
    markdown: String,
    missed: Vec<String>,
}

impl Report {
    fn section(&mut self, title: &str, header: &[&str]) {
        let _ = write!(
            self.markdown,
            "\n**{title}**\n\n| {} |\n|",
            header.join(" | ")
        );
        for _ in header {
            self.markdown.push_str(" --- |");
        }
        self.markdown.push('\n');
        println!("\n  {title}");
    }

    fn row(&mut self, cells: &[String]) {
        let _ = writeln!(self.markdown, "| {} |", cells.join(" | "));
        println!("    {}", cells.join("  |  "));
    }
}

fn main() -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the bench attaches eBPF programs and netfilter rules: run it as root"
    );
    let vm_result = std::env::args()
        .nth(1)
        .context("usage: chaos-bench VM-RESULT.json (cargo xtask bench runs it)")?;
    let vm_result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&vm_result).with_context(|| format!("reading {vm_result}"))?,
    )?;
    let started = Instant::now();
    let mut report = Report::default();

    // CHAOS_BENCH_ONLY=arm,memory runs just those sections (while iterating on one figure).
    let only = std::env::var("CHAOS_BENCH_ONLY").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w == name))
    };
    type Section = fn(&mut Report) -> anyhow::Result<()>;
    let sections: [(&str, &str, Section); 5] = [
        (
            "idle",
            "idle overhead: TCP throughput (iperf3) and request rate (tcp-rr)",
            idle_overhead,
        ),
        (
            "drop",
            "a 10% UDP drop: chaos-bpf, iptables statistic, nft numgen",
            drop_peers,
        ),
        (
            "connect",
            "connect() cost with a non-matching connect-error attached",
            connect_cost,
        ),
        (
            "arm",
            "arm and disarm latency: the CLI, the agent, iptables",
            arm_latency,
        ),
        ("memory", "memory with 10,000 rules", memory),
    ];
    for (index, (name, what, section)) in sections.iter().enumerate() {
        if wanted(name) {
            println!("bench: {}/6 {what}", index + 1);
            section(&mut report)?;
        }
    }
    if wanted("delay") {
        println!("bench: 6/6 delay: chaos-bpf and netem in a VM (measured before, by the xtask)");
        delay_in_vm(&mut report, vm_result);
    }

    let machine = machine();
    let seconds = started.elapsed().as_secs();
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let json = json!({
        "machine": machine,
        "seconds": seconds,
        "results": report.json,
        "goals_missed": report.missed,
    });
    std::fs::write(
        out_dir.join("bench.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut markdown = format!(
        "Measured on {machine}, in {seconds} s.\n{}",
        report.markdown
    );
    if !report.missed.is_empty() {
        let _ = write!(
            markdown,
            "\nGoals missed:\n\n- {}\n",
            report.missed.join("\n- ")
        );
    }
    std::fs::write(out_dir.join("bench.md"), &markdown)?;
    println!("\nbench: {machine}, {seconds} s; wrote target/bench/bench.json and bench.md");
    for missed in &report.missed {
        println!("bench: goal missed: {missed}");
    }
    Ok(())
}

fn machine() -> String {
    let uname = |flag: &str| {
        Command::new("uname")
            .arg(flag)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), kernel {} {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        uname("-r"),
        uname("-m"),
    )
}

/// `count` drop rules for destinations the benchmark traffic never has (10.250.0.0/16).
fn other_destinations(iface: &str, count: usize, extra: &str) -> String {
    (0..count)
        .map(|i| {
            format!(
                "drop --iface {iface} {extra} --dst 10.250.{}.{}\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect()
}

/// Client and server are held to their own CPUs (client 1, server 0): on a small VM the
/// scheduler otherwise moves them around and the rates swing by a factor of four.
const CLIENT_CPU: &str = "1";
const SERVER_CPU: usize = 0;

fn iperf_gbps(net: &VethPair) -> anyhow::Result<f64> {
    let output = net
        .a
        .command("iperf3")
        .args(["-c", &net.b_addr, "-t", MEASURE_SECONDS, "-J", "-A"])
        .arg(format!("{CLIENT_CPU},{SERVER_CPU}"))
        .output()?;
    ensure!(
        output.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3 JSON")
}

fn requests_per_second(net: &VethPair, server: &str) -> anyhow::Result<f64> {
    let output = net
        .a
        .command("taskset")
        .args(["-c", CLIENT_CPU])
        .arg(chaos_tests::testkit_bin())
        .args(["tcp-rr", server, MEASURE_MS])
        .output()?;
    ensure!(
        output.status.success(),
        "tcp-rr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    chaos_tests::last_json_line(&output.stdout)["per_second"]
        .as_f64()
        .context("tcp-rr")
}

/// Throughput and request rate with chaos-bpf attached in both directions but firing on
/// nothing, each as a ratio to no program, measured in alternation.
fn idle_overhead(report: &mut Report) -> anyhow::Result<()> {
    let net = VethPair::new("bench-idle");
    let mut iperf = net
        .b
        .command("iperf3")
        .args(["-s", "-B", &net.b_addr])
        .stdout(Stdio::null())
        .spawn()
        .context("iperf3 -s")?;
    let (mut echo, echo_addr) = net
        .b
        .serve_on_cpu(SERVER_CPU, &["tcp-echo", &format!("{}:0", net.b_addr)]);
    std::thread::sleep(Duration::from_millis(300));
    // The control row runs no chaos-bpf at all: its spread is this machine's noise floor.
    let mut conditions: Vec<(String, Option<String>)> = vec![
        ("control: no program against no program".into(), None),
        (
            "1 rule on this traffic's addresses, another port (checked, never fires)".into(),
            Some(format!(
                "drop --iface {} --direction both --dst {},{} --dport 9\n",
                net.a_if, net.b_addr, net.a_addr
            )),
        ),
    ];
    for n in RULE_COUNTS {
        let plural = if n == 1 { "" } else { "s" };
        conditions.push((
            format!("{n} rule{plural} for other destinations"),
            Some(other_destinations(&net.a_if, n, "--direction both")),
        ));
    }
    report.section(
        "Idle overhead: veth between two namespaces, chaos-bpf on both directions",
        &[
            "condition",
            "TCP Gbit/s",
            "ratio",
            "requests/s (64 B)",
            "ratio",
            "ns per packet in chaos-bpf's programs",
        ],
    );
    let mut rows = serde_json::Map::new();
    let mut control = None;
    for (name, rules) in conditions {
        let file = rules.map(|rules| TempFile::new("bench-idle", &rules));
        let (mut gbps, mut gbps_ratio, mut rps, mut rps_ratio) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..IDLE_ROUNDS {
            let (base_gbps, base_rps) = (iperf_gbps(&net)?, requests_per_second(&net, &echo_addr)?);
            let run = file.as_ref().map(|f| net.a.start_chaos(&["run", f.arg()]));
            let (with_gbps, with_rps) = (iperf_gbps(&net)?, requests_per_second(&net, &echo_addr)?);
            if let Some(run) = run {
                run.stop();
            }
            gbps.push(with_gbps);
            gbps_ratio.push(with_gbps / base_gbps);
            rps.push(with_rps);
            rps_ratio.push(with_rps / base_rps);
        }
        let (gbps, gbps_ratio) = (Spread::of(gbps), Spread::of(gbps_ratio));
        let (rps, rps_ratio) = (Spread::of(rps), Spread::of(rps_ratio));
        let program_ns = match &file {
            Some(file) => Some(program_ns_per_packet(&net, file, &echo_addr)?),
            None => {
                control = Some((gbps_ratio, rps_ratio));
                None
            }
        };
        if let (Some(_), Some((control_gbps, control_rps))) = (program_ns, control) {
            for (what, ratio, noise) in [
                ("throughput", gbps_ratio, control_gbps),
                ("request rate", rps_ratio, control_rps),
            ] {
                if ratio.median < IDLE_GOAL {
                    report.missed.push(format!(
                        "idle {what} with {name}: median ratio {:.3} < {IDLE_GOAL} (the control \
                         row's own spread on this machine: {noise:.3})",
                        ratio.median
                    ));
                }
            }
        }
        report.row(&[
            name.clone(),
            format!("{gbps:.2}"),
            format!("{gbps_ratio:.3}"),
            format!("{rps:.0}"),
            format!("{rps_ratio:.3}"),
            program_ns.map_or("-".into(), |ns| format!("{ns:.0}")),
        ]);
        rows.insert(
            name,
            json!({ "gbps": gbps, "gbps_ratio": gbps_ratio, "requests_per_s": rps, "requests_ratio": rps_ratio, "program_ns_per_packet": program_ns }),
        );
    }
    let _ = (iperf.kill(), echo.kill());
    report.json.insert("idle_overhead", rows.into());
    Ok(())
}

/// What chaos-bpf's programs themselves cost a packet, from the kernel's own accounting
/// (BPF_ENABLE_STATS: run time and run count per program) over a request/response run. Measured
/// apart from the ratios, because the accounting adds two clock reads per run.
fn program_ns_per_packet(net: &VethPair, rules: &TempFile, echo: &str) -> anyhow::Result<f64> {
    let run = net.a.start_chaos(&["run", rules.arg()]);
    let ids = run.program_ids();
    let totals = || -> (u64, u64) {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| ids.contains(&p.id()))
            .fold((0, 0), |(ns, runs), p| {
                (ns + p.run_time().as_nanos() as u64, runs + p.run_count())
            })
    };
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let before = totals();
    requests_per_second(net, echo)?;
    let after = totals();
    drop(stats);
    run.stop();
    let runs = after.1.saturating_sub(before.1).max(1);
    Ok(after.0.saturating_sub(before.0) as f64 / runs as f64)
}

/// An unpaced UDP flood from a to b: (datagrams/s, sender CPU ns per datagram).
fn flood(net: &VethPair) -> anyhow::Result<(f64, f64)> {
    let (mut sink, addr) = net.b.serve(&[
        "udp-recv",
        &format!("{}:0", net.b_addr),
        "4000000000",
        "500",
    ]);
    let result = net.a.testkit(None, &["udp-flood", &addr, "2000"]);
    let _ = sink.kill();
    let _ = sink.wait();
    Ok((
        result["per_second"].as_f64().context("per_second")?,
        result["cpu_ns_per_datagram"].as_f64().context("cpu")?,
    ))
}

/// A 10% drop set up each tool's own way, behind `rules - 1` rules that do not match.
struct DropRule<'a> {
    net: &'a VethPair,
    tool: &'static str,
    run: Option<ChaosRun>,
    _file: Option<TempFile>,
}

impl<'a> DropRule<'a> {
    fn install(net: &'a VethPair, tool: &'static str, rules: usize) -> anyhow::Result<Self> {
        let fillers: Vec<String> = (0..rules - 1)
            .map(|i| format!("10.250.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let mut rule = Self {
            net,
            tool,
            run: None,
            _file: None,
        };
        match tool {
            "chaos-bpf" => {
                let mut lines = other_destinations(&net.a_if, rules - 1, "--proto udp");
                lines.push_str(&format!(
                    "drop --iface {} --proto udp --probability 0.1 --dst {}\n",
                    net.a_if, net.b_addr
                ));
                let file = TempFile::new("bench-drop", &lines);
                rule.run = Some(net.a.start_chaos(&["run", file.arg()]));
                rule._file = Some(file);
            }
            "iptables" => {
                let mut text = String::from("*filter\n");
                for address in &fillers {
                    let _ = writeln!(text, "-A OUTPUT -d {address}/32 -j DROP");
                }
                text.push_str(
                    "-A OUTPUT -p udp -m statistic --mode random --probability 0.1 -j DROP\nCOMMIT\n",
                );
                in_ns(&net.a, "iptables-restore", &[], Some(&text))?;
            }
            "nft" => {
                let mut script = String::from(
                    "table inet chaosbench {\n chain out {\n  type filter hook output priority 0;\n",
                );
                for address in &fillers {
                    let _ = writeln!(script, "  ip daddr {address} drop");
                }
                script.push_str("  meta l4proto udp numgen random mod 10 0 drop\n }\n}\n");
                in_ns(&net.a, "nft", &["-f", "-"], Some(&script))?;
            }
            other => bail!("unknown tool {other}"),
        }
        Ok(rule)
    }
}

impl Drop for DropRule<'_> {
    fn drop(&mut self) {
        match self.tool {
            "chaos-bpf" => {
                if let Some(run) = self.run.take() {
                    run.stop();
                }
            }
            "iptables" => {
                let _ = in_ns(&self.net.a, "iptables", &["-F", "OUTPUT"], None);
            }
            _ => {
                let _ = in_ns(
                    &self.net.a,
                    "nft",
                    &["delete", "table", "inet", "chaosbench"],
                    None,
                );
            }
        }
    }
}

/// `tool args...` in a namespace, which must succeed; `stdin` is fed when given.
fn in_ns(netns: &Netns, tool: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    let mut child = netns
        .command(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A 10% drop by each tool at 1, 100 and 10,000 rules: sender throughput and CPU per datagram
/// beside no rule, and the loss over 100,000 paced datagrams against the configured 10%.
fn drop_peers(report: &mut Report) -> anyhow::Result<()> {
    let net = VethPair::new("bench-drop");
    report.section(
        "A 10% UDP drop, behind N rules that do not match (sender side, veth)",
        &[
            "tool",
            "rules",
            "sends/s ratio to none",
            "CPU ns/send",
            "CPU ratio to none",
            "loss over 100,000 (target 0.1)",
            "sends the app saw fail",
        ],
    );
    let mut rows = serde_json::Map::new();
    for rules in RULE_COUNTS {
        for tool in ["chaos-bpf", "iptables", "nft"] {
            let (mut rate, mut cpu, mut cpu_ratio) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let (base_rate, base_cpu) = flood(&net)?;
                let installed = DropRule::install(&net, tool, rules)?;
                let (with_rate, with_cpu) = flood(&net)?;
                drop(installed);
                rate.push(with_rate / base_rate);
                cpu.push(with_cpu);
                cpu_ratio.push(with_cpu / base_cpu);
            }
            let installed = DropRule::install(&net, tool, rules)?;
            let (sent, received) =
                net.a
                    .udp_exchange(None, &net.b, &net.b_addr, PRECISION_DATAGRAMS);
            drop(installed);
            let loss =
                1.0 - received["received"].as_f64().unwrap_or(0.0) / PRECISION_DATAGRAMS as f64;
            // netfilter's DROP in OUTPUT fails the sender's call (EPERM); loss on a wire would not.
            let refused = sent["send_errors"].as_u64().unwrap_or(0);
            let (rate, cpu, cpu_ratio) = (Spread::of(rate), Spread::of(cpu), Spread::of(cpu_ratio));
            report.row(&[
                tool.to_string(),
                rules.to_string(),
                format!("{rate:.3}"),
                format!("{cpu:.0}"),
                format!("{cpu_ratio:.3}"),
                format!("{loss:.4} (error {:+.4})", loss - 0.1),
                refused.to_string(),
            ]);
            rows.insert(
                format!("{tool}, {rules} rules"),
                json!({ "rate_ratio": rate, "cpu_ns_per_send": cpu, "cpu_ratio": cpu_ratio, "loss": loss, "loss_error": loss - 0.1, "sends_refused": refused }),
            );
        }
    }
    report.json.insert("drop_peers", rows.into());
    Ok(())
}

/// ns per connect() from inside a cgroup, bare and with a connect-error that matches nothing.
fn connect_cost(report: &mut Report) -> anyhow::Result<()> {
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("bench-connect");
    let path = cgroup.path.to_str().context("path")?.to_string();
    let measure = || -> anyhow::Result<f64> {
        let result = cgroup.testkit(&["connect", &sink, "2000"]);
        result["median_ns"].as_f64().context("median_ns")
    };
    let attached_measure = || -> anyhow::Result<f64> {
        let run = ChaosRun::start(&["inject", "connect-error", "--cgroup", &path, "--port", "9"]);
        let with = measure();
        run.stop();
        with
    };
    let (mut bare, mut attached, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS * 2 {
        // Alternate which goes first, so drift cannot favour either.
        let (base, with) = if round % 2 == 0 {
            let base = measure()?;
            (base, attached_measure()?)
        } else {
            let with = attached_measure()?;
            (measure()?, with)
        };
        bare.push(base);
        attached.push(with);
        added.push(with - base);
    }
    let (bare, attached, added) = (Spread::of(bare), Spread::of(attached), Spread::of(added));
    report.section(
        "connect() on loopback from the target cgroup: median of 2,000 calls per round",
        &[
            "bare ns",
            "with connect-error attached, not matching (ns)",
            "added ns",
        ],
    );
    report.row(&[
        format!("{bare:.0}"),
        format!("{attached:.0}"),
        format!("{added:.0}"),
    ]);
    report.json.insert(
        "connect_cost",
        json!({ "bare_ns": bare, "attached_ns": attached, "added_ns": added }),
    );
    Ok(())
}

/// From launch until a connect in the scope fails, and from stop until it succeeds again:
/// chaos-bpf versus an iptables REJECT rule (netem's own is measured in the VM).
fn arm_latency(report: &mut Report) -> anyhow::Result<()> {
    let sink = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("bench-arm");
    let connects = |expect_fail: bool| -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let failed = std::net::TcpStream::connect(sink).is_err();
            if failed == expect_fail {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        started.elapsed()
    };
    // chaos-bpf acts on a cgroup, so its probe is a process in it (the spawn, about a
    // millisecond, is included); iptables acts on everyone, so this process probes directly.
    let probe = |expect_fail: bool| -> Duration {
        let started = Instant::now();
        loop {
            let result = cgroup.testkit(&["connect", &sink.to_string(), "1"]);
            let failed = result["ok"] == 0;
            if failed == expect_fail || started.elapsed() > Duration::from_secs(30) {
                return started.elapsed();
            }
        }
    };
    let (mut chaos_arm, mut chaos_disarm, mut ipt_arm, mut ipt_disarm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let chaos = chaos_tests::chaos_bin();
    for _ in 0..ROUNDS {
        let launched = Instant::now();
        let mut child = Command::new(&chaos)
            .args([
                "inject",
                "connect-error",
                "--cgroup",
                cgroup.path.to_str().context("path")?,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        chaos_arm.push((launched.elapsed() + probe(true)).as_secs_f64() * 1000.0);
        let stopping = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        chaos_disarm.push((stopping.elapsed() + probe(false)).as_secs_f64() * 1000.0);
        let _ = child.wait();

        let port = sink.port().to_string();
        // A TCP reset fails the connect at once, as chaos-bpf's errno does (REJECT's default
        // ICMP reply lets the SYN retransmit first).
        let rule = [
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ];
        let started = Instant::now();
        exec(Command::new("iptables").arg("-A").args(rule))?;
        ipt_arm.push((started.elapsed() + connects(true)).as_secs_f64() * 1000.0);
        let started = Instant::now();
        exec(Command::new("iptables").arg("-D").args(rule))?;
        ipt_disarm.push((started.elapsed() + connects(false)).as_secs_f64() * 1000.0);
    }
    let agent = agent_latency(&cgroup, sink, &probe)?;
    report.section(
        "Arm and disarm: command to first and last injected fault (ms)",
        &["tool", "arm", "disarm"],
    );
    let mut rows = serde_json::Map::new();
    for (tool, arm, disarm) in [
        (
            "chaos-bpf connect-error (process launch included)",
            chaos_arm,
            chaos_disarm,
        ),
        ("iptables -A/-D REJECT tcp-reset", ipt_arm, ipt_disarm),
        (
            "chaos-bpf agent: POST /v1/faults into its loaded object, DELETE /v1/faults/ID",
            agent.warm_arm,
            agent.warm_disarm,
        ),
        (
            "chaos-bpf agent, idle: POST loads the object, DELETE of the last fault unloads it",
            agent.cold_arm,
            agent.cold_disarm,
        ),
        (
            "chaos-bpf agent: kill switch, POST /v1/faults:stop-all (3 faults)",
            Vec::new(),
            agent.kill,
        ),
    ] {
        // The kill switch has no arm of its own: "-" rather than NaN.
        let cell = |values: &[f64]| match values {
            [] => "-".to_string(),
            values => format!("{:.1}", Spread::of(values.to_vec())),
        };
        report.row(&[tool.to_string(), cell(&arm), cell(&disarm)]);
        let (arm, disarm) = (Spread::of(arm), Spread::of(disarm));
        rows.insert(
            tool.to_string(),
            json!({ "arm_ms": arm, "disarm_ms": disarm }),
        );
    }
    report.json.insert("arm_latency", rows.into());
    Ok(())
}

/// Latencies through a running agent, in ms.
struct AgentLatency {
    /// Into an idle agent: the first fault of its mechanism loads the object.
    cold_arm: Vec<f64>,
    /// Stopping the last fault, which unloads the object.
    cold_disarm: Vec<f64>,
    /// While another fault of the mechanism is armed (on another cgroup): a map write.
    warm_arm: Vec<f64>,
    warm_disarm: Vec<f64>,
    kill: Vec<f64>,
}

/// Through a running agent: request to the first failed connect in the cgroup (arm), and to the
/// first that works again (stop, one fault; the kill switch, three). The probe is a process in
/// the cgroup, as for the CLI row: its spawn, about a millisecond, is included.
fn agent_latency(
    cgroup: &TestCgroup,
    sink: std::net::SocketAddr,
    probe: &dyn Fn(bool) -> Duration,
) -> anyhow::Result<AgentLatency> {
    let agent = chaos_tests::agent::Agent::start(&[]);
    let elsewhere = TestCgroup::new("bench-resident");
    let fault = json!({"kind": "connect-error", "scope": {"cgroup": cgroup.path}, "match": {"port": [sink.port()]}});
    let resident = json!({"kind": "connect-error", "scope": {"cgroup": elsewhere.path}, "match": {"port": [9]}});
    let mut latency = AgentLatency {
        cold_arm: Vec::new(),
        cold_disarm: Vec::new(),
        warm_arm: Vec::new(),
        warm_disarm: Vec::new(),
        kill: Vec::new(),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let arm_and_stop = |arm: &mut Vec<f64>, disarm: &mut Vec<f64>| -> anyhow::Result<()> {
        let started = Instant::now();
        let created = agent.create(&fault);
        arm.push(ms(started.elapsed() + probe(true)));
        let started = Instant::now();
        let stopped = agent.delete(&format!("/v1/faults/{}", created["id"]));
        ensure!(stopped.status == 200, "DELETE: {}", stopped.body);
        disarm.push(ms(started.elapsed() + probe(false)));
        Ok(())
    };
    for _ in 0..ROUNDS {
        arm_and_stop(&mut latency.cold_arm, &mut latency.cold_disarm)?;
        agent.create(&resident);
        arm_and_stop(&mut latency.warm_arm, &mut latency.warm_disarm)?;
        for _ in 0..3 {
            agent.create(&fault);
        }
        probe(true);
        let started = Instant::now();
        let answer = agent.post("/v1/faults:stop-all", "");
        ensure!(answer.status == 200, "stop-all: {}", answer.body);
        latency.kill.push(ms(started.elapsed() + probe(false)));
    }
    Ok(latency)
}

/// chaos-bpf's resident memory and its maps' kernel memory with 10,000 rules armed.
fn memory(report: &mut Report) -> anyhow::Result<()> {
    let net = VethPair::new("bench-mem");
    let file = TempFile::new(
        "bench-mem",
        &other_destinations(&net.a_if, 10_000, "--direction both"),
    );
    let armed = Instant::now();
    let run = net.a.start_chaos(&["run", file.arg()]);
    let arm_seconds = armed.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.pid()))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    let ids = run.program_ids();
    let map_bytes = map_memory_of(&ids)?;
    run.stop();
    report.section(
        "Memory with 10,000 rules (one kernel object)",
        &["chaos-bpf RSS MiB", "kernel map memory MiB", "arm time s"],
    );
    report.row(&[
        format!("{:.1}", rss_kib / 1024.0),
        format!("{:.1}", map_bytes as f64 / 1_048_576.0),
        format!("{arm_seconds:.2}"),
    ]);
    report.json.insert(
        "memory",
        json!({ "rss_mib": rss_kib / 1024.0, "map_mib": map_bytes as f64 / 1_048_576.0, "arm_seconds": arm_seconds }),
    );
    Ok(())
}

/// The memlock bytes of the maps the given programs use, from the kernel.
fn map_memory_of(program_ids: &[u32]) -> anyhow::Result<u64> {
    let show = |what: &str| -> anyhow::Result<serde_json::Value> {
        let output = Command::new("bpftool")
            .args(["-j", what, "show"])
            .output()?;
        Ok(serde_json::from_slice(&output.stdout)?)
    };
    let programs = show("prog")?;
    let map_ids: Vec<u64> = programs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["id"]
                .as_u64()
                .is_some_and(|id| program_ids.contains(&(id as u32)))
        })
        .flat_map(|p| p["map_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_u64())
        .collect();
    let maps = show("map")?;
    Ok(maps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["id"].as_u64().is_some_and(|id| map_ids.contains(&id)))
        .filter_map(|m| m["bytes_memlock"].as_u64())
        .sum())
}

/// 10 ms of delay through chaos-bpf and netem in a VM: error per packet and arm latency.
fn delay_in_vm(report: &mut Report, result: serde_json::Value) {
    report.section(
        "Delay of 10 ms on loopback, every UDP packet, in a Debian 6.12 VM (TCG emulation)",
        &[
            "tool",
            "median error ms",
            "p99 error ms",
            "arm ms",
            "disarm ms",
        ],
    );
    for tool in ["chaos-bpf", "netem"] {
        let r = &result[tool];
        let ms = |key: &str| r[key].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        report.row(&[
            tool.to_string(),
            ms("median_error_ms"),
            ms("p99_error_ms"),
            ms("arm_ms"),
            ms("disarm_ms"),
        ]);
    }
    report.section(
        "A global hook's cost for tasks outside every scope, same VM (kernel bpf_stats)",
        &[
            "faults armed",
            "ns per hook run",
            "hook runs",
            "probe median RTT us",
        ],
    );
    let cost = &result["per_call_cost"];
    for row in [
        "none",
        "fmod-ret with 1",
        "fmod-ret with 1000",
        "bpf-lsm with 1",
        "bpf-lsm with 1000",
    ] {
        let r = &cost[row];
        let number = |key: &str| r[key].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
        report.row(&[
            row.to_string(),
            number("ns_per_run"),
            number("runs"),
            number("median_rtt_us"),
        ]);
    }
    report.json.insert("delay_vm", result);
}
