//! connect-error on the real kernel: processes in the cgroup get the exact errno from connect(),
//! everyone else connects normally.
use chaos_tests::{ChaosRun, TestCgroup, binomial_bound, require_root, tcp_sink};

fn cgroup_arg(cgroup: &TestCgroup) -> &str {
    cgroup.path.to_str().expect("utf-8 path")
}

#[test]
fn each_errno_reaches_the_process_over_ipv4_and_ipv6() {
    require_root();
    let v4 = tcp_sink("127.0.0.1:0");
    let v6 = tcp_sink("[::1]:0");
    let cgroup = TestCgroup::new("errno");
    for (name, number) in [
        ("ECONNREFUSED", 111),
        ("ETIMEDOUT", 110),
        ("ENETUNREACH", 101),
        ("13", 13),
    ] {
        let run = ChaosRun::start(&[
            "inject",
            "connect-error",
            "--cgroup",
            cgroup_arg(&cgroup),
            "--errno",
            name,
        ]);
        for addr in [v4, v6] {
            let result = cgroup.testkit(&["connect", &addr.to_string(), "5"]);
            assert_eq!(result["ok"], 0, "{name} {addr}: {result}");
            assert_eq!(
                result["errnos"][number.to_string()],
                5,
                "{name} {addr}: {result}"
            );
        }
        let summary = run.stop().summary();
        assert_eq!(summary["injected"], 10, "{summary}");
        assert_eq!(summary["matched"], 10, "{summary}");
    }
}

#[test]
fn processes_outside_the_cgroup_are_untouched() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let target = TestCgroup::new("target");
    let sibling = TestCgroup::new("sibling");
    let run = ChaosRun::start(&["inject", "connect-error", "--cgroup", cgroup_arg(&target)]);
    assert_eq!(
        target.testkit(&["connect", &addr.to_string(), "3"])["ok"],
        0
    );
    assert_eq!(
        sibling.testkit(&["connect", &addr.to_string(), "3"])["ok"],
        3
    );
    // The test process itself is outside too.
    for _ in 0..3 {
        std::net::TcpStream::connect(addr).expect("connect from outside the cgroup");
    }
    let summary = run.stop().summary();
    assert_eq!(
        summary["injected"], 3,
        "only the target's connects count: {summary}"
    );
}

#[test]
fn dst_and_port_filters_let_other_connects_through() {
    require_root();
    let first = tcp_sink("127.0.0.1:0");
    let second = tcp_sink("127.0.0.1:0");
    let on_other_address = tcp_sink("127.0.0.2:0");
    let cgroup = TestCgroup::new("filters");

    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--port",
        &first.port().to_string(),
    ]);
    assert_eq!(
        cgroup.testkit(&["connect", &first.to_string(), "3"])["ok"],
        0
    );
    assert_eq!(
        cgroup.testkit(&["connect", &second.to_string(), "3"])["ok"],
        3
    );
    run.stop();

    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--dst",
        "127.0.0.2/32,fd00::/8",
    ]);
    assert_eq!(
        cgroup.testkit(&["connect", &on_other_address.to_string(), "3"])["ok"],
        0
    );
    assert_eq!(
        cgroup.testkit(&["connect", &first.to_string(), "3"])["ok"],
        3
    );
    let summary = run.stop().summary();
    assert_eq!(
        summary["matched"], 3,
        "non-matching connects are not even counted as matched: {summary}"
    );
}

#[test]
fn probability_half_over_1000_connects_is_within_the_binomial_bound() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("probability");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--probability",
        "0.5",
    ]);
    let result = cgroup.testkit(&["connect", &addr.to_string(), "1000"]);
    let failed = 1000 - result["ok"].as_u64().unwrap();
    let bound = binomial_bound(1000, 0.5);
    println!("probability 0.5: {failed}/1000 failed (99.9% bound 500 ± {bound:.0})");
    assert!((failed as f64 - 500.0).abs() <= bound, "{failed} failures");
    assert_eq!(result["errnos"]["111"].as_u64().unwrap_or(0), failed);
    let summary = run.stop().summary();
    assert_eq!(
        summary["injected"].as_u64(),
        Some(failed),
        "counters equal what the process saw: {summary}"
    );
    assert_eq!(summary["matched"], 1000);
}

#[test]
fn events_name_the_process_peer_and_errno() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("events");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--errno",
        "EHOSTUNREACH",
        "--events",
        "json",
    ]);
    cgroup.testkit(&["connect", &addr.to_string(), "2"]);
    let output = run.stop();
    let events = output.events();
    assert_eq!(events.len(), 2, "{}", output.stdout);
    let cgroup_id = std::fs::metadata(&cgroup.path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let summary = output.summary();
    for event in events {
        assert_eq!(event["type"], "injection");
        assert_eq!(event["fault"], "connect-error");
        assert_eq!(event["fault_id"], summary["fault_id"]);
        assert_eq!(event["verdict"], "failed");
        assert_eq!(event["proto"], "tcp");
        let time = event["time"].as_str().unwrap();
        assert!(
            time.len() == 27 && time.ends_with('Z') && time[..4].parse::<u32>().unwrap() >= 2024,
            "RFC 3339 wall-clock time: {time}"
        );
        assert_eq!(event["errno"], "EHOSTUNREACH");
        assert_eq!(event["errno_value"], 113);
        assert_eq!(event["comm"], "chaos-testkit");
        assert_eq!(event["peer"], addr.to_string());
        assert_eq!(event["cgroup_id"], cgroup_id);
        assert!(event["pid"].as_u64().unwrap() > 0);
    }
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["fault"], "connect-error");
    assert_eq!(summary["events_emitted"], 2);
    assert!(summary["duration_ms"].as_u64().unwrap() > 0);
}

#[test]
fn events_are_sampled_but_counters_stay_exact() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("sampling");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--events",
        "json",
        "--events-per-cpu-per-sec",
        "5",
    ]);
    cgroup.testkit(&["connect", &addr.to_string(), "200"]);
    let output = run.stop();
    let summary = output.summary();
    let emitted = output.events().len() as u64;
    let sampled_out = summary["events_sampled_out"].as_u64().unwrap();
    assert_eq!(summary["injected"], 200, "{summary}");
    assert!(emitted < 200, "events were limited: {emitted}");
    assert_eq!(
        emitted + sampled_out + summary["events_lost"].as_u64().unwrap(),
        200,
        "{summary}"
    );
}

/// cgroup links are multi-attach: a second fault (or another tool's program) on the same cgroup
/// runs beside the first, and each keeps its own filters, errno and counters.
#[test]
fn two_faults_on_one_cgroup_both_fire() {
    require_root();
    let (first, second) = (tcp_sink("127.0.0.1:0"), tcp_sink("127.0.0.1:0"));
    let cgroup = TestCgroup::new("two-faults");
    let port = |addr: std::net::SocketAddr| addr.port().to_string();
    let (first_port, second_port) = (port(first), port(second));
    let refused = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--port",
        &first_port,
    ]);
    let timed_out = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup_arg(&cgroup),
        "--port",
        &second_port,
        "--errno",
        "ETIMEDOUT",
    ]);
    assert_eq!(
        chaos_tests::attached_program_ids(&cgroup.path).len(),
        4,
        "connect4 and connect6 of each"
    );
    let result = cgroup.testkit(&["connect", &first.to_string(), "3"]);
    assert_eq!(result["errnos"]["111"], 3, "{result}");
    let result = cgroup.testkit(&["connect", &second.to_string(), "3"]);
    assert_eq!(result["errnos"]["110"], 3, "{result}");
    let (one, two) = (refused.stop().summary(), timed_out.stop().summary());
    assert_eq!(
        (one["injected"].as_u64(), two["injected"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(chaos_tests::attached_program_ids(&cgroup.path).is_empty());
}
