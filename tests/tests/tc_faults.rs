//! Packet faults at the TC layer between two network namespaces joined by a veth pair, each test
//! with its own namespaces (removed even when it fails): drop rates per direction and loss model,
//! reproducible seeds, the pod (`--netns`) and cgroup scopes, TCP reset, and exact cleanup.
use chaos_tests::{
    ChaosRun, Netns, TestCgroup, VethPair, binomial_bound, chaos_bin, require_root, tc_state,
};

const SENT: u64 = 3000;

fn chaos_in(netns: &Netns, args: &[&str]) -> ChaosRun {
    netns.start_chaos(args)
}

/// Sends SENT numbered datagrams from `from` (optionally in `cgroup`) to a receiver in `to`;
/// returns (received, missing sequence numbers).
fn udp_through(
    from: &Netns,
    cgroup: Option<&TestCgroup>,
    to: &Netns,
    to_addr: &str,
) -> (u64, Vec<u64>) {
    let result = from.udp_to(cgroup, to, to_addr, SENT);
    let missing = result["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    (result["received"].as_u64().unwrap(), missing)
}

fn assert_rate(what: &str, lost: u64, p: f64) {
    let bound = binomial_bound(SENT, p);
    println!(
        "{what}: lost {lost}/{SENT} ({:.3}), 99.9% bound {:.0} ± {bound:.0}",
        lost as f64 / SENT as f64,
        SENT as f64 * p
    );
    assert!(
        (lost as f64 - SENT as f64 * p).abs() <= bound,
        "{what}: lost {lost}"
    );
}

#[test]
fn drop_on_an_interface_each_direction_within_the_binomial_bound() {
    require_root();
    let net = VethPair::new("tcdrop");
    for (direction, runs_in, iface) in [
        ("egress", &net.a, &net.a_if),
        ("ingress", &net.b, &net.b_if),
    ] {
        let run = chaos_in(
            runs_in,
            &[
                "inject",
                "drop",
                "--iface",
                iface,
                "--direction",
                direction,
                "--probability",
                "0.3",
                "--proto",
                "udp",
            ],
        );
        let (received, _) = udp_through(&net.a, None, &net.b, &net.b_addr);
        let summary = run.stop().summary();
        assert_rate(&format!("tc drop {direction}"), SENT - received, 0.3);
        assert_eq!(
            summary["injected"].as_u64(),
            Some(SENT - received),
            "counters equal the loss: {summary}"
        );
    }
}

#[test]
fn loss_models_every_nth_first_n_and_gilbert_elliott_bursts() {
    require_root();
    let net = VethPair::new("tcloss");
    let drop = |model: &str| {
        chaos_in(
            &net.a,
            &[
                "inject",
                "drop",
                "--iface",
                &net.a_if,
                "--proto",
                "udp",
                "--loss-model",
                model,
            ],
        )
    };

    let run = drop("every-nth:4");
    let (received, missing) = udp_through(&net.a, None, &net.b, &net.b_addr);
    run.stop();
    assert_eq!(SENT - received, SENT / 4, "every 4th packet");
    assert!(
        missing.iter().all(|seq| seq % 4 == 3),
        "the 4th, 8th, ...: {:?}",
        &missing[..8.min(missing.len())]
    );

    let run = drop("first:100");
    let (_, missing) = udp_through(&net.a, None, &net.b, &net.b_addr);
    run.stop();
    assert_eq!(
        missing,
        (0..100).collect::<Vec<_>>(),
        "exactly the first 100"
    );

    // Simple Gilbert: lose everything in the bad state, nothing in the good one. Loss rate
    // p/(p+r) = 1/6 and mean burst length 1/r = 4.
    let run = drop("gilbert-elliott:0.05,0.25,0,1");
    let (received, missing) = udp_through(&net.a, None, &net.b, &net.b_addr);
    run.stop();
    let bursts =
        missing.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(!missing.is_empty());
    let mean_burst = missing.len() as f64 / bursts.max(1) as f64;
    println!(
        "gilbert-elliott: lost {}/{SENT}, {bursts} bursts, mean burst length {mean_burst:.2} (expected 4)",
        SENT - received
    );
    assert!(
        (mean_burst - 4.0).abs() <= 1.2,
        "mean burst length {mean_burst}"
    );
    let rate = (SENT - received) as f64 / SENT as f64;
    assert!((rate - 1.0 / 6.0).abs() <= 0.07, "loss rate {rate}");
}

#[test]
fn the_same_seed_makes_the_same_decisions() {
    require_root();
    let net = VethPair::new("tcseed");
    let run_once = |seed: &str| {
        let run = chaos_in(
            &net.a,
            &[
                "inject",
                "drop",
                "--iface",
                &net.a_if,
                "--proto",
                "udp",
                "--probability",
                "0.3",
                "--seed",
                seed,
            ],
        );
        let (_, missing) = udp_through(&net.a, None, &net.b, &net.b_addr);
        run.stop();
        missing
    };
    let first = run_once("42");
    assert_eq!(
        first,
        run_once("42"),
        "same seed, same packet sequence, same losses"
    );
    assert_ne!(first, run_once("43"), "another seed, other losses");
    assert_rate("seeded drop", first.len() as u64, 0.3);
}

#[test]
fn netns_scope_finds_the_pods_host_side_veth_and_maps_directions() {
    require_root();
    // `a` plays the node, `b` the pod: chaos-bpf runs on the node and is given the pod's netns.
    let net = VethPair::new("tcpod");
    let pod = net.b.path();
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "drop",
            "--netns",
            &pod,
            "--direction",
            "egress",
            "--proto",
            "udp",
        ],
    );
    assert!(
        run.first_lines()
            .contains(&format!("host-side veth {}", net.a_if)),
        "{}",
        run.first_lines()
    );
    let (received, _) = udp_through(&net.b, None, &net.a, &net.a_addr);
    assert_eq!(received, 0, "the pod's egress is dropped");
    let (received, _) = udp_through(&net.a, None, &net.b, &net.b_addr);
    assert_eq!(received, SENT, "its ingress is not");
    run.stop();

    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "drop",
            "--netns",
            &pod,
            "--direction",
            "ingress",
            "--proto",
            "udp",
        ],
    );
    let (received, _) = udp_through(&net.a, None, &net.b, &net.b_addr);
    assert_eq!(received, 0, "the pod's ingress is dropped");
    run.stop();
}

/// With --cgroup alone a TC fault goes where the cgroup's packets leave: every interface that
/// is up, egress, with the cgroup checked per packet.
#[test]
fn a_cgroup_alone_scopes_tc_faults_on_every_interface() {
    require_root();
    let net = VethPair::new("tccgall");
    net.software_checksums();
    let cgroup = TestCgroup::new("tc-cgroup-all");
    let path = cgroup.path.to_str().unwrap();
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "corrupt",
            "--cgroup",
            path,
            "--proto",
            "udp",
            "--fix-checksum",
        ],
    );
    let armed = run.first_lines();
    assert!(
        armed.contains(&format!("interfaces lo, {}", net.a_if)),
        "{armed}"
    );
    let inside = net.a.udp_to(Some(&cgroup), &net.b, &net.b_addr, 200);
    assert_eq!(inside["altered"], 200, "the cgroup's datagrams: {inside}");
    let outside = net.a.udp_to(None, &net.b, &net.b_addr, 200);
    assert_eq!(outside["altered"], 0, "everyone else's: {outside}");
    assert_eq!(run.stop().summary()["injected"], 200);

    let ingress = chaos_tests::chaos(&[
        "inject",
        "reset",
        "--cgroup",
        path,
        "--direction",
        "ingress",
    ]);
    assert_eq!(ingress.code, Some(2), "{}", ingress.stderr);
    assert!(ingress.stderr.contains("--direction"), "{}", ingress.stderr);
}

/// reset and corrupt on a pod (--netns: run on the node, given the pod's namespace), and reset on
/// a cgroup alone: the scope's flows break or change, the others do not.
#[test]
fn reset_and_corrupt_reach_a_pod_and_a_cgroup() {
    require_root();
    // `a` plays the node, `b` the pod.
    let net = VethPair::new("tcpodrc");
    net.software_checksums();
    let pod = net.b.path();
    let (_sink, sink_addr) = net.a.serve(&["tcp-sink", &format!("{}:0", net.a_addr)]);
    let port = sink_addr.rsplit(':').next().unwrap();
    // The node's ACKs become RSTs as they enter the pod: the pod's client is reset mid-transfer.
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "reset",
            "--netns",
            &pod,
            "--direction",
            "ingress",
            "--sport",
            port,
            "--tcp-flags",
            "ACK",
        ],
    );
    let in_pod = net.b.testkit(None, &["tcp-send", &sink_addr, "4194304"]);
    run.stop();
    assert_eq!(in_pod["errno"], 104, "the pod's flow is reset: {in_pod}");
    let after = net.b.testkit(None, &["tcp-send", &sink_addr, "4194304"]);
    assert_eq!(
        after["acknowledged"], 4194304,
        "and works again after: {after}"
    );

    // What the pod sends arrives corrupted on the node.
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "corrupt",
            "--netns",
            &pod,
            "--proto",
            "udp",
            "--fix-checksum",
        ],
    );
    let from_pod = net.b.udp_to(None, &net.a, &net.a_addr, 300);
    run.stop();
    assert_eq!(from_pod["altered"], 300, "{from_pod}");

    // A cgroup alone: its first segment to the server becomes a RST, so the server resets what
    // follows; a process outside the cgroup completes the same transfer.
    let (_server, server_addr) = net.b.serve(&["tcp-sink", &format!("{}:0", net.b_addr)]);
    let port = server_addr.rsplit(':').next().unwrap();
    let cgroup = TestCgroup::new("tc-reset-cg");
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "reset",
            "--cgroup",
            cgroup.path.to_str().unwrap(),
            "--proto",
            "tcp",
            "--dport",
            port,
            "--loss-model",
            "first:1",
        ],
    );
    let inside = net
        .a
        .testkit(Some(&cgroup), &["tcp-send", &server_addr, "4194304"]);
    let outside = net.a.testkit(None, &["tcp-send", &server_addr, "4194304"]);
    run.stop();
    assert!(
        inside["errno"] == 104 || inside["errno"] == 32,
        "the cgroup's flow is reset: {inside}"
    );
    assert_eq!(outside["acknowledged"], 4194304, "{outside}");
}

/// --cgroup alone skips devices that would see a packet twice: a bridge's enslaved port carries
/// what already went through the bridge.
#[test]
fn a_cgroup_alone_skips_enslaved_ports() {
    require_root();
    let netns = Netns::new("tcbr");
    netns.ip(&["link", "add", "chbr0", "type", "bridge"]);
    netns.ip(&[
        "link", "add", "chp0", "type", "veth", "peer", "name", "chp1",
    ]);
    netns.ip(&["link", "set", "chp0", "master", "chbr0"]);
    for link in ["chbr0", "chp0", "chp1"] {
        netns.ip(&["link", "set", link, "up"]);
    }
    let cgroup = TestCgroup::new("tc-bridge");
    let run = chaos_in(
        &netns,
        &[
            "inject",
            "corrupt",
            "--cgroup",
            cgroup.path.to_str().unwrap(),
            "--proto",
            "udp",
        ],
    );
    let armed = run.first_lines();
    assert!(armed.contains("interfaces lo, chbr0, chp1,"), "{armed}");
    run.stop();
}

#[test]
fn cgroup_scope_on_an_interface_only_hits_the_cgroup() {
    require_root();
    let net = VethPair::new("tccg");
    let cgroup = TestCgroup::new("tc-cgroup");
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "drop",
            "--iface",
            &net.a_if,
            "--cgroup",
            cgroup.path.to_str().unwrap(),
            "--proto",
            "udp",
        ],
    );
    let (received, _) = udp_through(&net.a, Some(&cgroup), &net.b, &net.b_addr);
    assert_eq!(received, 0, "the cgroup's packets are dropped");
    let (received, _) = udp_through(&net.a, None, &net.b, &net.b_addr);
    assert_eq!(received, SENT, "other processes' packets pass");
    run.stop();
}

#[test]
fn reset_breaks_the_matching_flow_mid_transfer_and_spares_others() {
    require_root();
    let net = VethPair::new("tcrst");
    let (_target, target_addr) = net.b.serve(&["tcp-sink", &format!("{}:0", net.b_addr)]);
    let (_other, other_addr) = net.b.serve(&["tcp-sink", &format!("{}:0", net.b_addr)]);
    let port = target_addr.rsplit(':').next().unwrap();
    // The server's ACKs become RSTs on their way into the client's namespace.
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "reset",
            "--iface",
            &net.a_if,
            "--direction",
            "ingress",
            "--sport",
            port,
            "--tcp-flags",
            "ACK",
            "--events",
            "json",
        ],
    );
    let broken = net.a.testkit(None, &["tcp-send", &target_addr, "4194304"]);
    let spared = net.a.testkit(None, &["tcp-send", &other_addr, "4194304"]);
    let output = run.stop();
    println!("reset: matching flow {broken}, other flow {spared}");
    assert_eq!(broken["errno"], 104, "Connection reset by peer: {broken}");
    assert_eq!(spared["acknowledged"], 4194304, "{spared}");
    assert!(output.summary()["injected"].as_u64().unwrap() >= 1);
    assert!(output.events().iter().all(|e| e["verdict"] == "reset"));
}

#[test]
fn nothing_is_left_behind_after_exit_sigterm_or_sigkill() {
    require_root();
    let net = VethPair::new("tcleft");
    // Other tools' TC configuration, which must survive untouched: a clsact qdisc, and another
    // tcx program (a second chaos-bpf whose rule matches nothing; this kernel has no other
    // classifier modules to stand in).
    let status = net
        .a
        .command("tc")
        .args(["qdisc", "add", "dev", &net.a_if, "clsact"])
        .status()
        .unwrap();
    assert!(status.success(), "tc qdisc add clsact");
    let _other_tool = chaos_in(
        &net.a,
        &[
            "inject",
            "drop",
            "--iface",
            &net.a_if,
            "--direction",
            "both",
            "--port",
            "9",
        ],
    );
    let before = tc_state(&net.a, &net.a_if);
    let args = [
        "inject",
        "drop",
        "--iface",
        net.a_if.as_str(),
        "--direction",
        "both",
        "--probability",
        "0.1",
    ];

    let mut with_duration = args.to_vec();
    with_duration.extend(["--duration", "1s"]);
    let mut finished = chaos_in(&net.a, &with_duration);
    assert_eq!(finished.wait().code, Some(0));
    assert_eq!(tc_state(&net.a, &net.a_if), before, "after --duration");

    chaos_in(&net.a, &args).stop();
    assert_eq!(tc_state(&net.a, &net.a_if), before, "after SIGTERM");

    let run = chaos_in(&net.a, &args);
    assert_ne!(
        tc_state(&net.a, &net.a_if),
        before,
        "attached while running"
    );
    run.kill_hard();
    assert!(
        chaos_tests::eventually(std::time::Duration::from_secs(5), || tc_state(
            &net.a, &net.a_if
        ) == before),
        "after SIGKILL (tcx links die with the process): {}",
        tc_state(&net.a, &net.a_if)
    );
}

/// `chaos-bpf cleanup` run in `netns`'s network namespace; its JSON report.
fn cleanup_in(netns: &Netns) -> serde_json::Value {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.path()))
        .arg(chaos_bin())
        .arg("cleanup")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    chaos_tests::last_json_line(&output.stdout)
}

#[test]
fn clsact_path_restores_state_and_cleanup_undoes_a_sigkill() {
    require_root();
    let net = VethPair::new("tccls");
    let before = tc_state(&net.a, &net.a_if);
    let args = [
        "inject",
        "drop",
        "--iface",
        net.a_if.as_str(),
        "--direction",
        "both",
        "--probability",
        "0.1",
        "--mechanism",
        "tc-clsact",
    ];

    let run = chaos_in(&net.a, &args);
    assert!(
        run.first_line().contains("via tc-clsact"),
        "{}",
        run.first_line()
    );
    assert_ne!(
        tc_state(&net.a, &net.a_if),
        before,
        "a clsact qdisc and filters while running"
    );
    run.stop();
    assert_eq!(
        tc_state(&net.a, &net.a_if),
        before,
        "after SIGTERM, the clsact chaos-bpf added is gone too"
    );

    // SIGKILL leaves netlink filters and the qdisc behind; cleanup removes exactly those.
    chaos_in(&net.a, &args).kill_hard();
    assert_ne!(
        tc_state(&net.a, &net.a_if),
        before,
        "a SIGKILL leaves clsact state"
    );
    let report = cleanup_in(&net.a);
    println!("cleanup after SIGKILL: {report}");
    assert_eq!(report["filters_removed"], 2, "{report}");
    assert_eq!(report["qdiscs_removed"], 1, "{report}");
    assert_eq!(
        tc_state(&net.a, &net.a_if),
        before,
        "after SIGKILL and cleanup"
    );

    // The next start cleans up too.
    chaos_in(&net.a, &args).kill_hard();
    chaos_in(&net.a, &args).stop();
    assert_eq!(
        tc_state(&net.a, &net.a_if),
        before,
        "after SIGKILL and another run"
    );
}

#[test]
fn a_clsact_that_another_tool_added_stays() {
    require_root();
    let net = VethPair::new("tcown");
    let status = net
        .a
        .command("tc")
        .args(["qdisc", "add", "dev", &net.a_if, "clsact"])
        .status()
        .unwrap();
    assert!(status.success());
    let before = tc_state(&net.a, &net.a_if);
    chaos_in(
        &net.a,
        &[
            "inject",
            "reset",
            "--iface",
            &net.a_if,
            "--mechanism",
            "tc-clsact",
            "--dport",
            "9",
        ],
    )
    .stop();
    assert_eq!(
        tc_state(&net.a, &net.a_if),
        before,
        "their clsact stays; our filter is gone"
    );
}

#[test]
fn corrupt_changes_bytes_with_fix_checksum_and_loses_packets_without() {
    require_root();
    let net = VethPair::new("tccor");
    net.software_checksums();
    let corrupt = |fix: bool| {
        let mut args = vec![
            "inject",
            "corrupt",
            "--iface",
            net.a_if.as_str(),
            "--proto",
            "udp",
            "--probability",
            "0.3",
        ];
        if fix {
            args.push("--fix-checksum");
        }
        let run = chaos_in(&net.a, &args);
        let result = net.a.udp_to(None, &net.b, &net.b_addr, SENT);
        let injected = run.stop().summary()["injected"].as_u64().unwrap();
        (
            result["delivered"].as_u64().unwrap(),
            result["altered"].as_u64().unwrap(),
            injected,
        )
    };

    let (delivered, altered, injected) = corrupt(true);
    println!(
        "corrupt --fix-checksum: {delivered} delivered, {altered} altered, {injected} injected"
    );
    assert_eq!(
        delivered, SENT,
        "with a fixed checksum every datagram arrives"
    );
    assert_eq!(altered, injected, "each corrupted datagram arrives changed");
    assert_rate("corrupt", injected, 0.3);

    let (delivered, altered, injected) = corrupt(false);
    println!(
        "corrupt, stale checksum: {delivered} delivered, {altered} altered, {injected} injected"
    );
    assert_eq!(altered, 0, "no corruption reaches the application");
    assert_eq!(
        delivered,
        SENT - injected,
        "the receiver drops every corrupted datagram"
    );
}

/// duplicate sends a share of the packets twice, as they leave: over 100,000 datagrams the
/// receiver counts copies within 3 sigma of the probability, loses none, gets none altered, and
/// the fault's counters equal the copies. Ingress is refused (copies are made as packets leave).
#[test]
fn duplicate_sends_a_share_of_packets_twice_within_three_sigma() {
    require_root();
    let net = VethPair::new("tcdup");
    const DATAGRAMS: u64 = 100_000;
    const P: f64 = 0.1;
    let run = chaos_in(
        &net.a,
        &[
            "inject",
            "duplicate",
            "--iface",
            &net.a_if,
            "--probability",
            "0.1",
            "--proto",
            "udp",
        ],
    );
    let programs = run.program_ids();
    let received = net.a.udp_to(None, &net.b, &net.b_addr, DATAGRAMS);
    let summary = run.stop().summary();
    let copies = received["duplicates"].as_u64().unwrap();
    let sigma = (DATAGRAMS as f64 * P * (1.0 - P)).sqrt();
    println!(
        "duplicate: {copies} copies over {DATAGRAMS} ({:.4}), target {P} ± {:.0} (3 sigma)",
        copies as f64 / DATAGRAMS as f64,
        3.0 * sigma
    );
    assert_eq!(
        received["received"], DATAGRAMS,
        "lost datagrams: {received}"
    );
    assert_eq!(received["altered"], 0, "{received}");
    assert!(
        (copies as f64 - DATAGRAMS as f64 * P).abs() <= 3.0 * sigma,
        "{copies} copies"
    );
    // A copy is a packet like any other and can be lost on the way (a full backlog queue): the
    // counters say how many were sent, at most a few more than arrived.
    let sent = summary["injected"].as_u64().unwrap();
    assert!(
        sent >= copies && sent - copies <= copies / 1000 + 1,
        "the counters ({sent}) agree with the copies received ({copies}): {summary}"
    );
    assert!(chaos_tests::still_loaded(&programs).is_empty());
    let refused = chaos_tests::chaos(&[
        "inject",
        "duplicate",
        "--iface",
        "lo",
        "--direction",
        "ingress",
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--direction"), "{}", refused.stderr);
}

/// bandwidth needs fq, as delay does: where this kernel lacks it, the VM suite's `bandwidth` case
/// proves the rate (on kernels with fq), and here chaos-bpf must refuse it with the reason.
#[test]
fn bandwidth_holds_a_rate_or_is_refused_without_fq() {
    require_root();
    match chaos_tests::cases::bandwidth_case(&chaos_tests::doctor_report()) {
        chaos_tests::cases::Outcome::Pass(detail) => println!("bandwidth: {detail}"),
        chaos_tests::cases::Outcome::Skip(reason) => {
            println!("SKIP bandwidth here (the VM suite covers it): {reason}");
            let output =
                chaos_tests::chaos(&["inject", "bandwidth", "--iface", "lo", "--rate", "1mbit"]);
            assert_eq!(output.code, Some(2), "{}", output.stderr);
            assert!(output.stderr.contains("fq"), "{}", output.stderr);
        }
        chaos_tests::cases::Outcome::Fail(reason) => panic!("bandwidth: {reason}"),
    }
}
