//! chaos-bpf's library, in layers: the fault engine (`engine`) and planning (`inject`) over the
//! fault kinds (`faults`), the kernel side (`kernel`), network plumbing (`net`) and telemetry.
//! The model of a fault is the `chaos-model` crate. It prints nothing and handles no signal; the
//! binary's front ends (the CLI, the agent) do.
pub mod engine;
pub mod errno;
pub mod error;
pub mod experiment;
pub mod faults;
pub mod filters;
pub mod guard;
pub mod inject;
pub mod kernel;
pub mod net;
pub mod scope;
pub mod telemetry;
pub mod workload;

// The layers' modules by their short names too, as the crate's own code refers to them.
pub use kernel::{
    doctor, fmod_ret, instance, kernel_btf, mechanism, object, probe, programs, rule_index,
    scope_table, shared, sys,
};
pub use net::{fq, interface, netlink, tc_records};
pub use telemetry::metrics;
