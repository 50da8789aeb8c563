//! A program that does nothing. `chaos-bpf doctor` attaches it in a scratch network namespace to
//! find out whether the kernel has TC clsact and tcx, instead of guessing from version numbers.
//! (Trampolines and BPF LSM are probed with the real fault programs, unarmed.)
use aya_ebpf::{macros::classifier, programs::TcContext};

/// TC_ACT_UNSPEC: "no opinion", the next filter or the default action decides.
#[classifier]
pub fn chaos_tc_probe(_ctx: TcContext) -> i32 {
    -1
}
