//! `chaos-bpf doctor`: which mechanisms this kernel has (found by loading real programs) and
//! therefore which faults can run here.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    faults::{connect_error, packet_drop},
    mechanism::{Mechanism, Probe, probe},
};

/// The faults and the mechanisms each needs, all of them.
pub const FAULTS: &[(&str, &[Mechanism])] = &[
    ("connect-error", connect_error::MECHANISMS),
    ("drop", packet_drop::MECHANISMS),
];

#[derive(Debug, Serialize)]
pub struct FaultReadiness {
    pub fault: &'static str,
    pub ready: bool,
    pub needs: Vec<Mechanism>,
    pub missing: Vec<Mechanism>,
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
    let faults = FAULTS
        .iter()
        .map(|(fault, needs)| {
            let missing: Vec<Mechanism> = needs.iter().copied().filter(|m| !supported(m)).collect();
            FaultReadiness {
                fault,
                ready: missing.is_empty(),
                needs: needs.to_vec(),
                missing,
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
        let _ = writeln!(out, "\n{:14}  {:5}  needs", "fault", "ready");
        for fault in &self.faults {
            let needs: Vec<String> = fault
                .needs
                .iter()
                .map(|m| {
                    let mark = if fault.missing.contains(m) {
                        " (missing)"
                    } else {
                        ""
                    };
                    format!("{}{mark}", m.name())
                })
                .collect();
            let mark = if fault.ready { "yes" } else { "no" };
            let _ = writeln!(out, "{:14}  {mark:5}  {}", fault.fault, needs.join(", "));
        }
        out
    }
}
