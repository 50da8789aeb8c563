//! `chaos-bpf doctor`: which mechanisms this kernel has (found by loading real programs) and
//! therefore which faults can run here.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    faults::{KINDS, kind_name},
    kernel::mechanism::Mechanism,
    kernel::probe::{Probe, probe},
};

/// One fault × mechanism pair.
#[derive(Debug, Serialize)]
pub struct PairReadiness {
    pub mechanism: Mechanism,
    pub ready: bool,
    /// Mechanisms (the pair's own or its prerequisites) this kernel lacks.
    pub missing: Vec<Mechanism>,
    /// False where chaos-bpf has no programs for the pair.
    pub implemented: bool,
}

#[derive(Debug, Serialize)]
pub struct FaultReadiness {
    pub fault: &'static str,
    pub ready: bool,
    /// What `--mechanism auto` would use.
    pub auto: Option<Mechanism>,
    pub mechanisms: Vec<PairReadiness>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub mechanisms: Vec<Probe>,
    pub faults: Vec<FaultReadiness>,
}

pub fn run() -> Report {
    let mechanisms: Vec<Probe> = Mechanism::ALL.into_iter().map(probe).collect();
    let supported = |m: &Mechanism| mechanisms.iter().any(|p| p.mechanism == *m && p.supported);
    let faults = KINDS
        .iter()
        .map(|(kind, candidates)| {
            let pairs: Vec<PairReadiness> = candidates
                .iter()
                .map(|mechanism| {
                    let missing: Vec<Mechanism> = std::iter::once(mechanism)
                        .chain(mechanism.prerequisites())
                        .chain(&[Mechanism::Ringbuf])
                        .chain(crate::faults::extra_requirements(*kind))
                        .copied()
                        .filter(|m| !supported(m))
                        .collect();
                    let implemented = crate::faults::programs_for(*kind, *mechanism);
                    PairReadiness {
                        mechanism: *mechanism,
                        ready: missing.is_empty() && implemented,
                        missing,
                        implemented,
                    }
                })
                .collect();
            let auto = pairs.iter().find(|p| p.ready).map(|p| p.mechanism);
            FaultReadiness {
                fault: kind_name(*kind),
                ready: auto.is_some(),
                auto,
                mechanisms: pairs,
            }
        })
        .collect();
    Report {
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        mechanisms,
        faults,
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!("kernel {}\n\n", self.kernel);
        let width = Mechanism::ALL
            .iter()
            .map(|m| m.name().len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "{:width$}  {:3}  detail", "mechanism", "ok");
        for probe in &self.mechanisms {
            let mut detail = probe.detail.clone();
            if !probe.supported {
                let _ = write!(detail, " (needs {})", probe.mechanism.enable_hint());
            }
            let mark = if probe.supported { "yes" } else { "no" };
            let _ = writeln!(out, "{:width$}  {mark:3}  {detail}", probe.mechanism.name());
        }
        let _ = writeln!(
            out,
            "\n{:14}  {:16}  {:5}  why not",
            "fault", "mechanism", "ready"
        );
        for fault in &self.faults {
            for pair in &fault.mechanisms {
                let why = if pair.ready {
                    if fault.auto == Some(pair.mechanism) {
                        "used by --mechanism auto".to_string()
                    } else {
                        String::new()
                    }
                } else if !pair.missing.is_empty() {
                    let missing: Vec<&str> = pair.missing.iter().map(|m| m.name()).collect();
                    format!("kernel lacks {}", missing.join(", "))
                } else {
                    "no chaos-bpf programs for this pair yet".to_string()
                };
                let mark = if pair.ready { "yes" } else { "no" };
                let _ = writeln!(
                    out,
                    "{:14}  {:16}  {mark:5}  {why}",
                    fault.fault,
                    pair.mechanism.id()
                );
            }
        }
        out
    }
}
