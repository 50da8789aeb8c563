//! The kernel side: the registry of programs and how each kind loads and attaches, the
//! mechanisms and the probes that find them, the loaded objects with their rules (a TC batch, or
//! one shared object per other mechanism with its scope table), the bpf(2) calls aya lacks,
//! fmod_ret loading, and the kernel's BTF.
pub mod doctor;
pub mod fmod_ret;
pub mod instance;
pub mod kernel_btf;
pub mod mechanism;
pub mod object;
pub mod probe;
pub mod programs;
pub mod rule_index;
pub mod scope_table;
pub mod shared;
pub mod sys;
