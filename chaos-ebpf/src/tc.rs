//! Packet faults at the TC layer, for whole interfaces, a pod's host-side veth, or a cgroup's
//! packets: drop (with loss models), delay, TCP reset, corruption, and DNS errors and delays. Every TC fault of a run is a
//! rule of one rule set, attached once per interface and direction. Per packet, one trie lookup
//! on the destination gives the few rules that can match it (however many rules there are); each
//! is checked in order, and the actions of all that fire combine: a drop ends the packet,
//! delays add up, reset and corruption rewrite it.
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_ktime_get_ns,
        generated::{
            bpf_clone_redirect, bpf_get_hash_recalc, bpf_redirect, bpf_skb_ancestor_cgroup_id,
        },
    },
    macros::classifier,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use chaos_common::{
    AF_INET, AF_INET6, DIRECTION_EGRESS, DIRECTION_INGRESS, DIST_TABLE_SIZE, FaultKind, LossState,
    MAX_DELAY_NS, MAX_RULES_PER_DESTINATION, RuleList, filter_field, flags, jitter, loss_model,
    proto,
};

use crate::{
    dns,
    maps::{CLONING, DIST, FLOWS, LOSS_STATE, TC_INDEX_V4, TC_INDEX_V6},
    matching::{
        Peer, Rule, addr_matches, armed_rule, draw, duplicates_armed, injected, killed, matched,
        next, port_matches, random_u32,
    },
    telemetry::Subject,
};

/// "No verdict": the next tcx program, clsact filter or the default action decides, so other
/// tools' programs keep working.
const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[classifier]
pub fn chaos_tc_out(ctx: TcContext) -> i32 {
    decide(&ctx, DIRECTION_EGRESS)
}

#[classifier]
pub fn chaos_tc_in(ctx: TcContext) -> i32 {
    decide(&ctx, DIRECTION_INGRESS)
}

/// What the filters need from a packet (ethernet framing: veth, physical NICs, lo).
struct Packet {
    family: u16,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    /// 0 without a TCP or UDP header (other protocols, and IPv4 fragments after the first, whose
    /// payload would otherwise be read as ports). Ports and flags then stay 0, which no port
    /// filter (ranges start at 1) and no TCP-flags filter matches.
    sport: u16,
    dport: u16,
    l4_offset: usize,
    tcp_flags: u8,
}

/// `evaluate`'s answer: [`DROPPED`], [`ANSWER`] with an rcode, or the delay to add (0 for none) with [`KEEP_ORDER`] set
/// when a delay rule matched the packet and its flow's order must be kept.
const DROPPED: u64 = u64::MAX;
/// A DNS query lost without a trace (dns-error's timeout).
const LOST: u64 = u64::MAX - 1;
/// A DNS query to be answered with the response code in the low bits: it goes back where it came
/// from. The answer is made after the rules' loop, so the verifier checks that code once rather
/// than for every rule slot.
const ANSWER: u64 = 1 << 63;
/// BPF_F_INGRESS: a redirect into the interface's receive path instead of out of it.
const BPF_F_INGRESS: u64 = 1;
/// lo's ifindex, in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
const KEEP_ORDER: u64 = 1 << 62;
/// A duplicate rule fired: the packet is sent twice.
const DUPLICATE: u64 = 1 << 61;
const DELAY_MASK: u64 = DUPLICATE - 1;
/// The bits that combine over rules by "or".
const MARKS: u64 = KEEP_ORDER | DUPLICATE;

#[inline(always)]
fn decide(ctx: &TcContext, direction: u8) -> i32 {
    if killed() || (duplicates_armed() && sending_a_duplicate()) {
        return TC_ACT_UNSPEC;
    }
    // Into per-CPU memory, for the DNS rules among the candidates (see DnsWork).
    dns::read_question(ctx.skb.skb);
    let headers = Headers::of(ctx);
    let Some(mut packet) = network(&headers) else {
        return TC_ACT_UNSPEC;
    };
    let Some(candidates) = rules_covering(&packet) else {
        return TC_ACT_UNSPEC;
    };
    // The transport header only for packets some rule may match.
    if transport(&headers, &mut packet).is_none() {
        return TC_ACT_UNSPEC;
    }
    // Only a scalar crosses iterations (delays summed, the order bit or-ed in), so the verifier
    // can prune each rule's evaluation.
    let mut answers = 0u64;
    let count = candidates.count as usize;
    for i in 0..MAX_RULES_PER_DESTINATION {
        if i >= count {
            break;
        }
        match evaluate(ctx.skb.skb, &packet, candidates.rules[i], direction) {
            DROPPED => return TC_ACT_SHOT,
            LOST => return lose_quietly(),
            answer if answer & ANSWER != 0 => {
                return answer_query(ctx, &packet, direction, (answer & 0x0f) as u32);
            }
            answer => {
                answers = ((answers & DELAY_MASK) + (answer & DELAY_MASK))
                    | (answers & MARKS)
                    | (answer & MARKS)
            }
        }
    }
    if answers & DUPLICATE != 0 {
        duplicate(ctx);
    }
    if answers & DELAY_MASK != 0 {
        delay(
            ctx,
            (answers & DELAY_MASK).min(MAX_DELAY_NS),
            answers & KEEP_ORDER != 0,
        );
    }
    TC_ACT_UNSPEC
}

/// An EDT token bucket (Cilium's bandwidth manager's scheme): each packet leaves its size's
/// worth of time after the rule's previous one, or now if the bucket has caught up, less the
/// burst it may fall behind. Returned as a delay from now, so delays of other rules add to it;
/// a departure past the horizon (what fq would drop) is dropped here, which TCP takes as
/// congestion. The state is shared by all CPUs without a lock: CPUs racing on it can let a packet
/// through early.
#[inline(always)]
fn rate_limited(rule: Rule, now: u64, bytes: u32) -> u64 {
    let params = &rule.config.packet;
    let Some(last) =
        LOSS_STATE.get_ptr_mut(crate::matching::state_index(rule, LossState::Departure))
    else {
        return 0;
    };
    let rate = params.rate_bytes_per_sec.max(1);
    let spacing = u64::from(bytes) * 1_000_000_000 / rate;
    // SAFETY: a live map value of this array.
    let previous = unsafe { *last };
    let floor = now.saturating_sub(params.burst_ns);
    let departure = previous.max(floor) + spacing;
    if departure <= now {
        // SAFETY: as above.
        unsafe { *last = departure };
        return 0;
    }
    if departure - now >= MAX_DELAY_NS {
        return DROPPED;
    }
    // SAFETY: as above.
    unsafe { *last = departure };
    departure - now
}

/// Whether this CPU is sending a duplicate through this hook right now.
#[inline(always)]
fn sending_a_duplicate() -> bool {
    CLONING.get(0).is_some_and(|cloning| *cloning != 0)
}

/// Sends a copy of the packet out of the same interface, before the packet itself. The copy
/// passes this hook again at once, on this CPU (egress transmit is synchronous), and the per-CPU
/// flag lets it through untouched, so it is neither duplicated again nor judged twice.
#[inline(always)]
fn duplicate(ctx: &TcContext) {
    let Some(cloning) = CLONING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry; the context is a valid skb.
    unsafe {
        *cloning = 1;
        let _ = bpf_clone_redirect(ctx.skb.skb, (*ctx.skb.skb).ifindex, 0);
        *cloning = 0;
    }
}

/// Loses the packet as the wire would: the sender's send succeeds. (TC_ACT_SHOT at egress is
/// reported to a socket with IP_RECVERR, which glibc's resolver sets, as ENOBUFS: a fast failure,
/// not the timeout of a lost query; and tcx treats TC_ACT_STOLEN as "next program".) A redirect
/// to ifindex 0, which no device has, is dropped by the kernel after the sender was told success.
#[inline(always)]
fn lose_quietly() -> i32 {
    // SAFETY: the helper takes any ifindex.
    unsafe { bpf_redirect(0, 0) as i32 }
}

/// Rewrites the query into its answer and sends it back: out of an interface, back in through
/// it; into a pod's host-side veth (the pod's egress), back out to the pod; out of lo, out again,
/// as lo turns every packet around (its route to a local address is kept that way, where lo's
/// receive path would drop a loopback source as a martian). A query that cannot be rewritten is
/// lost instead.
#[inline(never)]
fn answer_query(ctx: &TcContext, packet: &Packet, direction: u8, rcode: u32) -> i32 {
    let header = dns::current().map_or(0, |question| question.header as usize);
    if header == 0 || !dns::answer(ctx, packet.family, packet.l4_offset, header, rcode) {
        return lose_quietly();
    }
    // SAFETY: the context is a valid skb.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let into = if direction == DIRECTION_EGRESS && ifindex != LOOPBACK_IFINDEX {
        BPF_F_INGRESS
    } else {
        0
    };
    // SAFETY: the helper takes any ifindex.
    unsafe { bpf_redirect(ifindex, into) as i32 }
}

#[inline(always)]
fn is_dns(kind: u32) -> bool {
    kind == FaultKind::DnsError as u32 || kind == FaultKind::DnsDelay as u32
}

/// The one lookup that narrows all rules down to those whose destination covers the packet's.
#[inline(always)]
fn rules_covering(packet: &Packet) -> Option<&'static RuleList> {
    let dst = &packet.dst;
    match packet.family {
        AF_INET => TC_INDEX_V4.get(Key::new(32, [dst[0], dst[1], dst[2], dst[3]])),
        AF_INET6 => TC_INDEX_V6.get(Key::new(128, *dst)),
        _ => None,
    }
}

/// Checks one candidate rule and, when it fires, applies it: reset and corrupt rewrite the packet
/// here. A real BPF-to-BPF call, not inlined: the verifier then checks it once per kind of state
/// instead of once per loop turn.
#[inline(never)]
fn evaluate(skb: *mut __sk_buff, packet: &Packet, index: u32, direction: u8) -> u64 {
    let ctx = TcContext::new(skb);
    let Some(rule) = armed_rule(index) else {
        return 0;
    };
    let config = rule.config;
    let egress = direction == DIRECTION_EGRESS;
    let direction_flag = if egress {
        flags::EGRESS
    } else {
        flags::INGRESS
    };
    // SAFETY: the context is a valid skb for this program type.
    let ifindex = unsafe { (*skb).ifindex };
    if config.flags & direction_flag == 0 || (config.ifindex != 0 && config.ifindex != ifindex) {
        return 0;
    }
    if !matches(rule, skb, packet) {
        return 0;
    }
    let Some(now) = matched(rule) else {
        return 0;
    };
    let is_delay =
        config.kind == FaultKind::Delay as u32 || config.kind == FaultKind::DnsDelay as u32;
    let order = if is_delay && config.flags & flags::KEEP_ORDER != 0 {
        KEEP_ORDER
    } else {
        0
    };
    if !lose(rule) {
        return order;
    }
    let peer = Peer {
        family: packet.family,
        addr: if egress { packet.dst } else { packet.src },
        port: if egress { packet.dport } else { packet.sport },
        proto: packet.proto,
    };
    injected(rule, now, &peer, || Subject {
        cgroup_id: 0,
        pid: 0,
        comm: [0; 16],
        errno: 0,
        direction,
    });
    if config.flags & flags::DRY_RUN != 0 {
        return order;
    }
    match config.kind {
        k if k == FaultKind::Reset as u32 => {
            rewrite_into_reset(&ctx, packet);
            0
        }
        _ if is_delay => jittered(rule) | order,
        k if k == FaultKind::Corrupt as u32 => {
            corrupt(&ctx, rule, packet);
            0
        }
        // Answered after the loop, once: see `decide`.
        // Egress only (userspace refuses ingress), as delay.
        k if k == FaultKind::Bandwidth as u32 => {
            if egress {
                rate_limited(rule, now, ctx.len())
            } else {
                0
            }
        }
        // Egress only (userspace refuses ingress): the copy's pass is then synchronous.
        k if k == FaultKind::Duplicate as u32 => {
            if egress {
                DUPLICATE
            } else {
                0
            }
        }
        k if k == FaultKind::DnsError as u32 => {
            if config.flags & flags::DNS_DROP != 0 {
                LOST
            } else {
                ANSWER | u64::from(config.packet.dns_rcode & 0x0f)
            }
        }
        _ => DROPPED,
    }
}

/// Earliest Departure Time: the packet's `tstamp` says when fq may send it. With `keep_order`
/// (jitter, or some of the flow's packets not delayed), a flow's packets never depart before its
/// previous one, so the flow keeps its order; fq would otherwise send an earlier departure first.
#[inline(always)]
fn delay(ctx: &TcContext, delay_ns: u64, keep_order: bool) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the context is a valid skb; TCP may already have paced it into the future.
    let base = unsafe { (*ctx.skb.skb).tstamp }.max(now);
    let mut departure = base + delay_ns;
    if keep_order {
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
    }
    if departure > now {
        // SAFETY: TC programs may write tstamp; at egress it is the (monotonic) departure time.
        unsafe { (*ctx.skb.skb).tstamp = departure };
    }
}

/// The rule's delay plus jitter: uniform in [-jitter, +jitter], or `jitter` times a value drawn
/// from the distribution's table (netem's approach: exact quantiles computed in userspace);
/// never below zero.
#[inline(always)]
fn jittered(rule: Rule) -> u64 {
    let params = &rule.config.packet;
    let (delay, spread) = (params.delay_ns, params.jitter_ns);
    if spread == 0 {
        return delay;
    }
    let r = u64::from(random_u32(rule));
    let offset: i64 = if params.distribution == jitter::UNIFORM {
        // r * width / 2^32 without overflowing 64 bits (width reaches 2^34 for 5 s of jitter).
        let width = 2 * spread + 1;
        ((r * (width >> 32)) + ((r * (width & 0xffff_ffff)) >> 32)) as i64 - spread as i64
    } else {
        let table = params
            .distribution
            .saturating_sub(1)
            .min(jitter::TABLES - 1);
        let index = table * DIST_TABLE_SIZE + ((r * u64::from(DIST_TABLE_SIZE)) >> 32) as u32;
        let units = DIST.get(index).copied().unwrap_or(0);
        // units / DIST_SCALE jitters; DIST_SCALE is 2^12 (a shift: BPF has no signed division).
        (i64::from(units) * spread as i64) >> 12
    };
    (delay as i64 + offset).max(0) as u64
}

/// The rule's filters beyond the destination, which the index already checked: the cheap
/// comparisons first, then the cgroup helper, then the tries.
#[inline(always)]
fn matches(rule: Rule, skb: *mut __sk_buff, packet: &Packet) -> bool {
    let config = rule.config;
    let proto_ok = match config.proto {
        0 => true,
        p if p == u32::from(proto::ICMP) => {
            packet.proto == proto::ICMP || packet.proto == proto::ICMPV6
        }
        p => p == u32::from(packet.proto),
    };
    if !proto_ok {
        return false;
    }
    // A reset needs an established flow: a TCP header that is not a SYN (that would be a
    // refused connection, which connect-error models) and not a reset already.
    if config.kind == FaultKind::Reset as u32
        && (packet.proto != proto::TCP
            || packet.l4_offset == 0
            || packet.tcp_flags & (TCP_RST | TCP_SYN) != 0)
    {
        return false;
    }
    if is_dns(config.kind) {
        let params = &config.packet;
        let Some(question) = dns::current() else {
            return false;
        };
        if (question.rules >> (params.dns_slot & 63)) & 1 == 0
            || (params.dns_qtype != 0 && params.dns_qtype != question.qtype)
        {
            return false;
        }
        // An answer is made for UDP; over TCP a query can only be lost or delayed.
        if config.kind == FaultKind::DnsError as u32
            && config.flags & flags::DNS_DROP == 0
            && packet.proto != proto::UDP
        {
            return false;
        }
    }
    if config.flags & flags::MATCH_TCP_FLAGS != 0
        && (packet.proto != proto::TCP
            || u32::from(packet.tcp_flags) & config.packet.tcp_flags == 0)
    {
        return false;
    }
    // With a cgroup scope, only packets of that subtree's sockets match.
    if config.flags & flags::SCOPE_CGROUP != 0
        // SAFETY: the context is a valid skb for this program type.
        && unsafe { bpf_skb_ancestor_cgroup_id(skb, config.scope_cgroup_level as i32) }
            != config.scope_cgroup_id
    {
        return false;
    }
    if config.flags & flags::MATCH_PORT != 0
        && !port_matches(rule, filter_field::PEER, packet.dport)
    {
        return false;
    }
    if config.flags & flags::MATCH_SPORT != 0
        && !port_matches(rule, filter_field::SOURCE, packet.sport)
    {
        return false;
    }
    if config.flags & flags::MATCH_SRC != 0
        && !addr_matches(rule, filter_field::SOURCE, packet.family, &packet.src)
    {
        return false;
    }
    true
}

/// The loss model's verdict for one matching packet, then the `--probability` gate.
#[inline(always)]
fn lose(rule: Rule) -> bool {
    let params = &rule.config.packet;
    let model_says = match params.loss_model {
        loss_model::EVERY_NTH => {
            (next(rule, LossState::Seen) + 1).is_multiple_of(u64::from(params.loss_n.max(1)))
        }
        loss_model::FIRST_N => next(rule, LossState::Seen) < u64::from(params.loss_n),
        loss_model::GILBERT_ELLIOTT => gilbert_elliott(rule),
        _ => true,
    };
    model_says && draw(rule, rule.config.probability)
}

/// Two-state Markov loss as netem's gemodel: move between good and bad with p and r, then lose
/// with 1-k in the good state and 1-h in the bad one.
#[inline(always)]
fn gilbert_elliott(rule: Rule) -> bool {
    let params = &rule.config.packet;
    let Some(state) = LOSS_STATE.get_ptr_mut(crate::matching::state_index(rule, LossState::Bad))
    else {
        return false;
    };
    // SAFETY: a live map value; a racing update from another CPU only perturbs the chain.
    let bad = unsafe { *state } != 0;
    let bad = if bad {
        random_u32(rule) >= params.ge_r
    } else {
        random_u32(rule) < params.ge_p
    };
    // SAFETY: as above.
    unsafe { *state = u64::from(bad) };
    let deliver = if bad { params.ge_h } else { params.ge_k };
    random_u32(rule) >= deliver
}

/// The header bytes read in place when they are linear: Ethernet, IP and TCP up to its flags;
/// IPv4 (without options) needs 48 of them, IPv6 68.
const IPV4_HEADER_BYTES: usize = ETH_HLEN + 20 + 14;
const IPV6_HEADER_BYTES: usize = ETH_HLEN + 40 + 14;
/// Where TCP/UDP starts after IPv4 without options, and after IPv6 without extension headers.
const L4_AFTER_IPV4: usize = ETH_HLEN + 20;
const L4_AFTER_IPV6: usize = ETH_HLEN + 40;
/// IPv4's fragment offset bits: non-zero for every fragment but the first.
const IPV4_FRAGMENT_OFFSET: u16 = 0x1fff;

/// Where the parser reads a packet's headers from.
struct Headers<'a> {
    ctx: &'a TcContext,
    /// The packet's start, and how many bytes from it are linear (IPV6_HEADER_BYTES,
    /// IPV4_HEADER_BYTES or 0), each checked once against data_end. The verifier accepts reads
    /// at constant offsets within that; a variable offset would need its own check, so those go
    /// through the helper.
    start: usize,
    linear: usize,
}

impl<'a> Headers<'a> {
    #[inline(always)]
    fn of(ctx: &'a TcContext) -> Self {
        let (start, end) = (ctx.data(), ctx.data_end());
        let linear = if start + IPV6_HEADER_BYTES <= end {
            IPV6_HEADER_BYTES
        } else if start + IPV4_HEADER_BYTES <= end {
            IPV4_HEADER_BYTES
        } else {
            0
        };
        Self { ctx, start, linear }
    }

    /// The field at `offset`, which must be a constant at the (inlined) call site: in place
    /// when the headers are linear that far.
    #[inline(always)]
    fn fixed<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset + size_of::<T>() <= self.linear {
            // SAFETY: within the linear bytes, which were checked against data_end. A plain
            // load, as C programs read headers: the verifier allows any alignment without
            // strict alignment, and x86_64 and arm64 load unaligned words. (An unaligned read
            // would compile to a byte-by-byte loop, which is most of a parse's cost.)
            Some(unsafe { core::ptr::read((self.start + offset) as *const T) })
        } else {
            self.ctx.load(offset).ok()
        }
    }

    /// The ports and TCP flags: in place after an IPv4 header without options or after IPv6,
    /// through the helper after IPv4 options (each arm keeps its offsets constant).
    #[inline(always)]
    fn ports_and_flags(&self, l4_offset: usize, tcp: bool) -> Option<([u16; 2], u8)> {
        let read = |ports: Option<[u16; 2]>, flags: Option<u8>| {
            Some((ports?, if tcp { flags? } else { 0 }))
        };
        match l4_offset {
            L4_AFTER_IPV4 => read(self.fixed(L4_AFTER_IPV4), self.fixed(L4_AFTER_IPV4 + 13)),
            L4_AFTER_IPV6 => read(self.fixed(L4_AFTER_IPV6), self.fixed(L4_AFTER_IPV6 + 13)),
            _ => read(
                self.ctx.load(l4_offset).ok(),
                self.ctx.load(l4_offset + 13).ok(),
            ),
        }
    }
}

/// An IPv6 address read as four words, as the byte array the filters use.
#[inline(always)]
fn words_to_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    bytes
}

/// The network layer: family, addresses, protocol and where the transport header starts.
#[inline(always)]
fn network(headers: &Headers<'_>) -> Option<Packet> {
    let ethertype = u16::from_be(headers.fixed::<u16>(12)?);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (family, proto, l4_offset, first_fragment) = match ethertype {
        ETH_P_IP => {
            let version_ihl: u8 = headers.fixed(ETH_HLEN)?;
            let header_words = usize::from(version_ihl & 0x0f);
            if header_words < 5 {
                return None;
            }
            let fragment: u16 = u16::from_be(headers.fixed(ETH_HLEN + 6)?);
            let proto: u8 = headers.fixed(ETH_HLEN + 9)?;
            let [from, to]: [u32; 2] = headers.fixed(ETH_HLEN + 12)?;
            src[..4].copy_from_slice(&from.to_ne_bytes());
            dst[..4].copy_from_slice(&to.to_ne_bytes());
            let first = fragment & IPV4_FRAGMENT_OFFSET == 0;
            (AF_INET, proto, ETH_HLEN + header_words * 4, first)
        }
        ETH_P_IPV6 => {
            // Extension headers are not walked: such packets match on addresses only.
            let proto: u8 = headers.fixed(ETH_HLEN + 6)?;
            src = words_to_bytes(headers.fixed(ETH_HLEN + 8)?);
            dst = words_to_bytes(headers.fixed(ETH_HLEN + 24)?);
            (AF_INET6, proto, L4_AFTER_IPV6, true)
        }
        _ => return None,
    };
    let has_l4 = first_fragment && (proto == proto::TCP || proto == proto::UDP);
    Some(Packet {
        family,
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        l4_offset: if has_l4 { l4_offset } else { 0 },
        tcp_flags: 0,
    })
}

/// The transport layer's ports and TCP flags, where there is one.
#[inline(always)]
fn transport(headers: &Headers<'_>, packet: &mut Packet) -> Option<()> {
    if packet.l4_offset != 0 {
        let (ports, flags) =
            headers.ports_and_flags(packet.l4_offset, packet.proto == proto::TCP)?;
        packet.sport = u16::from_be(ports[0]);
        packet.dport = u16::from_be(ports[1]);
        packet.tcp_flags = flags;
    }
    Some(())
}

/// BPF_F_MARK_MANGLED_0: a UDP checksum that becomes 0 is written as 0xffff (0 means "none").
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Flips one random bit of the TCP or UDP payload. With `FIX_CHECKSUM` the L4 checksum is
/// updated and the corruption reaches the application; without, the checksum is stale and a
/// receiver that verifies it drops the packet (software checksums; offloaded ones are trusted).
#[inline(always)]
fn corrupt(ctx: &TcContext, rule: Rule, packet: &Packet) {
    if packet.l4_offset == 0 {
        return;
    }
    let (payload, checksum) = match packet.proto {
        proto::UDP => (packet.l4_offset + 8, packet.l4_offset + 6),
        proto::TCP => {
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
    let random = random_u32(rule);
    let index = payload + ((u64::from(random) * (len - payload) as u64) >> 32) as usize;
    // The 16-bit word (aligned from the L4 header) that holds the byte, for the checksum update.
    let word = packet.l4_offset + ((index - packet.l4_offset) & !1);
    let (Ok(old_word), Ok(byte)) = (ctx.load::<u16>(word), ctx.load::<u8>(index)) else {
        return;
    };
    let flipped = byte ^ (1 << (random_u32(rule) & 7));
    if ctx.store(index, &flipped, 0).is_err() {
        return;
    }
    if rule.config.flags & flags::FIX_CHECKSUM != 0
        && let Ok(new_word) = ctx.load::<u16>(word)
    {
        let mangled = if packet.proto == proto::UDP {
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
