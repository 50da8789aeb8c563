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
        // Killed by their canonical paths: the directories the guard rails judged.
        let cgroups = cgroups.into_iter().map(|c| c.path).collect();
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

/// Kill faults running in this process, by id: what the agent and an experiment's injector
/// hold beside the engine's kernel rules. Ids are numbered from [`Kills::FIRST_ID`], apart from
/// the engine's.
#[derive(Default)]
pub struct Kills {
    running: std::collections::BTreeMap<u32, Running>,
}

struct Running {
    task: tokio::task::JoinHandle<()>,
    counts: Arc<KillCounts>,
    view: serde_json::Value,
}

impl Kills {
    pub const FIRST_ID: u32 = 1 << 30;

    /// Starts the rounds; `report(round, processes)` after each.
    pub fn start(
        &mut self,
        kill: KillFault,
        spec: &Fault,
        report: impl Fn(u32, u64) + Send + 'static,
    ) -> u32 {
        let id = self
            .running
            .keys()
            .next_back()
            .map_or(Self::FIRST_ID, |last| last + 1);
        let counts = Arc::new(KillCounts::default());
        let view = serde_json::json!({
            "id": id, "kind": "kill", "mechanism": "cgroup.kill",
            "cgroups": kill.cgroups, "workloads": kill.workloads,
            "count": kill.count, "interval_ms": kill.interval.as_millis() as u64,
            "spec": spec,
        });
        let task = tokio::spawn(kill.run(Arc::clone(&counts), report));
        self.running.insert(id, Running { task, counts, view });
        id
    }

    pub fn contains(&self, id: u32) -> bool {
        self.running.contains_key(&id)
    }

    /// Rounds done as matched, processes killed as injected.
    pub fn counters(&self, id: u32) -> Option<crate::telemetry::Counters> {
        self.running.get(&id).map(|running| {
            let counts = &running.counts;
            crate::telemetry::Counters {
                matched: counts.kills.load(Ordering::Relaxed),
                injected: counts.processes.load(Ordering::Relaxed),
                ..crate::telemetry::Counters::default()
            }
        })
    }

    /// The fault as the API shows it: its spec, counters and state.
    pub fn view(&self, id: u32) -> Option<serde_json::Value> {
        let running = self.running.get(&id)?;
        let mut view = running.view.clone();
        view["state"] = if running.task.is_finished() {
            "ended"
        } else {
            "armed"
        }
        .into();
        view["counters"] = serde_json::to_value(self.counters(id)).unwrap_or_default();
        Some(view)
    }

    pub fn views(&self) -> Vec<serde_json::Value> {
        self.running
            .keys()
            .filter_map(|id| self.view(*id))
            .collect()
    }

    /// Stops the rounds still to come; the fault's final view.
    pub fn stop(&mut self, id: u32) -> Option<serde_json::Value> {
        self.running.get(&id)?.task.abort();
        let mut view = self.view(id)?;
        view["state"] = "ended".into();
        Some(view)
    }

    /// Stops every kill still running; how many were.
    pub fn stop_all(&mut self) -> usize {
        let live = self
            .running
            .values()
            .filter(|r| !r.task.is_finished())
            .count();
        for running in self.running.values() {
            running.task.abort();
        }
        live
    }
}
