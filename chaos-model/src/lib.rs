//! chaos-bpf's fault model: faults as data. One serde model, one validator, one JSON Schema.
//!
//! Nothing here knows about the kernel: the engine in chaos-userspace resolves scopes, picks
//! mechanisms and arms rules from a validated [`Fault`].
pub mod errno;
pub mod exclusions;
pub mod experiment;
pub mod fault;
pub mod validate;
pub mod values;
pub mod workloads;

pub use fault::{Events, Fault, FaultSet, Match, Scope};
pub use validate::{
    FieldError, Format, parse, parse_fault, parse_fault_set, parse_selector, validate, validate_set,
};
pub use values::*;

/// The JSON Schema of one fault (`chaos-bpf schema`); the Kubernetes resource reuses it.
pub fn fault_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Fault)).unwrap_or_default()
}

/// The JSON Schema of an experiment file (`chaos-bpf schema experiment`).
pub fn experiment_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(experiment::Experiment)).unwrap_or_default()
}
