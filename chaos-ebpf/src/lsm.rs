//! Syscall faults through BPF LSM hooks `socket_*`: a negative return denies the operation with
//! that errno. Needs `bpf` in the kernel's active LSM list. Same decision as fmod_ret.
use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};

use chaos_common::scope_hook;

use crate::socket_ops::{Target, decide, negative_errno};

#[inline(always)]
fn arg(ctx: &LsmContext, n: usize) -> *const c_void {
    ctx.arg::<u64>(n) as *const c_void
}

/// LSM hooks return 0 to allow or a negative errno to deny, provably within [-MAX_ERRNO, 0] as
/// newer verifiers require (see `negative_errno`).
#[inline(always)]
fn deny(errno: u32) -> i32 {
    negative_errno(errno) as i32
}

/// socket_recvmsg(struct socket *sock, struct msghdr *msg, int size, int flags)
#[lsm(hook = "socket_recvmsg")]
pub fn chaos_lsm_recv(ctx: LsmContext) -> i32 {
    deny(decide(scope_hook::RECV, Target::Socket(arg(&ctx, 0))))
}

/// socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
#[lsm(hook = "socket_sendmsg")]
pub fn chaos_lsm_send(ctx: LsmContext) -> i32 {
    deny(decide(scope_hook::SEND, Target::Socket(arg(&ctx, 0))))
}

/// socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
#[lsm(hook = "socket_connect")]
pub fn chaos_lsm_conn(ctx: LsmContext) -> i32 {
    deny(decide(
        scope_hook::CONNECT,
        Target::ConnectAddress {
            sock: arg(&ctx, 0),
            address: arg(&ctx, 1),
        },
    ))
}
