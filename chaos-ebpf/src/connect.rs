//! connect-error through cgroup sock_addr hooks: the program rejects the connect and
//! `bpf_set_retval` chooses the errno the process sees (kernel 5.18+). One loaded program serves
//! every connect-error fault: it is attached to the scoped cgroups (none below another), so it
//! runs only for their subtrees, and finds the task's rules by cgroup in the scope map.
use aya_ebpf::{
    helpers::{bpf_get_current_ancestor_cgroup_id, generated::bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use chaos_common::{AF_INET, AF_INET6, scope_hook};

use crate::{
    matching::{Peer, first_strike, killed, scoped_rules},
    telemetry::Subject,
};

pub const ALLOW: i32 = 1;
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn chaos_connect4(ctx: SockAddrContext) -> i32 {
    decide(&peer_v4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn chaos_connect6(ctx: SockAddrContext) -> i32 {
    decide(&peer_v6(&ctx))
}

/// The peer an IPv4 connect() names.
#[inline(always)]
pub fn peer_v4(ctx: &SockAddrContext) -> Peer {
    // SAFETY: the context pointer is valid for the program's run.
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    Peer {
        family: AF_INET,
        addr,
        port: u16::from_be(sa.user_port as u16),
        proto: sa.protocol as u8,
    }
}

/// The peer an IPv6 connect() names; an IPv4-mapped address (::ffff:a.b.c.d) is an IPv4 peer,
/// matched against the IPv4 CIDRs.
#[inline(always)]
pub fn peer_v6(ctx: &SockAddrContext) -> Peer {
    // SAFETY: the context pointer is valid for the program's run.
    let sa = unsafe { &*ctx.sock_addr };
    let words = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let mut addr = [0u8; 16];
    let family = if words[0] == 0 && words[1] == 0 && words[2] == 0xffffu32.to_be() {
        addr[..4].copy_from_slice(&words[3].to_ne_bytes());
        AF_INET
    } else {
        for (i, word) in words.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        AF_INET6
    };
    Peer {
        family,
        addr,
        port: u16::from_be(sa.user_port as u16),
        proto: sa.protocol as u8,
    }
}

/// Rejects the connect with `errno` (at most 4095: userspace checks, so the negation cannot
/// overflow).
#[inline(always)]
pub fn reject_with(errno: u32) -> i32 {
    // SAFETY: the helper only sets the hook's return value.
    unsafe { bpf_set_retval(-(errno as i32)) };
    REJECT
}

#[inline(always)]
fn decide(peer: &Peer) -> i32 {
    if killed() {
        return ALLOW;
    }
    let Some(rules) = scoped_rules(scope_hook::CONNECT, |level| {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    }) else {
        return ALLOW;
    };
    let Some(rule) = first_strike(
        rules,
        peer,
        |_| true,
        |rule| Subject::current_task(rule.config.errno),
    ) else {
        return ALLOW;
    };
    reject_with(rule.config.errno)
}
