//! drop through cgroup_skb: packets of the target cgroup's sockets are dropped before they reach
//! the wire (egress) or the socket (ingress). The filters see the remote peer: the destination on
//! egress, the source on ingress. One loaded program per direction serves every drop fault, found
//! by the socket's cgroup in the scope map, as for connect. partition is drop in both directions
//! with its peers as the filter; with `--keep-established` only connection attempts are lost.
use aya_ebpf::{
    helpers::generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use chaos_common::{
    AF_INET, AF_INET6, DIRECTION_EGRESS, DIRECTION_INGRESS, flags, proto, scope_hook,
};

use crate::{
    matching::{Peer, first_strike, killed, scoped_rules},
    telemetry::Subject,
};

const PASS: i32 = 1;
const DROP: i32 = 0;
/// Egress "drop, with congestion notification": the stack treats it like a congested device
/// (the sender's send() succeeds, TCP backs off and retransmits) instead of failing with EPERM.
const DROP_CN: i32 = 2;

#[cgroup_skb(egress)]
pub fn chaos_skb_out(ctx: SkBuffContext) -> i32 {
    decide(&ctx, scope_hook::EGRESS, flags::EGRESS, DROP_CN)
}

#[cgroup_skb(ingress)]
pub fn chaos_skb_in(ctx: SkBuffContext) -> i32 {
    decide(&ctx, scope_hook::INGRESS, flags::INGRESS, DROP)
}

#[inline(always)]
fn decide(ctx: &SkBuffContext, hook: u32, direction_flag: u32, drop_verdict: i32) -> i32 {
    if killed() {
        return PASS;
    }
    let Some(rules) = scoped_rules(hook, |level| {
        // SAFETY: the context is a valid skb for this program type.
        unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level as i32) }
    }) else {
        return PASS;
    };
    let egress = hook == scope_hook::EGRESS;
    let Some((peer, l4_offset)) = parse_peer(ctx, egress) else {
        return PASS;
    };
    let direction = if egress {
        DIRECTION_EGRESS
    } else {
        DIRECTION_INGRESS
    };
    let struck = first_strike(
        rules,
        &peer,
        |rule| {
            let flags = rule.config.flags;
            // The TCP flags are read only for a rule that asks (partition --keep-established).
            flags & direction_flag != 0
                && (flags & flags::CONNECT_ONLY == 0
                    || connection_attempt(ctx, peer.proto, l4_offset))
        },
        |_| Subject {
            // SAFETY: the context is a valid skb for this program type.
            cgroup_id: unsafe { bpf_skb_cgroup_id(ctx.skb.skb) },
            pid: 0,
            comm: [0; 16],
            errno: 0,
            direction,
        },
    );
    if struck.is_some() { drop_verdict } else { PASS }
}

/// TCP flags: a connection attempt is a SYN without ACK.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Whether the packet opens a TCP connection: a SYN without ACK.
#[inline(always)]
fn connection_attempt(ctx: &SkBuffContext, proto: u8, l4_offset: usize) -> bool {
    proto == proto::TCP
        && ctx
            .load::<u8>(l4_offset + 13)
            .is_ok_and(|bits| bits & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// Reads the remote peer from the IP and transport headers (cgroup_skb data starts at the
/// network header), and where the transport header starts. IPv6 extension headers are not
/// walked: such packets carry no port.
#[inline(always)]
fn parse_peer(ctx: &SkBuffContext, egress: bool) -> Option<(Peer, usize)> {
    let first: u8 = ctx.load(0).ok()?;
    let mut addr = [0u8; 16];
    let (family, proto, l4_offset) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            let addr_offset = if egress { 16 } else { 12 };
            let ip: [u8; 4] = ctx.load(addr_offset).ok()?;
            addr[..4].copy_from_slice(&ip);
            (AF_INET, proto, usize::from(first & 0x0f) * 4)
        }
        6 => {
            let proto: u8 = ctx.load(6).ok()?;
            let addr_offset = if egress { 24 } else { 8 };
            addr = ctx.load(addr_offset).ok()?;
            (AF_INET6, proto, 40)
        }
        _ => return None,
    };
    let port = if proto == proto::TCP || proto == proto::UDP {
        // Source port first, then destination port; the peer's is the far end's.
        let ports: [u8; 4] = ctx.load(l4_offset).ok()?;
        let (hi, lo) = if egress {
            (ports[2], ports[3])
        } else {
            (ports[0], ports[1])
        };
        u16::from_be_bytes([hi, lo])
    } else {
        0
    };
    Some((
        Peer {
            family,
            addr,
            port,
            proto,
        },
        l4_offset,
    ))
}
