//! drop through cgroup_skb: packets of the target cgroup's sockets are dropped before they reach
//! the wire (egress) or the socket (ingress). The filters see the remote peer: the destination on
//! egress, the source on ingress.
use aya_ebpf::{
    helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, programs::SkBuffContext,
};
use chaos_common::{AF_INET, AF_INET6, DIRECTION_EGRESS, DIRECTION_INGRESS, flags, proto};

use crate::{
    matching::{Peer, armed_rule, killed, peer_matches, strike},
    telemetry::Subject,
};

const PASS: i32 = 1;
const DROP: i32 = 0;
/// Egress "drop, with congestion notification": the stack treats it like a congested device
/// (the sender's send() succeeds, TCP backs off and retransmits) instead of failing with EPERM.
const DROP_CN: i32 = 2;

#[cgroup_skb(egress)]
pub fn chaos_skb_out(ctx: SkBuffContext) -> i32 {
    decide(&ctx, DIRECTION_EGRESS, flags::EGRESS, DROP_CN)
}

#[cgroup_skb(ingress)]
pub fn chaos_skb_in(ctx: SkBuffContext) -> i32 {
    decide(&ctx, DIRECTION_INGRESS, flags::INGRESS, DROP)
}

#[inline(always)]
fn decide(ctx: &SkBuffContext, direction: u8, direction_flag: u32, drop_verdict: i32) -> i32 {
    if killed() {
        return PASS;
    }
    // The program runs only for the target cgroup's sockets: the object has this one rule.
    let Some(rule) = armed_rule(0) else {
        return PASS;
    };
    if rule.config.flags & direction_flag == 0 {
        return PASS;
    }
    let Some(peer) = parse_peer(ctx, direction == DIRECTION_EGRESS) else {
        return PASS;
    };
    let struck = peer_matches(rule, &peer)
        && strike(rule, &peer, || Subject {
            // SAFETY: the context is a valid skb for this program type.
            cgroup_id: unsafe { bpf_skb_cgroup_id(ctx.skb.skb) },
            pid: 0,
            comm: [0; 16],
            errno: 0,
            direction,
        });
    if struck { drop_verdict } else { PASS }
}

/// Reads the remote peer from the IP and transport headers (cgroup_skb data starts at the
/// network header). IPv6 extension headers are not walked: such packets carry no port.
#[inline(always)]
fn parse_peer(ctx: &SkBuffContext, egress: bool) -> Option<Peer> {
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
    Some(Peer {
        family,
        addr,
        port,
        proto,
    })
}
