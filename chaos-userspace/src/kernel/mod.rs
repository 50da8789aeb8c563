//! The kernel side: the registry of programs and how each kind loads and attaches, the
//! mechanisms and the probes that find them, one loaded object with its rules, the bpf(2) calls
//! aya lacks, fmod_ret loading, and the kernel's BTF.
pub mod doctor;
pub mod fmod_ret;
pub mod instance;
pub mod kernel_btf;
pub mod mechanism;
pub mod object;
pub mod probe;
pub mod programs;
pub mod rule_index;
pub mod sys;
