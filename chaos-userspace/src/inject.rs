//! Planning a fault: validate it, resolve its scopes and choose the mechanism this kernel has,
//! before anything is attached. The engine arms what is planned here.

use std::path::PathBuf;

use chaos_model::{Fault, workloads::PodInfo};

use crate::{
    error::{ChaosError, Result},
    faults::FaultSpec,
    kernel::mechanism::Mechanism,
    kernel::probe::{probe, probe_with_prerequisites},
    net::interface::InterfaceScope,
    scope::CgroupScope,
};

/// The mechanism a fault will use, and why better ones were passed over.
#[derive(Debug)]
pub struct MechanismChoice {
    pub chosen: Mechanism,
    pub passed_over: Vec<(Mechanism, String)>,
    pub forced: bool,
}

impl MechanismChoice {
    /// The run's first line: which mechanism, and why not a better one.
    pub fn explain(&self, fault: &str) -> String {
        let mut line = format!("chaos-bpf: {fault} via {}", self.chosen.id());
        if self.forced {
            line.push_str(" (forced by --mechanism)");
        } else if self.passed_over.is_empty() {
            line.push_str(" (the preferred mechanism)");
        } else {
            let reasons: Vec<String> = self
                .passed_over
                .iter()
                .map(|(m, why)| format!("{}: {why}", m.id()))
                .collect();
            line.push_str(&format!(
                " (better ones unavailable: {})",
                reasons.join("; ")
            ));
        }
        line
    }
}

/// Where a fault acts, resolved and checked.
pub struct Scopes {
    /// The cgroups it acts in: one, or one per pod or container a workload scope names.
    pub cgroups: Vec<CgroupScope>,
    /// The pods or containers those are (`namespace/pod[/container]`), when named.
    pub workloads: Vec<String>,
    /// TC faults: the interface given (`--iface`, `--netns`), or every interface that is up when
    /// only `--cgroup` is.
    pub interfaces: Vec<InterfaceScope>,
}

/// Checks that change nothing, in the order a user would fix them. Nothing is attached when any
/// of them fails. Resolves `--netns` to the pod's host-side veth and swaps the hooks to match.
pub fn preflight(
    spec: &mut FaultSpec,
    cgroups: Vec<CgroupScope>,
    iface: Option<&str>,
    netns: &[PathBuf],
    guard: &crate::guard::Guard,
) -> Result<(Scopes, MechanismChoice)> {
    let filters = spec.filters();
    if filters.peers.len() > chaos_common::MAX_CIDRS as usize {
        return Err(ChaosError::input(
            "match.dst",
            format!("{} CIDRs given", filters.peers.len()),
            format!("at most {} CIDRs", chaos_common::MAX_CIDRS),
        ));
    }
    if matches!(spec, FaultSpec::Packet(..)) && cgroups.len() > 1 {
        return Err(ChaosError::input(
            "scope",
            format!(
                "names {} cgroups, and a TC fault checks one cgroup per packet",
                cgroups.len()
            ),
            "a scope naming one pod or container for TC faults (drop also works through \
             cgroup-skb on any number)",
        ));
    }
    let cgroup = cgroups.first();
    if !nix::unistd::geteuid().is_root() {
        return Err(ChaosError::NotRoot);
    }
    let interfaces = match (iface, netns) {
        (Some(name), _) => vec![InterfaceScope::by_name(name, guard.links()?)?],
        (None, []) if matches!(spec, FaultSpec::Packet(..)) => {
            cgroup_packets_leave_by(spec, guard.links()?)?
        }
        (None, []) => Vec::new(),
        (None, paths) => paths
            .iter()
            .map(|path| InterfaceScope::host_side_of(path))
            .collect::<Result<_>>()?,
    };
    if let (FaultSpec::Packet(fault, hooks), Some(interface)) = (&mut *spec, interfaces.first()) {
        *hooks = interface.hooks(fault.direction);
        if cgroup.is_some() && hooks.ingress && !interface.veth {
            return Err(ChaosError::input(
                "direction",
                format!(
                    "packets arriving on {} have no socket yet at TC ingress, so --cgroup cannot \
                     select them",
                    interface.name
                ),
                "egress with --cgroup, or a veth (a pod's host-side end keeps the pod's socket)",
            ));
        }
        if let Some(why) = fault.action.egress_only().filter(|_| hooks.ingress) {
            // A DNS fault has no direction to choose: its queries leave a pod through the
            // veth's ingress.
            return Err(if fault.dns.is_some() {
                ChaosError::input(
                    "scope",
                    format!("{why}, and a pod's queries leave it through its veth's ingress"),
                    "dns-delay on a cgroup, a container or pod on the host's network, or --iface",
                )
            } else {
                ChaosError::input(
                    "direction",
                    why,
                    if interface.pod_netns.is_some() {
                        "ingress (the pod's ingress is its host-side veth's egress)"
                    } else {
                        "egress"
                    },
                )
            });
        }
    }
    if let Err(missing) = ensure_supported(Mechanism::Ringbuf) {
        return Err(ChaosError::Unsupported {
            fault: spec.name(),
            mechanism: Mechanism::Ringbuf.name(),
            reason: missing,
        });
    }
    for extra in crate::faults::extra_requirements(spec.kind()) {
        if let Err(missing) = ensure_supported(*extra) {
            return Err(ChaosError::Unsupported {
                fault: spec.name(),
                mechanism: extra.name(),
                reason: missing,
            });
        }
    }
    let choice = choose_mechanism(spec)?;
    let scopes = Scopes {
        cgroups,
        workloads: Vec::new(),
        interfaces,
    };
    Ok((scopes, choice))
}

/// A TC fault scoped by cgroup alone acts where the cgroup's packets leave: every interface that
/// is up here, egress only (at TC ingress a packet has no socket yet, so no cgroup).
fn cgroup_packets_leave_by(
    spec: &FaultSpec,
    links: &[crate::net::netlink::Link],
) -> Result<Vec<InterfaceScope>> {
    if let FaultSpec::Packet(fault, _) = spec
        && fault.direction != crate::filters::Direction::Egress
    {
        return Err(ChaosError::input(
            "direction",
            "a cgroup's own packets are only known as they leave: at TC ingress they have no \
             socket yet",
            "egress with --cgroup alone, or --iface/--netns for ingress",
        ));
    }
    let interfaces = InterfaceScope::every_up(links);
    if interfaces.is_empty() {
        return Err(ChaosError::input(
            "scope.cgroup",
            "no interface is up in this network namespace",
            "a namespace whose interfaces carry the cgroup's traffic",
        ));
    }
    Ok(interfaces)
}

fn ensure_supported(mechanism: Mechanism) -> Result<(), String> {
    let probe = probe(mechanism);
    if probe.supported {
        Ok(())
    } else {
        Err(format!(
            "{} (needs {})",
            probe.detail,
            mechanism.enable_hint()
        ))
    }
}

/// The first candidate this kernel supports and chaos-bpf has programs for.
pub fn choose_mechanism(spec: &FaultSpec) -> Result<MechanismChoice> {
    let mut passed_over = Vec::new();
    for mechanism in spec.candidate_mechanisms() {
        let probe = probe_with_prerequisites(mechanism);
        if !probe.supported {
            passed_over.push((
                mechanism,
                format!("{} (needs {})", probe.detail, mechanism.enable_hint()),
            ));
        } else if spec.programs(mechanism).is_none() {
            passed_over.push((
                mechanism,
                "the kernel has it, but chaos-bpf has no programs for it yet".into(),
            ));
        } else {
            return Ok(MechanismChoice {
                chosen: mechanism,
                passed_over,
                forced: spec.mechanism_forced(),
            });
        }
    }
    let names: Vec<&str> = passed_over.iter().map(|(m, _)| m.id()).collect();
    let reasons: Vec<String> = passed_over
        .iter()
        .map(|(m, why)| format!("{}: {why}", m.id()))
        .collect();
    Err(ChaosError::Unsupported {
        fault: spec.name(),
        mechanism: if names.len() == 1 {
            passed_over[0].0.name()
        } else {
            "one of its mechanisms"
        },
        reason: format!("{} [{}]", reasons.join("; "), names.join(", ")),
    })
}

/// A fault checked and resolved: its scopes exist and its mechanism works here. Nothing is
/// attached yet.
pub struct Plan {
    /// The fault as it was asked for.
    pub fault: Fault,
    pub realisation: Realisation,
    /// The fault's own deadline.
    pub duration: Option<std::time::Duration>,
    /// Events each CPU may emit per second for this fault; 0 for none.
    pub events_per_sec: u32,
}

/// What makes a planned fault real: a rule in a kernel object, or rounds chaos-bpf runs itself.
/// Every front end arms both the same way, through the engine.
// Rules are the common case, and a plan lives only from planning to arming: no box.
#[allow(clippy::large_enum_variant)]
pub enum Realisation {
    Rule {
        spec: FaultSpec,
        scopes: Scopes,
        choice: MechanismChoice,
    },
    /// SIGKILL rounds (`cgroup.kill`), no kernel rule.
    Kill(crate::faults::kill::KillFault),
    /// The scope's cgroup knobs (cpu-pressure, memory-pressure), no kernel rule.
    Pressure(crate::faults::pressure::PressureFault),
}

impl Plan {
    /// The run's first line: how the fault is realised, and why not a better way.
    pub fn explain(&self) -> String {
        match &self.realisation {
            Realisation::Rule { spec, choice, .. } => choice.explain(spec.name()),
            Realisation::Pressure(pressure) => {
                format!(
                    "chaos-bpf: {} via the cgroups' own knobs",
                    pressure.describe()
                )
            }
            Realisation::Kill(kill) => format!(
                "chaos-bpf: {} via cgroup.kill (a SIGKILL per process where the kernel lacks it)",
                kill.describe()
            ),
        }
    }

    /// A TC rule's fault (the rules armed together share one object and its maps).
    pub fn tc_fault(&self) -> Option<&crate::faults::tc_packet::PacketFault> {
        match &self.realisation {
            Realisation::Rule {
                spec: FaultSpec::Packet(fault, _),
                choice,
                ..
            } if choice.chosen.is_tc() => Some(fault),
            _ => None,
        }
    }
}

/// The workloads a batch is planned against, read once for all of it.
#[derive(Clone, Copy, Default)]
pub struct Names<'a> {
    /// The node's pods by name (from CRI or the Kubernetes API), which scopes by pod name,
    /// selector or container name need.
    pub pods: Option<&'a [PodInfo]>,
    /// The pods peer selectors choose among (the cluster's, on Kubernetes).
    pub peers: Option<&'a [PodInfo]>,
}

/// Validates one fault of the model, checks it against the kernel and resolves its scopes and
/// peers; `guard` holds what the guard rails compare with, read once per batch. Nothing is
/// attached.
pub fn plan(fault: Fault, names: Names, guard: &crate::guard::Guard) -> Result<Plan> {
    let pods = names.pods;
    if fault.kind.is_pressure() {
        let pressure = crate::faults::pressure::PressureFault::plan(&fault, pods, guard)?;
        return Ok(Plan {
            duration: fault.duration.map(|d| d.0),
            realisation: Realisation::Pressure(pressure),
            fault,
            events_per_sec: 0,
        });
    }
    if fault.kind.is_kill() {
        let kill = crate::faults::kill::KillFault::plan(&fault, pods, guard)?;
        return Ok(Plan {
            duration: fault.duration.map(|d| d.0),
            realisation: Realisation::Kill(kill),
            fault,
            events_per_sec: 0,
        });
    }
    // The plan keeps the fault as it will be armed: with what a node-level fault spares.
    let armed_as = crate::guard::spare_node_reachability(fault);
    let fault = &armed_as;
    let mut spec = FaultSpec::from_model(fault)?;
    if !fault.matches.peer_selector.is_empty() {
        let pods = names.peers.ok_or_else(|| {
            ChaosError::input(
                "match.peerSelector",
                "peers by label need the names of pods, and no source of them is known",
                "--cri-socket (or a container runtime's default socket), or the agent on \
                 Kubernetes",
            )
        })?;
        let addresses = chaos_model::workloads::peer_addresses(&fault.matches, pods);
        spec.set_peers(fault.matches.selected_peers(&addresses));
    }
    let scope = &fault.scope;
    let (mut cgroups, workloads) = crate::workload::resolve::cgroups_of(scope, pods)?;
    guard.check(fault, &cgroups, &workloads)?;
    let mut netns: Vec<PathBuf> = scope.netns.iter().map(PathBuf::from).collect();
    let by_workload = scope.cgroup.is_none() && !cgroups.is_empty();
    if matches!(spec, FaultSpec::Packet(..))
        && by_workload
        && scope.iface.is_none()
        && netns.is_empty()
    {
        netns = pod_network(fault, &cgroups)?;
        // A whole pod's packets are the ones on its veth; a container's are told apart by its
        // cgroup (egress, where the socket is known).
        if !netns.is_empty()
            && scope.container.is_none()
            && scope.container_name.is_none()
            && scope.pid.is_none()
        {
            cgroups.clear();
        }
    }
    let (mut scopes, choice) =
        preflight(&mut spec, cgroups, scope.iface.as_deref(), &netns, guard)?;
    if matches!(spec, FaultSpec::Packet(..)) {
        crate::guard::check_uplinks(fault, &scopes.interfaces, &scopes.cgroups)?;
    }
    scopes.workloads = workloads;
    // A dry run reports what it would hit even where events were not asked for: its per-target
    // counts come from them.
    let events_per_sec = fault.events.map_or(
        if fault.dry_run {
            chaos_model::Events::DEFAULT_PER_CPU_PER_SEC
        } else {
            0
        },
        |e| e.per_cpu_per_sec,
    );
    let duration = fault.duration.map(|d| d.0);
    Ok(Plan {
        fault: armed_as,
        realisation: Realisation::Rule {
            spec,
            scopes,
            choice,
        },
        duration,
        events_per_sec,
    })
}

/// The network namespaces of the workloads in `cgroups`, found through any of their processes,
/// for TC faults: their host-side veths carry their packets. Empty when they use the host's
/// network (a hostNetwork pod, a host process): they have no veth, and the cgroup alone scopes
/// their packets as they leave, egress only.
fn pod_network(fault: &Fault, cgroups: &[CgroupScope]) -> Result<Vec<PathBuf>> {
    let host = netns_inode(std::path::Path::new("/proc/self/ns/net"));
    let mut namespaces: Vec<PathBuf> = Vec::new();
    for cgroup in cgroups.iter().map(|c| &c.path) {
        let pid = crate::workload::cgroups::any_process(cgroup).ok_or_else(|| {
            ChaosError::input(
                "scope",
                format!(
                    "no process runs in {}, so its network namespace is unknown",
                    cgroup.display()
                ),
                "a running pod or container for TC faults",
            )
        })?;
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if netns_inode(&path) == host {
            if fault
                .direction
                .is_some_and(|d| d != chaos_model::Direction::Egress)
            {
                return Err(ChaosError::input(
                    "direction",
                    format!(
                        "{} uses the node's network (hostNetwork): it has no veth of its own, and \
                         packets arriving at TC have no socket yet to tell its cgroup by",
                        cgroup.display()
                    ),
                    "egress for a hostNetwork pod (its packets leaving the node's interfaces), \
                     or a cgroup-scoped fault (drop, connect-error, recv-error, send-error)",
                ));
            }
            return Ok(Vec::new());
        }
        if !namespaces
            .iter()
            .any(|known| netns_inode(known) == netns_inode(&path))
        {
            namespaces.push(path);
        }
    }
    Ok(namespaces)
}

fn netns_inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_says_why_better_mechanisms_were_passed_over() {
        let choice = |passed_over: Vec<(Mechanism, String)>, forced| MechanismChoice {
            chosen: Mechanism::BpfLsm,
            passed_over,
            forced,
        };
        assert_eq!(
            choice(vec![], false).explain("recv-error"),
            "chaos-bpf: recv-error via bpf-lsm (the preferred mechanism)"
        );
        assert_eq!(
            choice(vec![], true).explain("recv-error"),
            "chaos-bpf: recv-error via bpf-lsm (forced by --mechanism)"
        );
        assert_eq!(
            choice(
                vec![(Mechanism::FmodRet, "loading: EPERM (needs BTF)".into())],
                false
            )
            .explain("send-error"),
            "chaos-bpf: send-error via bpf-lsm (better ones unavailable: fmod-ret: loading: EPERM \
             (needs BTF))"
        );
    }
}
