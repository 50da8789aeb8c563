//! kill: SIGKILL every process of a scope (a cgroup, a container, a pod), once or every
//! `interval`, `count` times; the guides' "the Redis pod dies". No kernel rule: the cgroup's
//! `cgroup.kill` (Linux 5.14+) kills the whole subtree at once, atomically against forks;
//! older kernels get a SIGKILL for every member of `cgroup.procs`, subtree included. Each kill
//! is counted and reported.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chaos_model::{Fault, workloads::PodInfo};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::error::{ChaosError, Result};

/// A kill fault, planned: its scope resolved and checked by the guard rails.
#[derive(Clone, Debug)]
pub struct KillFault {
    pub cgroups: Vec<PathBuf>,
    pub workloads: Vec<String>,
    pub count: u32,
    pub interval: Duration,
    pub dry_run: bool,
}

/// What the kills did so far.
#[derive(Debug, Default)]
pub struct KillCounts {
    /// Rounds done.
    pub kills: AtomicU64,
    /// Processes killed over all rounds (found, in a dry run).
    pub processes: AtomicU64,
}

impl KillFault {
    pub fn plan(fault: &Fault, pods: Option<&[PodInfo]>) -> Result<KillFault> {
        chaos_model::validate(fault)?;
        let (cgroups, workloads) = crate::inject::cgroups_of(&fault.scope, pods)?;
        crate::guard::check(fault, &cgroups, &workloads)?;
        for cgroup in &cgroups {
            crate::scope::CgroupScope::open(cgroup)?;
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(ChaosError::NotRoot);
        }
        Ok(KillFault {
            cgroups,
            workloads,
            count: fault.count.unwrap_or(1),
            interval: fault.interval.map_or(Duration::ZERO, |i| i.0),
            dry_run: fault.dry_run,
        })
    }

    /// Kills `count` times, `interval` apart, calling `report` after each round with the
    /// processes it killed. Ends early when dropped (the task is aborted).
    pub async fn run(self, counts: Arc<KillCounts>, report: impl Fn(u32, u64)) {
        for round in 1..=self.count {
            let mut killed = 0;
            for cgroup in &self.cgroups {
                killed += kill_all(cgroup, self.dry_run);
            }
            counts.kills.fetch_add(1, Ordering::Relaxed);
            counts.processes.fetch_add(killed, Ordering::Relaxed);
            report(round, killed);
            if round < self.count {
                tokio::time::sleep(self.interval).await;
            }
        }
    }
}

/// Kills every process in `cgroup` and below; how many there were.
pub fn kill_all(cgroup: &Path, dry_run: bool) -> u64 {
    let members = processes(cgroup);
    if dry_run || members.is_empty() {
        return members.len() as u64;
    }
    // One write kills the subtree, forks racing with it included.
    if std::fs::write(cgroup.join("cgroup.kill"), b"1").is_ok() {
        return members.len() as u64;
    }
    members
        .iter()
        .filter(|pid| nix::sys::signal::kill(Pid::from_raw(**pid), Signal::SIGKILL).is_ok())
        .count() as u64
}

/// The processes of the cgroup and its descendants.
fn processes(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for entry in std::fs::read_dir(cgroup).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(processes(&entry.path()));
        }
    }
    pids
}
