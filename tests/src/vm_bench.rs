//! What `cargo xtask bench` measures inside the VM, where fq, netem and tbf exist: the same delay
//! through chaos-bpf (departure times under fq) and through netem, the same rate through
//! chaos-bpf's bandwidth and tbf, the same duplication through chaos-bpf and netem, side by side
//! on one kernel.
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use chaos::net::netlink;
use serde_json::json;

use crate::{
    ChaosRun,
    cases::{median, rtts, udp_echo_server},
};

const DELAY_MS: u64 = 10;

/// How much the in-VM part measures: the full bench's, or the quick one `cargo xtask test` runs
/// inside the VM suite's Debian 6.12 boot so a broken bench fails CI.
#[derive(Clone, Copy, Debug)]
pub struct VmSizes {
    pub samples: u32,
    /// Datagrams for duplication's precision.
    pub datagrams: u64,
    /// Seconds of transfer at the rate for bandwidth's precision.
    pub transfer_secs: f64,
    /// Faults armed for the global hook's cost, beside one.
    pub many_faults: usize,
    pub rounds: u32,
}

impl VmSizes {
    pub const FULL: VmSizes = VmSizes {
        samples: 1000,
        datagrams: 100_000,
        transfer_secs: 4.0,
        many_faults: 1000,
        rounds: 2000,
    };
    pub const QUICK: VmSizes = VmSizes {
        samples: 100,
        datagrams: 10_000,
        transfer_secs: 1.0,
        many_faults: 50,
        rounds: 200,
    };
}
/// netem's handle here, so the benchmark removes exactly what it added.
const NETEM_HANDLE: u32 = 0xBE4C_0000;
const LOOPBACK_IFINDEX: i32 = 1;

/// Every UDP packet on lo delayed by 10 ms, first by chaos-bpf, then by netem. A probe's request
/// and echo both leave through lo, so each round trip carries the delay twice: the per-packet
/// delay is half the increase over the baseline. Errors are that minus 10 ms; arm and disarm are
/// from the command to the first probe that shows (or no longer shows) the delay.
pub fn delay_versus_netem(sizes: VmSizes) -> anyhow::Result<serde_json::Value> {
    let (mut server, addr) = udp_echo_server()?;
    let baseline = median(&mut rtts(&addr, 200)?);

    let launched = Instant::now();
    let run = ChaosRun::start(&[
        "inject", "delay", "--iface", "lo", "--delay", "10ms", "--proto", "udp",
    ]);
    let chaos_arm = until_probe(&addr, baseline, true, launched)?;
    let chaos = rtts(&addr, sizes.samples)?;
    let stopping = Instant::now();
    let summary = run.stop().summary();
    let chaos_disarm = until_probe(&addr, baseline, false, stopping)?;
    ensure!(
        summary["injected"].as_u64() >= Some(u64::from(sizes.samples) * 2),
        "chaos-bpf delayed fewer packets than sent: {summary}"
    );

    let started = Instant::now();
    netlink::replace_root(
        LOOPBACK_IFINDEX,
        "netem",
        NETEM_HANDLE,
        Some(&netem_options(DELAY_MS, 0.0)),
    )
    .context("adding netem (sch_netem loaded?)")?;
    let netem_arm = until_probe(&addr, baseline, true, started)?;
    let netem = rtts(&addr, sizes.samples)?;
    let stopping = Instant::now();
    netlink::delete_root(LOOPBACK_IFINDEX, NETEM_HANDLE, "netem").context("deleting netem")?;
    let netem_disarm = until_probe(&addr, baseline, false, stopping)?;
    let _ = server.kill();

    Ok(json!({
        "delay_ms": DELAY_MS,
        "samples": sizes.samples,
        "baseline_rtt_us": baseline,
        "chaos-bpf": errors(chaos, baseline, chaos_arm, chaos_disarm),
        "netem": errors(netem, baseline, netem_arm, netem_disarm),
    }))
}

/// Per-packet delay error (median, p99), in ms, and the arm and disarm times.
fn errors(mut rtts: Vec<u64>, baseline: u64, arm: Duration, disarm: Duration) -> serde_json::Value {
    rtts.sort_unstable();
    let error_ms =
        |rtt: u64| (rtt.saturating_sub(baseline) as f64 / 2.0) / 1000.0 - DELAY_MS as f64;
    let at =
        |q: f64| rtts.get(((rtts.len() as f64 * q) as usize).min(rtts.len().saturating_sub(1)));
    json!({
        "median_error_ms": at(0.5).map(|r| error_ms(*r)),
        "p99_error_ms": at(0.99).map(|r| error_ms(*r)),
        "returned": rtts.len(),
        "arm_ms": arm.as_secs_f64() * 1000.0,
        "disarm_ms": disarm.as_secs_f64() * 1000.0,
    })
}

/// Probes until one round trip does (or, with `delayed` false, does not) carry the delay; the
/// time since `since`.
fn until_probe(
    addr: &str,
    baseline: u64,
    delayed: bool,
    since: Instant,
) -> anyhow::Result<Duration> {
    // Halfway between undelayed and twice-delayed round trips.
    let threshold = baseline + DELAY_MS * 1000;
    while since.elapsed() < Duration::from_secs(60) {
        if let Some(&rtt) = rtts(addr, 1)?.first()
            && (rtt > threshold) == delayed
        {
            return Ok(since.elapsed());
        }
    }
    anyhow::bail!(
        "the delay did not {} within 60 s",
        if delayed { "start" } else { "stop" }
    )
}

/// TCA_OPTIONS of a netem qdisc that delays every packet by `ms` and sends a `duplicate` share
/// twice: the fixed struct (latency in µs, a packet limit, no loss, gap or jitter; duplication
/// as a fraction of 2^32), then the nanosecond latency attribute newer kernels prefer.
fn netem_options(ms: u64, duplicate: f64) -> Vec<u8> {
    const TCA_NETEM_LATENCY64: u16 = 10;
    let duplicate = (duplicate * u32::MAX as f64) as u32;
    let mut options = Vec::new();
    for field in [ms as u32 * 1000, 100_000, 0, 0, duplicate, 0] {
        options.extend_from_slice(&field.to_ne_bytes());
    }
    let latency_ns = ms as i64 * 1_000_000;
    options.extend(netlink::attribute(
        TCA_NETEM_LATENCY64,
        &latency_ns.to_ne_bytes(),
    ));
    options
}

/// tbf's handle here.
const TBF_HANDLE: u32 = 0xBE4D_0000;

/// TCA_OPTIONS of a tbf qdisc at `bytes_per_sec` with `burst` bytes: TCA_TBF_PARMS with the
/// rate's link layer set (so no rate table is needed; the kernel computes the times), a queue
/// of a second's worth, then the burst in bytes (TCA_TBF_BURST), as `tc ... tbf burst` sends it.
fn tbf_options(bytes_per_sec: u32, burst: u32) -> Vec<u8> {
    const TCA_TBF_PARMS: u16 = 1;
    const TCA_TBF_BURST: u16 = 6;
    const TC_LINKLAYER_ETHERNET: u8 = 1;
    // struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
    let ratespec = |rate: u32| {
        let mut spec = vec![0u8, TC_LINKLAYER_ETHERNET];
        spec.extend_from_slice(&0u16.to_ne_bytes());
        spec.extend_from_slice(&0i16.to_ne_bytes());
        spec.extend_from_slice(&0u16.to_ne_bytes());
        spec.extend_from_slice(&rate.to_ne_bytes());
        spec
    };
    let mut parms = ratespec(bytes_per_sec);
    parms.extend(vec![0u8; 12]); // no peak rate
    let limit = bytes_per_sec.max(burst * 2);
    // limit (bytes); buffer and mtu in 64 ns ticks (the burst's time at the rate; no peak).
    let buffer_ticks = (u64::from(burst) * 1_000_000_000 / u64::from(bytes_per_sec) / 64) as u32;
    for field in [limit, buffer_ticks, 0] {
        parms.extend_from_slice(&field.to_ne_bytes());
    }
    let mut options = netlink::attribute(TCA_TBF_PARMS, &parms);
    options.extend(netlink::attribute(TCA_TBF_BURST, &burst.to_ne_bytes()));
    options
}

/// A TCP transfer on lo held to 10 Mbit/s, by chaos-bpf's bandwidth (an EDT token bucket under
/// fq, on one port, no burst) and by tbf on the whole of lo (its burst must hold one of lo's
/// 64 KiB GSO segments): the achieved rates and their errors.
pub fn bandwidth_versus_tbf(sizes: VmSizes) -> anyhow::Result<serde_json::Value> {
    const MBIT: f64 = 10.0;
    const TBF_BURST: u32 = 70_000;
    let sink = crate::tcp_counter("127.0.0.1:0");
    let bytes = (MBIT * 125_000.0 * sizes.transfer_secs) as usize;
    let run = crate::cases::bandwidth_on_lo("10mbit", sink.port());
    let chaos = crate::cases::transfer_mbit(&sink, bytes)?;
    run.stop();
    netlink::replace_root(
        LOOPBACK_IFINDEX,
        "tbf",
        TBF_HANDLE,
        Some(&tbf_options((MBIT * 125_000.0) as u32, TBF_BURST)),
    )
    .context("adding tbf (sch_tbf loaded?)")?;
    let tbf = crate::cases::transfer_mbit(&sink, bytes);
    netlink::delete_root(LOOPBACK_IFINDEX, TBF_HANDLE, "tbf").context("deleting tbf")?;
    let tbf = tbf?;
    let row = |mbit: f64, burst: u32| json!({"achieved_mbit": mbit, "error_pct": (mbit / MBIT - 1.0) * 100.0, "burst_bytes": burst});
    Ok(json!({
        "rate_mbit": MBIT,
        "bytes": bytes,
        "chaos-bpf": row(chaos, 0),
        "tbf": row(tbf, TBF_BURST),
    }))
}

/// UDP datagrams on lo, a tenth of them sent twice, by chaos-bpf's duplicate (a clone at TC
/// egress) and by netem's duplicate: the copies the receiver counts, against the 3 sigma band.
pub fn duplicate_versus_netem(sizes: VmSizes) -> anyhow::Result<serde_json::Value> {
    const P: f64 = 0.1;
    let datagrams = sizes.datagrams;
    let copies = |arm: &dyn Fn(u16) -> anyhow::Result<()>| -> anyhow::Result<u64> {
        let (receiver, addr) = crate::serve_with({
            let mut command = std::process::Command::new(crate::testkit_bin());
            command.args(["udp-recv", "127.0.0.1:0", &datagrams.to_string(), "1500"]);
            command
        });
        let port: u16 = addr.rsplit(':').next().unwrap_or("0").parse()?;
        arm(port)?;
        let sender = std::process::Command::new(crate::testkit_bin())
            .args(["udp-send", &addr, &datagrams.to_string()])
            .output()?;
        ensure!(sender.status.success(), "udp-send failed");
        let received = crate::last_json_line(&receiver.wait_with_output()?.stdout);
        received["duplicates"]
            .as_u64()
            .context("the receiver's duplicates")
    };
    let run = std::cell::RefCell::new(None);
    let chaos = copies(&|port| {
        *run.borrow_mut() = Some(ChaosRun::start(&[
            "inject",
            "duplicate",
            "--iface",
            "lo",
            "--probability",
            "0.1",
            "--proto",
            "udp",
            "--port",
            &port.to_string(),
        ]));
        Ok(())
    });
    if let Some(run) = run.borrow_mut().take() {
        run.stop();
    }
    let chaos = chaos?;
    let netem = copies(&|_| {
        netlink::replace_root(
            LOOPBACK_IFINDEX,
            "netem",
            NETEM_HANDLE,
            Some(&netem_options(0, P)),
        )
        .context("adding netem")
    });
    netlink::delete_root(LOOPBACK_IFINDEX, NETEM_HANDLE, "netem").context("deleting netem")?;
    let netem = netem?;
    let sigma = (datagrams as f64 * P * (1.0 - P)).sqrt();
    let row = |copies: u64| {
        json!({"copies": copies, "share": copies as f64 / datagrams as f64,
               "sigmas_off": (copies as f64 - datagrams as f64 * P) / sigma})
    };
    Ok(json!({
        "probability": P,
        "datagrams": datagrams,
        "three_sigma_copies": 3.0 * sigma,
        "chaos-bpf": row(chaos),
        "netem": row(netem),
    }))
}

/// The cost of a global hook for tasks outside every scope, from the kernel's own run-time
/// statistics (`kernel.bpf_stats_enabled`): the recv hook's nanoseconds per run with 1 and
/// 1,000 recv-error faults armed (each on its own cgroup, all one level deep, so each run is one
/// ancestor lookup and one hash lookup), and the probe's median UDP round trip beside none.
pub fn per_call_cost(sizes: VmSizes) -> anyhow::Result<serde_json::Value> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let (mut server, addr) = udp_echo_server()?;
    let rounds = sizes.rounds;
    let mut rows = serde_json::Map::new();
    rows.insert(
        "none".into(),
        json!({ "median_rtt_us": median(&mut rtts(&addr, rounds)?) }),
    );
    for mechanism in ["fmod-ret", "bpf-lsm"] {
        for count in [1usize, sizes.many_faults] {
            let cgroups: Vec<crate::TestCgroup> = (0..count)
                .map(|n| crate::TestCgroup::new(&format!("cost{n}")))
                .collect();
            let faults: Vec<serde_json::Value> = cgroups
                .iter()
                .map(|cgroup| {
                    json!({"kind": "recv-error", "errno": "ECONNRESET",
                           "scope": {"cgroup": cgroup.path}, "mechanism": mechanism})
                })
                .collect();
            let file = crate::TempFile::new("cost", &json!({ "faults": faults }).to_string());
            let run = ChaosRun::start(&["run", file.arg()]);
            let ids = run.program_ids();
            let before = run_stats(&ids)?;
            let rtt = median(&mut rtts(&addr, rounds)?);
            let after = run_stats(&ids)?;
            run.stop();
            let runs = after.1.saturating_sub(before.1);
            ensure!(runs > 0, "{mechanism}: the recv hook never ran");
            rows.insert(
                format!("{mechanism} with {count}"),
                json!({
                    "ns_per_run": (after.0.saturating_sub(before.0)) as f64 / runs as f64,
                    "runs": runs,
                    "median_rtt_us": rtt,
                }),
            );
        }
    }
    let _ = server.kill();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    Ok(serde_json::Value::Object(rows))
}

/// (run time in ns, run count) summed over the programs with these ids.
fn run_stats(ids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let mut totals = (0u64, 0u64);
    for program in aya::programs::loaded_programs() {
        let program = program?;
        if ids.contains(&program.id()) {
            totals.0 += program.run_time().as_nanos() as u64;
            totals.1 += program.run_count();
        }
    }
    Ok(totals)
}
