//! cpu-pressure and memory-pressure: the scope's own cgroup knobs, as a noisy neighbour or a
//! tight limit would make them. No stressor runs: the target itself is starved of CPU time
//! (`cpu.max`, or v1's `cpu.cfs_quota_us`) or pushed into reclaim (`memory.high` / `memory.max`,
//! or v1's `memory.soft_limit_in_bytes` / `memory.limit_in_bytes` on hybrid hosts, where runc
//! makes a container's v1 cgroups at the same path as its v2 one). Each cgroup of the scope gets
//! its own knob. A knob is only ever tightened: where the cgroup's own limit is already below
//! the fault's, it stays. What was there is written down first (a record under /run/chaos-bpf)
//! and put back when the fault ends; `chaos-bpf cleanup` puts back what a killed run left.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use chaos_model::{Fault, FaultKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ChaosError, Result},
    scope::CgroupScope,
};

/// What a pressure fault sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pressure {
    /// At most this share of one CPU (0.2: 20 ms of every 100 ms).
    Cpu { share: f64 },
    /// Reclaim above `high`, the OOM killer above `max` (bytes).
    Memory { high: Option<u64>, max: Option<u64> },
}

/// A pressure fault, planned: its cgroups resolved and judged by the guard rails, and the knob
/// files found for each.
#[derive(Debug)]
pub struct PressureFault {
    pub kind: FaultKind,
    pub pressure: Pressure,
    pub cgroups: Vec<CgroupScope>,
    pub workloads: Vec<String>,
    /// The knob files, with what each will hold, in the order they are written.
    pub knobs: Vec<Knob>,
    pub dry_run: bool,
}

/// One knob file: where, and what the fault writes there (computed against what it holds now).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knob {
    pub path: PathBuf,
    pub previous: String,
    pub value: String,
}

impl Knob {
    /// memory.max or v1's memory.limit_in_bytes: above it the OOM killer acts.
    fn is_hard_memory_limit(&self) -> bool {
        self.path
            .file_name()
            .is_some_and(|name| name == "memory.max" || name == "memory.limit_in_bytes")
    }
}

impl PressureFault {
    pub fn plan(
        fault: &Fault,
        pods: Option<&[chaos_model::workloads::PodInfo]>,
        guard: &crate::guard::Guard,
    ) -> Result<PressureFault> {
        chaos_model::validate(fault)?;
        let (cgroups, workloads) = crate::workload::resolve::cgroups_of(&fault.scope, pods)?;
        guard.check(fault, &cgroups, &workloads)?;
        if !nix::unistd::geteuid().is_root() {
            return Err(ChaosError::NotRoot);
        }
        // A run killed before it could put its knobs back left them tightened: restored first,
        // or its value would be read here as the one to put back.
        let restored = cleanup_stale();
        if restored > 0 {
            eprintln!("chaos-bpf: put back {restored} knob(s) a killed run had set");
        }
        let pressure = match fault.kind {
            FaultKind::CpuPressure => Pressure::Cpu {
                share: within_the_node(fault.cpu.map_or(1.0, |c| c.0))?,
            },
            _ => Pressure::Memory {
                high: fault.memory_high.map(|m| m.0),
                max: fault.memory_max.map(|m| m.0),
            },
        };
        let mut knobs = Vec::new();
        for cgroup in &cgroups {
            knobs.extend(knobs_of(&cgroup.path, pressure)?);
        }
        Ok(PressureFault {
            kind: fault.kind,
            pressure,
            cgroups,
            workloads,
            knobs,
            dry_run: fault.dry_run,
        })
    }

    /// "cpu-pressure 0.2 CPU on <scope>" for the run's first line.
    pub fn describe(&self) -> String {
        let what = match self.pressure {
            Pressure::Cpu { share } => format!("cpu-pressure {share} CPU"),
            Pressure::Memory { high, max } => {
                let mut text = "memory-pressure".to_string();
                if let Some(high) = high {
                    text.push_str(&format!(" high {high} bytes"));
                }
                if let Some(max) = max {
                    text.push_str(&format!(" max {max} bytes"));
                }
                text
            }
        };
        let knobs: Vec<String> = self
            .knobs
            .iter()
            .map(|k| format!("{} {} -> {}", k.path.display(), k.previous, k.value))
            .collect();
        let dry = if self.dry_run {
            " DRY RUN (writes nothing)"
        } else {
            ""
        };
        format!("{what}{dry}: {}", knobs.join(", "))
    }
}

/// The cgroup v2 directory's path below the mount, for the same cgroup in a v1 hierarchy.
fn relative(path: &Path) -> Option<PathBuf> {
    let mount = crate::scope::cgroup2_mount()?;
    let point = mount.point.canonicalize().unwrap_or(mount.point);
    path.strip_prefix(point).ok().map(Path::to_path_buf)
}

/// Where the v1 hierarchy with `controller` is mounted, if one is (hybrid hosts).
pub fn v1_mount(controller: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, point, "cgroup", options, ..]
                if options.split(',').any(|option| option == controller) =>
            {
                Some(PathBuf::from(point))
            }
            _ => None,
        }
    })
}

fn read_knob(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|err| ChaosError::io(format!("read {}", path.display()), err))
}

/// The knobs that make `pressure` in the cgroup at `path` (v2 where its controller is enabled
/// there, else the v1 cgroup at the same path).
fn knobs_of(path: &Path, pressure: Pressure) -> Result<Vec<Knob>> {
    let (controller, v2_file) = match pressure {
        Pressure::Cpu { .. } => ("cpu", "cpu.max"),
        Pressure::Memory { .. } => ("memory", "memory.max"),
    };
    if path.join(v2_file).exists() {
        return Ok(match pressure {
            Pressure::Cpu { share } => {
                let file = path.join("cpu.max");
                let previous = read_knob(&file)?;
                vec![Knob {
                    value: cpu_max(&previous, share),
                    path: file,
                    previous,
                }]
            }
            Pressure::Memory { high, max } => {
                byte_knobs(path, [("memory.max", max), ("memory.high", high)])?
            }
        });
    }
    let v1 = v1_mount(controller)
        .zip(relative(path))
        .map(|(mount, relative)| mount.join(relative))
        .filter(|dir| dir.is_dir())
        .ok_or_else(|| {
            ChaosError::input(
                "scope",
                format!(
                    "{} has no {controller} controller: no {v2_file} there, and no cgroup v1 \
                     {controller} hierarchy holds the same path",
                    path.display()
                ),
                format!(
                    "a cgroup with the {controller} controller (pods and containers have it; a \
                     cgroup of your own needs it enabled in its parent's cgroup.subtree_control)"
                ),
            )
        })?;
    Ok(match pressure {
        Pressure::Cpu { share } => {
            let period: u64 = read_knob(&v1.join("cpu.cfs_period_us"))?
                .parse()
                .unwrap_or(100_000);
            let file = v1.join("cpu.cfs_quota_us");
            let previous = read_knob(&file)?;
            let quota = quota_us(share, period);
            let value = match previous.parse::<i64>() {
                Ok(current) if current > 0 && (current as u64) < quota => previous.clone(),
                _ => quota.to_string(),
            };
            vec![Knob {
                path: file,
                previous,
                value,
            }]
        }
        Pressure::Memory { high, max } => byte_knobs(
            &v1,
            [
                ("memory.limit_in_bytes", max),
                ("memory.soft_limit_in_bytes", high),
            ],
        )?,
    })
}

/// The byte limits given, hard limit first (putting things back goes in reverse), each the
/// tighter of the fault's and the cgroup's own.
fn byte_knobs(dir: &Path, limits: [(&str, Option<u64>); 2]) -> Result<Vec<Knob>> {
    let mut knobs = Vec::new();
    for (name, limit) in limits {
        if let Some(limit) = limit {
            let file = dir.join(name);
            let previous = read_knob(&file)?;
            knobs.push(Knob {
                value: tighter_bytes(&previous, limit),
                path: file,
                previous,
            });
        }
    }
    Ok(knobs)
}

/// A share above the node's CPUs limits nothing: it is refused rather than armed as a no-op.
fn within_the_node(share: f64) -> Result<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if share > cpus as f64 {
        return Err(ChaosError::input(
            "cpu",
            format!("{share} CPUs is more than this node's {cpus}: it would limit nothing"),
            format!("up to {cpus} CPUs (0.2, 200m)"),
        ));
    }
    Ok(share)
}

/// The quota of `share` CPUs in a period, at least the kernel's 1 ms.
fn quota_us(share: f64, period_us: u64) -> u64 {
    ((share * period_us as f64).round() as u64).max(1000)
}

/// `cpu.max` ("QUOTA PERIOD", or "max PERIOD") with at most `share` CPUs: the tighter of the
/// two quotas, in the cgroup's own period.
fn cpu_max(previous: &str, share: f64) -> String {
    let mut fields = previous.split_whitespace();
    let current = fields.next().unwrap_or("max");
    let period: u64 = fields
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(100_000);
    let quota = quota_us(share, period);
    match current.parse::<u64>() {
        Ok(current) if current < quota => previous.to_string(),
        _ => format!("{quota} {period}"),
    }
}

/// A byte limit that is the tighter of the one there ("max", or a number) and `limit`, in whole
/// pages (the kernel rounds down to them, and `cleanup` recognises its value by what reads back).
fn tighter_bytes(previous: &str, limit: u64) -> String {
    let limit = (limit / 4096).max(1) * 4096;
    match previous.parse::<u64>() {
        Ok(current) if current < limit => previous.to_string(),
        _ => limit.to_string(),
    }
}

/// Knobs set and held: put back on [`PressureObject::restore`], on drop, and by `cleanup` after
/// a SIGKILL, from the record written before the first knob changed.
#[derive(Debug)]
pub struct PressureObject {
    pub knobs: Vec<Knob>,
    record: Option<PathBuf>,
    restored: bool,
    /// OOM kills counted in each cgroup whose memory.max the fault set, when it set it.
    oom_kills: Vec<(PathBuf, u64)>,
}

/// The record of a run's knobs, for `chaos-bpf cleanup`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    pid: u32,
    started: u64,
    knobs: Vec<Knob>,
}

static RECORDS: AtomicU32 = AtomicU32::new(0);

impl PressureObject {
    /// Writes the record, then each knob; on an error, what was written is put back.
    pub fn apply(fault: &PressureFault) -> Result<Self> {
        if fault.dry_run {
            return Ok(Self {
                knobs: Vec::new(),
                record: None,
                restored: true,
                oom_kills: Vec::new(),
            });
        }
        let pid = std::process::id();
        let dir = Path::new(crate::net::tc_records::RECORDS_DIR);
        let record = dir.join(format!(
            "knobs-{pid}-{}.json",
            RECORDS.fetch_add(1, Ordering::Relaxed)
        ));
        let contents = serde_json::to_vec(&Record {
            pid,
            started: crate::net::tc_records::start_time(pid).unwrap_or(0),
            knobs: fault.knobs.clone(),
        })
        .map_err(|err| ChaosError::io("the knob record", std::io::Error::other(err)))?;
        fs::create_dir_all(dir)
            .and_then(|()| fs::write(&record, contents))
            .map_err(|err| ChaosError::io(format!("write {}", record.display()), err))?;
        let mut object = Self {
            knobs: Vec::new(),
            record: Some(record),
            restored: false,
            oom_kills: fault
                .knobs
                .iter()
                .filter(|k| k.is_hard_memory_limit())
                .filter_map(|k| {
                    let dir = k.path.parent()?.to_path_buf();
                    Some((dir.clone(), oom_kills(&dir)?))
                })
                .collect(),
        };
        for knob in &fault.knobs {
            if let Err(err) = fs::write(&knob.path, &knob.value) {
                let _ = object.restore();
                return Err(ChaosError::input(
                    "scope",
                    format!("writing {} to {}: {err}", knob.value, knob.path.display()),
                    "a limit the cgroup can take (memory.max below what it uses now may be \
                     refused while nothing can be reclaimed)",
                ));
            }
            object.knobs.push(knob.clone());
        }
        Ok(object)
    }

    /// Puts every knob back as it was, last first; then the record goes.
    pub fn restore(&mut self) -> Result<()> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        for (dir, before) in &self.oom_kills {
            if let Some(after) = oom_kills(dir)
                && after > *before
            {
                eprintln!(
                    "chaos-bpf: the OOM killer killed {} process(es) in {} under the fault's \
                     memory limit",
                    after - before,
                    dir.display()
                );
            }
        }
        let mut failed = None;
        for knob in self.knobs.iter().rev() {
            match fs::read_to_string(&knob.path) {
                // Someone set the knob while the fault ran: theirs now, and said so.
                Ok(now) if now.trim() != knob.value => eprintln!(
                    "chaos-bpf: left {} alone: it reads {}, not the {} chaos-bpf set, so \
                     someone changed it meanwhile (it was {} before the fault)",
                    knob.path.display(),
                    now.trim(),
                    knob.value,
                    knob.previous
                ),
                _ => {
                    if let Err(err) = put_back(knob) {
                        failed.get_or_insert(err);
                    }
                }
            }
        }
        if let Some(record) = self.record.take() {
            let _ = fs::remove_file(record);
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Drop for PressureObject {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// Writes a knob's previous value back; a cgroup gone meanwhile needs nothing.
fn put_back(knob: &Knob) -> Result<()> {
    // v1's unlimited reads back as a huge number some kernels refuse to be written; -1 means
    // the same everywhere.
    let previous = if knob.previous.len() >= 18 && knob.previous.parse::<u64>().is_ok() {
        "-1"
    } else {
        &knob.previous
    };
    match fs::write(&knob.path, previous) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ChaosError::io(
            format!("put {} back into {}", previous, knob.path.display()),
            err,
        )),
    }
}

/// OOM kills so far in a memory cgroup: `oom_kill` of v2's memory.events or v1's
/// memory.oom_control.
fn oom_kills(dir: &Path) -> Option<u64> {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|file| fs::read_to_string(dir.join(file)).ok())?
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// Puts back the knobs of runs that died; how many knobs.
pub fn cleanup_stale() -> usize {
    let mut restored = 0;
    for (path, record) in crate::net::tc_records::records::<Record>("knobs-") {
        if crate::net::tc_records::alive(record.pid, record.started) {
            continue;
        }
        for knob in record.knobs.iter().rev() {
            // Only what still holds chaos-bpf's value: someone who changed it since owns it.
            if fs::read_to_string(&knob.path).is_ok_and(|now| now.trim() == knob.value)
                && put_back(knob).is_ok()
            {
                restored += 1;
            }
        }
        let _ = fs::remove_file(&path);
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_are_only_ever_tightened() {
        assert_eq!(cpu_max("max 100000", 0.2), "20000 100000");
        assert_eq!(
            cpu_max("10000 100000", 0.2),
            "10000 100000",
            "already tighter"
        );
        assert_eq!(
            cpu_max("max 50000", 0.5),
            "25000 50000",
            "the cgroup's period"
        );
        assert_eq!(
            cpu_max("max 100000", 0.001),
            "1000 100000",
            "the kernel's minimum"
        );
        assert_eq!(cpu_max("max 100000", 2.0), "200000 100000", "two CPUs");
        assert_eq!(tighter_bytes("max", 64 << 20), (64u64 << 20).to_string());
        assert_eq!(tighter_bytes("1048576", 64 << 20), "1048576");
        assert_eq!(
            tighter_bytes("9223372036854771712", 64 << 20),
            (64u64 << 20).to_string()
        );
    }
}
