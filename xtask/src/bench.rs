//! `cargo xtask bench`: what chaos-bpf costs and how precise it is, beside the tools users would
//! otherwise pick (iptables `statistic`, nft `numgen`), measured in one run on one machine.
//! Ratios are taken pair by pair (baseline, condition, baseline, condition ...) because these
//! machines drift; every figure has min, median and max over the rounds.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use chaos_tests::{ChaosRun, Netns, TestCgroup, VethPair, last_json_line, tcp_sink};
use serde_json::json;

use crate::{setup, util};

const ROUNDS: usize = 3;
const IPERF_SECONDS: &str = "3";
const DATAGRAMS: u64 = 100_000;
const RULE_COUNTS: [usize; 3] = [1, 100, 10_000];
const BENCH_PACKAGES: &[&str] = &["iperf3", "iptables", "nftables"];

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

/// Non-matching /32s in 10.250.0.0/16, as `--dst` arguments of at most 500 each (a single
/// argument may not exceed 128 KiB).
fn non_matching_dst_args(count: usize) -> Vec<String> {
    let cidrs: Vec<String> = (0..count)
        .map(|i| format!("10.250.{}.{}/32", i / 250, i % 250 + 1))
        .collect();
    cidrs
        .chunks(500)
        .flat_map(|chunk| ["--dst".to_string(), chunk.join(",")])
        .collect()
}

/// chaos-bpf in the namespace's network namespace only (mounts stay, so cgroup2 is visible).
fn chaos_in(netns: &Netns, args: &[String]) -> ChaosRun {
    let chaos = target_dir().join("debug/chaos-bpf");
    let mut full = vec![
        format!("--net={}", netns.path()),
        chaos.display().to_string(),
    ];
    full.extend(args.iter().cloned());
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    ChaosRun::start_program("nsenter", &refs)
}

pub fn run() -> anyhow::Result<()> {
    ensure!(
        util::is_root(),
        "the bench attaches eBPF programs and netfilter rules: run it as root"
    );
    setup::debian_packages(BENCH_PACKAGES)?;
    util::cargo(&["build", "--quiet"])?;
    // SAFETY: single-threaded here; the helpers read these to find the binaries.
    unsafe {
        std::env::set_var("CHAOS_BPF", target_dir().join("debug/chaos-bpf"));
        std::env::set_var("CHAOS_TESTKIT", target_dir().join("debug/chaos-testkit"));
    }
    let started = Instant::now();
    let mut report = BTreeMap::new();

    println!("bench: 1/5 idle overhead (iperf3 TCP across a veth pair)");
    report.insert("idle_overhead", idle_overhead()?);
    println!("bench: 2/5 a 10% drop: chaos-bpf, iptables statistic, nft numgen");
    report.insert("drop_peers", drop_peers()?);
    println!("bench: 3/5 connect() cost with a non-matching connect-error attached");
    report.insert("connect_cost", connect_cost()?);
    println!("bench: 4/5 arm and disarm latency");
    report.insert("arm_latency", arm_latency()?);
    println!("bench: 5/5 memory with 10,000 rules");
    report.insert("memory", memory()?);

    let machine = format!(
        "{} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout).trim()
    );
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let json =
        json!({ "machine": machine, "seconds": started.elapsed().as_secs(), "results": report });
    std::fs::write(
        out_dir.join("bench.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!(
        "\nbench: {machine}, {} s; wrote target/bench/bench.json",
        started.elapsed().as_secs()
    );
    Ok(())
}

fn iperf_server(net: &VethPair) -> anyhow::Result<Child> {
    let server = net
        .b
        .command("iperf3")
        .args(["-s", "-B", &net.b_addr])
        .stdout(Stdio::null())
        .spawn()
        .context("iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(server)
}

fn iperf_gbps(net: &VethPair) -> anyhow::Result<f64> {
    let output = net
        .a
        .command("iperf3")
        .args(["-c", &net.b_addr, "-t", IPERF_SECONDS, "-J"])
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

/// TCP throughput with chaos-bpf attached but matching nothing, as a ratio to no program.
fn idle_overhead() -> anyhow::Result<serde_json::Value> {
    let net = VethPair::new("bench-idle");
    let mut server = iperf_server(&net)?;
    let mut rows = serde_json::Map::new();
    let conditions: Vec<(String, Vec<String>)> = std::iter::once((
        "tcx program, rule matches no port".to_string(),
        vec!["--dport".to_string(), "9".to_string()],
    ))
    .chain(RULE_COUNTS.iter().map(|&n| {
        (
            format!("{n} non-matching dst CIDRs"),
            non_matching_dst_args(n),
        )
    }))
    .collect();
    println!(
        "  {:38} {:>24} {:>24}",
        "condition", "Gbit/s with chaos-bpf", "ratio to no program"
    );
    for (name, rule) in conditions {
        let mut ratios = Vec::new();
        let mut with = Vec::new();
        for _ in 0..ROUNDS {
            let baseline = iperf_gbps(&net)?;
            let mut args: Vec<String> = [
                "inject",
                "drop",
                "--iface",
                &net.a_if,
                "--direction",
                "both",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(rule.iter().cloned());
            let run = chaos_in(&net.a, &args);
            let measured = iperf_gbps(&net)?;
            run.stop();
            with.push(measured);
            ratios.push(measured / baseline);
        }
        let (with, ratios) = (Spread::of(with), Spread::of(ratios));
        println!("  {name:38} {with:>24.2} {ratios:>24.3}");
        rows.insert(name, json!({ "gbps": with, "ratio": ratios }));
    }
    let _ = server.kill();
    Ok(serde_json::Value::Object(rows))
}

/// UDP from `a` to `b`: the loss rate and the sender's CPU time per datagram.
fn udp_run(net: &VethPair) -> anyhow::Result<(f64, f64)> {
    let (receiver, addr) = net.b.serve(&[
        "udp-recv",
        &format!("{}:0", net.b_addr),
        &DATAGRAMS.to_string(),
        "2000",
    ]);
    let sent = net
        .a
        .testkit(None, &["udp-send", &addr, &DATAGRAMS.to_string()]);
    let received = last_json_line(&receiver.wait_with_output()?.stdout)["received"]
        .as_u64()
        .context("received")?;
    let cpu_ns = sent["cpu_ns"].as_f64().context("cpu_ns")?;
    Ok((
        1.0 - received as f64 / DATAGRAMS as f64,
        cpu_ns / DATAGRAMS as f64,
    ))
}

/// `tool args...` in namespace `a`, which must succeed; `stdin` is fed when given.
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

/// A 10% drop by each tool with `rules - 1` non-matching rules before it: loss precision over
/// 100,000 datagrams and sender CPU per datagram, each beside a no-rule baseline.
fn drop_peers() -> anyhow::Result<serde_json::Value> {
    let net = VethPair::new("bench-drop");
    let mut rows = serde_json::Map::new();
    println!(
        "  {:26} {:>7} {:>22} {:>24} {:>22}",
        "tool", "rules", "loss (target 0.100)", "sender CPU ns/packet", "CPU ratio to none"
    );
    for &rules in &RULE_COUNTS {
        for tool in ["chaos-bpf (tcx)", "iptables statistic", "nft numgen"] {
            let (mut losses, mut cpu, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let (_, baseline_cpu) = udp_run(&net)?;
                let (loss, cpu_per_packet) = with_drop_rule(&net, tool, rules, || udp_run(&net))?;
                losses.push(loss);
                cpu.push(cpu_per_packet);
                ratios.push(cpu_per_packet / baseline_cpu);
            }
            let (losses, cpu, ratios) = (Spread::of(losses), Spread::of(cpu), Spread::of(ratios));
            println!("  {tool:26} {rules:>7} {losses:>22.4} {cpu:>24.0} {ratios:>22.3}");
            rows.insert(
                format!("{tool}, {rules} rules"),
                json!({ "loss": losses, "sender_cpu_ns_per_packet": cpu, "cpu_ratio": ratios }),
            );
        }
    }
    Ok(serde_json::Value::Object(rows))
}

/// Runs `measure` with a 10% UDP drop in place, set up the tool's own way, then removes it.
fn with_drop_rule<T>(
    net: &VethPair,
    tool: &str,
    rules: usize,
    measure: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let fillers: Vec<String> = (0..rules - 1)
        .map(|i| format!("10.250.{}.{}", i / 250, i % 250 + 1))
        .collect();
    match tool {
        "chaos-bpf (tcx)" => {
            // The matching rule is one more CIDR in the same trie: one lookup either way.
            let mut args: Vec<String> = [
                "inject",
                "drop",
                "--iface",
                &net.a_if,
                "--proto",
                "udp",
                "--probability",
                "0.1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut cidrs: Vec<String> = fillers.iter().map(|a| format!("{a}/32")).collect();
            cidrs.push(format!("{}/32", net.b_addr));
            for chunk in cidrs.chunks(500) {
                args.push("--dst".into());
                args.push(chunk.join(","));
            }
            let run = chaos_in(&net.a, &args);
            let result = measure();
            run.stop();
            result
        }
        "iptables statistic" => {
            let mut rules_text = String::from("*filter\n");
            for address in &fillers {
                rules_text.push_str(&format!("-A OUTPUT -d {address}/32 -j DROP\n"));
            }
            rules_text.push_str(
                "-A OUTPUT -p udp -m statistic --mode random --probability 0.1 -j DROP\nCOMMIT\n",
            );
            in_ns(&net.a, "iptables-restore", &[], Some(&rules_text))?;
            let result = measure();
            in_ns(&net.a, "iptables", &["-F", "OUTPUT"], None)?;
            result
        }
        "nft numgen" => {
            let mut script = String::from(
                "table inet chaosbench {\n chain out {\n  type filter hook output priority 0;\n",
            );
            for address in &fillers {
                script.push_str(&format!("  ip daddr {address} drop\n"));
            }
            script.push_str("  meta l4proto udp numgen random mod 10 0 drop\n }\n}\n");
            in_ns(&net.a, "nft", &["-f", "-"], Some(&script))?;
            let result = measure();
            in_ns(
                &net.a,
                "nft",
                &["delete", "table", "inet", "chaosbench"],
                None,
            )?;
            result
        }
        other => bail!("unknown tool {other}"),
    }
}

/// ns per connect() from inside a cgroup, bare and with a connect-error that matches nothing.
fn connect_cost() -> anyhow::Result<serde_json::Value> {
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("bench-connect");
    let measure = || -> anyhow::Result<f64> {
        let result = cgroup.testkit(&["connect", &sink, "5000"]);
        result["ns_per_connect"].as_f64().context("ns_per_connect")
    };
    let (mut bare, mut attached, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    let path = cgroup.path.to_str().context("path")?.to_string();
    let attached_measure = || -> anyhow::Result<f64> {
        let run = ChaosRun::start(&["inject", "connect-error", "--cgroup", &path, "--port", "9"]);
        let with = measure();
        run.stop();
        with
    };
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
        extra.push(with - base);
    }
    let (bare, attached, extra) = (Spread::of(bare), Spread::of(attached), Spread::of(extra));
    println!("  connect(): {bare:.0} ns bare, {attached:.0} ns attached, {extra:.0} ns added");
    Ok(json!({ "bare_ns": bare, "attached_ns": attached, "added_ns": extra }))
}

/// From launch until a connect in the scope fails, and from stop until it succeeds again:
/// chaos-bpf versus an iptables REJECT rule.
fn arm_latency() -> anyhow::Result<serde_json::Value> {
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
    let probe = |expect_fail: bool| -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let result = cgroup.testkit(&["connect", &sink.to_string(), "1"]);
            let failed = result["ok"] == 0;
            if failed == expect_fail || started.elapsed() > Duration::from_secs(30) {
                return Ok(started.elapsed());
            }
        }
    };
    let (mut chaos_arm, mut chaos_disarm, mut ipt_arm, mut ipt_disarm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let chaos = target_dir().join("debug/chaos-bpf");
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
        let armed = launched.elapsed() + probe(true)?;
        chaos_arm.push(armed.as_secs_f64() * 1000.0);
        let stopping = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let disarmed = stopping.elapsed() + probe(false)?;
        let _ = child.wait();
        chaos_disarm.push(disarmed.as_secs_f64() * 1000.0);

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
        util::exec(Command::new("iptables").arg("-A").args(rule))?;
        ipt_arm.push((started.elapsed() + connects(true)).as_secs_f64() * 1000.0);
        let started = Instant::now();
        util::exec(Command::new("iptables").arg("-D").args(rule))?;
        ipt_disarm.push((started.elapsed() + connects(false)).as_secs_f64() * 1000.0);
    }
    let rows = [
        ("chaos-bpf arm (launch to first failed connect)", chaos_arm),
        (
            "chaos-bpf disarm (SIGTERM to first good connect)",
            chaos_disarm,
        ),
        (
            "iptables -A REJECT (tcp-reset) to first failed connect",
            ipt_arm,
        ),
        ("iptables -D to first good connect", ipt_disarm),
    ];
    let mut out = serde_json::Map::new();
    for (name, values) in rows {
        let spread = Spread::of(values);
        println!("  {name:52} {spread:.1} ms");
        out.insert(name.to_string(), json!({ "ms": spread }));
    }
    Ok(serde_json::Value::Object(out))
}

/// chaos-bpf's resident memory and its maps' kernel memory with 10,000 CIDRs loaded.
fn memory() -> anyhow::Result<serde_json::Value> {
    let net = VethPair::new("bench-mem");
    let mut args: Vec<String> = ["inject", "drop", "--iface", &net.a_if, "--proto", "udp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(non_matching_dst_args(10_000));
    let run = chaos_in(&net.a, &args);
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.pid()))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    let maps = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()?;
    let maps: serde_json::Value = serde_json::from_slice(&maps.stdout)?;
    let map_bytes: u64 = maps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("CHAOS_")))
        .filter_map(|m| m["bytes_memlock"].as_u64())
        .sum();
    run.stop();
    println!(
        "  with 10,000 CIDRs: RSS {:.1} MiB, kernel map memory {:.1} MiB",
        rss_kib / 1024.0,
        map_bytes as f64 / 1048576.0
    );
    Ok(json!({ "rss_mib": rss_kib / 1024.0, "map_mib": map_bytes as f64 / 1048576.0 }))
}
