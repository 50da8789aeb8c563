//! drop on the real kernel: datagrams really go missing at the configured rate, senders see no
//! error, TCP recovers, and the counters equal what the receiver missed.
use std::process::Command;

use chaos_tests::{
    ChaosRun, TestCgroup, binomial_bound, last_json_line, require_root, serve_with, tcp_counter,
    testkit_bin,
};

const DATAGRAMS: u64 = 3000;
const P: f64 = 0.3;

/// Starts `udp-recv` (in `cgroup` or outside), returns the child and its bound address.
fn receiver(cgroup: Option<&TestCgroup>, bind: &str) -> (std::process::Child, String) {
    let mut command = match cgroup {
        Some(cgroup) => cgroup.command(testkit_bin()),
        None => Command::new(testkit_bin()),
    };
    command.args(["udp-recv", bind, &DATAGRAMS.to_string(), "1500"]);
    serve_with(command)
}

fn check_loss(direction: &str, received: u64, injected: u64) {
    let lost = DATAGRAMS - received;
    let bound = binomial_bound(DATAGRAMS, P);
    println!(
        "drop {direction} p={P}: lost {lost}/{DATAGRAMS} ({:.3}), chaos-bpf injected {injected}, 99.9% bound {:.0} ± {bound:.0}",
        lost as f64 / DATAGRAMS as f64,
        DATAGRAMS as f64 * P
    );
    assert!(
        (lost as f64 - DATAGRAMS as f64 * P).abs() <= bound,
        "{direction}: lost {lost}"
    );
    assert_eq!(
        injected, lost,
        "{direction}: counters must equal what the receiver missed"
    );
}

#[test]
fn egress_udp_loss_matches_probability_and_counters() {
    require_root();
    let cgroup = TestCgroup::new("drop-egress");
    let (receiver, addr) = receiver(None, "127.0.0.1:0");
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--direction",
        "egress",
        "--probability",
        &P.to_string(),
        "--proto",
        "udp",
    ]);
    let sent = cgroup.testkit(&["udp-send", &addr, &DATAGRAMS.to_string()]);
    assert_eq!(
        sent["send_errors"], 0,
        "a drop must look like loss, not an error: {sent}"
    );
    let received = last_json_line(&receiver.wait_with_output().unwrap().stdout)["received"]
        .as_u64()
        .unwrap();
    let summary = run.stop().summary();
    check_loss("egress", received, summary["injected"].as_u64().unwrap());
}

#[test]
fn ingress_udp_loss_over_ipv6_matches_probability_and_counters() {
    require_root();
    let cgroup = TestCgroup::new("drop-ingress");
    let (receiver, addr) = receiver(Some(&cgroup), "[::1]:0");
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--direction",
        "ingress",
        "--probability",
        &P.to_string(),
    ]);
    // The sender is this test's own process tree, outside the cgroup.
    let output = Command::new(testkit_bin())
        .args(["udp-send", &addr, &DATAGRAMS.to_string()])
        .output()
        .unwrap();
    assert_eq!(last_json_line(&output.stdout)["send_errors"], 0);
    let received = last_json_line(&receiver.wait_with_output().unwrap().stdout)["received"]
        .as_u64()
        .unwrap();
    let summary = run.stop().summary();
    check_loss("ingress", received, summary["injected"].as_u64().unwrap());
}

#[test]
fn tcp_transfer_completes_through_20_percent_loss_both_ways() {
    require_root();
    let server = tcp_counter("127.0.0.1:0");
    let cgroup = TestCgroup::new("drop-tcp");
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--direction",
        "both",
        "--probability",
        "0.2",
        "--proto",
        "tcp",
    ]);
    let result = cgroup.testkit(&["tcp-send", &server.to_string(), "4194304"]);
    let summary = run.stop().summary();
    println!("tcp through 20% loss: {result}, chaos-bpf {summary}");
    assert_eq!(
        result["acknowledged"], 4194304,
        "every byte arrives: {result}"
    );
    assert!(
        summary["injected"].as_u64().unwrap() > 0,
        "some segments were dropped: {summary}"
    );
}

#[test]
fn port_filter_spares_other_flows() {
    require_root();
    let cgroup = TestCgroup::new("drop-port");
    let (receiver, addr) = receiver(None, "127.0.0.1:0");
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--port",
        "9",
    ]);
    cgroup.testkit(&["udp-send", &addr, &DATAGRAMS.to_string()]);
    let received = last_json_line(&receiver.wait_with_output().unwrap().stdout)["received"]
        .as_u64()
        .unwrap();
    let summary = run.stop().summary();
    assert_eq!(received, DATAGRAMS, "traffic to another port is untouched");
    assert_eq!(summary["matched"], 0);
}
