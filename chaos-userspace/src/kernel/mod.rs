//! The kernel side, below the fault kinds: the registry of programs and how each loads and
//! attaches, the mechanisms and the probes that find them, the object and its map layouts (scope
//! table, destination index), the bpf(2) calls aya lacks, fmod_ret loading, and the kernel's BTF.
//! Nothing here knows a fault kind: `faults` and `engine` build on it.
pub mod fmod_ret;
pub mod kernel_btf;
pub mod mechanism;
pub mod object;
pub mod probe;
pub mod programs;
pub mod rule_index;
pub mod scope_table;
pub mod sys;
