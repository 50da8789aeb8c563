//! Guard rails, checked while nothing is attached: a fault never reaches chaos-bpf itself,
//! PID 1, the kubelet, the container runtime or `kube-system` unless its scope names them
//! exactly, and never a scope wider than half of the node (its cgroups) unless `force`.
use std::path::{Path, PathBuf};

use chaos_model::Fault;

use crate::error::{ChaosError, Result};

/// The share of the node's cgroups a scope may cover without `force`.
pub const BLAST_RADIUS_LIMIT: f64 = 0.5;
/// Below this many cgroups a node has nothing to compare shares with (a bare VM, a test
/// machine); the named protections still apply.
const SHARES_FROM: usize = 16;

/// Processes no fault reaches unless named, by what they are and their comm names.
const PROTECTED: &[(&str, &[&str])] = &[
    ("the kubelet", &["kubelet"]),
    (
        "the container runtime",
        &["containerd", "crio", "dockerd", "cri-dockerd"],
    ),
];

/// Refuses a fault whose cgroups reach a protected process or are too wide.
pub fn check(fault: &Fault, cgroups: &[PathBuf], workloads: &[String]) -> Result<()> {
    let Some(root) = crate::scope::cgroup2_mount().map(|m| m.point) else {
        return Ok(());
    };
    let scope = &fault.scope;
    if !fault.force && cgroups.iter().any(|c| same_dir(c, &root)) {
        return Err(ChaosError::input(
            "scope.cgroup",
            format!(
                "{} is the root cgroup: every process of the node",
                root.display()
            ),
            "a narrower cgroup, or force: true (--force) for the whole node",
        ));
    }
    for (what, pid) in protected_processes() {
        let Ok(home) = crate::workload::process(&root, pid) else {
            continue;
        };
        let named = scope.pid == Some(pid)
            || scope
                .cgroup
                .as_deref()
                .is_some_and(|c| same_dir(Path::new(c), &home) && !same_dir(&home, &root));
        if let Some(covering) = cgroups.iter().find(|c| home.starts_with(c))
            && !named
        {
            return Err(ChaosError::input(
                "scope",
                format!(
                    "{} holds {what} (pid {pid}, in {}), which a fault never reaches unless named",
                    covering.display(),
                    home.display()
                ),
                format!(
                    "a scope that leaves it out, or one that names it exactly (scope.pid {pid})"
                ),
            ));
        }
    }
    let system = workloads.iter().find(|w| w.starts_with("kube-system/"));
    let names_kube_system = scope.namespace.as_deref() == Some("kube-system")
        || scope
            .pod
            .as_deref()
            .is_some_and(|p| p.starts_with("kube-system/"));
    if let Some(system) = system
        && !names_kube_system
    {
        return Err(ChaosError::input(
            "scope",
            format!("selects {system} in kube-system, which a fault never reaches unless named"),
            "scope.namespace kube-system (or scope.pod kube-system/NAME) to mean it",
        ));
    }
    if !fault.force {
        let total = count_cgroups(&root);
        let covered: usize = cgroups.iter().map(|c| count_cgroups(c)).sum();
        let share = covered as f64 / total.max(1) as f64;
        if total >= SHARES_FROM && share > BLAST_RADIUS_LIMIT {
            return Err(ChaosError::input(
                "scope",
                format!(
                    "covers {covered} of this node's {total} cgroups ({:.0}%), more than {:.0}%",
                    share * 100.0,
                    BLAST_RADIUS_LIMIT * 100.0
                ),
                "a narrower scope, or force: true (--force) to accept the blast radius",
            ));
        }
    }
    Ok(())
}

/// PID 1, this process, and the kubelet's and runtimes' processes running here.
fn protected_processes() -> Vec<(String, u32)> {
    let mut found = vec![
        ("PID 1".to_string(), 1),
        ("chaos-bpf itself".to_string(), std::process::id()),
    ];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if let Some((what, _)) = PROTECTED
            .iter()
            .find(|(_, names)| names.contains(&comm.trim()))
        {
            found.push((format!("{what} ({})", comm.trim()), pid));
        }
    }
    found
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The cgroup and every cgroup below it.
fn count_cgroups(dir: &Path) -> usize {
    1 + std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| count_cgroups(&e.path()))
        .sum::<usize>()
}
