//! `chaos-bpf experiment run`: the loop of the chaos-engineering guides in one process. Probes
//! watch the steady state through warm-up, injection and cool-down; the faults are armed and
//! stopped on schedule (in this process's engine, or a node agent's); a probe that breaks the
//! abort rule reverts every fault at once; at the end the hypothesis' conditions are checked
//! against what the probes measured, and the report says why. Nothing here prints: the caller
//! renders the live view and writes the reports.
pub mod probes;
pub mod report;
pub mod run;

pub use run::{Injector, Live, ServiceInjector, run};
