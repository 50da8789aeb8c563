//! The parser never panics, whatever it is given: arbitrary JSON and YAML documents, shaped like
//! faults (the model's own field names, at any depth) so the fuzzing reaches past the first key.
//! `PROPTEST_CASES` sets how many documents (the closing note's 10-minute run set it high).
use chaos_model::{Format, parse_fault, parse_fault_set};
use proptest::prelude::*;
use serde_json::Value;

const KEYS: &[&str] = &[
    "kind",
    "errno",
    "scope",
    "cgroup",
    "iface",
    "netns",
    "match",
    "dst",
    "peer",
    "port",
    "dport",
    "proto",
    "src",
    "sport",
    "tcpFlags",
    "direction",
    "probability",
    "loss",
    "seed",
    "delay",
    "jitter",
    "distribution",
    "fixChecksum",
    "mechanism",
    "duration",
    "events",
    "perCpuPerSec",
    "faults",
    "unknown",
    // The experiment's own keys: the experiment parser is fuzzed with the same documents.
    "apiVersion",
    "metadata",
    "name",
    "steadyState",
    "probes",
    "http",
    "url",
    "tcp",
    "address",
    "cmd",
    "run",
    "prometheus",
    "query",
    "expect",
    "interval",
    "timeout",
    "hypothesis",
    "warmup",
    "injection",
    "cooldown",
    "at",
    "for",
    "fault",
    "schedule",
    "abort",
    "probe",
    "consecutiveFailures",
    "rollback",
    "commands",
    "when",
];
const WORDS: &[&str] = &[
    "connect-error",
    "recv-error",
    "drop",
    "delay",
    "corrupt",
    "ECONNREFUSED",
    "30%",
    "60s",
    "10.0.0.0/8",
    "::1",
    "8000-8100",
    "70000",
    "tcp",
    "udp",
    "egress",
    "gilbert-elliott:0.1,0.2,0.3,0.4",
    "every-nth:0",
    "SYN,ACK",
    "auto",
    "tcx",
    "",
    "-",
    "1e400",
    "NaN",
    "chaos-bpf.dev/v1",
    "Experiment",
    "api.error_ratio < 0.01",
    "api.p99_latency <= 300ms",
    "api.success",
    "< 1e309",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(WORDS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from),
                inner,
                0..8
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics(doc in document()) {
        let text = doc.to_string();
        let _ = parse_fault(&text, Format::Json);
        let _ = parse_fault_set(&text, Format::Json);
    }

    #[test]
    fn arbitrary_yaml_never_panics(doc in document()) {
        let text = serde_yaml::to_string(&doc).unwrap_or_default();
        let _ = parse_fault(&text, Format::Yaml);
        let _ = parse_fault_set(&text, Format::Yaml);
        let _ = chaos_model::experiment::parse_experiment(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_fault(&text, Format::Json);
        let _ = parse_fault(&text, Format::Yaml);
        let _ = chaos_model::experiment::parse_experiment(&text);
        let _ = chaos_model::experiment::locate(&text, "faults[1].fault.match.port[0]");
    }
}
