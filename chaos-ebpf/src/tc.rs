//! Packet faults at the TC layer, for whole interfaces, a pod's host-side veth, or a cgroup's
//! packets on an interface: drop (with loss models) and TCP reset. One program per direction;
//! the rule is this fault instance's configuration and filter maps: one lookup per filter kind,
//! whatever the number of CIDRs or ports in it.
use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_get_hash_recalc, bpf_skb_ancestor_cgroup_id},
    },
    macros::classifier,
    programs::TcContext,
};
use chaos_common::{
    AF_INET, AF_INET6, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, FaultConfig, FaultKind,
    LossState, PORT_SET_PEER, PORT_SET_SOURCE, flags, jitter, loss_model,
};

use crate::{
    maps::{FLOWS, LOSS_STATE, PEER_V4, PEER_V6, SRC_V4, SRC_V6},
    matching::{Peer, armed_config, draw, in_cidrs, next, port_in_set, random_u32},
    telemetry::{Subject, count, emit},
};

/// "No verdict": the next tcx program, clsact filter or the default action decides, so other
/// tools' programs keep working.
const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[classifier]
pub fn chaos_tc_out(ctx: TcContext) -> i32 {
    decide(&ctx, DIRECTION_EGRESS, flags::EGRESS)
}

#[classifier]
pub fn chaos_tc_in(ctx: TcContext) -> i32 {
    decide(&ctx, DIRECTION_INGRESS, flags::INGRESS)
}

/// What the filters need from a packet (ethernet framing: veth, physical NICs, lo).
struct Packet {
    family: u16,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    sport: u16,
    dport: u16,
    l4_offset: usize,
    tcp_flags: u8,
}

#[inline(always)]
fn decide(ctx: &TcContext, direction: u8, direction_flag: u32) -> i32 {
    let Some(config) = armed_config() else {
        return TC_ACT_UNSPEC;
    };
    if config.flags & direction_flag == 0 {
        return TC_ACT_UNSPEC;
    }
    // With a cgroup scope, only packets of that subtree's sockets (egress) match.
    if config.flags & flags::SCOPE_CGROUP != 0
        // SAFETY: the context is a valid skb for this program type.
        && unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, config.scope_cgroup_level as i32) }
            != config.scope_cgroup_id
    {
        return TC_ACT_UNSPEC;
    }
    let Some(packet) = parse(ctx) else {
        return TC_ACT_UNSPEC;
    };
    if !matches(config, &packet) {
        return TC_ACT_UNSPEC;
    }
    count(Counter::Matched);
    if !lose(config) {
        return TC_ACT_UNSPEC;
    }
    count(Counter::Injected);
    let peer = Peer {
        family: packet.family,
        addr: if direction == DIRECTION_EGRESS {
            packet.dst
        } else {
            packet.src
        },
        port: if direction == DIRECTION_EGRESS {
            packet.dport
        } else {
            packet.sport
        },
        proto: packet.proto,
    };
    emit(
        config,
        &peer,
        &Subject {
            cgroup_id: 0,
            pid: 0,
            comm: [0; 16],
            errno: 0,
            direction,
        },
    );
    match config.kind {
        k if k == FaultKind::Reset as u32 => {
            rewrite_into_reset(ctx, &packet);
            TC_ACT_UNSPEC
        }
        k if k == FaultKind::Delay as u32 => {
            delay(ctx, config);
            TC_ACT_UNSPEC
        }
        k if k == FaultKind::Corrupt as u32 => {
            corrupt(ctx, config, &packet);
            TC_ACT_UNSPEC
        }
        _ => TC_ACT_SHOT,
    }
}

/// Earliest Departure Time: the packet's `tstamp` says when fq may send it. Jitter is added per
/// packet, but a flow's packets never depart before its previous one, so the flow keeps its order.
#[inline(always)]
fn delay(ctx: &TcContext, config: &FaultConfig) {
    let params = &config.packet;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the context is a valid skb; TCP may already have paced it into the future.
    let base = unsafe { (*ctx.skb.skb).tstamp }.max(now);
    let mut departure = base + jittered(config, params.delay_ns, params.jitter_ns);
    // SAFETY: the context is a valid skb.
    let flow = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    if let Some(previous) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: a live map value of this LRU map.
        unsafe {
            departure = departure.max(*previous);
            *previous = departure;
        }
    } else {
        let _ = FLOWS.insert(flow, departure, 0);
    }
    // SAFETY: TC programs may write tstamp; at egress it is the (monotonic) departure time.
    unsafe { (*ctx.skb.skb).tstamp = departure };
}

/// `delay` plus jitter: uniform in [-jitter, +jitter], or normal with standard deviation `jitter`
/// (Irwin-Hall: four uniforms summed); never below zero.
#[inline(always)]
fn jittered(config: &FaultConfig, delay: u64, spread: u64) -> u64 {
    if spread == 0 {
        return delay;
    }
    let offset: i64 = if config.packet.distribution == jitter::NORMAL {
        // Sum of 4 uniforms on [0, 1) has mean 2 and variance 1/3; scaled by spread*sqrt(3).
        let mut sum: u64 = 0;
        let mut i = 0;
        while i < 4 {
            sum += u64::from(random_u32(config));
            i += 1;
        }
        // (sum/2^32 - 2) * spread * sqrt(3), in fixed point: sqrt(3) ~ 1773/1024.
        let centered = sum as i64 - (2i64 << 32);
        ((centered >> 16) * (spread as i64 >> 6) * 1773 / 1024) >> 10
    } else {
        let r = u64::from(random_u32(config));
        ((r * (2 * spread + 1)) >> 32) as i64 - spread as i64
    };
    (delay as i64 + offset).max(0) as u64
}

#[inline(always)]
fn matches(config: &FaultConfig, packet: &Packet) -> bool {
    let proto_ok = match config.proto {
        0 => true,
        p if p == u32::from(IPPROTO_ICMP) => {
            packet.proto == IPPROTO_ICMP || packet.proto == IPPROTO_ICMPV6
        }
        p => p == u32::from(packet.proto),
    };
    if !proto_ok {
        return false;
    }
    // A reset needs an established flow: not a SYN (that would be a refused connection, which
    // connect-error models) and not a reset already.
    if config.kind == FaultKind::Reset as u32
        && (packet.proto != IPPROTO_TCP || packet.tcp_flags & (TCP_RST | TCP_SYN) != 0)
    {
        return false;
    }
    if config.flags & flags::MATCH_TCP_FLAGS != 0
        && (packet.proto != IPPROTO_TCP
            || u32::from(packet.tcp_flags) & config.packet.tcp_flags == 0)
    {
        return false;
    }
    if config.flags & flags::MATCH_PORT != 0 && !port_in_set(PORT_SET_PEER, packet.dport) {
        return false;
    }
    if config.flags & flags::MATCH_SPORT != 0 && !port_in_set(PORT_SET_SOURCE, packet.sport) {
        return false;
    }
    if config.flags & flags::MATCH_PEER != 0
        && !in_cidrs(&PEER_V4, &PEER_V6, packet.family, &packet.dst)
    {
        return false;
    }
    if config.flags & flags::MATCH_SRC != 0
        && !in_cidrs(&SRC_V4, &SRC_V6, packet.family, &packet.src)
    {
        return false;
    }
    true
}

/// The loss model's verdict for one matching packet, then the `--probability` gate.
#[inline(always)]
fn lose(config: &FaultConfig) -> bool {
    let params = &config.packet;
    let model_says = match params.loss_model {
        loss_model::EVERY_NTH => {
            (next(LossState::Seen) + 1).is_multiple_of(u64::from(params.loss_n.max(1)))
        }
        loss_model::FIRST_N => next(LossState::Seen) < u64::from(params.loss_n),
        loss_model::GILBERT_ELLIOTT => gilbert_elliott(config),
        _ => true,
    };
    model_says && draw(config, config.probability)
}

/// Two-state Markov loss as netem's gemodel: move between good and bad with p and r, then lose
/// with 1-k in the good state and 1-h in the bad one.
#[inline(always)]
fn gilbert_elliott(config: &FaultConfig) -> bool {
    let params = &config.packet;
    let Some(state) = LOSS_STATE.get_ptr_mut(LossState::Bad as u32) else {
        return false;
    };
    // SAFETY: a live map value; a racing update from another CPU only perturbs the chain.
    let bad = unsafe { *state } != 0;
    let bad = if bad {
        random_u32(config) >= params.ge_r
    } else {
        random_u32(config) < params.ge_p
    };
    // SAFETY: as above.
    unsafe { *state = u64::from(bad) };
    let deliver = if bad { params.ge_h } else { params.ge_k };
    random_u32(config) >= deliver
}

#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Packet> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (family, proto, l4_offset) = match ethertype {
        ETH_P_IP => {
            let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            let s: [u8; 4] = ctx.load(ETH_HLEN + 12).ok()?;
            let d: [u8; 4] = ctx.load(ETH_HLEN + 16).ok()?;
            src[..4].copy_from_slice(&s);
            dst[..4].copy_from_slice(&d);
            (
                AF_INET,
                proto,
                ETH_HLEN + usize::from(version_ihl & 0x0f) * 4,
            )
        }
        ETH_P_IPV6 => {
            // Extension headers are not walked: such packets match on addresses only.
            let proto: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            src = ctx.load(ETH_HLEN + 8).ok()?;
            dst = ctx.load(ETH_HLEN + 24).ok()?;
            (AF_INET6, proto, ETH_HLEN + 40)
        }
        _ => return None,
    };
    let (mut sport, mut dport, mut tcp_flags) = (0, 0, 0);
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        let ports: [u8; 4] = ctx.load(l4_offset).ok()?;
        sport = u16::from_be_bytes([ports[0], ports[1]]);
        dport = u16::from_be_bytes([ports[2], ports[3]]);
        if proto == IPPROTO_TCP {
            tcp_flags = ctx.load(l4_offset + 13).ok()?;
        }
    }
    Some(Packet {
        family,
        src,
        dst,
        proto,
        sport,
        dport,
        l4_offset,
        tcp_flags,
    })
}

/// BPF_F_MARK_MANGLED_0: a UDP checksum that becomes 0 is written as 0xffff (0 means "none").
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Flips one random bit of the TCP or UDP payload. With `FIX_CHECKSUM` the L4 checksum is
/// updated and the corruption reaches the application; without, the checksum is stale and a
/// receiver that verifies it drops the packet (software checksums; offloaded ones are trusted).
#[inline(always)]
fn corrupt(ctx: &TcContext, config: &FaultConfig, packet: &Packet) {
    let (payload, checksum) = match packet.proto {
        IPPROTO_UDP => (packet.l4_offset + 8, packet.l4_offset + 6),
        IPPROTO_TCP => {
            let Ok(data_offset) = ctx.load::<u8>(packet.l4_offset + 12) else {
                return;
            };
            (
                packet.l4_offset + usize::from(data_offset >> 4) * 4,
                packet.l4_offset + 16,
            )
        }
        _ => return,
    };
    let len = ctx.len() as usize;
    if len <= payload {
        return;
    }
    let random = random_u32(config);
    let index = payload + ((u64::from(random) * (len - payload) as u64) >> 32) as usize;
    // The 16-bit word (aligned from the L4 header) that holds the byte, for the checksum update.
    let word = packet.l4_offset + ((index - packet.l4_offset) & !1);
    let (Ok(old_word), Ok(byte)) = (ctx.load::<u16>(word), ctx.load::<u8>(index)) else {
        return;
    };
    let flipped = byte ^ (1 << (random_u32(config) & 7));
    if ctx.store(index, &flipped, 0).is_err() {
        return;
    }
    if config.flags & flags::FIX_CHECKSUM != 0
        && let Ok(new_word) = ctx.load::<u16>(word)
    {
        let mangled = if packet.proto == IPPROTO_UDP {
            BPF_F_MARK_MANGLED_0
        } else {
            0
        };
        let _ = ctx.l4_csum_replace(
            checksum,
            u64::from(old_word),
            u64::from(new_word),
            2 | mangled,
        );
    }
}

/// Turns the segment into RST+ACK with the same sequence number, and fixes the TCP checksum, so
/// the receiver resets the connection: its application sees ECONNRESET on the next call.
#[inline(always)]
fn rewrite_into_reset(ctx: &TcContext, packet: &Packet) {
    let word_offset = packet.l4_offset + 12;
    let Ok(old_word) = ctx.load::<u16>(word_offset) else {
        return;
    };
    // Byte 12 (data offset) stays, byte 13 (the flags) becomes RST+ACK; both in network order.
    let mut bytes = old_word.to_ne_bytes();
    bytes[1] = TCP_RST | TCP_ACK;
    let new_word = u16::from_ne_bytes(bytes);
    if ctx.store(word_offset, &new_word, 0).is_ok() {
        let _ = ctx.l4_csum_replace(
            packet.l4_offset + 16,
            u64::from(old_word),
            u64::from(new_word),
            2,
        );
    }
}
