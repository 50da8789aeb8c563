//! `chaos-bpf inject`: validate everything, choose the mechanism, arm, run, report.
use crate::{
    error::{ChaosError, Result},
    faults::FaultSpec,
    instance::ActiveFault,
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

/// Checks that change nothing, in the order a user would fix them. Nothing is attached when any
/// of them fails.
pub fn preflight(
    spec: &FaultSpec,
    cgroup: &std::path::Path,
) -> Result<(CgroupScope, MechanismChoice)> {
    let filters = spec.filters();
    if filters.peers.len() > chaos_common::MAX_CIDRS as usize {
        return Err(ChaosError::input(
            "--dst",
            format!("{} CIDRs given", filters.peers.len()),
            format!("at most {} CIDRs", chaos_common::MAX_CIDRS),
        ));
    }
    let scope = CgroupScope::open(cgroup)?;
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
    let choice = choose_mechanism(spec)?;
    Ok((scope, choice))
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
    scope: CgroupScope,
    choice: MechanismChoice,
    events_per_sec: u32,
    options: RunOptions,
) -> Result<Summary> {
    eprintln!("{}", choice.explain(spec.name()));
    let description = spec.describe();
    let fault = ActiveFault::arm(1, spec, choice.chosen, scope, events_per_sec)?;
    let programs: Vec<&str> = fault
        .spec
        .programs(fault.mechanism)
        .unwrap_or_default()
        .iter()
        .map(|p| p.name)
        .collect();
    eprintln!(
        "chaos-bpf: armed {description} on cgroup {} (id {}) via {}{}",
        fault.scope.path.display(),
        fault.scope.id,
        programs.join(", "),
        options
            .duration
            .map(|d| format!(" for {}", humantime::format_duration(d)))
            .unwrap_or_default(),
    );
    runner::run(fault, options).await
}
