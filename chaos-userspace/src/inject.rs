//! `chaos-bpf inject`: validate everything, choose the mechanism, arm, run, report.
use crate::{
    error::{ChaosError, Result},
    faults::FaultSpec,
    instance::ActiveFault,
    interface::InterfaceScope,
    mechanism::{Mechanism, probe, probe_with_prerequisites},
    runner::{self, RunOptions},
    scope::CgroupScope,
    telemetry::Summary,
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
    pub cgroup: Option<CgroupScope>,
    pub interface: Option<InterfaceScope>,
}

/// Checks that change nothing, in the order a user would fix them. Nothing is attached when any
/// of them fails. Resolves `--netns` to the pod's host-side veth and swaps the hooks to match.
pub fn preflight(
    spec: &mut FaultSpec,
    cgroup: Option<&std::path::Path>,
    iface: Option<&str>,
    netns: Option<&std::path::Path>,
) -> Result<(Scopes, MechanismChoice)> {
    let filters = spec.filters();
    if filters.peers.len() > chaos_common::MAX_CIDRS as usize {
        return Err(ChaosError::input(
            "--dst",
            format!("{} CIDRs given", filters.peers.len()),
            format!("at most {} CIDRs", chaos_common::MAX_CIDRS),
        ));
    }
    let cgroup = cgroup.map(CgroupScope::open).transpose()?;
    let interface = match (iface, netns) {
        (Some(name), _) => Some(InterfaceScope::by_name(name)?),
        (None, Some(path)) => {
            if !nix::unistd::geteuid().is_root() {
                return Err(ChaosError::NotRoot);
            }
            Some(InterfaceScope::host_side_of(path)?)
        }
        (None, None) => None,
    };
    if let (FaultSpec::Packet(fault, hooks), Some(interface)) = (&mut *spec, &interface) {
        *hooks = interface.hooks(fault.direction);
        if matches!(
            fault.action,
            crate::faults::tc_packet::PacketAction::Delay { .. }
        ) && hooks.ingress
        {
            return Err(ChaosError::input(
                "--direction",
                "delay can only hold packets back as they leave an interface",
                if interface.pod_netns.is_some() {
                    "ingress (the pod's ingress is its host-side veth's egress)"
                } else {
                    "egress"
                },
            ));
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ChaosError::NotRoot);
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
    Ok((Scopes { cgroup, interface }, choice))
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

pub async fn inject(
    spec: FaultSpec,
    scopes: Scopes,
    choice: MechanismChoice,
    events_per_sec: u32,
    options: RunOptions,
) -> Result<Summary> {
    eprintln!("{}", choice.explain(spec.name()));
    let description = spec.describe();
    let signals = runner::StopSignals::install()?;
    let fault = ActiveFault::arm(
        1,
        spec,
        choice.chosen,
        scopes.cgroup,
        scopes.interface,
        events_per_sec,
    )?;
    let programs: Vec<String> = fault
        .programs
        .iter()
        .map(|(name, id)| format!("{name} (prog id {id})"))
        .collect();
    let mut scope = Vec::new();
    if let Some(interface) = &fault.interface {
        match &interface.pod_netns {
            Some(netns) => scope.push(format!("{}'s host-side veth {}", netns, interface.name)),
            None => scope.push(format!("interface {}", interface.name)),
        }
    }
    if let Some(cgroup) = &fault.cgroup {
        scope.push(format!(
            "cgroup {} (id {})",
            cgroup.path.display(),
            cgroup.id
        ));
    }
    eprintln!(
        "chaos-bpf: armed {description} on {} via {}{}",
        scope.join(", "),
        programs.join(", "),
        options
            .duration
            .map(|d| format!(" for {}", humantime::format_duration(d)))
            .unwrap_or_default(),
    );
    runner::run(fault, options, signals).await
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
