//! The decision for syscall faults on hooks that run for every task (fmod_ret and LSM on
//! `security_socket_*`, kprobes on the syscall entry points): find the task's rules by its cgroup
//! ancestry, read the peer from the socket or the connect address, filter, draw, and return the
//! errno to inject (0 = let the call proceed).
use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel, bpf_probe_read_user,
};
use chaos_common::{AF_INET, AF_INET6, FaultConfig, RuleList, proto};

use crate::{
    matching::{Peer, first_armed, first_strike, killed, scoped_rules},
    telemetry::Subject,
};

const SOCK_STREAM: i16 = 1;
const SOCK_DGRAM: i16 = 2;

/// Where the hook finds the peer.
pub enum Target {
    /// recvmsg/sendmsg: the socket's connected peer (`struct socket *`).
    Socket(*const c_void),
    /// connect: the socket and the address being connected to (`struct sockaddr *`, already
    /// copied into the kernel: LSM and fmod_ret hooks run after the copy).
    ConnectAddress {
        sock: *const c_void,
        address: *const c_void,
    },
}

/// The largest errno the kernel accepts as an error return.
const MAX_ERRNO: u32 = 4095;

/// The current task's rules for `hook`, if it is in some fault's scope. This runs first and is
/// all that tasks outside every scope pay: the kill switch, the levels in use, and per level one
/// helper call and one hash lookup.
#[inline(always)]
pub fn rules_of_task(hook: u32) -> Option<&'static RuleList> {
    if killed() {
        return None;
    }
    scoped_rules(hook, |level| {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    })
}

/// Returns the errno to fail the call with, 0 to let it proceed. Bounded by `MAX_ERRNO` so the
/// verifier can prove LSM return values lie in [-MAX_ERRNO, 0] (6.x kernels check).
///
/// There is no "previous return value" to honour: BPF trampolines stop running fmod_ret and LSM
/// programs at the first one that returns non-zero, so this one only runs while it is still 0.
#[inline(always)]
pub fn decide(hook: u32, target: Target) -> u32 {
    let Some(rules) = rules_of_task(hook) else {
        return 0;
    };
    // Kernel offsets are the same in every rule of the object: the first armed one's serve.
    let Some(first) = first_armed(rules) else {
        return 0;
    };
    let config = first.config;
    let peer = match target {
        Target::Socket(sock) => socket_peer(config, sock),
        Target::ConnectAddress { sock, address } => {
            address_peer(address, Memory::Kernel).map(|peer| Peer {
                proto: protocol_of(config, sock),
                ..peer
            })
        }
    };
    // Only IPv4/IPv6 sockets: unix sockets, netlink and friends are never failed.
    match peer {
        Some(peer) => judge_peer(rules, &peer),
        None => 0,
    }
}

/// The filters, the draw and the report for a call whose peer is known: the errno of the first
/// rule that strikes.
#[inline(always)]
pub fn judge_peer(rules: &RuleList, peer: &Peer) -> u32 {
    match first_strike(
        rules,
        peer,
        |_| true,
        |rule| Subject::current_task(rule.config.errno),
    ) {
        Some(rule) => rule.config.errno & MAX_ERRNO,
        None => 0,
    }
}

/// `-errno` as "r = 0; r -= errno". LLVM would emit BPF_NEG for a plain negation, and verifiers
/// before 6.13 forget all bounds across NEG, so they could not prove an LSM program's return lies
/// in [-MAX_ERRNO, 0]. A subtraction from zero keeps the bounds of the masked errno.
#[inline(always)]
pub fn negative_errno(errno: u32) -> i64 {
    let errno = u64::from(errno & MAX_ERRNO);
    #[cfg(target_arch = "bpf")]
    {
        let negative: i64;
        // SAFETY: two ALU instructions on registers, no memory access.
        unsafe {
            core::arch::asm!(
                "{r} = 0",
                "{r} -= {e}",
                r = out(reg) negative,
                e = in(reg) errno,
                options(pure, nomem, nostack),
            );
        }
        negative
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        -(errno as i64)
    }
}

/// Which address space a pointer lives in.
#[derive(Clone, Copy)]
pub enum Memory {
    Kernel,
    /// The calling process's memory: syscall arguments before the kernel copied them.
    User,
}

impl Memory {
    #[inline(always)]
    pub fn read<T>(self, base: *const c_void, offset: u16) -> Option<T> {
        let at = base
            .cast::<u8>()
            .wrapping_add(usize::from(offset))
            .cast::<T>();
        // SAFETY: the probe-read helpers tolerate any address; a bad one only fails the read.
        unsafe {
            match self {
                Memory::Kernel => bpf_probe_read_kernel(at),
                Memory::User => bpf_probe_read_user(at),
            }
        }
        .ok()
    }
}

/// A read of kernel memory at `base + offset`.
#[inline(always)]
pub fn read<T>(base: *const c_void, offset: u16) -> Option<T> {
    Memory::Kernel.read(base, offset)
}

/// TCP or UDP by the socket's type, 0 for other types.
#[inline(always)]
pub fn protocol_of(config: &FaultConfig, sock: *const c_void) -> u8 {
    match read::<i16>(sock, config.sock_offsets.socket_type) {
        Some(SOCK_STREAM) => proto::TCP,
        Some(SOCK_DGRAM) => proto::UDP,
        _ => 0,
    }
}

#[inline(always)]
pub fn socket_peer(config: &FaultConfig, sock: *const c_void) -> Option<Peer> {
    let offsets = &config.sock_offsets;
    let sk: *const c_void = read(sock, offsets.socket_sk)?;
    if sk.is_null() {
        return None;
    }
    let family: u16 = read(sk, offsets.skc_family)?;
    let port = u16::from_be(read(sk, offsets.skc_dport)?);
    peer_at(
        Memory::Kernel,
        sk,
        family,
        port,
        (offsets.skc_daddr, offsets.skc_v6_daddr),
        protocol_of(config, sock),
    )
}

/// The peer a connect() names (protocol still unknown: 0), from its `struct sockaddr`.
#[inline(always)]
pub fn address_peer(address: *const c_void, memory: Memory) -> Option<Peer> {
    // struct sockaddr_in / sockaddr_in6: family at 0, port at 2, IPv4 at 4, IPv6 at 8.
    let family: u16 = memory.read(address, 0)?;
    let port = u16::from_be(memory.read(address, 2)?);
    peer_at(memory, address, family, port, (4, 8), 0)
}

/// The peer whose IPv4 or IPv6 address lies at the given (v4, v6) offsets of `base`; other
/// families are not ours.
#[inline(always)]
fn peer_at(
    memory: Memory,
    base: *const c_void,
    family: u16,
    port: u16,
    (v4_offset, v6_offset): (u16, u16),
    proto: u8,
) -> Option<Peer> {
    let mut addr = [0u8; 16];
    let family = match family {
        AF_INET => {
            let v4: [u8; 4] = memory.read(base, v4_offset)?;
            addr[..4].copy_from_slice(&v4);
            AF_INET
        }
        AF_INET6 => {
            let v6: [u8; 16] = memory.read(base, v6_offset)?;
            unmap_v4(&v6, &mut addr)
        }
        _ => return None,
    };
    Some(Peer {
        family,
        addr,
        port,
        proto,
    })
}

/// IPv4-mapped IPv6 (::ffff:a.b.c.d) is an IPv4 peer, matched against the IPv4 CIDRs.
#[inline(always)]
fn unmap_v4(v6: &[u8; 16], out: &mut [u8; 16]) -> u16 {
    if v6[..10].iter().all(|&b| b == 0) && v6[10] == 0xff && v6[11] == 0xff {
        out[..4].copy_from_slice(&v6[12..16]);
        AF_INET
    } else {
        *out = *v6;
        AF_INET6
    }
}
