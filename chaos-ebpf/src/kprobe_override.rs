//! Syscall faults through kprobes on the syscall entry points and `bpf_override_return`: the
//! syscall's body never runs and it returns the errno. The entry points are on the kernel's
//! error-injection list, so this needs CONFIG_FUNCTION_ERROR_INJECTION and
//! CONFIG_BPF_KPROBE_OVERRIDE, and nothing else: no BTF trampolines, no LSM.
//!
//! A syscall is given a file descriptor, not a socket, so after the scope check the program walks
//! the task's descriptor table (task → files → fdtable → file) and takes the file's socket only
//! if its inode is one. Offsets come from BTF through the configuration, as for the socket.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_task, generated::bpf_override_return},
    macros::kprobe,
    programs::ProbeContext,
};
use chaos_common::{FaultConfig, scope_hook};

use crate::{
    matching::{Peer, first_armed},
    socket_ops::{
        Memory, address_peer, judge_peer, negative_errno, protocol_of, read, rules_of_task,
        socket_peer,
    },
};

const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;

/// Calls on a connected socket: the receiving syscalls (read, readv, recvfrom, recvmsg,
/// recvmmsg), for recv-error.
#[kprobe]
pub fn chaos_kpo_recv(ctx: ProbeContext) -> u32 {
    fail_socket_call(&ctx, scope_hook::RECV)
}

/// The sending syscalls, for send-error.
#[kprobe]
pub fn chaos_kpo_send(ctx: ProbeContext) -> u32 {
    fail_socket_call(&ctx, scope_hook::SEND)
}

/// connect(): the peer is the address the process passes, still in its memory.
#[kprobe]
pub fn chaos_kpo_conn(ctx: ProbeContext) -> u32 {
    fail_socket_call(&ctx, scope_hook::CONNECT)
}

#[inline(always)]
fn fail_socket_call(ctx: &ProbeContext, hook: u32) -> u32 {
    let Some(rules) = rules_of_task(hook) else {
        return 0;
    };
    // Kernel offsets are the same in every rule of the object: the first armed one's serve.
    let Some(first) = first_armed(rules) else {
        return 0;
    };
    let config = first.config;
    // The syscall wrappers take one argument: the process's registers at syscall entry.
    let Some(regs) = ctx.arg::<*const c_void>(0) else {
        return 0;
    };
    let Some(sock) = socket_of_first_argument(config, regs) else {
        return 0;
    };
    let peer = if hook == scope_hook::CONNECT {
        let Some(address) = read::<*const c_void>(regs, config.fd_offsets.regs_arg1) else {
            return 0;
        };
        address_peer(address, Memory::User).map(|peer| Peer {
            proto: protocol_of(config, sock),
            ..peer
        })
    } else {
        socket_peer(config, sock)
    };
    let Some(peer) = peer else {
        return 0;
    };
    let errno = judge_peer(rules, &peer);
    if errno != 0 {
        // SAFETY: the context is this kprobe's registers, at the entry of an error-injectable
        // function (the kernel refused the attachment otherwise).
        unsafe { bpf_override_return(ctx.regs, negative_errno(errno) as u64) };
    }
    0
}

/// The `struct socket` behind the descriptor in the syscall's first argument, if it is one.
#[inline(always)]
fn socket_of_first_argument(config: &FaultConfig, regs: *const c_void) -> Option<*const c_void> {
    let offsets = &config.fd_offsets;
    let fd: u64 = read(regs, offsets.regs_arg0)?;
    let fd = u32::try_from(fd).ok()?;
    // SAFETY: helper without preconditions; the pointer is only read through probe helpers.
    let task = unsafe { bpf_get_current_task() } as *const c_void;
    let files: *const c_void = read(task, offsets.task_files)?;
    let table: *const c_void = read(files, offsets.files_fdt)?;
    let max_fds: u32 = read(table, offsets.fdtable_max_fds)?;
    if fd >= max_fds {
        return None;
    }
    let slots: *const c_void = read(table, offsets.fdtable_fd)?;
    let file: *const c_void = read(
        slots
            .cast::<*const c_void>()
            .wrapping_add(fd as usize)
            .cast(),
        0,
    )?;
    if file.is_null() {
        return None;
    }
    let inode: *const c_void = read(file, offsets.file_inode)?;
    let mode: u16 = read(inode, offsets.inode_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    read(file, offsets.file_private_data)
}
