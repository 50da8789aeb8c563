//! chaos-bpf leaves nothing behind: after SIGTERM, the end of --duration, or SIGKILL, no program
//! is attached to the cgroup, the programs are unloaded, and connects work again.
use std::time::Duration;

use chaos_tests::{
    ChaosRun, TestCgroup, attached_program_ids, chaos, eventually, program_loaded, require_root,
    tcp_sink,
};

fn assert_clean(cgroup: &TestCgroup, programs: &[u64]) {
    assert!(
        eventually(Duration::from_secs(5), || attached_program_ids(
            &cgroup.path
        )
        .is_empty()),
        "programs still attached: {:?}",
        attached_program_ids(&cgroup.path)
    );
    for id in programs {
        assert!(
            eventually(Duration::from_secs(5), || !program_loaded(*id)),
            "program {id} still loaded"
        );
    }
}

#[test]
fn sigkill_leaves_no_program_and_connects_work_again() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("sigkill");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ]);
    let attached = attached_program_ids(&cgroup.path);
    assert_eq!(attached.len(), 2, "connect4 and connect6 are attached");
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "2"])["ok"],
        0
    );

    run.kill_hard();
    assert_clean(&cgroup, &attached);
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "2"])["ok"],
        2
    );
}

#[test]
fn sigkill_of_a_drop_fault_leaves_nothing() {
    require_root();
    let cgroup = TestCgroup::new("sigkill-drop");
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--direction",
        "both",
    ]);
    let attached = attached_program_ids(&cgroup.path);
    assert_eq!(attached.len(), 2, "egress and ingress are attached");
    run.kill_hard();
    assert_clean(&cgroup, &attached);
}

#[test]
fn sigterm_detaches_and_prints_the_summary() {
    require_root();
    let cgroup = TestCgroup::new("sigterm");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ]);
    let attached = attached_program_ids(&cgroup.path);
    let output = run.stop();
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    assert_eq!(output.summary()["ended_by"], "signal");
    assert_clean(&cgroup, &attached);
}

#[test]
fn duration_ends_the_run_and_detaches() {
    require_root();
    let cgroup = TestCgroup::new("duration");
    let output = chaos(&[
        "inject",
        "drop",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--duration",
        "1s",
    ]);
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let summary = output.summary();
    assert_eq!(summary["ended_by"], "duration");
    assert!(summary["duration_ms"].as_u64().unwrap() >= 1000);
    assert!(attached_program_ids(&cgroup.path).is_empty());
}
