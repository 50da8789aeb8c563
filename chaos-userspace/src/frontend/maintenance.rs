//! The commands that arm nothing: `cleanup`, `doctor`, `schema`.
use crate::{
    error::{ChaosError, Result},
    frontend::{cli::args::SchemaOf, to_json},
};

/// `chaos-bpf cleanup`: TC state left by runs that were killed, removed, and the cgroup knobs
/// they set put back; the report as JSON.
pub fn cleanup() -> Result<()> {
    require_root()?;
    let mut report = crate::net::tc_records::cleanup_stale()
        .map_err(|err| ChaosError::io("cleaning up", err))?;
    report.knobs_restored = crate::faults::pressure::cleanup_stale();
    println!("{}", to_json(&report, false)?);
    Ok(())
}

/// `chaos-bpf doctor`: which mechanisms this kernel has, as a table or JSON.
pub fn doctor(json: bool) -> Result<()> {
    require_root()?;
    let report = crate::faults::doctor::run();
    if json {
        println!("{}", to_json(&report, true)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `chaos-bpf schema`: the JSON Schema of faults or of experiments.
pub fn schema(of: SchemaOf) -> Result<()> {
    let schema = match of {
        SchemaOf::Fault => chaos_model::fault_schema(),
        SchemaOf::Experiment => chaos_model::experiment_schema(),
    };
    println!("{}", to_json(&schema, true)?);
    Ok(())
}

pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(ChaosError::NotRoot)
    }
}
