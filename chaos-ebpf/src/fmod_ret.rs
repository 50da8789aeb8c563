//! Syscall faults through fmod_ret on `security_socket_*`: the program's non-zero return value
//! replaces the function's, so the syscall fails with it. Needs BTF and BPF trampolines only.
//!
//! The sections say `fexit/` because aya 0.14's object parser has no `fmod_ret/`; userspace loads
//! these programs itself with BPF_MODIFY_RETURN (chaos-userspace `fmod_ret.rs`). The context is
//! the array of the function's arguments followed by the return value so far (always 0 here:
//! the trampoline stops at the first program that returns non-zero).
use core::ffi::c_void;

use chaos_common::scope_hook;

use crate::socket_ops::{Target, decide, negative_errno};

#[inline(always)]
fn arg(ctx: *mut c_void, n: usize) -> *const c_void {
    // SAFETY: the verifier bounds context reads to the traced function's arguments and return.
    unsafe { *ctx.cast::<u64>().add(n) as *const c_void }
}

/// int security_socket_recvmsg(struct socket *sock, struct msghdr *msg, int size, int flags)
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_recvmsg")]
pub fn chaos_fmr_recv(ctx: *mut c_void) -> i64 {
    negative_errno(decide(scope_hook::RECV, Target::Socket(arg(ctx, 0))))
}

/// int security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_sendmsg")]
pub fn chaos_fmr_send(ctx: *mut c_void) -> i64 {
    negative_errno(decide(scope_hook::SEND, Target::Socket(arg(ctx, 0))))
}

/// int security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_connect")]
pub fn chaos_fmr_conn(ctx: *mut c_void) -> i64 {
    negative_errno(decide(
        scope_hook::CONNECT,
        Target::ConnectAddress {
            sock: arg(ctx, 0),
            address: arg(ctx, 1),
        },
    ))
}
