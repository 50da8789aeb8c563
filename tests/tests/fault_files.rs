//! Faults as data on the real binary: `chaos-bpf run` takes JSON and YAML fault sets (the model
//! the agent's API takes), a process in scope really gets the errno, mistakes name the file and
//! the field path with exit 2 and nothing attached, and `chaos-bpf schema` prints the model.
use chaos_tests::{
    ChaosRun, TempFile, TestCgroup, attached_program_ids, chaos, require_root, tcp_sink,
};

#[test]
fn a_json_fault_set_arms_the_documented_example() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("fault-json");
    let json = json_file(&format!(
        r#"{{"faults": [{{"kind": "connect-error", "errno": "ECONNREFUSED", "scope": {{"cgroup": "{}"}},
               "match": {{"port": [{}]}}, "probability": 1, "duration": "60s"}}]}}"#,
        cgroup.path.display(),
        addr.port()
    ));
    let run = ChaosRun::start(&["run", json.arg()]);
    let result = cgroup.testkit(&["connect", &addr.to_string(), "5"]);
    assert_eq!(result["ok"], 0, "{result}");
    assert_eq!(
        result["errnos"]["111"], 5,
        "ECONNREFUSED each time: {result}"
    );
    let summary = run.stop().summaries().pop().expect("summary");
    assert_eq!(summary["injected"], 5);
}

#[test]
fn a_yaml_fault_set_arms_and_a_bad_one_names_file_and_field() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("fault-yaml");
    let good = format!(
        "faults:\n  - kind: connect-error\n    errno: 113\n    scope:\n      cgroup: {}\n    probability: 100%\n",
        cgroup.path.display()
    );
    let file = yaml_file(&good);
    let run = ChaosRun::start(&["run", file.arg()]);
    let result = cgroup.testkit(&["connect", &addr.to_string(), "3"]);
    assert_eq!(
        result["errnos"]["113"], 3,
        "EHOSTUNREACH by number: {result}"
    );
    drop(run.stop());

    for (text, expected) in [
        (
            format!("{good}  - kind: drop\n    scope: {{cgroup: x}}\n    match: {{port: [70000]}}\n"),
            "faults[1].match.port[0]: 70000 is not a port",
        ),
        (format!("{good}    probabilty: 0.5\n"), "faults[0].probabilty: unknown field `probabilty`"),
        (
            "faults:\n  - kind: connect-error\n    scope: {cgroup: /sys/fs/cgroup/unified/chaos-no-such}\n"
                .to_string(),
            "faults[0].scope.cgroup: /sys/fs/cgroup/unified/chaos-no-such",
        ),
    ] {
        let file = yaml_file(&text);
        let output = chaos(&["run", file.arg()]);
        assert_eq!(output.code, Some(2), "{}", output.stderr);
        let line = output.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(
            line.contains(&format!("{}: {expected}", file.arg())),
            "expected {expected:?} in {line}"
        );
        assert!(attached_program_ids(&cgroup.path).is_empty());
    }
}

/// A temporary file with the extension that selects its format (`run` reads by extension).
fn with_extension(text: &str, extension: &str) -> TempFile {
    let plain = TempFile::new("faults", text);
    let named = TempFile {
        path: plain.path.with_extension(extension),
    };
    std::fs::rename(&plain.path, &named.path).unwrap();
    // `plain`'s drop finds nothing to remove; `named` removes the file.
    named
}

fn yaml_file(text: &str) -> TempFile {
    with_extension(text, "yaml")
}

fn json_file(text: &str) -> TempFile {
    with_extension(text, "json")
}

#[test]
fn schema_prints_the_fault_model() {
    let output = chaos(&["schema"]);
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let schema: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON Schema");
    assert_eq!(schema["title"], "Fault");
    assert_eq!(schema["additionalProperties"], false);
    for field in ["kind", "scope", "match", "probability", "duration", "errno"] {
        assert!(schema["properties"][field].is_object(), "{field}");
    }
}
