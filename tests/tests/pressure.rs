//! cpu-pressure and memory-pressure on the real kernel: the scope's own cgroup knobs (v1 on this
//! hybrid host, as runc lays a container out; v2 in the VM suite). A real busy process is held
//! to its share of CPU time, a real allocation meets the OOM killer at the limit, nothing else
//! runs to make the pressure, and every knob is put back: at the end, and by `cleanup` after a
//! SIGKILL.
use std::{process::Stdio, time::Duration};

use chaos_tests::{ChaosRun, KnobCgroup, chaos, cpu_share, require_root, testkit_bin};

/// Tests that leave a killed run's record behind, and count what is put back, one at a time:
/// each would put back the other's knob too.
static KILLED_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn busy(cgroup: &KnobCgroup) -> std::process::Child {
    cgroup
        .command("/bin/sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("a busy loop")
}

fn cpu_pressure(cgroup: &KnobCgroup, share: &str) -> ChaosRun {
    ChaosRun::start(&[
        "inject",
        "cpu-pressure",
        "--cgroup",
        cgroup.cgroup.path.to_str().expect("path"),
        "--cpu",
        share,
        "--duration",
        "60s",
    ])
}

#[test]
fn cpu_pressure_holds_a_busy_process_to_its_share_and_puts_the_knob_back() {
    require_root();
    let cgroup = KnobCgroup::new("cpu-pressure");
    let knob = cgroup.knob("cpu", "cpu.cfs_quota_us", "cpu.max");
    let before = cgroup.read(&knob);
    let mut process = busy(&cgroup);
    let free = cpu_share(process.id(), Duration::from_millis(1500));
    let run = cpu_pressure(&cgroup, "0.2");
    let set = cgroup.read(&knob);
    assert!(set.starts_with("20000"), "{}: {set}", knob.display());
    // A period to settle, then the share over two seconds.
    std::thread::sleep(Duration::from_millis(200));
    let held = cpu_share(process.id(), Duration::from_secs(2));
    let summary = run.stop().summary();
    let after = cgroup.read(&knob);
    let healed = cpu_share(process.id(), Duration::from_millis(1500));
    let _ = process.kill();
    let _ = process.wait();
    println!("cpu share: {free:.2} free, {held:.2} under --cpu 0.2, {healed:.2} after");
    assert!((0.15..=0.25).contains(&held), "held to {held:.3}");
    assert!(
        free > 0.5 && healed > 0.5,
        "free {free:.2}, healed {healed:.2}"
    );
    assert_eq!(after, before, "the knob is put back");
    assert_eq!(summary["fault"], "cpu-pressure", "{summary}");
    assert_eq!(summary["injected"], 1, "one cgroup: {summary}");
}

/// A SIGKILLed run cannot put its knob back: `chaos-bpf cleanup` does, from its record. A knob
/// someone changed since is theirs and stays.
#[test]
fn cleanup_puts_back_the_knobs_of_a_killed_run() {
    require_root();
    let _one = KILLED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let cgroup = KnobCgroup::new("cpu-pressure-kill");
    let knob = cgroup.knob("cpu", "cpu.cfs_quota_us", "cpu.max");
    let before = cgroup.read(&knob);
    let run = cpu_pressure(&cgroup, "300m");
    assert!(cgroup.read(&knob).starts_with("30000"));
    run.kill_hard();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        cgroup.read(&knob).starts_with("30000"),
        "a SIGKILL leaves the knob"
    );
    let report: serde_json::Value =
        serde_json::from_str(chaos(&["cleanup"]).stdout.trim()).expect("cleanup's JSON");
    assert_eq!(report["knobs_restored"], 1, "{report}");
    assert_eq!(cgroup.read(&knob), before);
    let again: serde_json::Value =
        serde_json::from_str(chaos(&["cleanup"]).stdout.trim()).expect("cleanup's JSON");
    assert_eq!(again["knobs_restored"], 0, "once: {again}");
}

/// The next run after a SIGKILL puts the dead run's knob back before it reads the value to
/// restore, so the knob ends as it was before either; and a knob someone changes while a fault
/// runs is theirs: left alone, and said so.
#[test]
fn the_next_run_restores_a_killed_one_and_a_knob_changed_meanwhile_is_left_alone() {
    require_root();
    let _one = KILLED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let cgroup = KnobCgroup::new("cpu-pressure-next");
    let knob = cgroup.knob("cpu", "cpu.cfs_quota_us", "cpu.max");
    let before = cgroup.read(&knob);
    let run = cpu_pressure(&cgroup, "300m");
    run.kill_hard();
    assert!(
        cgroup.read(&knob).starts_with("30000"),
        "a SIGKILL leaves it"
    );
    let run = cpu_pressure(&cgroup, "200m");
    assert!(
        run.first_lines().contains("put back 1 knob"),
        "{}",
        run.first_lines()
    );
    assert!(cgroup.read(&knob).starts_with("20000"));
    let output = run.stop();
    assert_eq!(cgroup.read(&knob), before, "{}", output.stderr);

    let run = cpu_pressure(&cgroup, "200m");
    // An operator raises the limit by hand while the fault runs.
    let theirs = if knob.ends_with("cpu.max") {
        "50000 100000"
    } else {
        "50000"
    };
    std::fs::write(&knob, theirs).expect("write the knob");
    let output = run.stop();
    assert_eq!(cgroup.read(&knob), theirs, "left alone");
    assert!(
        output.stderr.contains("left") && output.stderr.contains("someone changed it"),
        "{}",
        output.stderr
    );
    std::fs::write(&knob, &before).expect("put the knob back");
}

/// memory-pressure's limit: a real allocation past it ends with the OOM killer's SIGKILL, below
/// it succeeds; the soft limit (high) is set and both are put back.
#[test]
fn memory_pressure_meets_an_allocation_with_the_oom_killer_and_puts_the_knobs_back() {
    require_root();
    let cgroup = KnobCgroup::new("memory-pressure");
    let limit = cgroup.knob("memory", "memory.limit_in_bytes", "memory.max");
    let soft = cgroup.knob("memory", "memory.soft_limit_in_bytes", "memory.high");
    let (limit_before, soft_before) = (cgroup.read(&limit), cgroup.read(&soft));
    let allocate = |mib: &str| {
        cgroup
            .command(testkit_bin())
            .args(["alloc", mib, "0"])
            .stdout(Stdio::null())
            .status()
            .expect("testkit alloc")
    };
    assert!(allocate("128").success(), "free: 128 MiB");
    let run = ChaosRun::start(&[
        "inject",
        "memory-pressure",
        "--cgroup",
        cgroup.cgroup.path.to_str().expect("path"),
        "--high",
        "32Mi",
        "--max",
        "64Mi",
        "--duration",
        "60s",
    ]);
    assert_eq!(cgroup.read(&limit), (64u64 << 20).to_string());
    assert_eq!(cgroup.read(&soft), (32u64 << 20).to_string());
    let killed = allocate("128");
    assert!(allocate("16").success(), "below the limit");
    let output = run.stop();
    let summary = output.summary();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(killed.signal(), Some(9), "the OOM killer: {killed:?}");
    assert!(
        output
            .stderr
            .contains("the OOM killer killed 1 process(es)"),
        "the fault says so: {}",
        output.stderr
    );
    assert_eq!(cgroup.read(&limit), limit_before);
    assert_eq!(cgroup.read(&soft), soft_before);
    assert!(allocate("128").success(), "healed");
    assert_eq!(summary["fault"], "memory-pressure", "{summary}");
}

/// A dry run writes no knob and says what it would write.
#[test]
fn a_pressure_dry_run_writes_nothing() {
    require_root();
    let cgroup = KnobCgroup::new("pressure-dry");
    let knob = cgroup.knob("cpu", "cpu.cfs_quota_us", "cpu.max");
    let before = cgroup.read(&knob);
    let run = ChaosRun::start(&[
        "inject",
        "cpu-pressure",
        "--cgroup",
        cgroup.cgroup.path.to_str().expect("path"),
        "--cpu",
        "0.1",
        "--dry-run",
        "--duration",
        "30s",
    ]);
    assert!(
        run.first_lines().contains("DRY RUN"),
        "{}",
        run.first_lines()
    );
    assert_eq!(cgroup.read(&knob), before);
    run.stop();
}
