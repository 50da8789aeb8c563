//! Programs that do nothing. `chaos-bpf doctor` loads (and where harmless, attaches) them to find
//! out whether the kernel has a mechanism, instead of guessing from version numbers.
use aya_ebpf::{
    macros::{classifier, fentry, lsm},
    programs::{FEntryContext, LsmContext, TcContext},
};

/// TC_ACT_UNSPEC: "no opinion", the next filter or the default action decides.
#[classifier]
pub fn chaos_tc_probe(_ctx: TcContext) -> i32 {
    -1
}

/// Loading it proves BTF plus BPF trampolines, which fentry, fexit and fmod_ret all need.
#[fentry(function = "security_socket_connect")]
pub fn chaos_fentry_pr(_ctx: FEntryContext) -> u32 {
    0
}

/// Returns 0: allow. Never attached by doctor; loading it proves the kernel accepts BPF LSM.
#[lsm(hook = "socket_connect")]
pub fn chaos_lsm_probe(_ctx: LsmContext) -> i32 {
    0
}
