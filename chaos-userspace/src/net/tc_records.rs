//! What survives a SIGKILL at the TC layer, written down so it can be undone.
//!
//! tcx links die with the process, but clsact filters attached through netlink, and qdiscs
//! chaos-bpf added (clsact; fq for delay), stay until someone removes them. Each TC run keeps a
//! record in /run/chaos-bpf (tmpfs, gone at reboot): the interfaces it uses, the filters it
//! attached, and a marker per qdisc it added. A clean exit removes its own; `chaos-bpf cleanup`,
//! and every later TC start, remove those of runs that died.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{
    TcAttachType,
    links::Link as _,
    tc::{SchedClassifierLink, TcHandle},
};
use serde::{Deserialize, Serialize};

pub const RECORDS_DIR: &str = "/run/chaos-bpf";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FilterRecord {
    pub ifname: String,
    pub ingress: bool,
    pub priority: u16,
    /// The filter's TcHandle as the kernel's u32 (major << 16 | minor).
    pub handle: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    pid: u32,
    /// The process's start time (clock ticks after boot, /proc/PID/stat): with the pid, who owns
    /// the record, even after the pid is reused (pid 1 of a restarted container).
    #[serde(default)]
    started: u64,
    /// The network namespace's inode: records are only undone from the same namespace.
    netns: u64,
    /// Interfaces this run attached to: a qdisc chaos-bpf added stays while a live run uses it.
    #[serde(default)]
    interfaces: Vec<String>,
    filters: Vec<FilterRecord>,
}

/// This process's record; removed on drop, after the attachments it lists were dropped.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    record: Record,
    object: u32,
}

fn current_netns() -> u64 {
    fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that wrote `record` still runs: its pid, with its start time. This
/// process's own records are therefore always live (every object of an agent keeps its own).
fn owner_alive(record: &Record) -> bool {
    alive(record.pid, record.started)
}

/// Whether the process `pid` that started at `started` (0: unknown) still runs.
pub(crate) fn alive(pid: u32, started: u64) -> bool {
    match start_time(pid) {
        Some(now) => started == 0 || now == started,
        None => false,
    }
}

/// Objects of this process that record TC state, numbered so their records and filter handles
/// never collide (an agent holds many).
static OBJECTS: AtomicU32 = AtomicU32::new(0);

/// Deletes a qdisc chaos-bpf added to the interface with this index.
type DeleteQdisc = fn(i32) -> std::io::Result<()>;

/// Qdiscs chaos-bpf adds, by marker prefix: how to delete one again.
const QDISC_MARKERS: &[(&str, DeleteQdisc)] = &[
    ("clsact", crate::net::netlink::delete_clsact),
    ("fq", |ifindex| {
        crate::net::netlink::delete_root(ifindex, crate::net::netlink::CHAOS_FQ_HANDLE, "fq")
    }),
];

fn marker(kind: &str, netns: u64, ifindex: u32) -> PathBuf {
    Path::new(RECORDS_DIR).join(format!("{kind}-{netns}-{ifindex}"))
}

impl Recorder {
    pub fn new() -> std::io::Result<Self> {
        fs::create_dir_all(RECORDS_DIR)?;
        let pid = std::process::id();
        let object = OBJECTS.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            path: Path::new(RECORDS_DIR).join(format!("run-{pid}-{object}.json")),
            record: Record {
                pid,
                started: start_time(pid).unwrap_or(0),
                netns: current_netns(),
                ..Record::default()
            },
            object,
        })
    }

    /// The handle of this object's clsact filters: unique per process and object, so two
    /// objects (or two chaos-bpf processes) never ask for the same one.
    pub fn filter_handle(&self) -> u32 {
        ((self.record.pid & 0x3F_FFFF) << 10 | (self.object & 0x3FF)).max(1)
    }

    /// Notes an interface this run attaches to, before attaching.
    pub fn use_interface(&mut self, ifname: &str) -> std::io::Result<()> {
        if !self.record.interfaces.iter().any(|i| i == ifname) {
            self.record.interfaces.push(ifname.to_string());
        }
        self.save()
    }

    /// Notes a clsact filter this run is about to attach, before attaching it.
    pub fn add_filter(&mut self, filter: FilterRecord) -> std::io::Result<()> {
        self.record.filters.push(filter);
        self.save()
    }

    /// Notes that a run adds the clsact qdisc of `ifindex` (before adding it). True when this call
    /// wrote the note; false when another chaos-bpf run's note is already there.
    pub fn mark_clsact(&self, ifindex: u32) -> std::io::Result<bool> {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker("clsact", self.record.netns, ifindex))
        {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The clsact of `ifindex` turned out to be somebody else's: not ours to remove.
    pub fn unmark_clsact(&self, ifindex: u32) -> std::io::Result<()> {
        match fs::remove_file(marker("clsact", self.record.netns, ifindex)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Notes that this run puts fq at the root of `ifindex` (before doing so).
    pub fn mark_fq(&self, ifindex: u32) -> std::io::Result<()> {
        fs::write(marker("fq", self.record.netns, ifindex), b"")
    }

    fn save(&self) -> std::io::Result<()> {
        let json = serde_json::to_vec(&self.record).map_err(std::io::Error::other)?;
        let partial = self.path.with_extension("partial");
        fs::write(&partial, json)?;
        fs::rename(partial, &self.path)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        // The filters are gone (dropped before this): remove qdiscs chaos-bpf added that no other
        // live run uses any more.
        let _ = remove_unused_qdiscs(self.record.netns);
    }
}

/// What a cleanup removed.
#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    pub stale_runs: usize,
    pub filters_removed: usize,
    pub qdiscs_removed: usize,
    /// Records of dead runs in other network namespaces, left for a cleanup run there.
    pub other_namespaces: usize,
    /// cgroup knobs (cpu-pressure, memory-pressure) of dead runs put back.
    pub knobs_restored: usize,
}

/// Undoes what dead runs in this network namespace left behind.
pub fn cleanup_stale() -> std::io::Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let netns = current_netns();
    for (path, record) in records::<Record>("run-") {
        if owner_alive(&record) {
            continue;
        }
        if record.netns != netns {
            if netns_exists(record.netns) {
                report.other_namespaces += 1;
            } else {
                // The namespace is gone, and its interfaces with everything on them.
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        report.stale_runs += 1;
        for filter in &record.filters {
            let attach_type = if filter.ingress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            let handle = TcHandle::from(filter.handle);
            if let Ok(link) = SchedClassifierLink::attached(
                &filter.ifname,
                attach_type,
                filter.priority,
                handle,
                None,
            ) && link.detach().is_ok()
            {
                report.filters_removed += 1;
            }
        }
        let _ = fs::remove_file(&path);
    }
    report.qdiscs_removed = remove_unused_qdiscs(netns)?;
    Ok(report)
}

/// The records under [`RECORDS_DIR`] named `PREFIX*.json` that parse as `T`, with their paths.
pub(crate) fn records<T: serde::de::DeserializeOwned>(
    prefix: &'static str,
) -> impl Iterator<Item = (PathBuf, T)> {
    fs::read_dir(RECORDS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(move |path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
        })
        .filter_map(|path| {
            let record = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
            Some((path, record))
        })
}

/// Whether any process or `ip netns` bind mount still holds the network namespace with this inode.
fn netns_exists(inode: u64) -> bool {
    let holds = |path: PathBuf| fs::metadata(path).is_ok_and(|m| m.ino() == inode);
    let processes = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("ns/net"));
    let mounts = fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    processes.chain(mounts).any(holds)
}

/// Deletes the qdiscs chaos-bpf added in `netns` whose interface no live run uses.
fn remove_unused_qdiscs(netns: u64) -> std::io::Result<usize> {
    let Ok(entries) = fs::read_dir(RECORDS_DIR) else {
        return Ok(0);
    };
    let live_interfaces: Vec<String> = fs::read_dir(RECORDS_DIR)?
        .flatten()
        .filter_map(|e| serde_json::from_slice::<Record>(&fs::read(e.path()).ok()?).ok())
        .filter(|r| r.netns == netns && owner_alive(r))
        .flat_map(|r| {
            r.interfaces
                .into_iter()
                .chain(r.filters.into_iter().map(|f| f.ifname))
        })
        .collect();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        for (kind, delete) in QDISC_MARKERS {
            let Some(ifindex) = name
                .strip_prefix(&format!("{kind}-{netns}-"))
                .and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            let in_use = crate::net::interface::name_of(ifindex)
                .is_some_and(|ifname| live_interfaces.contains(&ifname));
            if in_use {
                continue;
            }
            if delete(ifindex as i32).is_ok() {
                removed += 1;
            }
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(removed)
}
