//! Scopes by workload: a process, a container, a pod, resolved to their cgroup v2 directory
//! through the cgroup filesystem and `/proc`, the way a kubelet lays pods out. Both cgroup
//! drivers, all three QoS classes, and the container runtimes' directory names:
//!
//! - cgroupfs: `kubepods/pod<uid>/<id>`, `kubepods/{burstable,besteffort}/pod<uid>/<id>`;
//! - systemd: `kubepods.slice/kubepods-pod<uid_>.slice/<runtime>-<id>.scope` and
//!   `kubepods.slice/kubepods-{burstable,besteffort}.slice/kubepods-<qos>-pod<uid_>.slice/...`,
//!   with the pod uid's dashes as underscores;
//! - runtimes: containerd (`cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`, never its
//!   `crio-conmon-<id>.scope` monitor) and Docker (`docker-<id>.scope`); cgroupfs names the
//!   directory by the bare id.
//!
//! Static pods have uids without dashes (a hash); nothing here assumes a format.
use std::path::{Path, PathBuf};

/// Where kubelets put pods below the cgroup2 root, by driver.
const POD_PARENTS: &[&str] = &[
    "kubepods",
    "kubepods/burstable",
    "kubepods/besteffort",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepods.slice/kubepods-besteffort.slice",
];

/// A container id's directory name: the id itself, or the runtime's scope unit, and never CRI-O's
/// conmon (the monitor process beside the container).
fn container_id_of(name: &str) -> Option<&str> {
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix)?.strip_suffix(".scope"))
        .unwrap_or(name);
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A pod directory's uid: `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_>.slice`
/// (systemd, dashes as underscores), returned with dashes.
fn pod_uid_of(name: &str) -> Option<String> {
    if let Some(uid) = name.strip_prefix("pod") {
        return Some(uid.to_string());
    }
    let unit = name.strip_suffix(".slice")?;
    let uid = unit.rsplit_once("-pod")?.1;
    Some(uid.replace('_', "-"))
}

/// The pod directories under `root` (the cgroup2 mount), with their uids.
pub fn pods(root: &Path) -> Vec<(String, PathBuf)> {
    let mut pods = Vec::new();
    for parent in POD_PARENTS {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir()
                && let Some(uid) = pod_uid_of(&name)
            {
                pods.push((uid, entry.path()));
            }
        }
    }
    pods.sort();
    pods
}

/// The container directories of a pod, with their ids.
pub fn containers(pod: &Path) -> Vec<(String, PathBuf)> {
    let mut containers: Vec<(String, PathBuf)> = std::fs::read_dir(pod)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            Some((container_id_of(&name)?.to_string(), entry.path()))
        })
        .collect();
    containers.sort();
    containers
}

/// A process in the cgroup or below it (a pod's processes are in its containers' cgroups).
pub fn any_process(cgroup: &Path) -> Option<u32> {
    let own = std::fs::read_to_string(cgroup.join("cgroup.procs")).ok()?;
    if let Some(pid) = own.lines().find_map(|line| line.trim().parse().ok()) {
        return Some(pid);
    }
    std::fs::read_dir(cgroup)
        .ok()?
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .find_map(|entry| any_process(&entry.path()))
}

/// Why a workload could not be resolved: the problem, and what would be accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct NotFound {
    pub problem: String,
    pub accepted: String,
}

/// The pod directory of `uid` (with dashes or, as systemd writes it, underscores).
pub fn pod(root: &Path, uid: &str) -> Result<PathBuf, NotFound> {
    let wanted = uid.replace('_', "-");
    pods(root)
        .into_iter()
        .find(|(found, _)| *found == wanted)
        .map(|(_, path)| path)
        .ok_or_else(|| NotFound {
            problem: format!(
                "no pod with uid {uid} on this node (below {})",
                root.display()
            ),
            accepted:
                "the uid of a pod running here (kubectl get pod -o jsonpath='{.metadata.uid}')"
                    .into(),
        })
}

/// The container directory of a full id or a unique prefix of one, in any pod of the node.
pub fn container(root: &Path, id: &str) -> Result<PathBuf, NotFound> {
    let accepted = "a container id running here, full or a unique prefix (crictl ps)";
    if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NotFound {
            problem: format!("{id:?} is not a container id"),
            accepted: accepted.into(),
        });
    }
    let matching: Vec<(String, PathBuf)> = pods(root)
        .iter()
        .flat_map(|(_, pod)| containers(pod))
        .filter(|(found, _)| found.starts_with(id))
        .collect();
    match matching.as_slice() {
        [(_, path)] => Ok(path.clone()),
        [] => Err(NotFound {
            problem: format!("no container {id} on this node"),
            accepted: accepted.into(),
        }),
        several => Err(NotFound {
            problem: format!(
                "{id} is a prefix of {} containers ({})",
                several.len(),
                several
                    .iter()
                    .map(|(found, _)| &found[..found.len().min(12)])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            accepted: accepted.into(),
        }),
    }
}

/// The cgroup v2 directory of a process, from `/proc/PID/cgroup`'s unified line (`0::/path`).
pub fn process(root: &Path, pid: u32) -> Result<PathBuf, NotFound> {
    let accepted = "the pid of a running process (in this host's pid namespace)";
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|err| NotFound {
        problem: format!("process {pid}: {err}"),
        accepted: accepted.into(),
    })?;
    let relative = unified_path(&table).ok_or_else(|| NotFound {
        problem: format!("process {pid} is in no cgroup v2 (this host has no unified hierarchy)"),
        accepted: "a host with cgroup v2, unified or hybrid (cgroup2 mounted, as at /sys/fs/cgroup/unified)"
            .into(),
    })?;
    let direct = root.join(relative.trim_start_matches('/'));
    if !relative.contains("/..") && lists(&direct, pid) {
        return Ok(direct);
    }
    // In a cgroup namespace of its own (an unprivileged pod's, such as the agent's DaemonSet),
    // /proc shows paths relative to it (`/../../kubepods/...`, or `/` for itself) while the host
    // tree is mounted: the process is found in the tree instead.
    find_process(root, pid).ok_or_else(|| NotFound {
        problem: format!("process {pid} is in no cgroup below {}", root.display()),
        accepted: accepted.into(),
    })
}

/// Whether `pid` is a member of exactly this cgroup.
fn lists(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|line| line.trim().parse() == Ok(pid)))
}

fn find_process(dir: &Path, pid: u32) -> Option<PathBuf> {
    if lists(dir, pid) {
        return Some(dir.to_path_buf());
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|entry| find_process(&entry.path(), pid))
}

/// The cgroup v2 path in a `/proc/PID/cgroup` table: its `0::` line.
fn unified_path(table: &str) -> Option<&str> {
    table.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_UID: &str = "6f0a9c8e-1b2d-4c3e-8f4a-5b6c7d8e9f01";
    const STATIC_UID: &str = "3c5d1f7e2b9a4c6d8e0f1a2b3c4d5e6f";
    const ID_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID_B: &str = "0123fedcba9876543210fedcba9876543210fedcba9876543210fedcba987654";

    /// A tree of real kubelet paths below a temporary root.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(tag: &str, paths: &[String]) -> Self {
            let root =
                std::env::temp_dir().join(format!("chaos-workload-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for path in paths {
                std::fs::create_dir_all(root.join(path)).unwrap();
            }
            Self(root)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cgroupfs_driver_every_qos_class_and_static_pods() {
        let fixture = Fixture::new(
            "cgroupfs",
            &[
                format!("kubepods/pod{POD_UID}/{ID_A}"),
                format!("kubepods/burstable/pod{STATIC_UID}/{ID_B}"),
                "kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/aaaabbbbccccdddd"
                    .into(),
            ],
        );
        let root = &fixture.0;
        assert_eq!(
            pod(root, POD_UID).unwrap(),
            root.join(format!("kubepods/pod{POD_UID}"))
        );
        assert_eq!(
            pod(root, STATIC_UID).unwrap(),
            root.join(format!("kubepods/burstable/pod{STATIC_UID}"))
        );
        assert!(
            pod(root, "11111111-2222-3333-4444-555555555555")
                .unwrap()
                .ends_with("kubepods/besteffort/pod11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(
            container(root, ID_A).unwrap(),
            root.join(format!("kubepods/pod{POD_UID}/{ID_A}"))
        );
        assert_eq!(pods(root).len(), 3);
    }

    #[test]
    fn systemd_driver_with_every_runtime_and_conmon_skipped() {
        let uid_ = POD_UID.replace('-', "_");
        let fixture = Fixture::new("systemd", &[
            format!("kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID_A}.scope"),
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/crio-{ID_B}.scope"
            ),
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/crio-conmon-{ID_B}.scope"
            ),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podaaaa_bbbb.slice/docker-ffffeeeeddddcccc.scope".into(),
        ]);
        let root = &fixture.0;
        let guaranteed = pod(root, POD_UID).unwrap();
        assert!(
            guaranteed.ends_with(format!("kubepods-pod{uid_}.slice")),
            "{guaranteed:?}"
        );
        assert_eq!(
            pod(root, &uid_).unwrap(),
            guaranteed,
            "underscores as systemd writes them"
        );
        let crio = container(root, &ID_B[..12]).unwrap();
        assert!(
            crio.ends_with(format!("crio-{ID_B}.scope")),
            "not conmon: {crio:?}"
        );
        assert_eq!(
            containers(crio.parent().unwrap()).len(),
            1,
            "conmon is no container"
        );
        assert!(
            container(root, "ffffeeee")
                .unwrap()
                .ends_with("docker-ffffeeeeddddcccc.scope")
        );
        assert!(pod(root, "aaaa-bbbb").is_ok());
    }

    #[test]
    fn prefixes_must_be_unique_and_look_like_ids() {
        let fixture = Fixture::new(
            "prefix",
            &[
                format!("kubepods/pod{POD_UID}/{ID_A}"),
                format!("kubepods/pod{POD_UID}/{ID_B}"),
            ],
        );
        let root = &fixture.0;
        let ambiguous = container(root, "0123").unwrap_err();
        assert!(
            ambiguous.problem.contains("prefix of 2 containers"),
            "{ambiguous:?}"
        );
        assert!(container(root, "01234567").is_ok());
        assert!(
            container(root, "redis")
                .unwrap_err()
                .problem
                .contains("not a container id")
        );
        assert!(
            container(root, "beef")
                .unwrap_err()
                .problem
                .contains("no container beef")
        );
        assert!(
            pod(root, "nope")
                .unwrap_err()
                .accepted
                .contains("metadata.uid")
        );
    }

    #[test]
    fn process_cgroups_come_from_the_unified_line() {
        let hybrid = "12:memory:/kubepods/besteffort/podx/abc\n1:name=systemd:/init.scope\n0::/kubepods/besteffort/podx/abc\n";
        assert_eq!(unified_path(hybrid), Some("/kubepods/besteffort/podx/abc"));
        assert_eq!(
            unified_path("12:memory:/x\n1:cpu:/x\n"),
            None,
            "a v1-only host"
        );
        let me = process(Path::new("/sys/fs/cgroup/unified"), std::process::id());
        assert!(me.is_ok() || me.unwrap_err().problem.contains("no cgroup v2"));
        assert!(
            process(Path::new("/"), u32::MAX)
                .unwrap_err()
                .problem
                .contains("process")
        );
    }
}
