//! io-error: a cgroup's opens, reads and writes of files under some paths fail with an errno,
//! through fmod_ret on `security_file_open` / `security_file_permission` (BTF and trampolines)
//! or the BPF LSM hooks of the same names (`bpf` in the active LSMs). Neither mechanism exists
//! on a kernel without trampolines or BPF LSM, and chaos-bpf refuses the fault there.
//!
//! Paths are given as the scope's processes see them (inside a container, its own root), and
//! armed as the (device, inode) of each directory or file, resolved through
//! `/proc/PID/root` of a process of each scoped cgroup: the kernel walks a file's directories
//! up to the path without reading a string.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use chaos_common::flags;
use chaos_model::FileOp;

use crate::{
    errno::Errno,
    error::{ChaosError, Result},
    filters::Filters,
    kernel::mechanism::Mechanism,
    kernel::programs::{self, ProgramSpec},
    scope::CgroupScope,
};

#[derive(Clone, Debug, PartialEq)]
pub struct FileIoError {
    pub errno: Errno,
    pub paths: Vec<String>,
    /// `flags::FILE_*` bits.
    pub ops: u32,
    pub filters: Filters,
    /// Forced by `--mechanism`; `None` lets chaos-bpf choose.
    pub mechanism: Option<Mechanism>,
    /// The paths as (kernel device, inode), once resolved in the scope's filesystems.
    pub inodes: Vec<[u64; 2]>,
}

impl FileIoError {
    pub const MECHANISMS: &'static [Mechanism] = &[Mechanism::FmodRet, Mechanism::BpfLsm];

    pub fn op_flags(ops: &[FileOp]) -> u32 {
        let ops = if ops.is_empty() {
            &[FileOp::Open, FileOp::Read, FileOp::Write][..]
        } else {
            ops
        };
        ops.iter().fold(0, |bits, op| {
            bits | match op {
                FileOp::Open => flags::FILE_OPEN,
                FileOp::Read => flags::FILE_READ,
                FileOp::Write => flags::FILE_WRITE,
            }
        })
    }

    pub fn programs(mechanism: Mechanism) -> Option<&'static [&'static ProgramSpec]> {
        Some(match mechanism {
            Mechanism::FmodRet => &[
                &programs::FMOD_RET_FILE_OPEN,
                &programs::FMOD_RET_FILE_ACCESS,
            ],
            Mechanism::BpfLsm => &[&programs::LSM_FILE_OPEN, &programs::LSM_FILE_ACCESS],
            _ => return None,
        })
    }

    /// Finds each path in the filesystem of each scoped cgroup: through the root of a process
    /// in it (a container's own), or the host's where the cgroup has none yet. A path found in
    /// none of them is an error; one found in some is armed where it exists.
    pub fn resolve(&mut self, cgroups: &[CgroupScope]) -> Result<()> {
        let roots: Vec<PathBuf> = cgroups.iter().map(|c| root_of(&c.path)).collect();
        let mut inodes = Vec::new();
        for (index, path) in self.paths.iter().enumerate() {
            let mut found = false;
            for root in &roots {
                let within = root.join(path.trim_start_matches('/'));
                if let Ok(meta) = std::fs::metadata(&within) {
                    found = true;
                    let key = [kernel_dev(meta.dev()), meta.ino()];
                    if !inodes.contains(&key) {
                        inodes.push(key);
                    }
                }
            }
            if !found {
                return Err(ChaosError::input(
                    &format!("paths[{index}]"),
                    format!("{path} does not exist for the scope's processes"),
                    "a directory or file that exists in the scope's filesystem",
                ));
            }
        }
        if inodes.len() > chaos_common::MAX_FILE_PATHS as usize {
            return Err(ChaosError::input(
                "paths",
                format!("{} directories over the scope's filesystems", inodes.len()),
                format!("at most {}", chaos_common::MAX_FILE_PATHS),
            ));
        }
        self.inodes = inodes;
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut ops = Vec::new();
        for (bit, name) in [
            (flags::FILE_OPEN, "open"),
            (flags::FILE_READ, "read"),
            (flags::FILE_WRITE, "write"),
        ] {
            if self.ops & bit != 0 {
                ops.push(name);
            }
        }
        format!(
            "{} under {} fail with errno {}",
            ops.join(","),
            self.paths.join(","),
            self.errno
        )
    }
}

/// The root a cgroup's processes see: `/proc/PID/root` of its first process, else the host's.
fn root_of(cgroup: &Path) -> PathBuf {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .ok()
        .and_then(|procs| procs.lines().next().map(str::to_string))
        .map(|pid| PathBuf::from(format!("/proc/{pid}/root")))
        .filter(|root| root.exists())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `stat`'s device number as the kernel keeps it in a superblock (`MKDEV`: major << 20 |
/// minor), which the programs read.
fn kernel_dev(dev: u64) -> u64 {
    let major = libc::major(dev) as u64;
    let minor = libc::minor(dev) as u64;
    (major << 20) | minor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_default_to_all_three_and_devices_take_the_kernel_encoding() {
        assert_eq!(
            FileIoError::op_flags(&[]),
            flags::FILE_OPEN | flags::FILE_READ | flags::FILE_WRITE
        );
        assert_eq!(FileIoError::op_flags(&[FileOp::Write]), flags::FILE_WRITE);
        // 8:1 (sda1) and 259:3 (nvme0n1p3) as userspace and the kernel write them.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 3)), (259 << 20) | 3);
        assert!(FileIoError::programs(Mechanism::CgroupSockAddr).is_none());
    }

    #[test]
    fn paths_resolve_on_the_host_for_a_cgroup_without_processes() {
        let dir = std::env::temp_dir();
        let mut fault = FileIoError {
            errno: Errno(5),
            paths: vec![dir.to_string_lossy().into_owned()],
            ops: flags::FILE_WRITE,
            filters: Filters::everything(),
            mechanism: None,
            inodes: vec![],
        };
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(root_of(Path::new("/nonexistent")), PathBuf::from("/"));
        fault.resolve(&[]).expect_err("no cgroup: nowhere to look");
        fault.paths = vec!["/nonexistent/chaos".into()];
        assert!(fault.resolve(&[]).is_err());
        assert_eq!(kernel_dev(meta.dev()) >> 20, libc::major(meta.dev()) as u64);
    }
}
