//! `chaos-bpf agent` through its real HTTP API: a fault created from JSON makes a real process
//! in the cgroup fail with the errno, list/show report the kernel's counters, the event stream
//! carries the injection, a stop heals the process, and what the API refuses (401, 400, 404,
//! 422, 429) leaves nothing loaded or attached.
use std::{
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chaos_tests::{
    TempFile, TestCgroup, agent::Agent, attached_program_ids, chaos, chaos_bin, doctor_report,
    eventually, program_loaded, require_root, tcp_sink,
};
use nix::sys::signal::Signal;
use serde_json::json;

/// One at a time: their agents' footprints and timings are then their own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn connect_error(cgroup: &TestCgroup, port: u16) -> serde_json::Value {
    json!({
        "kind": "connect-error", "errno": "ECONNREFUSED",
        "scope": {"cgroup": cgroup.path},
        "match": {"port": [port]}, "probability": 1, "duration": "60s"
    })
}

fn program_ids(view: &serde_json::Value) -> Vec<u64> {
    view["program_ids"]
        .as_array()
        .expect("program ids")
        .iter()
        .filter_map(|id| id.as_u64())
        .collect()
}

#[test]
fn the_whole_flow_through_the_api() {
    require_root();
    let _serial = one_at_a_time();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-flow");
    let agent = Agent::start(&[]);

    let created = agent.create(&connect_error(&cgroup, addr.port()));
    let id = created["id"].as_u64().expect("id");
    assert_eq!(created["state"], "armed");
    assert_eq!(created["mechanism"], "cgroup-sockaddr");
    let programs = program_ids(&created);
    assert!(programs.iter().all(|p| program_loaded(*p)), "{created}");

    let result = cgroup.testkit(&["connect", &addr.to_string(), "4"]);
    assert_eq!(
        result["errnos"]["111"], 4,
        "ECONNREFUSED from the kernel: {result}"
    );

    let shown = agent.get(&format!("/v1/faults/{id}")).json();
    assert_eq!(shown["counters"]["injected"], 4, "{shown}");
    assert_eq!(shown["counters"]["matched"], 4);
    let listed = agent.get("/v1/faults").json();
    assert_eq!(listed["faults"][0]["counters"]["injected"], 4, "{listed}");

    // The event stream: the armed record, then one injection per failed connect.
    let events = agent.get("/v1/events?follow=false").body;
    let injections: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "injection" && e["fault_id"] == id)
        .collect();
    assert_eq!(injections.len(), 4, "{events}");
    assert_eq!(injections[0]["errno"], "ECONNREFUSED");
    assert_eq!(injections[0]["peer"], addr.to_string());

    let stopped = agent.delete(&format!("/v1/faults/{id}"));
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.json()["state"], "ended");
    assert_eq!(stopped.json()["ended_by"], "stopped");
    let result = cgroup.testkit(&["connect", &addr.to_string(), "4"]);
    assert_eq!(result["ok"], 4, "connects work again: {result}");
    assert!(
        eventually(Duration::from_secs(5), || programs
            .iter()
            .all(|p| !program_loaded(*p))),
        "the fault's programs are unloaded"
    );
    let (code, stderr) = agent.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

fn connect_error_with(cgroup: &TestCgroup, port: u16, errno: &str) -> serde_json::Value {
    let mut fault = connect_error(cgroup, port);
    fault["errno"] = json!(errno);
    fault
}

/// Faults of one mechanism are rules of one loaded object: the second and third load nothing
/// (same program ids) and are map writes. A pod's fault covers its container through the pod's
/// one link, so a connect in the container is judged once (matched 4, not 8), and the
/// container's own fault sits beside it; when the pod's fault goes, the container is linked
/// itself and keeps its fault.
#[test]
fn faults_share_one_object_and_nested_scopes_are_judged_once() {
    require_root();
    let _serial = one_at_a_time();
    let (port_a, port_b) = (tcp_sink("127.0.0.1:0"), tcp_sink("127.0.0.1:0"));
    let pod = TestCgroup::new("agent-pod");
    let container = pod.child("ctr");
    let other = TestCgroup::new("agent-other");
    let agent = Agent::start(&[]);

    let on_pod = agent.create(&connect_error_with(&pod, port_a.port(), "ECONNREFUSED"));
    let on_container = agent.create(&connect_error_with(
        &container,
        port_b.port(),
        "EHOSTUNREACH",
    ));
    let on_other = agent.create(&connect_error_with(&other, port_a.port(), "ENETUNREACH"));
    let programs = program_ids(&on_pod);
    assert!(!programs.is_empty(), "{on_pod}");
    assert_eq!(
        program_ids(&on_container),
        programs,
        "one object: {on_container}"
    );
    assert_eq!(program_ids(&on_other), programs, "one object: {on_other}");
    assert!(!attached_program_ids(&pod.path).is_empty());
    assert!(
        attached_program_ids(&container.path).is_empty(),
        "the pod's link covers its container"
    );
    assert!(!attached_program_ids(&other.path).is_empty());

    let to_a = container.testkit(&["connect", &port_a.to_string(), "4"]);
    assert_eq!(to_a["errnos"]["111"], 4, "the pod's fault: {to_a}");
    let to_b = container.testkit(&["connect", &port_b.to_string(), "4"]);
    assert_eq!(to_b["errnos"]["113"], 4, "the container's fault: {to_b}");
    let elsewhere = other.testkit(&["connect", &port_a.to_string(), "4"]);
    assert_eq!(elsewhere["errnos"]["101"], 4, "{elsewhere}");
    let pod_view = agent.get(&format!("/v1/faults/{}", on_pod["id"])).json();
    assert_eq!(
        pod_view["counters"]["matched"], 4,
        "judged once: {pod_view}"
    );
    assert_eq!(pod_view["counters"]["injected"], 4);
    let other_view = agent.get(&format!("/v1/faults/{}", on_other["id"])).json();
    assert_eq!(other_view["counters"]["injected"], 4, "{other_view}");

    let stopped = agent.delete(&format!("/v1/faults/{}", on_pod["id"]));
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.json()["counters"]["injected"], 4, "final counts");
    assert!(!attached_program_ids(&container.path).is_empty());
    let to_a = container.testkit(&["connect", &port_a.to_string(), "4"]);
    assert_eq!(to_a["ok"], 4, "the pod's fault is gone: {to_a}");
    let to_b = container.testkit(&["connect", &port_b.to_string(), "4"]);
    assert_eq!(to_b["errnos"]["113"], 4, "the container's stays: {to_b}");

    let all = agent.post("/v1/faults:stop-all", "");
    assert_eq!(all.status, 200, "{}", all.body);
    assert!(
        eventually(Duration::from_secs(5), || programs
            .iter()
            .all(|p| !program_loaded(*p))),
        "the object goes with its last fault"
    );
    assert!(attached_program_ids(&container.path).is_empty());
    let (code, stderr) = agent.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn refused_requests_change_nothing_in_the_kernel() {
    require_root();
    let _serial = one_at_a_time();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-refused");
    let agent = Agent::start(&["--max-faults", "1"]);
    let fault = connect_error(&cgroup, addr.port()).to_string();
    // What a refused request could have left: a program, link or map the agent holds, or an
    // attachment to the cgroup. (The host's whole program list is not the agent's to judge:
    // other processes load programs too.)
    let unchanged = |case: &str| {
        let held = agent.footprint();
        assert_eq!(
            (held.programs, held.links, held.maps),
            (0, 0, 0),
            "{case} left the agent holding BPF objects: {held:?}"
        );
        assert!(
            attached_program_ids(&cgroup.path).is_empty(),
            "{case} attached a program"
        );
    };

    let cases = [
        (
            "wrong token",
            agent.request("POST", "/v1/faults", Some("not-the-token"), Some(&fault)),
            401,
            "Bearer",
        ),
        (
            "no token",
            agent.request("POST", "/v1/faults", None, Some(&fault)),
            401,
            "Bearer",
        ),
        (
            "no token, GET",
            agent.request("GET", "/v1/faults", None, None),
            401,
            "Bearer",
        ),
        (
            "bad port",
            agent.post(
                "/v1/faults",
                &fault.replace(&format!("[{}]", addr.port()), "[70000]"),
            ),
            400,
            "match.port[0]: 70000 is not a port",
        ),
        (
            "unknown field",
            agent.post(
                "/v1/faults",
                r#"{"kind": "drop", "scope": {"cgroup": "x"}, "colour": 1}"#,
            ),
            400,
            "unknown field `colour`",
        ),
        (
            "not JSON",
            agent.post("/v1/faults", "kind: drop"),
            400,
            "expected value",
        ),
        (
            "missing cgroup",
            agent.post(
                "/v1/faults",
                r#"{"kind": "drop", "scope": {"cgroup": "/sys/fs/cgroup/unified/chaos-none"}}"#,
            ),
            400,
            "scope.cgroup: ",
        ),
        (
            "bad DNS name",
            agent.post(
                "/v1/faults",
                &json!({"kind": "dns-error", "names": ["a..b"], "rcode": "nxdomain",
                        "scope": {"cgroup": cgroup.path}})
                .to_string(),
            ),
            400,
            "is not a DNS name",
        ),
        (
            "dns-error without an rcode",
            agent.post(
                "/v1/faults",
                &json!({"kind": "dns-error", "names": ["db.internal"],
                        "scope": {"cgroup": cgroup.path}})
                .to_string(),
            ),
            400,
            "rcode: missing",
        ),
        (
            "partition without peers",
            agent.post(
                "/v1/faults",
                &json!({"kind": "partition", "scope": {"cgroup": cgroup.path}}).to_string(),
            ),
            400,
            "match.dst: missing",
        ),
        (
            "peer selector without a key",
            agent.post(
                "/v1/faults",
                &json!({"kind": "partition", "match": {"peerSelector": {"": "db"}},
                        "scope": {"cgroup": cgroup.path}})
                .to_string(),
            ),
            400,
            "match.peerSelector: =db is not a label",
        ),
        (
            "connection-limit with two limits",
            agent.post(
                "/v1/faults",
                &json!({"kind": "connection-limit", "maxConnections": 5,
                        "connectionRate": "50/s", "scope": {"cgroup": cgroup.path}})
                .to_string(),
            ),
            400,
            "connectionRate: given together with maxConnections",
        ),
        (
            "io-error without paths",
            agent.post(
                "/v1/faults",
                &json!({"kind": "io-error", "scope": {"cgroup": cgroup.path}}).to_string(),
            ),
            400,
            "paths: missing",
        ),
        (
            "unknown fault",
            agent.get("/v1/faults/999"),
            404,
            "no such fault",
        ),
        (
            "not an id",
            agent.delete("/v1/faults/abc"),
            404,
            "no such fault",
        ),
    ];
    for (case, answer, status, needle) in cases {
        assert_eq!(answer.status, status, "{case}: {}", answer.body);
        assert!(answer.body.contains(needle), "{case}: {}", answer.body);
        unchanged(case);
    }
    // A body over 1 MiB is refused before it is read.
    let huge = format!(r#"{{"kind": "drop", "pad": "{}"}}"#, "x".repeat(2 << 20));
    assert_eq!(agent.post("/v1/faults", &huge).status, 413);

    // A mechanism this kernel lacks: 422 with doctor's reason.
    let doctor = doctor_report();
    let lacking = ["fmod-ret", "bpf-lsm", "kprobe-override"]
        .into_iter()
        .find(|m| {
            doctor["mechanisms"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|entry| entry["mechanism"].as_str() == Some(m) && entry["supported"] == false)
        });
    match lacking {
        Some(mechanism) => {
            let fault = json!({"kind": "recv-error", "errno": "EIO", "scope": {"cgroup": cgroup.path}, "mechanism": mechanism});
            let answer = agent.post("/v1/faults", &fault.to_string());
            assert_eq!(answer.status, 422, "{mechanism}: {}", answer.body);
            assert!(answer.body.contains("does not support"), "{}", answer.body);
            unchanged("a mechanism the kernel lacks");
        }
        None => println!(
            "skip 422: this kernel has every syscall mechanism (the VM suite refuses the missing ones)"
        ),
    }

    // One fault fits, the second is refused (429) while the first runs.
    agent.create(&connect_error(&cgroup, addr.port()));
    let second = agent.post("/v1/faults", &fault);
    assert_eq!(second.status, 429, "{}", second.body);
    assert_eq!(agent.get("/healthz").status, 200);
    let ready = agent.request("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "the probes need no token");
}

/// dns-error through the API: the cgroup's queries for the name get NXDOMAIN from the kernel
/// (a testkit DNS server on loopback answers the rest), and DELETE heals them.
#[test]
fn dns_error_through_the_api() {
    require_root();
    let _serial = one_at_a_time();
    let cgroup = TestCgroup::new("agent-dns");
    let agent = Agent::start(&[]);
    let (mut server, addr) = chaos_tests::cases::dns_server();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let query = |name: &str| cgroup.testkit(&["dns-query", &addr, name, "3"]);
    let view = agent.create(&json!({
        "kind": "dns-error",
        "names": ["payments.example.com"],
        "rcode": "nxdomain",
        "match": {"port": [port]},
        "scope": {"cgroup": cgroup.path},
    }));
    assert_eq!(view["kind"], "dns-error", "{view}");
    assert_eq!(query("payments.example.com")["rcodes"]["NXDOMAIN"], 3);
    assert_eq!(query("other.example.com")["rcodes"]["NOERROR"], 3);
    let id = view["id"].as_u64().unwrap();
    let stopped = agent.delete(&format!("/v1/faults/{id}"));
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(
        stopped.json()["counters"]["injected"],
        3,
        "{}",
        stopped.body
    );
    assert_eq!(query("payments.example.com")["rcodes"]["NOERROR"], 3);
    let _ = server.kill();
}

/// partition through the API: the cgroup's connects to its peer time out until the fault is
/// deleted.
#[test]
fn partition_through_the_api() {
    require_root();
    let _serial = one_at_a_time();
    let cgroup = TestCgroup::new("agent-partition");
    let agent = Agent::start(&[]);
    let addr = tcp_sink("127.0.0.1:0").to_string();
    let view = agent.create(&json!({
        "kind": "partition",
        "match": {"dst": ["127.0.0.1/32"]},
        "scope": {"cgroup": cgroup.path},
    }));
    assert_eq!(view["kind"], "partition", "{view}");
    assert_eq!(
        cgroup.testkit(&["connect", &addr, "1"])["errnos"],
        json!({"-1": 1}),
        "timed out"
    );
    let id = view["id"].as_u64().unwrap();
    let stopped = agent.delete(&format!("/v1/faults/{id}"));
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert!(stopped.json()["counters"]["injected"].as_u64() >= Some(1));
    assert_eq!(cgroup.testkit(&["connect", &addr, "1"])["ok"], 1);
}

/// connection-limit through the API: one seat for the cgroup, the second connection at once is
/// refused until the fault is deleted.
#[test]
fn connection_limit_through_the_api() {
    require_root();
    let _serial = one_at_a_time();
    let cgroup = TestCgroup::new("agent-limit");
    let agent = Agent::start(&[]);
    let addr = tcp_sink("127.0.0.1:0").to_string();
    let view = agent.create(&json!({
        "kind": "connection-limit",
        "maxConnections": 1,
        "errno": "ETIMEDOUT",
        "scope": {"cgroup": cgroup.path},
    }));
    assert_eq!(view["kind"], "connection-limit", "{view}");
    let held = cgroup.testkit(&["hold", &addr, "3", "0"]);
    assert_eq!(held["ok"], 1, "{held}");
    assert_eq!(held["errnos"]["110"], 2, "{held}");
    let id = view["id"].as_u64().unwrap();
    let stopped = agent.delete(&format!("/v1/faults/{id}"));
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.json()["counters"]["injected"], 2);
    assert_eq!(cgroup.testkit(&["hold", &addr, "3", "0"])["ok"], 3);
}

/// The SIGSTOP test for the agent: frozen, it cannot end the fault, and the kernel does.
#[test]
fn a_frozen_agent_cannot_extend_a_fault() {
    require_root();
    let _serial = one_at_a_time();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-frozen");
    let agent = Agent::start(&[]);
    let mut fault = connect_error(&cgroup, addr.port());
    fault["duration"] = json!("2s");
    let created = agent.create(&fault);
    // The kernel's deadline was set while the request was answered (an idle agent loads and
    // verifies its object first, most of a second in a debug build): 2 s from now at the latest.
    let armed_by = Instant::now();
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "3"])["ok"],
        0
    );
    agent.signal(Signal::SIGSTOP);
    assert!(
        armed_by.elapsed() < Duration::from_secs(2),
        "frozen before the deadline"
    );
    std::thread::sleep(
        (armed_by + Duration::from_millis(2500)).saturating_duration_since(Instant::now()),
    );
    assert!(
        program_ids(&created).iter().all(|p| program_loaded(*p)),
        "still attached"
    );
    let after = cgroup.testkit(&["connect", &addr.to_string(), "20"]);
    assert_eq!(
        after["ok"], 20,
        "past the deadline, with the agent frozen: {after}"
    );
    agent.signal(Signal::SIGCONT);
    let id = created["id"].as_u64().unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        agent.get(&format!("/v1/faults/{id}")).json()["ended_by"] == "duration"
    }));
}

/// `POST /v1/faults:stop-all` flips every object's kill switch; `chaos-bpf fault stop --all`
/// is its client. Command to last injected fault, measured.
#[test]
fn the_kill_switch_stops_every_fault_at_once() {
    require_root();
    let _serial = one_at_a_time();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroups: Vec<TestCgroup> = (0..3)
        .map(|i| TestCgroup::new(&format!("agent-kill-{i}")))
        .collect();
    let agent = Agent::start(&[]);
    for cgroup in &cgroups {
        agent.create(&connect_error(cgroup, addr.port()));
    }
    for cgroup in &cgroups {
        assert_eq!(
            cgroup.testkit(&["connect", &addr.to_string(), "2"])["ok"],
            0
        );
    }
    let started = Instant::now();
    let output = chaos(&[
        "fault",
        "--agent",
        &agent.addr.to_string(),
        "--token-file",
        agent.token_file.arg(),
        "stop",
        "--all",
    ]);
    let took = started.elapsed();
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    assert!(
        output.stdout.contains(r#""stopped":3"#),
        "{}",
        output.stdout
    );
    println!("chaos-bpf fault stop --all: command to every fault stopped in {took:?}");
    for cgroup in &cgroups {
        assert_eq!(
            cgroup.testkit(&["connect", &addr.to_string(), "2"])["ok"],
            2
        );
    }
}

/// The CLI client: create from a YAML file, list, show, events, and its errors.
#[test]
fn the_fault_commands_are_a_client_of_the_agent() {
    require_root();
    let _serial = one_at_a_time();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-cli");
    let agent = Agent::start(&[]);
    let target = agent.addr.to_string();
    let fault_cmd = |args: &[&str]| {
        let mut all = vec![
            "fault",
            "--agent",
            &target,
            "--token-file",
            agent.token_file.arg(),
        ];
        all.extend_from_slice(args);
        chaos(&all)
    };
    let yaml = TempFile::new(
        "fault.yaml",
        &format!(
            "kind: connect-error\nerrno: ETIMEDOUT\nscope:\n  cgroup: {}\n",
            cgroup.path.display()
        ),
    );
    let created = fault_cmd(&["create", yaml.arg()]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let id = serde_json::from_str::<serde_json::Value>(&created.stdout).unwrap()["id"].to_string();
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "2"])["errnos"]["110"],
        2
    );
    let listed = fault_cmd(&["list"]);
    assert!(
        listed.stdout.contains("connect-error") && listed.stdout.contains("armed"),
        "{}",
        listed.stdout
    );
    let shown = fault_cmd(&["show", &id]);
    assert!(
        shown.stdout.contains(r#""injected": 2"#),
        "{}",
        shown.stdout
    );
    let events = fault_cmd(&["events"]);
    assert_eq!(
        events
            .stdout
            .lines()
            .filter(|l| l.contains(r#""type":"injection""#))
            .count(),
        2
    );
    assert_eq!(fault_cmd(&["stop", &id]).code, Some(0));
    let missing = fault_cmd(&["show", "12345"]);
    assert_eq!(missing.code, Some(2));
    assert_eq!(
        missing.stderr.trim().lines().count(),
        1,
        "{}",
        missing.stderr
    );
    let bad = TempFile::new(
        "bad.json",
        r#"{"kind": "drop", "scope": {"cgroup": "x"}, "probability": 2}"#,
    );
    let refused = fault_cmd(&["create", bad.arg()]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("probability: 2 is outside [0, 1]"),
        "{}",
        refused.stderr
    );
}

#[test]
fn the_agent_refuses_unsafe_start_ups() {
    require_root();
    let _serial = one_at_a_time();
    let open = TempFile::new("open-token", "secret");
    std::fs::set_permissions(&open.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = chaos(&[
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        open.arg(),
    ]);
    assert_eq!(output.code, Some(2), "{}", output.stderr);
    assert!(
        output.stderr.contains("--token-file:") && output.stderr.contains("mode 644"),
        "{}",
        output.stderr
    );
    // Loopback answers every local user, so a TCP port needs a token as much as a public one.
    let output = chaos(&["agent", "--listen", "127.0.0.1:0"]);
    assert_eq!(output.code, Some(2), "{}", output.stderr);
    assert!(
        output.stderr.contains("--listen:")
            && output.stderr.contains("every local user")
            && output.stderr.contains("--token-file"),
        "{}",
        output.stderr
    );
    assert_eq!(output.stderr.trim().lines().count(), 1, "{}", output.stderr);
    let output = chaos(&["agent", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.code, Some(2), "{}", output.stderr);
    assert!(
        output.stderr.contains("--listen:") && output.stderr.contains("--token-file"),
        "{}",
        output.stderr
    );
    let output = chaos(&["agent", "--listen", "unix:relative.sock"]);
    assert_eq!(output.code, Some(2), "{}", output.stderr);
}

/// An agent on a Unix socket of a test's own, stopped and its directory removed on drop (also
/// when the test fails).
struct SocketAgent {
    child: Child,
    dir: PathBuf,
    listen: String,
}

impl SocketAgent {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("chaos-agent-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("the socket's directory");
        // Anyone may enter the directory: the socket's own mode is what must keep them out.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let socket = dir.join("agent.sock");
        let listen = format!("unix:{}", socket.display());
        let child = Command::new(chaos_bin())
            .args(["agent", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the agent");
        let agent = Self { child, dir, listen };
        assert!(
            eventually(Duration::from_secs(30), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "the agent did not listen on {socket:?}"
        );
        agent
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// `chaos-bpf fault --agent unix:... ARGS` as `uid` (0: as root).
    fn fault(&self, uid: u32, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(chaos_bin());
        command.args(["fault", "--agent", &self.listen]).args(args);
        if uid != 0 {
            // SAFETY: set-id calls only, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    nix::unistd::setgroups(&[])?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(uid))?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                    Ok(())
                });
            }
        }
        command.output().expect("run chaos-bpf fault")
    }
}

impl Drop for SocketAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shipped default: the API on a Unix socket that only root can open. Another user's
/// connect() gets EACCES and nothing is created or attached; root reaches the same agent with
/// `chaos-bpf fault`.
#[test]
fn only_root_reaches_the_agents_socket() {
    require_root();
    let _serial = one_at_a_time();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-socket");
    let fault = TempFile::new(
        "socket-fault.json",
        &connect_error(&cgroup, addr.port()).to_string(),
    );
    std::fs::set_permissions(&fault.path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut agent = SocketAgent::start();

    let socket = std::fs::metadata(agent.socket()).expect("the socket");
    assert!(socket.file_type().is_socket());
    assert_eq!(
        (socket.mode() & 0o777, socket.uid()),
        (0o600, 0),
        "root's alone"
    );

    const NOBODY: u32 = 65534;
    for args in [&["create", fault.arg()][..], &["list"], &["stop", "--all"]] {
        let refused = agent.fault(NOBODY, args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_ne!(refused.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Permission denied"),
            "{args:?} as nobody: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let listed = agent.fault(0, &["list", "--json"]);
    assert_eq!(listed.status.code(), Some(0));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        listed["faults"],
        json!([]),
        "nobody's create changed nothing"
    );
    assert!(attached_program_ids(&cgroup.path).is_empty());
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "3"])["ok"],
        3
    );

    // Root reaches it: the socket is the real API.
    let created = agent.fault(0, &["create", fault.arg()]);
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let refused = cgroup.testkit(&["connect", &addr.to_string(), "3"]);
    assert_eq!(refused["errnos"]["111"], 3, "{refused}");
    assert_eq!(agent.fault(0, &["stop", "--all"]).status.code(), Some(0));
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "3"])["ok"],
        3
    );

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        Signal::SIGTERM,
    );
    let status = agent.child.wait().expect("the agent's exit");
    assert_eq!(status.code(), Some(0));
    assert!(!agent.socket().exists(), "the socket goes with the agent");
}
