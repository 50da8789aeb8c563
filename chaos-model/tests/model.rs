//! The fault model as users write it: the documented example, every way a field can be wrong
//! (named by its path), YAML and JSON alike, and the schema.
use chaos_model::{
    Errno, Fault, FaultKind, Format, Probability, parse_fault, parse_fault_set, validate,
};

/// The example the README and the agent's API documentation show, accepted as written.
const DOCUMENTED: &str = r#"{"kind": "connect-error", "errno": "ECONNREFUSED", "scope": {"cgroup": "/sys/fs/cgroup/system.slice/api.service"},
 "match": {"port": [5432]}, "probability": 0.3, "duration": "60s"}"#;

fn json_error(text: &str) -> String {
    parse_fault(text, Format::Json).unwrap_err().to_string()
}

#[test]
fn the_documented_example_is_accepted_as_written() {
    let fault = parse_fault(DOCUMENTED, Format::Json).expect("documented example");
    assert_eq!(fault.kind, FaultKind::ConnectError);
    assert_eq!(fault.errno, Some(Errno(111)));
    assert_eq!(fault.probability, Some(Probability(0.3)));
    assert_eq!(fault.matches.port[0].first, 5432);
    assert_eq!(fault.duration.unwrap().0.as_secs(), 60);
    // What it serialises to parses back to the same fault.
    let again = serde_json::to_string(&fault).unwrap();
    assert_eq!(parse_fault(&again, Format::Json).unwrap(), fault);
}

#[test]
fn errnos_by_number_and_probabilities_as_percentages() {
    let fault = parse_fault(
        r#"{"kind": "recv-error", "errno": 104, "scope": {"cgroup": "x"}, "probability": "30%"}"#,
        Format::Json,
    )
    .unwrap();
    assert_eq!(fault.errno, Some(Errno(104)));
    assert_eq!(fault.probability, Some(Probability(0.3)));
}

#[test]
fn yaml_reads_the_same_model() {
    let yaml = "kind: delay\nscope:\n  iface: eth0\nmatch:\n  dst: [10.1.4.7]\n  port: [5432, 8000-8100]\ndelay: 100ms\njitter: 20ms\ndistribution: pareto\n";
    let fault = parse_fault(yaml, Format::Yaml).unwrap();
    assert_eq!(fault.kind, FaultKind::Delay);
    assert_eq!(fault.matches.port.len(), 2);
    assert_eq!(fault.delay.unwrap().0.as_millis(), 100);
}

#[test]
fn value_errors_name_the_field_path_and_what_is_accepted() {
    let cases = [
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x"}, "match": {"port": [70000]}}"#,
            "match.port[0]: 70000 is not a port; accepted: a port from 1 to 65535, or a range such as 8000-8100",
        ),
        (
            r#"{"kind": "connect-error", "scope": {"cgroup": "x"}, "probability": 1.5}"#,
            "probability: 1.5 is outside [0, 1]; accepted:",
        ),
        (
            r#"{"kind": "connect-error", "scope": {"cgroup": "x"}, "errno": "EFOO"}"#,
            "errno: \"EFOO\" is not an errno",
        ),
        (
            r#"{"kind": "connect-error", "scope": {"cgroup": "x"}, "duration": "soon"}"#,
            "duration: \"soon\" is not a positive duration",
        ),
        (
            r#"{"kind": "explode", "scope": {"cgroup": "x"}}"#,
            "kind: \"explode\" is not a fault kind; accepted: connect-error, recv-error",
        ),
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x"}, "match": {"dst": ["10.0.0.0/40"]}}"#,
            "match.dst[0]: 10.0.0.0/40: the prefix must be 0 to 32",
        ),
    ];
    for (text, expected) in cases {
        let error = json_error(text);
        assert!(error.starts_with(expected), "{text}\n  got: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    for (text, path) in [
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x"}, "probabilty": 0.3}"#,
            "probabilty",
        ),
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x", "pods": "p"}}"#,
            "pods",
        ),
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x"}, "match": {"ports": [1]}}"#,
            "ports",
        ),
    ] {
        let error = json_error(text);
        assert!(
            error.contains(&format!("unknown field `{path}`")),
            "{error}"
        );
    }
}

#[test]
fn rules_between_fields_name_the_field() {
    let cases = [
        (r#"{"kind": "connect-error"}"#, "scope.cgroup: missing"),
        (r#"{"kind": "drop"}"#, "scope.cgroup: no scope given"),
        (
            r#"{"kind": "connect-error", "scope": {"cgroup": "x"}, "errno": "EIO"}"#,
            "errno: connect() does not fail with EIO (5); accepted: ECONNREFUSED (111)",
        ),
        (
            r#"{"kind": "send-error", "scope": {"cgroup": "x"}}"#,
            "errno: missing",
        ),
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x"}, "errno": "EIO"}"#,
            "errno: drop does not take it",
        ),
        (
            r#"{"kind": "delay", "scope": {"iface": "lo"}}"#,
            "delay: missing",
        ),
        (
            r#"{"kind": "delay", "scope": {"iface": "lo"}, "delay": "10ms", "jitter": "20ms"}"#,
            "jitter: 20ms is larger than the delay",
        ),
        (
            r#"{"kind": "delay", "scope": {"iface": "lo"}, "delay": "6s"}"#,
            "delay: delay plus jitter reaches past 5s",
        ),
        (
            r#"{"kind": "send-error", "errno": "EPIPE", "scope": {"cgroup": "x"}, "mechanism": "cgroup-sockaddr"}"#,
            "mechanism: cgroup-sockaddr cannot realise send-error; accepted: auto, fmod-ret, bpf-lsm, kprobe-override",
        ),
        (
            r#"{"kind": "recv-error", "errno": "EIO", "scope": {"cgroup": "x"}, "seed": 3}"#,
            "seed: only TC packet faults take it",
        ),
        (
            r#"{"kind": "drop", "scope": {"iface": "lo"}, "match": {"proto": "udp", "tcpFlags": "SYN"}}"#,
            "match.tcpFlags: TCP flags cannot match UDP packets",
        ),
        (
            r#"{"kind": "drop", "scope": {"iface": "lo", "netns": "/proc/1/ns/net"}}"#,
            "scope.netns: given together with scope.iface",
        ),
        (
            r#"{"kind": "connect-error", "scope": {"cgroup": "x", "podUid": "u"}}"#,
            "scope.podUid: given together with scope.cgroup: both name a cgroup",
        ),
    ];
    for (text, expected) in cases {
        let error = json_error(text);
        assert!(error.starts_with(expected), "{text}\n  got: {error}");
    }
}

#[test]
fn fault_sets_name_the_fault_in_the_path() {
    let text = r#"{"faults": [
        {"kind": "drop", "scope": {"cgroup": "x"}},
        {"kind": "drop", "scope": {"cgroup": "x"}},
        {"kind": "drop", "scope": {"cgroup": "x"}, "match": {"port": [70000]}}
    ]}"#;
    let error = parse_fault_set(text, Format::Json).unwrap_err().to_string();
    assert!(
        error.starts_with("faults[2].match.port[0]: 70000 is not a port"),
        "{error}"
    );
    let text =
        r#"{"faults": [{"kind": "drop", "scope": {"cgroup": "x"}}, {"kind": "connect-error"}]}"#;
    let error = parse_fault_set(text, Format::Json).unwrap_err().to_string();
    assert_eq!(
        error,
        "faults[1].scope.cgroup: missing; accepted: a cgroup v2 directory: syscall faults are scoped \
         by cgroup (or scope.pid, scope.container, scope.podUid, scope.pod, scope.selector)"
    );
}

#[test]
fn the_schema_describes_every_field_and_rejects_unknown_ones() {
    let schema = chaos_model::fault_schema();
    let properties = schema["properties"].as_object().expect("properties");
    for field in [
        "kind",
        "errno",
        "scope",
        "match",
        "probability",
        "duration",
        "delay",
        "mechanism",
    ] {
        assert!(
            properties.contains_key(field),
            "{field} missing from {schema}"
        );
    }
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["kind"]));
}

#[test]
fn a_validated_fault_stays_valid_through_serde() {
    let fault = Fault {
        kind: FaultKind::Drop,
        scope: chaos_model::Scope {
            cgroup: Some("x".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    validate(&fault).unwrap();
    let text = serde_yaml::to_string(&fault).unwrap();
    assert_eq!(parse_fault(&text, Format::Yaml).unwrap(), fault);
}

#[test]
fn workload_scopes_have_their_own_rules() {
    for (text, error) in [
        (
            r#"{"kind": "drop", "scope": {"pod": "redis"}}"#,
            "scope.pod: \"redis\" is not NAMESPACE/NAME",
        ),
        (
            r#"{"kind": "drop", "scope": {"cgroup": "x", "containerName": "redis"}}"#,
            "scope.containerName: narrows a pod scope",
        ),
        (
            r#"{"kind": "drop", "scope": {"podUid": "u", "namespace": "shop"}}"#,
            "scope.namespace: given without scope.selector",
        ),
        (
            r#"{"kind": "drop", "scope": {"selector": {"app": "a b"}}}"#,
            "scope.selector.app: app=a b is not a label",
        ),
        (
            r#"{"kind": "drop", "scope": {"pod": "a/b", "selector": {"app": "x"}}}"#,
            "scope.selector: given together with scope.pod",
        ),
    ] {
        let got = parse_fault(text, Format::Json).unwrap_err().to_string();
        assert!(got.starts_with(error), "{got}");
    }
    let fault = parse_fault(
        r#"{"kind": "connect-error", "scope": {"selector": {"app": "redis"}, "namespace": "shop", "containerName": "redis"}}"#,
        Format::Json,
    )
    .unwrap();
    assert_eq!(fault.scope.namespace.as_deref(), Some("shop"));
    assert_eq!(
        chaos_model::parse_selector("app=redis, tier=cache").unwrap(),
        [
            ("app".to_string(), "redis".to_string()),
            ("tier".to_string(), "cache".to_string())
        ]
        .into()
    );
    assert!(chaos_model::parse_selector("app").is_err());
}

#[test]
fn connection_limits_take_seats_or_a_rate_and_name_what_is_wrong() {
    let fault = parse_fault(
        r#"{"kind": "connection-limit", "scope": {"pod": "shop/api"}, "match": {"port": [5432]},
            "maxConnections": 5, "errno": "EAGAIN"}"#,
        Format::Json,
    )
    .expect("seats");
    assert_eq!(fault.max_connections, Some(5));
    assert_eq!(fault.effective_errno(), Some(Errno(11)));
    let yaml = "kind: connection-limit\nscope: {cgroup: x}\nconnectionRate: 3000/min\nconnectionBurst: 10\n";
    let fault = parse_fault(yaml, Format::Yaml).expect("rate");
    let rate = fault.connection_rate.unwrap();
    assert_eq!(
        (rate.count, rate.per_secs, rate.interval_ns()),
        (3000, 60, 20_000_000)
    );
    assert_eq!(rate.to_string(), "3000/min");
    assert_eq!(fault.effective_errno(), Some(Errno(111)));
    for (text, path) in [
        (r#""scope": {"cgroup": "x"}"#, "maxConnections"),
        (
            r#""scope": {"cgroup": "x"}, "maxConnections": 0"#,
            "maxConnections",
        ),
        (
            r#""scope": {"cgroup": "x"}, "maxConnections": 2, "connectionRate": "5/s""#,
            "connectionRate",
        ),
        (
            r#""scope": {"cgroup": "x"}, "connectionRate": "5/week""#,
            "connectionRate",
        ),
        (
            r#""scope": {"cgroup": "x"}, "maxConnections": 2, "connectionBurst": 3"#,
            "connectionBurst",
        ),
        (
            r#""scope": {"cgroup": "x"}, "maxConnections": 2, "errno": "EIO""#,
            "errno",
        ),
        (
            r#""scope": {"cgroup": "x"}, "maxConnections": 2, "direction": "ingress""#,
            "direction",
        ),
        (
            r#""scope": {"iface": "eth0"}, "maxConnections": 2"#,
            "scope.cgroup",
        ),
    ] {
        let error = json_error(&format!(r#"{{"kind": "connection-limit", {text}}}"#));
        assert!(error.starts_with(&format!("{path}:")), "{text}: {error}");
    }
    // Other kinds do not take the limits.
    let error = json_error(r#"{"kind": "drop", "scope": {"cgroup": "x"}, "maxConnections": 2}"#);
    assert!(
        error.starts_with("maxConnections: drop does not take it"),
        "{error}"
    );
}
