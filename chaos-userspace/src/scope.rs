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

/// An open cgroup v2 directory, known by what it is rather than how it was spelled.
#[derive(Debug)]
pub struct CgroupScope {
    /// The canonical path (`.`, `..`, `//`, trailing slashes and symlinks resolved), the one every
    /// message, record and view shows.
    pub path: PathBuf,
    /// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's inode,
    /// read from the open descriptor. The guard rails compare these, never paths.
    pub id: u64,
    /// Depth below the hierarchy's root (level 0), for `bpf_get_current_ancestor_cgroup_id`.
    pub level: u32,
    /// Held open so the programs attach to exactly the directory that was checked.
    pub dir: File,
}

impl CgroupScope {
    /// Opens `path`: absolute, or relative to the cgroup2 mount (`system.slice/redis.service`).
    /// It is resolved once, canonically, and must stay below the mount: `../..` out of it is
    /// refused before anything reads the tree.
    pub fn open(path: &Path) -> Result<Self> {
        let Some(mount) = cgroup2_mount() else {
            return Err(ChaosError::input(
                "scope.cgroup",
                format!("{}: this host has no cgroup v2 mounted", path.display()),
                "a host with cgroup v2, unified or hybrid (cgroup2 mounted, as at \
                 /sys/fs/cgroup/unified)",
            ));
        };
        let canonical = mount.canonical(path)?;
        let accepted = || {
            format!(
                "a directory on cgroup v2 (mounted at {})",
                mount.point.display()
            )
        };
        let problem = |what: String| ChaosError::input("scope.cgroup", what, accepted());
        let fs = nix::sys::statfs::statfs(&canonical)
            .map_err(|err| problem(format!("{}: {err}", canonical.display())))?;
        if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
            return Err(problem(format!(
                "{} is not on cgroup v2",
                canonical.display()
            )));
        }
        let dir = File::open(&canonical)
            .map_err(|err| ChaosError::io(format!("open {}", canonical.display()), err))?;
        let metadata = dir
            .metadata()
            .map_err(|err| ChaosError::io(format!("stat {}", canonical.display()), err))?;
        if !metadata.is_dir() {
            return Err(problem(format!(
                "{} is not a directory",
                canonical.display()
            )));
        }
        let level = mount.level_of(&canonical).ok_or_else(|| {
            problem(format!(
                "{} is not below this host's cgroup2 mount",
                canonical.display()
            ))
        })?;
        Ok(Self {
            id: metadata.ino(),
            level,
            path: canonical,
            dir,
        })
    }
}

/// A cgroup's id (its directory's inode), for comparing identities.
pub fn cgroup_id(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// Where cgroup2 is mounted, and which directory of the hierarchy that mount shows (`/` on a
/// host, a sub-tree inside some containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub point: PathBuf,
    pub root: PathBuf,
}

impl Cgroup2Mount {
    /// `path` (absolute, or relative to the mount) resolved by the filesystem: `.`, `..`, `//`,
    /// trailing slashes and symlinks. Refused when the result is not the mount or below it.
    pub fn canonical(&self, path: &Path) -> Result<PathBuf> {
        let joined = self.point.join(path);
        let accepted = || {
            format!(
                "a directory on cgroup v2, below its mount {}",
                self.point.display()
            )
        };
        let canonical = joined.canonicalize().map_err(|err| {
            ChaosError::input(
                "scope.cgroup",
                format!("{}: {err}", joined.display()),
                accepted(),
            )
        })?;
        let mount = self
            .point
            .canonicalize()
            .unwrap_or_else(|_| self.point.clone());
        if !canonical.starts_with(&mount) {
            return Err(ChaosError::input(
                "scope.cgroup",
                format!(
                    "{} is not on cgroup v2 (outside the cgroup2 mount)",
                    canonical.display()
                ),
                accepted(),
            ));
        }
        // Shown below the mount as mountinfo spells it.
        Ok(match canonical.strip_prefix(&mount) {
            Ok(below) if below.as_os_str().is_empty() => self.point.clone(),
            Ok(below) => self.point.join(below),
            Err(_) => canonical,
        })
    }

    /// The kernel's level of a directory under this mount: the hierarchy root is 0.
    pub fn level_of(&self, dir: &Path) -> Option<u32> {
        let below_mount = dir.strip_prefix(&self.point).ok()?;
        let depth = |p: &Path| {
            p.components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .count()
        };
        u32::try_from(depth(&self.root) + depth(below_mount)).ok()
    }
}

/// The cgroup2 mount, from /proc/self/mountinfo (unified or hybrid hierarchies alike).
pub fn cgroup2_mount() -> Option<Cgroup2Mount> {
    // Read once per process: planning asks for every fault, and a node does not move its
    // cgroup2 mount under a running agent.
    static MOUNT: std::sync::OnceLock<Option<Cgroup2Mount>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            mountinfo.lines().find_map(parse_mountinfo_line)
        })
        .clone()
}

fn parse_mountinfo_line(line: &str) -> Option<Cgroup2Mount> {
    // "<id> <parent> <maj:min> <root> <mount point> <options> ... - <fstype> <source> ..."
    let (fields, tail) = line.split_once(" - ")?;
    if tail.split_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = fields.split_whitespace().skip(3);
    let root = PathBuf::from(fields.next()?);
    let point = PathBuf::from(fields.next()?);
    Some(Cgroup2Mount { point, root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_and_levels() {
        let host = "35 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw";
        let mount = parse_mountinfo_line(host).unwrap();
        assert_eq!(mount.point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mount.level_of(Path::new("/sys/fs/cgroup/unified")), Some(0));
        assert_eq!(
            mount.level_of(Path::new("/sys/fs/cgroup/unified/a/b")),
            Some(2)
        );
        assert_eq!(mount.level_of(Path::new("/tmp/a")), None);
        let container = "1 0 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        let mount = parse_mountinfo_line(container).unwrap();
        assert_eq!(mount.level_of(Path::new("/sys/fs/cgroup/app")), Some(3));
        assert!(
            parse_mountinfo_line("36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu")
                .is_none()
        );
    }
}
