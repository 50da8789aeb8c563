//! Scopes by workload on the real kernel: `--pid` takes the process's cgroup, and `--pod-uid` and
//! `--container` find the pod and the container in a cgroup tree laid out as the kubelet's
//! cgroupfs driver lays it out (real cgroup v2 directories, made and removed by the test). A fault
//! on one container spares its sibling; one on the pod covers both.
use std::path::{Path, PathBuf};

use chaos_tests::{ChaosRun, TestCgroup, cgroup2_root, chaos, require_root, tcp_sink, testkit_bin};

const POD_UID: &str = "7e3f0c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b";
const CONTAINER_A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// Shares its first 8 characters with A: `a1b2c3d4` is ambiguous, A's first 12 are not.
const CONTAINER_B: &str = "a1b2c3d4ffff0718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// `kubepods/besteffort/pod<uid>/<container>` for two containers, removed depth-first on drop
/// (after killing what runs in them), even when the test fails.
struct KubeletTree {
    root: PathBuf,
    containers: [PathBuf; 2],
}

impl KubeletTree {
    fn new() -> Self {
        let root = cgroup2_root().join("kubepods");
        let pod = root.join(format!("besteffort/pod{POD_UID}"));
        let containers = [pod.join(CONTAINER_A), pod.join(CONTAINER_B)];
        for container in &containers {
            std::fs::create_dir_all(container).expect("cgroup");
        }
        Self { root, containers }
    }

    /// The testkit, run inside one of the containers.
    fn testkit(&self, container: usize, args: &[&str]) -> serde_json::Value {
        let procs = self.containers[container].join("cgroup.procs");
        let mut command = std::process::Command::new(testkit_bin());
        command.args(args);
        // SAFETY: only async-signal-safe work between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                std::fs::write(&procs, b"0")
            });
        }
        let output = command.output().expect("testkit");
        chaos_tests::last_json_line(&output.stdout)
    }
}

fn remove_depth_first(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_depth_first(&entry.path());
            }
        }
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for KubeletTree {
    fn drop(&mut self) {
        remove_depth_first(&self.root);
    }
}

/// Only one test may own `kubepods` at a time.
static KUBEPODS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_container_scope_spares_its_sibling_and_a_pod_scope_covers_both() {
    require_root();
    let _owner = KUBEPODS.lock().unwrap_or_else(|p| p.into_inner());
    let addr = tcp_sink("127.0.0.1:0").to_string();
    let tree = KubeletTree::new();
    let run = ChaosRun::start(&["inject", "connect-error", "--container", &CONTAINER_A[..12]]);
    assert!(
        run.first_lines().contains(CONTAINER_A),
        "{}",
        run.first_lines()
    );
    assert_eq!(
        tree.testkit(0, &["connect", &addr, "3"])["ok"],
        0,
        "container A fails"
    );
    assert_eq!(
        tree.testkit(1, &["connect", &addr, "3"])["ok"],
        3,
        "its sibling is spared"
    );
    drop(run.stop());

    let run = ChaosRun::start(&["inject", "connect-error", "--pod-uid", POD_UID]);
    for container in 0..2 {
        assert_eq!(
            tree.testkit(container, &["connect", &addr, "3"])["ok"],
            0,
            "container {container}"
        );
    }
    drop(run.stop());

    // Ambiguous and unknown ids are refused, naming the flag, with nothing attached.
    for (args, needle) in [
        (
            ["--container", "a1b2c3d4"],
            "--container: a1b2c3d4 is a prefix of 2 containers",
        ),
        (["--container", "beef"], "--container: no container beef"),
        (
            ["--container", "zz"],
            "--container: \"zz\" is not a container id",
        ),
        (
            ["--pod-uid", "no-such-pod"],
            "--pod-uid: no pod with uid no-such-pod",
        ),
    ] {
        // A duration, so a refusal that wrongly arms fails in seconds instead of running an hour.
        let mut all = vec!["inject", "connect-error", "--duration", "10s"];
        all.extend(args);
        let output = chaos(&all);
        assert_eq!(output.code, Some(2), "{}", output.stderr);
        assert!(
            output.stderr.contains(needle),
            "{needle}: {}",
            output.stderr
        );
    }
}

#[test]
fn a_pid_scope_is_the_processs_cgroup() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("pid-scope");
    let mut sleeper = cgroup.command("sleep").arg("60").spawn().expect("sleep");
    let pid = sleeper.id().to_string();
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--pid",
        &pid,
        "--errno",
        "ETIMEDOUT",
    ]);
    assert!(
        run.first_lines()
            .contains(&cgroup.path.display().to_string()),
        "{}",
        run.first_lines()
    );
    let result = cgroup.testkit(&["connect", &addr, "2"]);
    assert_eq!(result["errnos"]["110"], 2, "{result}");
    drop(run.stop());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let output = chaos(&[
        "inject",
        "connect-error",
        "--duration",
        "10s",
        "--pid",
        "4000000000",
    ]);
    assert_eq!(output.code, Some(2));
    assert!(
        output.stderr.contains("--pid: process 4000000000"),
        "{}",
        output.stderr
    );
}

/// In a cgroup namespace of its own (the agent's DaemonSet pod, unprivileged, gets one), /proc
/// shows other processes' cgroups relative to it (`0::/../..`): the pid is found in the
/// mounted host tree instead, and chaos-bpf's own probes still use its own cgroup.
#[test]
fn a_pid_scope_resolves_from_a_private_cgroup_namespace() {
    require_root();
    let addr = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("pid-cgroupns");
    let mut sleeper = cgroup.command("sleep").arg("60").spawn().expect("sleep");
    let pid = sleeper.id().to_string();
    // chaos-bpf in a cgroup of its own, then in a cgroup namespace rooted there: the sleeper's
    // cgroup is `0::/../chaos-pid-cgroupns-...` from inside.
    let own = TestCgroup::new("pid-cgroupns-agent");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --cgroup {} inject connect-error --pid {pid}",
        own.path.display(),
        chaos_tests::chaos_bin().display()
    );
    let run = ChaosRun::start_program("sh", &["-c", &script]);
    assert!(
        run.first_lines()
            .contains(&format!("on cgroup {} ", cgroup.path.display())),
        "{}",
        run.first_lines()
    );
    let result = cgroup.testkit(&["connect", &addr, "2"]);
    assert_eq!(result["errnos"]["111"], 2, "{result}");
    drop(run.stop());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
