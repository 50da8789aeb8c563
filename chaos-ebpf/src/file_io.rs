//! io-error: opens, reads and writes of files under some paths fail with an errno, from the
//! scope's tasks only, through fmod_ret on `security_file_open` / `security_file_permission` or
//! the BPF LSM hooks of the same names. Every read() and write() passes the second (the VFS asks
//! it in `rw_verify_area`), so does readdir, as a read.
//!
//! A path is the (device, inode) of its directory or file, which userspace resolves in the
//! scope's own mount namespace: the program walks from the file's dentry up through its parents
//! within the file's filesystem, one hash lookup a level, so the number of paths costs nothing
//! and no string is compared. The deepest path that has a rule for this task decides.
use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use chaos_common::{MAX_PATH_DEPTH, MAX_RULES_PER_DESTINATION, RuleList, flags, scope_hook};

use crate::{
    maps::FILE_PATHS,
    matching::{Peer, Rule, armed_rule, first_armed, strike},
    socket_ops::{negative_errno, read, rules_of_task},
    telemetry::Subject,
};

/// `mask` bits of `security_file_permission`.
const MAY_WRITE: u64 = 2;
const MAY_READ: u64 = 4;
const MAY_APPEND: u64 = 8;

/// Events of file faults have no peer.
const NO_PEER: Peer = Peer {
    family: 0,
    addr: [0; 16],
    port: 0,
    proto: 0,
};

#[inline(always)]
fn arg(ctx: *mut c_void, n: usize) -> u64 {
    // SAFETY: the verifier bounds context reads to the traced function's arguments and return.
    unsafe { *ctx.cast::<u64>().add(n) }
}

/// The operation a `security_file_permission` mask asks for.
#[inline(always)]
fn access_op(mask: u64) -> u32 {
    if mask & (MAY_WRITE | MAY_APPEND) != 0 {
        flags::FILE_WRITE
    } else if mask & MAY_READ != 0 {
        flags::FILE_READ
    } else {
        0
    }
}

/// int security_file_open(struct file *file)
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_open")]
pub fn chaos_fmr_fopen(ctx: *mut c_void) -> i64 {
    let file = arg(ctx, 0) as *const c_void;
    negative_errno(decide(scope_hook::FILE_OPEN, file, flags::FILE_OPEN))
}

/// int security_file_permission(struct file *file, int mask)
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_permission")]
pub fn chaos_fmr_fperm(ctx: *mut c_void) -> i64 {
    let file = arg(ctx, 0) as *const c_void;
    negative_errno(decide(
        scope_hook::FILE_ACCESS,
        file,
        access_op(arg(ctx, 1)),
    ))
}

/// file_open(struct file *file)
#[lsm(hook = "file_open")]
pub fn chaos_lsm_fopen(ctx: LsmContext) -> i32 {
    let file = ctx.arg::<u64>(0) as *const c_void;
    negative_errno(decide(scope_hook::FILE_OPEN, file, flags::FILE_OPEN)) as i32
}

/// file_permission(struct file *file, int mask)
#[lsm(hook = "file_permission")]
pub fn chaos_lsm_fperm(ctx: LsmContext) -> i32 {
    let file = ctx.arg::<u64>(0) as *const c_void;
    let op = access_op(ctx.arg::<u64>(1));
    negative_errno(decide(scope_hook::FILE_ACCESS, file, op)) as i32
}

/// The errno to fail the operation `op` (a `flags::FILE_*` bit) on `file` with, 0 to let it be.
#[inline(always)]
fn decide(hook: u32, file: *const c_void, op: u32) -> u32 {
    if op == 0 || file.is_null() {
        return 0;
    }
    let Some(rules) = rules_of_task(hook) else {
        return 0;
    };
    // Kernel offsets are the same in every rule of the object.
    let Some(first) = first_armed(rules) else {
        return 0;
    };
    let offsets = first.config.file_offsets;
    let Some(mut dentry) = read::<*const c_void>(file, offsets.file_dentry) else {
        return 0;
    };
    // Parents stay within the file's filesystem: one device for the whole walk.
    let Some(dev) = read::<*const c_void>(dentry, offsets.dentry_inode)
        .and_then(|inode| read::<*const c_void>(inode, offsets.inode_sb))
        .and_then(|sb| read::<u32>(sb, offsets.sb_dev))
    else {
        return 0;
    };
    let mut found = None;
    for _ in 0..MAX_PATH_DEPTH {
        let Some(ino) = read::<*const c_void>(dentry, offsets.dentry_inode)
            .filter(|inode| !inode.is_null())
            .and_then(|inode| read::<u64>(inode, offsets.inode_ino))
        else {
            break;
        };
        // SAFETY: the value is only read, and map values stay valid for the program's run.
        if let Some(listed) = unsafe { FILE_PATHS.get([u64::from(dev), ino]) } {
            found = applicable(rules, listed, op);
            if found.is_some() {
                break;
            }
        }
        // The filesystem's root is its own parent.
        match read::<*const c_void>(dentry, offsets.dentry_parent) {
            Some(parent) if !parent.is_null() && parent != dentry => dentry = parent,
            _ => break,
        }
    }
    match found {
        Some(rule) if strike(rule, &NO_PEER, || Subject::current_task(rule.config.errno)) => {
            rule.config.errno
        }
        _ => 0,
    }
}

/// The first rule of a path's list that also scopes this task and fails this operation.
#[inline(always)]
fn applicable(task_rules: &RuleList, path_rules: &RuleList, op: u32) -> Option<Rule> {
    for slot in 0..MAX_RULES_PER_DESTINATION {
        if slot as u32 >= path_rules.count {
            return None;
        }
        let index = path_rules.rules[slot];
        if !listed(task_rules, index) {
            continue;
        }
        if let Some(rule) = armed_rule(index)
            && rule.config.flags & op != 0
        {
            return Some(rule);
        }
    }
    None
}

#[inline(always)]
fn listed(list: &RuleList, index: u32) -> bool {
    for slot in 0..MAX_RULES_PER_DESTINATION {
        if slot as u32 >= list.count {
            return false;
        }
        if list.rules[slot] == index {
            return true;
        }
    }
    false
}
