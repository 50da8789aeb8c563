//! chaos-bpf's loader: faults, scopes, kernel probes and telemetry. `main.rs` only wires these.
pub mod cli;
pub mod doctor;
pub mod errno;
pub mod error;
pub mod faults;
pub mod filters;
pub mod fmod_ret;
pub mod inject;
pub mod instance;
pub mod kernel_btf;
pub mod mechanism;
pub mod netlink;
pub mod object;
pub mod programs;
pub mod runner;
pub mod scope;
pub mod telemetry;
