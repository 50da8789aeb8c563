//! doctor reports every mechanism and every fault, found out by loading probe programs.
use chaos_tests::{chaos, require_root};

#[test]
fn doctor_json_covers_every_mechanism_and_fault() {
    require_root();
    let output = chaos(&["doctor", "--json"]);
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let report: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
    let mechanisms: Vec<&str> = report["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mechanism"].as_str().unwrap())
        .collect();
    for expected in [
        "cgroup-sockaddr",
        "cgroup-skb",
        "tc-clsact",
        "tcx",
        "fq-qdisc",
        "fmod-ret",
        "bpf-lsm",
        "kprobe-override",
        "ringbuf",
        "btf",
        "bpf-link",
    ] {
        assert!(
            mechanisms.contains(&expected),
            "{expected} missing from {mechanisms:?}"
        );
    }
    for probe in report["mechanisms"].as_array().unwrap() {
        assert!(!probe["detail"].as_str().unwrap().is_empty(), "{probe}");
    }
    let faults: Vec<&str> = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fault"].as_str().unwrap())
        .collect();
    assert_eq!(
        faults,
        [
            "connect-error",
            "recv-error",
            "send-error",
            "drop",
            "partition",
            "connection-limit",
            "io-error",
            "reset",
            "delay",
            "corrupt",
            "dns-error",
            "dns-delay",
            "duplicate",
            "bandwidth"
        ]
    );
    // Every fault lists each mechanism it can use, with a verdict.
    for fault in report["faults"].as_array().unwrap() {
        for pair in fault["mechanisms"].as_array().unwrap() {
            assert!(
                pair["ready"].is_boolean() && pair["mechanism"].is_string(),
                "{pair}"
            );
        }
    }
    println!("{}", chaos(&["doctor"]).stdout);
}

#[test]
fn doctor_table_is_readable() {
    require_root();
    let output = chaos(&["doctor"]);
    assert_eq!(output.code, Some(0));
    assert!(output.stdout.contains("mechanism") && output.stdout.contains("connect-error"));
}
