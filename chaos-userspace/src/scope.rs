//! Where a fault applies. Today: a cgroup v2 subtree. The kernel enforces the scope by running the
//! programs only for that subtree, so code outside it runs no chaos code at all.
use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::error::{ChaosError, Result};

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// An open cgroup v2 directory.
#[derive(Debug)]
pub struct CgroupScope {
    pub path: PathBuf,
    /// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's inode.
    pub id: u64,
    /// Held open so the programs attach to exactly the directory that was checked.
    pub dir: File,
}

impl CgroupScope {
    /// Opens `path`: absolute, or relative to the cgroup2 mount (`system.slice/redis.service`).
    pub fn open(path: &Path) -> Result<Self> {
        let mount = cgroup2_mount();
        let resolved = match (&mount, path.is_absolute()) {
            (_, true) => path.to_path_buf(),
            (Some(mount), false) => mount.join(path),
            (None, false) => path.to_path_buf(),
        };
        let accepted = match &mount {
            Some(mount) => format!("a directory on cgroup v2 (mounted at {})", mount.display()),
            None => "a directory on cgroup v2 (none is mounted on this host)".into(),
        };
        let metadata = std::fs::metadata(&resolved).map_err(|err| {
            ChaosError::input(
                "--cgroup",
                format!("{}: {err}", resolved.display()),
                accepted.clone(),
            )
        })?;
        if !metadata.is_dir() {
            return Err(ChaosError::input(
                "--cgroup",
                format!("{} is not a directory", resolved.display()),
                accepted,
            ));
        }
        let fs = nix::sys::statfs::statfs(&resolved)
            .map_err(|err| ChaosError::io(format!("statfs {}", resolved.display()), err.into()))?;
        if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
            return Err(ChaosError::input(
                "--cgroup",
                format!("{} is not on cgroup v2", resolved.display()),
                accepted,
            ));
        }
        let dir = File::open(&resolved)
            .map_err(|err| ChaosError::io(format!("open {}", resolved.display()), err))?;
        Ok(Self {
            id: metadata.ino(),
            path: resolved,
            dir,
        })
    }
}

/// The cgroup2 mount point, from /proc/self/mountinfo (unified or hybrid hierarchies alike).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> ... - <fstype> <source> ..."
        let (fields, tail) = line.split_once(" - ")?;
        let fstype = tail.split_whitespace().next()?;
        let mount_point = fields.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}
