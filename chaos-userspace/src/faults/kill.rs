//! kill: SIGKILL every process of a scope (a cgroup, a container, a pod), once or every
//! `interval`, `count` times; the guides' "the Redis pod dies". No kernel rule: the cgroup's
//! `cgroup.kill` (Linux 5.14+) kills the whole subtree at once, atomically against forks;
//! older kernels get a SIGKILL for every member of `cgroup.procs`, subtree included. Each kill
//! is counted and reported.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chaos_model::{Fault, workloads::PodInfo};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::{
    error::{ChaosError, Result},
    scope::CgroupScope,
};

/// A kill fault, planned: its scope resolved and checked by the guard rails.
#[derive(Debug)]
pub struct KillFault {
    /// Held open and canonical: the directories the guard rails judged.
    pub cgroups: Vec<CgroupScope>,
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
    pub fn plan(
        fault: &Fault,
        pods: Option<&[PodInfo]>,
        guard: &crate::guard::Guard,
    ) -> Result<KillFault> {
        chaos_model::validate(fault)?;
        let (cgroups, workloads) = crate::workload::resolve::cgroups_of(&fault.scope, pods)?;
        guard.check(fault, &cgroups, &workloads)?;
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

    /// From the first round to the last.
    pub fn schedule(&self) -> Duration {
        self.interval * self.count.saturating_sub(1)
    }

    /// "kill <scope>: N time(s), every D" for the run's first line.
    pub fn describe(&self) -> String {
        let scope = if self.workloads.is_empty() {
            self.cgroups
                .iter()
                .map(|c| format!("cgroup {} (id {})", c.path.display(), c.id))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            self.workloads.join(", ")
        };
        let mut line = format!("kill {scope}: {} time(s)", self.count);
        if self.count > 1 {
            line.push_str(&format!(
                ", every {}",
                humantime::format_duration(self.interval)
            ));
        }
        if self.dry_run {
            line.push_str(" DRY RUN (counts, kills nothing)");
        }
        line
    }
}

/// A kill fault running in the engine: its rounds on a task, the cgroups they kill in (moved
/// when a scope by name follows a restarted container), and what they did.
#[derive(Debug)]
pub struct KillObject {
    pub workloads: Vec<String>,
    pub cgroups: Vec<CgroupScope>,
    pub count: u32,
    pub interval: Duration,
    targets: Arc<Mutex<Vec<PathBuf>>>,
    counts: Arc<KillCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl KillObject {
    /// Starts the rounds: `count` of them, `interval` apart, `report(round, processes)` after
    /// each.
    pub fn start(kill: KillFault, report: impl Fn(u32, u64) + Send + 'static) -> Self {
        let paths: Vec<PathBuf> = kill.cgroups.iter().map(|c| c.path.clone()).collect();
        let targets = Arc::new(Mutex::new(paths));
        let counts = Arc::new(KillCounts::default());
        let (count, interval, dry_run) = (kill.count, kill.interval, kill.dry_run);
        let task = tokio::spawn({
            let (targets, counts) = (Arc::clone(&targets), Arc::clone(&counts));
            async move {
                for round in 1..=count {
                    let now: Vec<PathBuf> = targets.lock().map(|t| t.clone()).unwrap_or_default();
                    let killed: u64 = now.iter().map(|cgroup| kill_all(cgroup, dry_run)).sum();
                    counts.kills.fetch_add(1, Ordering::Relaxed);
                    counts.processes.fetch_add(killed, Ordering::Relaxed);
                    report(round, killed);
                    if round < count {
                        tokio::time::sleep(interval).await;
                    }
                }
            }
        });
        Self {
            workloads: kill.workloads,
            cgroups: kill.cgroups,
            count,
            interval,
            targets,
            counts,
            task,
        }
    }

    /// Rounds done as matched, processes killed as injected.
    pub fn counters(&self) -> crate::wire::Counters {
        crate::wire::Counters {
            matched: self.counts.kills.load(Ordering::Relaxed),
            injected: self.counts.processes.load(Ordering::Relaxed),
            ..crate::wire::Counters::default()
        }
    }

    /// No round after this one.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Every round done (or stopped).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The next rounds kill in these cgroups.
    pub fn retarget(&mut self, cgroups: Vec<CgroupScope>) {
        if let Ok(mut targets) = self.targets.lock() {
            *targets = cgroups.iter().map(|c| c.path.clone()).collect();
        }
        self.cgroups = cgroups;
    }
}

impl Drop for KillObject {
    fn drop(&mut self) {
        self.task.abort();
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
