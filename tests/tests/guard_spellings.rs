//! The guard rails judge the cgroup, never how its path is spelled. Every spelling of the root
//! cgroup, of chaos-bpf's own cgroup and of PID 1's (`.`, `..`, `//`, trailing slashes,
//! symlinks, relative and absolute) is refused with exit 2, one line, and nothing attached,
//! through each front end that takes a fault: the CLI, a run file, the agent's API (HTTP 400)
//! and an experiment file. A property test walks random spellings of a real tree and checks the
//! verdict on each equals the verdict on its canonical form.
use std::path::{Path, PathBuf};

use chaos_tests::{
    TempFile, TestCgroup, agent::Agent, attached_program_ids, cgroup2_root, chaos_bin, require_root,
};

/// Symlinks made for one test; removed on drop.
struct Links(Vec<PathBuf>);

impl Links {
    fn to(&mut self, target: &Path, tag: &str) -> String {
        let link = std::env::temp_dir().join(format!(
            "chaos-spelling-{tag}-{}-{}",
            std::process::id(),
            self.0.len()
        ));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink");
        self.0.push(link.clone());
        link.display().to_string()
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for link in &self.0 {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// Ways to write `target` (a cgroup directory), given `tree`, a test cgroup with a child `a`
/// holding `b`, for `..` walks that really exist.
fn spellings(target: &Path, tree: &TestCgroup, links: &mut Links, tag: &str) -> Vec<String> {
    let root = cgroup2_root();
    let rel = |p: &Path| p.strip_prefix(&root).expect("below the root").to_owned();
    let target_rel = rel(target).display().to_string();
    let tree_rel = rel(&tree.path).display().to_string();
    // From tree/a/b, as many `..` as it takes to reach the root, then down to the target.
    let up = "../".repeat(rel(&tree.path).components().count() + 2);
    let mut all = vec![
        target.display().to_string(),
        format!("{}/", target.display()),
        format!("{}//", target.display()),
        format!("{}/.", target.display()),
        format!("{}/./", target.display()),
        format!("{}/a/b/{up}{target_rel}", tree.path.display()),
        format!("{tree_rel}/a/b/{up}{target_rel}"),
        format!(
            "{tree_rel}//a/..//{}{target_rel}",
            "../".repeat(rel(&tree.path).components().count())
        ),
        links.to(target, tag),
        format!("{}/.", links.to(target, tag)),
    ];
    if target == root {
        all.extend([
            ".".into(),
            "./".into(),
            "".into(),
            format!("{}/../unified", root.display()),
        ]);
    } else {
        all.extend([
            target_rel.clone(),
            format!("./{target_rel}/"),
            format!(
                "{target_rel}/../{}",
                target.file_name().unwrap().to_string_lossy()
            ),
        ]);
    }
    all.retain(|s| !s.contains("unified/../unified") || root.ends_with("unified"));
    all
}

/// One refusal: exit 2, one line saying one of `needles`.
fn assert_refused(front: &str, spelling: &str, code: Option<i32>, stderr: &str, needles: &[&str]) {
    assert_eq!(code, Some(2), "{front} {spelling:?}: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{front} {spelling:?}: one line: {stderr}"
    );
    assert!(
        needles.iter().any(|n| stderr.contains(n)),
        "{front} {spelling:?}: expected one of {needles:?}: {stderr}"
    );
}

/// Runs chaos-bpf with `args`, inside `cgroup` when given (as its own cgroup).
fn run_chaos(args: &[&str], inside: Option<&TestCgroup>) -> (Option<i32>, String) {
    let mut command = match inside {
        Some(cgroup) => cgroup.command(chaos_bin()),
        None => std::process::Command::new(chaos_bin()),
    };
    let output = command.args(args).output().expect("run chaos-bpf");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every front end that runs in the caller's process refuses `spelling`.
fn refused_everywhere(spelling: &str, inside: Option<&TestCgroup>, needles: &[&str]) {
    let (code, stderr) = run_chaos(
        &[
            "inject",
            "connect-error",
            "--cgroup",
            spelling,
            "--port",
            "9",
            "--duration",
            "5s",
            "--dry-run",
        ],
        inside,
    );
    assert_refused("inject", spelling, code, &stderr, needles);

    let quoted = serde_json::to_string(spelling).unwrap();
    let run_file = TempFile::new(
        "spelling-run",
        &format!("connect-error --cgroup {quoted} --port 9 --duration 5s --dry-run\n"),
    );
    let (code, stderr) = run_chaos(&["run", run_file.arg()], inside);
    assert_refused("run FILE", spelling, code, &stderr, needles);

    let experiment = TempFile::new(
        "spelling-experiment.yaml",
        &format!(
            "apiVersion: chaos-bpf.dev/v1\nkind: Experiment\nmetadata: {{name: spelling}}\n\
             steadyState:\n  probes:\n    - name: shell\n      cmd: {{run: [\"true\"]}}\n      interval: 100ms\n\
             hypothesis:\n  injection: [shell.success]\n\
             faults:\n  - for: 1s\n    fault:\n      kind: connect-error\n      errno: ECONNREFUSED\n      dryRun: true\n      scope: {{cgroup: {quoted}}}\n      match: {{port: [9]}}\n\
             schedule: {{warmup: 100ms, duration: 1s, cooldown: 100ms}}\n"
        ),
    );
    let (code, stderr) = run_chaos(&["experiment", "run", experiment.arg()], inside);
    assert_refused("experiment run", spelling, code, &stderr, needles);
}

#[test]
fn every_spelling_of_a_protected_cgroup_is_refused_from_every_front_end() {
    require_root();
    let root = cgroup2_root();
    let tree = TestCgroup::new("spelling");
    let a = tree.child("a");
    let b = a.child("b");
    let mut links = Links(Vec::new());
    let before = attached_program_ids(&root);

    // The root cgroup, and PID 1's (the root here; its own cgroup where an init has one).
    let pid1 = std::fs::read_to_string("/proc/1/cgroup").expect("/proc/1/cgroup");
    let pid1_rel = pid1
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("PID 1 in cgroup v2")
        .trim_start_matches('/')
        .to_string();
    let pid1_cgroup = root.join(&pid1_rel);
    let agent = Agent::start(&[]);
    let mut tried = 0;
    for (target, tag, needles) in [
        (root.clone(), "root", &["root cgroup"][..]),
        (pid1_cgroup, "pid1", &["root cgroup", "PID 1"][..]),
    ] {
        for spelling in spellings(&target, &tree, &mut links, tag) {
            refused_everywhere(&spelling, None, needles);
            let answer = agent.post(
                "/v1/faults",
                &serde_json::json!({
                    "kind": "connect-error", "errno": "ECONNREFUSED", "dryRun": true,
                    "scope": {"cgroup": spelling}, "match": {"port": [9]}, "duration": "5s",
                })
                .to_string(),
            );
            assert_eq!(answer.status, 400, "agent {spelling:?}: {}", answer.body);
            assert!(
                needles.iter().any(|n| answer.body.contains(n)),
                "agent {spelling:?}: {}",
                answer.body
            );
            tried += 1;
        }
    }
    let listed = agent.get("/v1/faults").json();
    assert!(
        listed["faults"].as_array().is_some_and(Vec::is_empty),
        "the agent holds no fault: {listed}"
    );
    drop(agent.stop());

    // chaos-bpf's own cgroup: it runs in `self/inner`; both are refused however spelled.
    let own = TestCgroup::new("spelling-self");
    let inner = own.child("inner");
    for target in [&inner.path, &own.path] {
        for spelling in spellings(target, &tree, &mut links, "self") {
            refused_everywhere(&spelling, Some(&inner), &["chaos-bpf itself"]);
            tried += 1;
        }
    }
    println!("{tried} spellings refused by every front end");

    // Out of the mount: refused at once, before anything walks the tree.
    for outside in ["/", "../../..", "/tmp", "/sys/fs/cgroup/unified/../.."] {
        let started = std::time::Instant::now();
        let (code, stderr) = run_chaos(
            &[
                "inject",
                "connect-error",
                "--cgroup",
                outside,
                "--port",
                "9",
                "--dry-run",
            ],
            None,
        );
        assert_refused(
            "inject",
            outside,
            code,
            &stderr,
            &["outside the cgroup2 mount", "No such file"],
        );
        println!("{outside:?} refused in {:?}", started.elapsed());
    }
    assert_eq!(
        attached_program_ids(&root),
        before,
        "nothing attached at the root"
    );
    for cgroup in [&tree.path, &a.path, &b.path, &own.path, &inner.path] {
        assert!(
            attached_program_ids(cgroup).is_empty(),
            "{}",
            cgroup.display()
        );
    }
}

mod property {
    use proptest::prelude::*;

    use super::*;

    /// One step of a walk: into a child (by index among the real ones), `.`, `..`, or `//`.
    #[derive(Debug, Clone)]
    enum Step {
        Child(usize),
        Dot,
        Up,
        DoubleSlash,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..4).prop_map(Step::Child),
            1 => Just(Step::Dot),
            2 => Just(Step::Up),
            1 => Just(Step::DoubleSlash),
        ]
    }

    /// The spelling of a walk from `start`, and the directory it really reaches.
    fn spell(start: &Path, steps: &[Step], relative: bool) -> String {
        let root = cgroup2_root();
        let mut text = if relative {
            start
                .strip_prefix(&root)
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        } else {
            start.display().to_string()
        };
        let mut real = start.to_path_buf();
        for step in steps {
            let part = match step {
                Step::Child(i) => {
                    let mut children: Vec<PathBuf> = std::fs::read_dir(&real)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect();
                    children.sort();
                    let Some(child) = children.get(i % children.len().max(1)) else {
                        continue;
                    };
                    real = child.clone();
                    child.file_name().unwrap().to_string_lossy().into_owned()
                }
                Step::Dot => ".".into(),
                Step::Up => {
                    real.pop();
                    "..".into()
                }
                Step::DoubleSlash => String::new(),
            };
            if !text.is_empty() {
                text.push('/');
            }
            text.push_str(&part);
        }
        text
    }

    /// What the guard rails say of a scope.cgroup: armed or the refusal's text.
    fn verdict(cgroup: &str) -> Result<(), String> {
        let fault: chaos_model::Fault = serde_json::from_value(serde_json::json!({
            "kind": "connect-error", "errno": "ECONNREFUSED",
            "scope": {"cgroup": cgroup}, "match": {"port": [9]},
        }))
        .expect("a fault");
        let (cgroups, workloads) =
            chaos::workload::resolve::cgroups_of(&fault.scope, None).map_err(|e| e.to_string())?;
        chaos::guard::check(&fault, &cgroups, &workloads).map_err(|e| e.to_string())
    }

    #[test]
    fn the_verdict_on_a_spelling_is_the_verdict_on_its_canonical_form() {
        require_root();
        let tree = TestCgroup::new("spelling-prop");
        let a = tree.child("a");
        let b = a.child("b");
        let c = tree.child("c");
        // A process named as a container runtime in a/b: a/b named exactly is allowed, a and
        // the tree above it are refused, c is fine, the root is refused.
        let dir = std::env::temp_dir().join(format!("spelling-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runtime_binary = dir.join("containerd");
        std::fs::copy("/bin/sleep", &runtime_binary).unwrap();
        let mut runtime = b.command(&runtime_binary).arg("120").spawn().unwrap();
        let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u32>::new());
        let config = ProptestConfig {
            cases: 300,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(steps in proptest::collection::vec(step(), 0..8), relative: bool, from in 0usize..3)| {
            let start = [&tree.path, &a.path, &c.path][from];
            let spelled = spell(start, &steps, relative);
            let resolved = cgroup2_root().join(&spelled).canonicalize();
            let Ok(canonical) = resolved else {
                return Ok(());
            };
            let on_spelling = verdict(&spelled);
            let on_canonical = verdict(&canonical.display().to_string());
            *outcomes
                .borrow_mut()
                .entry(match &on_spelling {
                    Ok(()) => "armed",
                    Err(e) if e.contains("root cgroup") => "root",
                    Err(e) if e.contains("container runtime") => "runtime",
                    Err(e) if e.contains("outside") => "outside",
                    Err(_) => "other",
                })
                .or_default() += 1;
            prop_assert_eq!(on_spelling, on_canonical, "{:?} is {}", spelled, canonical.display());
        });
        let _ = runtime.kill();
        let _ = runtime.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let outcomes = outcomes.into_inner();
        println!("verdicts over random spellings: {outcomes:?}");
        // The walk reached each kind of verdict, so the property compared real refusals.
        for kind in ["armed", "root", "runtime"] {
            assert!(
                outcomes.get(kind).copied().unwrap_or(0) > 0,
                "{kind}: {outcomes:?}"
            );
        }
        drop((c, b, a));
    }
}
