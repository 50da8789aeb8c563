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

/// How much each section measures: the full run, or the quick one (`CHAOS_BENCH_QUICK=1`) that
/// `cargo xtask test` runs so that a broken bench fails CI: every section once, small counts.
/// Quick figures are not for the README.
struct Sizes {
    rounds: usize,
    /// The idle-overhead ratios are the noisiest figures here: more, shorter rounds.
    idle_rounds: usize,
    measure_seconds: &'static str,
    measure_ms: &'static str,
    precision_datagrams: u64,
    rule_counts: &'static [usize],
    memory_rules: usize,
    /// Faults armed one by one through an agent, each on its own cgroup.
    scale_faults: usize,
    /// The node grown by this many sleeping processes and empty cgroups.
    growth: (usize, usize),
}

fn sizes() -> &'static Sizes {
    static SIZES: std::sync::OnceLock<Sizes> = std::sync::OnceLock::new();
    SIZES.get_or_init(|| {
        if quick() {
            Sizes {
                rounds: 1,
                idle_rounds: 1,
                measure_seconds: "1",
                measure_ms: "500",
                precision_datagrams: 5_000,
                rule_counts: &[1, 100],
                memory_rules: 1_000,
                scale_faults: 100,
                growth: (100, 50),
            }
        } else {
            Sizes {
                rounds: 3,
                idle_rounds: 5,
                measure_seconds: "2",
                measure_ms: "2000",
                precision_datagrams: 100_000,
                rule_counts: &[1, 100, 10_000],
                memory_rules: 10_000,
                scale_faults: 1_000,
                growth: (1_000, 500),
            }
        }
    })
}

fn quick() -> bool {
    std::env::var("CHAOS_BENCH_QUICK").is_ok_and(|v| v == "1")
}
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
    let sections: [(&str, &str, Section); 7] = [
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
            "connect() cost with a non-matching connect-error or connection-limit attached",
            connect_cost,
        ),
        (
            "arm",
            "arm and disarm latency: the CLI, the agent, iptables",
            arm_latency,
        ),
        (
            "scale",
            "arming as faults accumulate and as the node grows",
            scale,
        ),
        ("memory", "memory with 10,000 rules", memory),
        (
            "dns",
            "a DNS query's cost with dns-error armed on other names",
            dns_cost,
        ),
    ];
    for (index, (name, what, section)) in sections.iter().enumerate() {
        if wanted(name) {
            println!("bench: {}/8 {what}", index + 1);
            section(&mut report)?;
        }
    }
    if wanted("delay") {
        println!("bench: 8/8 delay: chaos-bpf and netem in a VM (measured before, by the xtask)");
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
    // The quick pass writes beside the full run's files, never over them.
    let stem = if quick() { "bench-quick" } else { "bench" };
    std::fs::write(
        out_dir.join(format!("{stem}.json")),
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
    std::fs::write(out_dir.join(format!("{stem}.md")), &markdown)?;
    println!("\nbench: {machine}, {seconds} s; wrote target/bench/{stem}.json and {stem}.md");
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
        .args(["-c", &net.b_addr, "-t", sizes().measure_seconds, "-J", "-A"])
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
        .args(["tcp-rr", server, sizes().measure_ms])
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
    for &n in sizes().rule_counts {
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
        for _ in 0..sizes().idle_rounds {
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

/// The kernel's run time (ns) and run count, summed over these programs (BPF_ENABLE_STATS must
/// be on for the time to count).
fn program_run_totals(ids: &[u32]) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .fold((0, 0), |(ns, runs), p| {
            (ns + p.run_time().as_nanos() as u64, runs + p.run_count())
        })
}

/// What chaos-bpf's programs themselves cost a packet, from the kernel's own accounting
/// (BPF_ENABLE_STATS: run time and run count per program) over a request/response run. Measured
/// apart from the ratios, because the accounting adds two clock reads per run.
fn program_ns_per_packet(net: &VethPair, rules: &TempFile, echo: &str) -> anyhow::Result<f64> {
    let run = net.a.start_chaos(&["run", rules.arg()]);
    let ids = run.program_ids();
    let totals = || program_run_totals(&ids);
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
    for &rules in sizes().rule_counts {
        for tool in ["chaos-bpf", "iptables", "nft"] {
            let (mut rate, mut cpu, mut cpu_ratio) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..sizes().rounds {
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
                    .udp_exchange(None, &net.b, &net.b_addr, sizes().precision_datagrams);
            drop(installed);
            let loss = 1.0
                - received["received"].as_f64().unwrap_or(0.0) / sizes().precision_datagrams as f64;
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

/// ns per connect() from inside a cgroup: bare, with a connect-error that matches nothing, and
/// with a connection-limit whose destination is elsewhere (its hook runs, finds no rule that
/// matches, and takes no seat), side by side in each round.
fn connect_cost(report: &mut Report) -> anyhow::Result<()> {
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("bench-connect");
    let path = cgroup.path.to_str().context("path")?.to_string();
    let measure = || -> anyhow::Result<f64> {
        let result = cgroup.testkit(&["connect", &sink, "2000"]);
        result["median_ns"].as_f64().context("median_ns")
    };
    let attached = |kind: &str, limit: &[&str]| -> anyhow::Result<f64> {
        let mut args = vec!["inject", kind, "--cgroup", &path, "--port", "9"];
        args.extend_from_slice(limit);
        let run = ChaosRun::start(&args);
        let with = measure();
        run.stop();
        with
    };
    let with_error = || attached("connect-error", &[]);
    let with_limit = || attached("connection-limit", &["--max", "5"]);
    let (mut bare, mut error, mut limit) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes().rounds * 2 {
        // Rotate which goes first, so drift cannot favour any.
        let (base, e, l) = match round % 3 {
            0 => (measure()?, with_error()?, with_limit()?),
            1 => {
                let e = with_error()?;
                let l = with_limit()?;
                (measure()?, e, l)
            }
            _ => {
                let l = with_limit()?;
                let base = measure()?;
                (base, with_error()?, l)
            }
        };
        bare.push(base);
        error.push(e);
        limit.push(l);
    }
    let added = |with: &[f64]| Spread::of(with.iter().zip(&bare).map(|(w, b)| w - b).collect());
    let (error_added, limit_added) = (added(&error), added(&limit));
    let (bare, error, limit) = (Spread::of(bare), Spread::of(error), Spread::of(limit));
    report.section(
        "connect() on loopback from the target cgroup: median of 2,000 calls per round",
        &[
            "bare ns",
            "with connect-error attached, not matching (ns)",
            "added ns",
            "with connection-limit attached, other destination (ns)",
            "added ns",
        ],
    );
    report.row(&[
        format!("{bare:.0}"),
        format!("{error:.0}"),
        format!("{error_added:.0}"),
        format!("{limit:.0}"),
        format!("{limit_added:.0}"),
    ]);
    report.json.insert(
        "connect_cost",
        json!({ "bare_ns": bare, "attached_ns": error, "added_ns": error_added,
                "limit_attached_ns": limit, "limit_added_ns": limit_added }),
    );
    Ok(())
}

/// What a DNS query that no fault matches pays while dns-error is armed on the scope for other
/// names: the query is read and its name looked up once, with 1 name armed and with 1,000 (the
/// lookup is one trie lookup either way). Round trips to a testkit DNS server on loopback, from
/// the target cgroup, with and without the fault side by side.
fn dns_cost(report: &mut Report) -> anyhow::Result<()> {
    let (mut server, addr) = chaos_tests::cases::dns_server();
    let port = addr.rsplit(':').next().context("port")?.to_string();
    let cgroup = TestCgroup::new("bench-dns");
    let path = cgroup.path.to_str().context("path")?.to_string();
    let queries = if quick() { "500" } else { "2000" };
    let measure = || -> anyhow::Result<f64> {
        let result = cgroup.testkit(&["dns-query", &addr, "other.example.com", queries]);
        ensure!(result["rcodes"]["NOERROR"].as_u64().is_some(), "{result}");
        result["median_ns"].as_f64().context("median_ns")
    };
    let many: Vec<String> = (0..1000)
        .map(|i| format!("service-{i}.example.com"))
        .collect();
    // The round trip, and the program's own ns per packet from the kernel's accounting (queries
    // and answers both pass lo's egress; only queries to the port are read).
    let armed_measure = |names: &[String]| -> anyhow::Result<(f64, f64)> {
        let mut args = vec!["inject", "dns-error", "--cgroup", &path, "--port", &port];
        for name in names {
            args.extend(["--name", name.as_str()]);
        }
        args.extend(["--rcode", "nxdomain"]);
        let run = ChaosRun::start(&args);
        let ids = run.program_ids();
        let totals = || program_run_totals(&ids);
        let with = measure();
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
        let before = totals();
        measure()?;
        let after = totals();
        drop(stats);
        let summary = run.stop().summary();
        ensure!(
            summary["injected"] == 0,
            "a non-matching query was hit: {summary}"
        );
        let runs = after.1.saturating_sub(before.1).max(1);
        Ok((with?, after.0.saturating_sub(before.0) as f64 / runs as f64))
    };
    let one = vec!["payments.example.com".to_string()];
    let (mut bare, mut with_one, mut with_many) = (Vec::new(), Vec::new(), Vec::new());
    let (mut program_one, mut program_many) = (Vec::new(), Vec::new());
    for round in 0..sizes().rounds {
        // Alternate the order, so drift cannot favour any.
        let (one_run, many_run);
        if round % 2 == 0 {
            bare.push(measure()?);
            one_run = armed_measure(&one)?;
            many_run = armed_measure(&many)?;
        } else {
            many_run = armed_measure(&many)?;
            one_run = armed_measure(&one)?;
            bare.push(measure()?);
        }
        with_one.push(one_run.0);
        program_one.push(one_run.1);
        with_many.push(many_run.0);
        program_many.push(many_run.1);
    }
    let _ = server.kill();
    let added_one: Vec<f64> = with_one.iter().zip(&bare).map(|(w, b)| w - b).collect();
    let added_many: Vec<f64> = with_many.iter().zip(&bare).map(|(w, b)| w - b).collect();
    let (bare, with_one, with_many) = (
        Spread::of(bare),
        Spread::of(with_one),
        Spread::of(with_many),
    );
    let (program_one, program_many) = (Spread::of(program_one), Spread::of(program_many));
    let (added_one, added_many) = (Spread::of(added_one), Spread::of(added_many));
    report.section(
        "a DNS query no fault matches, over loopback from the target cgroup: median round trip",
        &[
            "bare ns",
            "dns-error on 1 other name (ns)",
            "added ns",
            "dns-error on 1,000 other names (ns)",
            "added ns",
            "program ns per packet, 1 name / 1,000 names (kernel accounting)",
        ],
    );
    report.row(&[
        format!("{bare:.0}"),
        format!("{with_one:.0}"),
        format!("{added_one:.0}"),
        format!("{with_many:.0}"),
        format!("{added_many:.0}"),
        format!("{program_one:.0} / {program_many:.0}"),
    ]);
    report.json.insert(
        "dns_cost",
        json!({ "bare_ns": bare, "one_name_ns": with_one, "one_name_added_ns": added_one,
                "thousand_names_ns": with_many, "thousand_names_added_ns": added_many , "program_ns_per_packet_one_name": program_one, "program_ns_per_packet_thousand_names": program_many }),
    );
    Ok(())
}

/// From launch until a connect in the scope fails, and from stop until it succeeds again:
/// chaos-bpf versus an iptables REJECT rule (netem's own is measured in the VM).
/// A connect loop inside the target cgroup (the testkit's `connect-watch`) whose outcome flips
/// are stamped with CLOCK_MONOTONIC: arm is the command to the first refused connect, heal the
/// stop to the first connect that works again, with no probe process spawned in between.
struct Watch {
    child: std::process::Child,
    flips: std::sync::mpsc::Receiver<(bool, u64)>,
}

impl Watch {
    fn start(cgroup: &TestCgroup, sink: std::net::SocketAddr) -> anyhow::Result<Self> {
        let mut child = cgroup
            .command(chaos_tests::testkit_bin())
            .args(["connect-watch", &sink.to_string(), "600000"])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, flips) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(flip) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let ok = flip["ok"].as_bool().unwrap_or(false);
                if tx.send((ok, flip["at_ns"].as_u64().unwrap_or(0))).is_err() {
                    break;
                }
            }
        });
        let watch = Self { child, flips };
        watch.until(true, 0)?;
        Ok(watch)
    }

    /// When the outcome became `ok` (monotonic ns) after `since_ns`, waiting up to 30 s. Flips
    /// from before `since_ns` are stale (an earlier round's, still queued): taking one would
    /// measure 0 ms, which is how this figure once read 0.0 for every agent round.
    fn until(&self, ok: bool, since_ns: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (flipped, at) = self
                .flips
                .recv_timeout(left)
                .with_context(|| format!("connects never became ok={ok}"))?;
            if flipped == ok && at >= since_ns {
                return Ok(at);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
    })
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

/// The CLI's arm (launch to the first refused connect), heal (SIGTERM to the first connect that
/// works again) and exit (SIGTERM to the process gone), one round. The SIGTERM waits for the
/// `armed` record, as a user's Ctrl-C waits for the armed line: a connect is refused as soon as
/// the IPv4 program is linked, while the IPv6 one is still being verified, and a signal then
/// makes the kernel's verifier start that load over.
fn cli_round(cgroup: &TestCgroup, watch: &Watch) -> anyhow::Result<(f64, f64, f64)> {
    use std::io::BufRead as _;
    let launched = monotonic_ns();
    let mut child = Command::new(chaos_tests::chaos_bin())
        .args([
            "inject",
            "connect-error",
            "--cgroup",
            cgroup.path.to_str().context("path")?,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let arm = ms_between(launched, watch.until(false, launched)?);
    let stdout = child.stdout.take().context("stdout")?;
    let armed = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("\"type\":\"armed\""));
    ensure!(armed, "chaos-bpf inject ended without its armed record");
    let stopping = monotonic_ns();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let heal = ms_between(stopping, watch.until(true, stopping)?);
    let _ = child.wait();
    let exit = ms_between(stopping, monotonic_ns());
    Ok((arm, heal, exit))
}

fn arm_latency(report: &mut Report) -> anyhow::Result<()> {
    let sink = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("bench-arm");
    let watch = Watch::start(&cgroup, sink)?;
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
    let (mut chaos_arm, mut chaos_heal, mut chaos_exit, mut ipt_arm, mut ipt_disarm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes().rounds {
        let (arm, heal, exit) = cli_round(&cgroup, &watch)?;
        chaos_arm.push(arm);
        chaos_heal.push(heal);
        chaos_exit.push(exit);

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
    let agent = agent_latency(&cgroup, sink, &watch)?;
    report.section(
        "Arm and heal: command to the first failed connect, and stop to the first that works \
         again (ms)",
        &["tool", "arm", "heal"],
    );
    let mut rows = serde_json::Map::new();
    for (tool, arm, disarm) in [
        (
            "chaos-bpf inject connect-error (process launch included; heal from SIGTERM)",
            chaos_arm.clone(),
            chaos_heal.clone(),
        ),
        (
            "chaos-bpf inject: SIGTERM to the process gone (the old \"CLI disarm\" figure, \
             which also spawned a probe)",
            Vec::new(),
            chaos_exit,
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
        // Rows without an arm of their own: "-" rather than NaN.
        let cell = |values: &[f64]| match values {
            [] => "-".to_string(),
            values => format!("{:.1}", Spread::of(values.to_vec())),
        };
        report.row(&[tool.to_string(), cell(&arm), cell(&disarm)]);
        let (arm, disarm) = (Spread::of(arm), Spread::of(disarm));
        rows.insert(
            tool.to_string(),
            json!({ "arm_ms": arm, "heal_ms": disarm }),
        );
    }
    let cli_arm = Spread::of(chaos_arm).median;
    if cli_arm >= 50.0 {
        report.missed.push(format!(
            "CLI arm, launch to first injected: {cli_arm:.1} ms (goal < 50 ms)"
        ));
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
/// first that works again (stop, one fault; the kill switch, three).
fn agent_latency(
    cgroup: &TestCgroup,
    sink: std::net::SocketAddr,
    watch: &Watch,
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
    let arm_and_stop = |arm: &mut Vec<f64>, disarm: &mut Vec<f64>| -> anyhow::Result<()> {
        let asked = monotonic_ns();
        let created = agent.create(&fault);
        arm.push(ms_between(asked, watch.until(false, asked)?));
        let asked = monotonic_ns();
        let stopped = agent.delete(&format!("/v1/faults/{}", created["id"]));
        ensure!(stopped.status == 200, "DELETE: {}", stopped.body);
        disarm.push(ms_between(asked, watch.until(true, asked)?));
        Ok(())
    };
    for _ in 0..sizes().rounds {
        arm_and_stop(&mut latency.cold_arm, &mut latency.cold_disarm)?;
        agent.create(&resident);
        arm_and_stop(&mut latency.warm_arm, &mut latency.warm_disarm)?;
        let asked = monotonic_ns();
        for _ in 0..3 {
            agent.create(&fault);
        }
        watch.until(false, asked)?;
        let asked = monotonic_ns();
        let answer = agent.post("/v1/faults:stop-all", "");
        ensure!(answer.status == 200, "stop-all: {}", answer.body);
        latency
            .kill
            .push(ms_between(asked, watch.until(true, asked)?));
    }
    Ok(latency)
}

/// Arming as faults accumulate and as the node grows. Through one agent, connect-error faults
/// are armed one by one, each on a cgroup of its own. With exactly 1, 100 and all of them armed,
/// one more fault is armed and stopped ten times, timing each POST and each DELETE to its answer
/// (the map writes are done by then); then the kill switch with them all armed. Then the CLI's
/// arm on a bare node beside one grown by sleeping processes and empty cgroups.
fn scale(report: &mut Report) -> anyhow::Result<()> {
    let total = sizes().scale_faults;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let agent = chaos_tests::agent::Agent::start(&["--max-faults", &(total + 8).to_string()]);
    let parent = TestCgroup::new("bench-scale");
    let cgroups: Vec<TestCgroup> = (0..total).map(|n| parent.child(&format!("f{n}"))).collect();
    let extra = parent.child("extra");
    let on = |cgroup: &TestCgroup| json!({"kind": "connect-error", "scope": {"cgroup": cgroup.path}, "match": {"port": [9]}});
    let mut checkpoints: Vec<usize> = [1, 100, total]
        .into_iter()
        .filter(|n| *n <= total)
        .collect();
    checkpoints.dedup();
    // (faults armed, arm times, stop times) of the extra fault at each checkpoint.
    let mut measured: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
    for (armed, cgroup) in cgroups.iter().enumerate() {
        let created = agent.create(&on(cgroup));
        ensure!(created["id"].is_u64(), "arming fault {armed}: {created}");
        let armed = armed + 1;
        if checkpoints.contains(&armed) {
            let (mut arms, mut stops) = (Vec::new(), Vec::new());
            for _ in 0..10 {
                let asked = Instant::now();
                let created = agent.create(&on(&extra));
                arms.push(ms(asked.elapsed()));
                let asked = Instant::now();
                let answer = agent.delete(&format!("/v1/faults/{}", created["id"]));
                stops.push(ms(asked.elapsed()));
                ensure!(answer.status == 200, "DELETE: {}", answer.body);
            }
            measured.push((armed, arms, stops));
        }
    }
    let asked = Instant::now();
    let answer = agent.post("/v1/faults:stop-all", "");
    let stop_all = ms(asked.elapsed());
    ensure!(answer.status == 200, "stop-all: {}", answer.body);
    let stopped = answer.json()["stopped"].as_u64().unwrap_or(0);
    ensure!(
        stopped == total as u64,
        "stop-all stopped {stopped} of {total}"
    );
    drop(agent);

    // The node grown: sleeping processes in a cgroup of their own, and empty cgroups.
    let sink = tcp_sink("127.0.0.1:0");
    let target = TestCgroup::new("bench-grow-target");
    let watch = Watch::start(&target, sink)?;
    let bare: Vec<f64> = (0..sizes().rounds)
        .map(|_| cli_round(&target, &watch).map(|r| r.0))
        .collect::<anyhow::Result<_>>()?;
    let (processes, empty) = sizes().growth;
    let crowd = TestCgroup::new("bench-grow-crowd");
    let mut sleepers: Vec<std::process::Child> = (0..processes)
        .map(|_| crowd.command("sleep").arg("600").spawn())
        .collect::<Result<_, _>>()?;
    let extra: Vec<TestCgroup> = (0..empty).map(|n| crowd.child(&format!("e{n}"))).collect();
    let grown: Vec<f64> = (0..sizes().rounds)
        .map(|_| cli_round(&target, &watch).map(|r| r.0))
        .collect::<anyhow::Result<_>>()?;
    for sleeper in &mut sleepers {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    drop(extra);

    report.section(
        &format!(
            "Arming as faults accumulate ({total} through one agent) and as the node grows (ms)"
        ),
        &["figure", "ms", "goal"],
    );
    let (bare, grown) = (Spread::of(bare), Spread::of(grown));
    let first_arm = Spread::of(measured[0].1.clone()).median;
    let mut rows: Vec<(String, Spread, String)> = Vec::new();
    for (armed, arms, stops) in &measured {
        let arm_goal = if *armed == measured[0].0 {
            "< 5".to_string()
        } else {
            format!("≤ 2× the first ({:.1})", 2.0 * first_arm)
        };
        rows.push((
            format!("agent arm, {armed} faults armed"),
            Spread::of(arms.clone()),
            arm_goal,
        ));
        rows.push((
            format!("agent stop (DELETE), {} faults armed", armed + 1),
            Spread::of(stops.clone()),
            "< 2".to_string(),
        ));
    }
    rows.push((
        format!("agent stop-all of {total} faults"),
        Spread::of(vec![stop_all]),
        "< 100".to_string(),
    ));
    rows.push((
        "CLI arm (launch to first injected), bare node".to_string(),
        bare,
        "< 50".to_string(),
    ));
    rows.push((
        format!("CLI arm, +{processes} processes +{empty} cgroups"),
        grown,
        format!("flat (≤ 1.2× {:.1})", bare.median),
    ));
    let mut json_rows = serde_json::Map::new();
    for (figure, spread, goal) in &rows {
        report.row(&[figure.to_string(), format!("{spread:.1}"), goal.clone()]);
        json_rows.insert(figure.to_string(), json!(spread));
    }
    let mut miss = |what: String| report.missed.push(what);
    for (armed, arms, stops) in &measured {
        let (arm, stop) = (
            Spread::of(arms.clone()).median,
            Spread::of(stops.clone()).median,
        );
        if arm > 2.0 * first_arm.max(0.5) {
            miss(format!(
                "arm with {armed} faults armed: {arm:.1} ms, more than 2× the first ({first_arm:.1} ms)"
            ));
        }
        if stop >= 2.0 {
            miss(format!(
                "agent DELETE with {} armed: {stop:.1} ms (goal < 2 ms)",
                armed + 1
            ));
        }
    }
    if first_arm >= 5.0 {
        miss(format!("agent arm: {first_arm:.1} ms (goal < 5 ms)"));
    }
    if stop_all >= 100.0 {
        miss(format!(
            "stop-all of {total}: {stop_all:.1} ms (goal < 100 ms)"
        ));
    }
    if grown.median > 1.2 * bare.median {
        miss(format!(
            "CLI arm on the grown node: {:.1} ms against {:.1} ms bare",
            grown.median, bare.median
        ));
    }
    report.json.insert("scale", json_rows.into());
    Ok(())
}

/// chaos-bpf's resident memory and its maps' kernel memory with 10,000 rules armed.
fn memory(report: &mut Report) -> anyhow::Result<()> {
    let net = VethPair::new("bench-mem");
    let file = TempFile::new(
        "bench-mem",
        &other_destinations(&net.a_if, sizes().memory_rules, "--direction both"),
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
        &format!(
            "Memory with {} rules (one kernel object)",
            sizes().memory_rules
        ),
        &["chaos-bpf RSS MiB", "kernel map memory MiB", "arm time s"],
    );
    report.row(&[
        format!("{:.1}", rss_kib / 1024.0),
        format!("{:.1}", map_bytes as f64 / 1_048_576.0),
        format!("{arm_seconds:.2}"),
    ]);
    let rss_mib = rss_kib / 1024.0;
    if sizes().memory_rules == 10_000 {
        if arm_seconds > 1.0 {
            report.missed.push(format!(
                "10,000 rules armed in {arm_seconds:.2} s (goal ≤ 1 s)"
            ));
        }
        if rss_mib > 30.0 {
            report.missed.push(format!(
                "RSS with 10,000 rules {rss_mib:.1} MiB (goal ≤ 30 MiB)"
            ));
        }
    }
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
    // Rows as the VM measured them: "none", then each mechanism with 1 and N faults.
    if let Some(cost) = result["per_call_cost"].as_object() {
        for (row, r) in cost {
            let number = |key: &str| r[key].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
            report.row(&[
                row.to_string(),
                number("ns_per_run"),
                number("runs"),
                number("median_rtt_us"),
            ]);
        }
    }
    let bandwidth = &result["bandwidth"];
    report.section(
        &format!(
            "A TCP transfer on loopback held to {} Mbit/s, same VM (chaos-bpf on one port, no burst; \
             tbf on all of lo, with the burst one 64 KiB segment needs)",
            bandwidth["rate_mbit"]
        ),
        &["tool", "achieved Mbit/s", "error %", "burst bytes"],
    );
    for tool in ["chaos-bpf", "tbf"] {
        let r = &bandwidth[tool];
        report.row(&[
            tool.to_string(),
            r["achieved_mbit"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.3}")),
            r["error_pct"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:+.1}")),
            r["burst_bytes"].to_string(),
        ]);
    }
    if let Some(error) = bandwidth["chaos-bpf"]["error_pct"].as_f64()
        && error.abs() > 10.0
    {
        report.missed.push(format!(
            "bandwidth: chaos-bpf's rate is {error:+.1}% off (goal: within 10%)"
        ));
    }
    let duplicate = &result["duplicate"];
    if let Some(off) = duplicate["chaos-bpf"]["sigmas_off"].as_f64()
        && off.abs() > 3.0
    {
        report.missed.push(format!(
            "duplicate: chaos-bpf's copies are {off:+.2} sigma off (goal: within 3)"
        ));
    }
    report.section(
        &format!(
            "{} UDP datagrams on loopback, {} of them sent twice, same VM (3 sigma: ±{:.0} copies)",
            duplicate["datagrams"],
            duplicate["probability"],
            duplicate["three_sigma_copies"].as_f64().unwrap_or(0.0)
        ),
        &["tool", "copies", "share", "sigmas off"],
    );
    for tool in ["chaos-bpf", "netem"] {
        let r = &duplicate[tool];
        report.row(&[
            tool.to_string(),
            r["copies"].to_string(),
            r["share"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.4}")),
            r["sigmas_off"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:+.2}")),
        ]);
    }
    report.json.insert("delay_vm", result);
}
