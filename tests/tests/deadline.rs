//! Every rule carries its deadline into the kernel: once it passes, the programs inject nothing,
//! even while chaos-bpf itself is frozen (SIGSTOP) and its programs are still attached. A fault
//! without --duration gets --max-duration (1 h by default) as its deadline, and a longer one is
//! refused before anything is attached.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use chaos_tests::{
    ChaosRun, TestCgroup, attached_program_ids, chaos, require_root, serve_with, tcp_sink,
    testkit_bin,
};
use nix::sys::signal::{Signal, kill};

/// How long the faults below live, and how far past it the checks run.
const LIFETIME: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_millis(500);

/// Freezes the run, waits out the fault's lifetime from `armed_at`, runs `check` while the run is
/// still frozen and its programs still attached, then thaws it and returns its output.
fn while_frozen_after_deadline(
    run: ChaosRun,
    cgroup: &TestCgroup,
    armed_at: Instant,
    check: impl FnOnce(),
) -> chaos_tests::ChaosOutput {
    kill(run.pid(), Signal::SIGSTOP).expect("SIGSTOP chaos-bpf");
    std::thread::sleep((armed_at + LIFETIME + MARGIN).saturating_duration_since(Instant::now()));
    assert!(
        !attached_program_ids(&cgroup.path).is_empty(),
        "the programs must still be attached: the deadline alone has to stop the fault"
    );
    check();
    kill(run.pid(), Signal::SIGCONT).expect("SIGCONT chaos-bpf");
    let mut run = run;
    run.wait()
}

#[test]
fn connect_error_ends_at_its_deadline_while_chaos_bpf_is_stopped() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("deadline-connect");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--duration",
        "2s",
    ]);
    let armed_at = Instant::now();
    assert_eq!(
        cgroup.testkit(&["connect", &addr, "5"])["ok"],
        0,
        "armed: every connect fails"
    );
    let output = while_frozen_after_deadline(run, &cgroup, armed_at, || {
        let after = cgroup.testkit(&["connect", &addr, "20"]);
        println!("past the deadline, chaos-bpf stopped: {after}");
        assert_eq!(after["ok"], 20, "past the deadline every connect works");
    });
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let summary = output.summaries().pop().expect("a summary");
    assert_eq!(summary["ended_by"], "duration");
    assert_eq!(
        summary["injected"], 5,
        "only the calls before the deadline were failed"
    );
}

#[test]
fn cgroup_drop_ends_at_its_deadline_while_chaos_bpf_is_stopped() {
    require_root();
    let mut echo = Command::new(testkit_bin());
    echo.args(["udp-echo", "127.0.0.1:0"]);
    let (mut server, addr) = serve_with(echo);
    let cgroup = TestCgroup::new("deadline-drop");
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--direction",
        "egress",
        "--duration",
        "2s",
    ]);
    let armed_at = Instant::now();
    let during = cgroup.testkit(&["udp-load", &addr, "300"]);
    assert_eq!(during["ok"], 0, "armed: every request is lost: {during}");
    let output = while_frozen_after_deadline(run, &cgroup, armed_at, || {
        let after = cgroup.testkit(&["udp-load", &addr, "300"]);
        println!("past the deadline, chaos-bpf stopped: {after}");
        assert_eq!(after["failed"], 0, "past the deadline nothing is lost");
        assert!(after["ok"].as_u64() > Some(0));
    });
    let _ = server.kill();
    assert_eq!(output.code, Some(0), "{}", output.stderr);
}

#[test]
fn a_fault_without_duration_lives_until_max_duration() {
    require_root();
    let cgroup = TestCgroup::new("max-duration");
    let started = Instant::now();
    let output = chaos(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--max-duration",
        "1s",
    ]);
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    assert!(
        output.stderr.contains(" for 1s"),
        "the armed line names the lifetime: {}",
        output.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(output.summaries()[0]["ended_by"], "duration");

    // The default maximum is an hour: a fault without --duration says so when armed.
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ]);
    assert!(
        run.first_lines().contains(" for 1h"),
        "{}",
        run.first_lines()
    );
}

#[test]
fn a_duration_beyond_max_duration_is_refused_before_anything_is_attached() {
    require_root();
    let cgroup = TestCgroup::new("max-duration-refused");
    for args in [
        vec!["--duration", "2h"],
        vec!["--duration", "10s", "--max-duration", "5s"],
    ] {
        let mut command = vec![
            "inject",
            "connect-error",
            "--cgroup",
            cgroup.path.to_str().unwrap(),
        ];
        command.extend(&args);
        let output = chaos(&command);
        assert_eq!(output.code, Some(2), "{args:?}: {}", output.stderr);
        let line = output.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(
            line.contains("--duration: ") && line.contains("--max-duration"),
            "{line}"
        );
        assert!(attached_program_ids(&cgroup.path).is_empty());
    }
}
