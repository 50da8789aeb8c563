//! Guard rails, checked while nothing is attached: a fault never reaches chaos-bpf itself, PID 1,
//! the kubelet, the container runtime or `kube-system` unless its scope names them exactly, and
//! never a scope wider than half of the node (its cgroups) unless `force`.
//!
//! Every check judges the resolved cgroups themselves, by id (their directory's inode, which is
//! what the kernel compares too): never the text that named them, which `.`, `..`, `//` or a
//! symlink can spell in endless ways.
use std::path::Path;

use chaos_model::Fault;

use crate::{
    error::{ChaosError, Result},
    scope::{CgroupScope, cgroup_id},
};

/// The share of the node's cgroups a scope may cover without `force`.
pub const BLAST_RADIUS_LIMIT: f64 = 0.5;
/// Below this many cgroups a node has nothing to compare shares with (a bare VM, a test
/// machine); the named protections still apply.
const SHARES_FROM: usize = 16;

/// How a protected process may still be reached on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Naming {
    /// Never: chaos-bpf must keep its own calls to revert and report.
    Never,
    /// By its pid only (`scope.pid`), for PID 1.
    Pid,
    /// By its pid, or by a `scope.cgroup` that is exactly its own cgroup (a service's unit).
    PidOrOwnCgroup,
}

/// Processes no fault reaches unless named, by what they are and their comm names.
const PROTECTED: &[(&str, &[&str])] = &[
    ("the kubelet", &["kubelet"]),
    (
        "the container runtime",
        &["containerd", "crio", "dockerd", "cri-dockerd"],
    ),
];

/// What every fault of a batch is compared with, read once for the batch (and only once a
/// fault asks): the cgroup2 mount, the root cgroup's id, the cgroups PID 1 and chaos-bpf itself
/// live in, and the interfaces.
#[derive(Default)]
pub struct Guard {
    node: std::sync::OnceLock<Option<Node>>,
    /// This network namespace's interfaces, listed once for the batch when a fault names one
    /// (one rtnetlink dump per fault was a fifth of arming 10,000 TC rules).
    links: std::sync::OnceLock<std::result::Result<Vec<crate::net::netlink::Link>, String>>,
}

struct Node {
    mount: crate::scope::Cgroup2Mount,
    root_id: Option<u64>,
    /// PID 1 and chaos-bpf itself: what they are, their pid, how they may be named, their home.
    homes: Vec<(&'static str, u32, Naming, std::path::PathBuf)>,
}

impl Guard {
    /// The interfaces here, as the batch's first fault that needed them found them.
    pub fn links(&self) -> Result<&[crate::net::netlink::Link]> {
        self.links
            .get_or_init(|| crate::net::netlink::links().map_err(|err| err.to_string()))
            .as_deref()
            .map_err(|err| ChaosError::io("listing interfaces", std::io::Error::other(err.clone())))
    }

    fn node(&self) -> Option<&Node> {
        self.node
            .get_or_init(|| {
                let mount = crate::scope::cgroup2_mount()?;
                let homes = [
                    ("PID 1", 1, Naming::Pid),
                    ("chaos-bpf itself", std::process::id(), Naming::Never),
                ]
                .into_iter()
                .filter_map(|(what, pid, naming)| {
                    let home = crate::workload::process(&mount.point, pid).ok()?;
                    let home = mount.canonical(&home).ok()?;
                    Some((what, pid, naming, home))
                })
                .collect();
                Some(Node {
                    root_id: cgroup_id(&mount.point),
                    mount,
                    homes,
                })
            })
            .as_ref()
    }

    /// Refuses a fault whose cgroups reach a protected process or are too wide. What it reads is
    /// proportional to the scope, not to the node: the processes of the scope's own subtree, and
    /// the node's cgroups only as far as the share needs.
    pub fn check(
        &self,
        fault: &Fault,
        cgroups: &[CgroupScope],
        workloads: &[String],
    ) -> Result<()> {
        // Every rule below judges the scope's cgroups (an interface's TC fault has none; its
        // own guard is `check_uplinks`): nothing to read for a fault without them.
        if cgroups.is_empty() {
            return Ok(());
        }
        let Some(node) = self.node() else {
            return Ok(());
        };
        judge(fault, cgroups, workloads, node)
    }
}

/// [`Guard::check`] for one fault alone (a fault that follows its workloads to new cgroups).
pub fn check(fault: &Fault, cgroups: &[CgroupScope], workloads: &[String]) -> Result<()> {
    Guard::default().check(fault, cgroups, workloads)
}

fn judge(fault: &Fault, cgroups: &[CgroupScope], workloads: &[String], node: &Node) -> Result<()> {
    let (mount, root_id) = (&node.mount, node.root_id);
    let scope = &fault.scope;
    if let Some(root) = cgroups.iter().find(|c| Some(c.id) == root_id)
        && !fault.force
    {
        return Err(ChaosError::input(
            "scope.cgroup",
            format!(
                "{} (cgroup id {}) is the root cgroup: every process of the node",
                root.path.display(),
                root.id
            ),
            "a narrower cgroup, or force: true (--force) for the whole node",
        ));
    }
    let named = |pid: u32, home_id: Option<u64>, naming: Naming| match naming {
        Naming::Never => false,
        Naming::Pid => scope.pid == Some(pid),
        Naming::PidOrOwnCgroup => {
            scope.pid == Some(pid)
                || (scope.cgroup.is_some()
                    && home_id.is_some()
                    && cgroups.first().map(|c| c.id) == home_id
                    && home_id != root_id)
        }
    };
    // PID 1 and chaos-bpf itself: whether the scope is one of their cgroups or one of their
    // ancestors, by id.
    for (what, pid, naming, home) in &node.homes {
        if let Some(covering) = covering(&mount.point, home, cgroups)
            && !named(*pid, cgroup_id(home), *naming)
        {
            return Err(refusal(covering, what, *pid, home, *naming));
        }
    }
    // The kubelet and the runtime: among the processes of the scope's own subtree.
    let mut covered = 0;
    for cgroup in cgroups {
        let mut found = None;
        covered += walk(&cgroup.path, usize::MAX, &mut |dir| {
            if found.is_none() {
                found = protected_process_in(dir);
            }
        });
        if let Some((what, pid, home)) = found
            && !named(pid, cgroup_id(&home), Naming::PidOrOwnCgroup)
        {
            return Err(refusal(cgroup, &what, pid, &home, Naming::PidOrOwnCgroup));
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
        // The node's cgroups, counted only until the share is known to be at most half.
        let enough = (2 * covered).max(SHARES_FROM);
        let total = walk(&mount.point, enough, &mut |_| {});
        let share = covered as f64 / total.max(1) as f64;
        if total < enough && total >= SHARES_FROM && share > BLAST_RADIUS_LIMIT {
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

/// "<scope> (cgroup id N) holds <what> (pid P, in <its cgroup>), which a fault ...".
fn refusal(
    covering: &CgroupScope,
    what: &str,
    pid: u32,
    home: &Path,
    naming: Naming,
) -> ChaosError {
    let how = match naming {
        Naming::Never => "which a fault never reaches".to_string(),
        Naming::Pid => format!("which a fault reaches only as scope.pid {pid}"),
        Naming::PidOrOwnCgroup => format!(
            "which a fault reaches only when named exactly (scope.pid {pid}, or scope.cgroup {})",
            home.display()
        ),
    };
    ChaosError::input(
        "scope",
        format!(
            "{} (cgroup id {}) holds {what} (pid {pid}, in {}), {how}",
            covering.path.display(),
            covering.id,
            home.display()
        ),
        "a scope that leaves it out",
    )
}

/// The scope cgroup that is `home` (canonical) or one of its ancestors, compared by id from the
/// process's own cgroup up to the mount.
fn covering<'a>(mount: &Path, home: &Path, cgroups: &'a [CgroupScope]) -> Option<&'a CgroupScope> {
    home.ancestors()
        .take_while(|dir| dir.starts_with(mount))
        .filter_map(cgroup_id)
        .find_map(|id| cgroups.iter().find(|c| c.id == id))
}

/// A kubelet or container runtime process directly in `dir`: what it is, its pid, and `dir`.
fn protected_process_in(dir: &Path) -> Option<(String, u32, std::path::PathBuf)> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs.lines().find_map(|line| {
        let pid: u32 = line.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let (what, _) = PROTECTED
            .iter()
            .find(|(_, names)| names.contains(&comm.trim()))?;
        Some((format!("{what} ({})", comm.trim()), pid, dir.to_path_buf()))
    })
}

/// Visits `dir` and the cgroups below it, at most `limit` of them; how many it visited.
fn walk(dir: &Path, limit: usize, visit: &mut dyn FnMut(&Path)) -> usize {
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0;
    while seen < limit
        && let Some(next) = pending.pop()
    {
        seen += 1;
        visit(&next);
        pending.extend(
            std::fs::read_dir(&next)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    seen
}

/// Refuses, unless `force`, a TC fault that takes every packet of an interface carrying the
/// node's reachability (its default route, or the route to the API server): with no cgroup, no
/// destination and no port to narrow it, it cuts the kubelet off from the API server and the
/// agent off from its callers until its deadline.
pub fn check_uplinks(
    fault: &Fault,
    interfaces: &[crate::net::interface::InterfaceScope],
    cgroups: &[CgroupScope],
) -> Result<()> {
    let narrowed =
        !cgroups.is_empty() || !fault.matches.dst.is_empty() || !fault.matches.port.is_empty();
    if fault.force || narrowed || interfaces.is_empty() {
        return Ok(());
    }
    let uplinks = crate::net::reachability::uplinks();
    let Some((interface, uplink)) = interfaces.iter().find_map(|interface| {
        uplinks
            .iter()
            .find(|u| u.iface == interface.name)
            .map(|u| (interface, u))
    }) else {
        return Ok(());
    };
    Err(ChaosError::input(
        "scope.iface",
        format!(
            "{} carries {}, and a {} on all of its traffic cuts the node off (the kubelet from \
             the API server, the agent from its callers)",
            interface.name,
            uplink.carries,
            fault.kind.name()
        ),
        "match.dst or match.port to narrow it, or force: true (--force) for the whole interface",
    ))
}

/// A node-level fault (forced onto all of an uplink's traffic, no cgroup, destination or port to
/// narrow it) spares by default what keeps the node manageable: the API server's addresses, both
/// ways, and the agent's own port, both ways. The exclusions are written into the fault, so its
/// view shows them. To cut the API server off on purpose, name it: `match.dst` narrows the
/// fault and adds nothing. Any other fault comes back as it was.
pub fn spare_node_reachability(mut fault: Fault) -> Fault {
    let node_level = fault.force
        && !fault.kind.is_socket_call()
        && !fault.kind.is_kill()
        && !fault.scope.names_a_cgroup()
        && fault.matches.dst.is_empty()
        && fault.matches.port.is_empty();
    let Some(iface) = fault.scope.iface.as_deref().filter(|_| node_level) else {
        return fault;
    };
    if !crate::net::reachability::uplinks()
        .iter()
        .any(|u| u.iface == iface)
    {
        return fault;
    }
    let matches = &mut fault.matches;
    for address in crate::net::reachability::api_servers() {
        let host = chaos_model::Cidr {
            addr: address,
            prefix: if address.is_ipv4() { 32 } else { 128 },
        };
        for list in [&mut matches.exclude_dst, &mut matches.exclude_src] {
            if !list.contains(&host) {
                list.push(host);
            }
        }
    }
    if let Some(port) = crate::net::reachability::agent_port() {
        let port = chaos_model::PortRange {
            first: port,
            last: port,
        };
        for list in [&mut matches.exclude_port, &mut matches.exclude_sport] {
            if !list.contains(&port) {
                list.push(port);
            }
        }
    }
    fault
}
