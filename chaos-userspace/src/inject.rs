//! `chaos-bpf inject`: validate everything, check the kernel, arm, run, report.
use crate::{
    error::{ChaosError, Result},
    faults::FaultSpec,
    instance::ActiveFault,
    mechanism::probe,
    runner::{self, RunOptions},
    scope::CgroupScope,
    telemetry::Summary,
};

/// Checks that need no kernel changes, in the order a user would fix them. Nothing is attached
/// when any of them fails.
pub fn preflight(spec: &FaultSpec, cgroup: &std::path::Path) -> Result<CgroupScope> {
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
    for mechanism in spec.required_mechanisms() {
        let probe = probe(*mechanism);
        if !probe.supported {
            return Err(ChaosError::Unsupported {
                fault: spec.name(),
                mechanism: mechanism.name(),
                reason: format!("{} (needs {})", probe.detail, mechanism.enable_hint()),
            });
        }
    }
    Ok(scope)
}

pub async fn inject(
    spec: FaultSpec,
    scope: CgroupScope,
    events_per_sec: u32,
    options: RunOptions,
) -> Result<Summary> {
    let description = spec.describe();
    let mechanisms: Vec<&str> = spec.programs().iter().map(|p| p.name).collect();
    let fault = ActiveFault::arm(1, spec, scope, events_per_sec)?;
    eprintln!(
        "chaos-bpf: armed {description} on cgroup {} (id {}) via {}{}",
        fault.scope.path.display(),
        fault.scope.id,
        mechanisms.join(", "),
        options
            .duration
            .map(|d| format!(" for {}", humantime::format_duration(d)))
            .unwrap_or_default(),
    );
    runner::run(fault, options).await
}
