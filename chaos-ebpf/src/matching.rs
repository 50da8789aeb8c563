//! The decision shared by every mechanism: does this operation match a rule's filters, and does
//! the probability draw say inject? Filters of all rules share tries keyed by rule index.
use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    maps::lpm_trie::Key,
};
use chaos_common::{
    AF_INET, AF_INET6, Counter, FILTER_KEY_PREFIX_BITS, FaultConfig, LossState, MAX_CGROUP_LEVELS,
    MAX_RULES_PER_DESTINATION, RuleList, ScopeKey, addr_key, filter_field, flags, port_key,
};

use crate::{
    maps::{ADDR_V4, ADDR_V6, CONFIG, CONTROL, LOSS_STATE, PORTS, SCOPE_LEVELS, SCOPES},
    telemetry::{Subject, count, emit},
};

/// The remote end of a connection or packet, as the filters see it.
pub struct Peer {
    pub family: u16,
    /// IPv4 in the first four bytes, network order.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    pub proto: u8,
}

/// One armed rule: its index (for its filters, counters and state) and its configuration.
#[derive(Clone, Copy)]
pub struct Rule {
    pub index: u32,
    pub config: &'static FaultConfig,
}

/// The kill switch (see [`chaos_common::maps::CONTROL`]): every program asks this first, so a
/// flipped switch costs an operation one array read. A missing entry counts as killed.
#[inline(always)]
pub fn killed() -> bool {
    CONTROL
        .get(chaos_common::CONTROL_KILL)
        .is_none_or(|switch| *switch != 0)
}

/// Whether the object has duplicate rules, so a packet may be one of its own duplicates.
#[inline(always)]
pub fn duplicates_armed() -> bool {
    CONTROL
        .get(chaos_common::CONTROL_DUPLICATE)
        .is_some_and(|armed| *armed != 0)
}

/// Whether the object has DNS rules, so packets to their ports are read as queries.
#[inline(always)]
pub fn dns_armed() -> bool {
    CONTROL
        .get(chaos_common::CONTROL_DNS)
        .is_some_and(|armed| *armed != 0)
}

/// Rule `index`, or `None` while userspace is still filling its filters or after it disarmed it.
#[inline(always)]
pub fn armed_rule(index: u32) -> Option<Rule> {
    let config = CONFIG.get(index)?;
    (config.armed != 0).then_some(Rule { index, config })
}

/// The rules for `hook` of the deepest scoped cgroup the operation belongs to: `ancestor(level)`
/// is the id of the task's (or socket's) cgroup ancestor at that level, 0 above its own depth.
/// Only levels some scope sits at are asked, so with no fault armed this is one array read.
#[inline(always)]
pub fn scoped_rules(hook: u32, ancestor: impl Fn(u32) -> u64) -> Option<&'static RuleList> {
    let levels = *SCOPE_LEVELS.get(0)?;
    if levels == 0 {
        return None;
    }
    for step in 0..MAX_CGROUP_LEVELS {
        let level = MAX_CGROUP_LEVELS - 1 - step;
        if levels & (1 << level) == 0 {
            continue;
        }
        let cgroup_id = ancestor(level);
        if cgroup_id == 0 {
            continue;
        }
        let key = ScopeKey {
            cgroup_id,
            hook,
            _pad: 0,
        };
        // SAFETY: the value is only read, and map values stay valid for the program's run.
        if let Some(list) = unsafe { SCOPES.get(key) } {
            return Some(list);
        }
    }
    None
}

/// The first armed rule of the list, whose configuration tells kernel offsets the same for all.
#[inline(always)]
pub fn first_armed(list: &RuleList) -> Option<Rule> {
    for slot in 0..MAX_RULES_PER_DESTINATION {
        if slot as u32 >= list.count {
            return None;
        }
        if let Some(rule) = armed_rule(list.rules[slot]) {
            return Some(rule);
        }
    }
    None
}

/// The first rule of the list whose filters and draw say inject (counted and reported), if any.
/// Rules after it do not see the operation: one fault acts on it, the earliest armed.
#[inline(always)]
pub fn first_strike(
    list: &RuleList,
    peer: &Peer,
    applies: impl Fn(Rule) -> bool,
    subject: impl Fn(Rule) -> Subject,
) -> Option<Rule> {
    for slot in 0..MAX_RULES_PER_DESTINATION {
        if slot as u32 >= list.count {
            return None;
        }
        let Some(rule) = armed_rule(list.rules[slot]) else {
            continue;
        };
        if applies(rule) && peer_matches(rule, peer) && strike(rule, peer, || subject(rule)) {
            return Some(rule);
        }
    }
    None
}

/// An operation passed the rule's filters: `None` past the rule's deadline (the rule is then as
/// if absent, whatever userspace does), else it counts as matched, and the time is returned for
/// the event. The clock is read only here, so operations the filters reject never pay for it.
#[inline(always)]
pub fn matched(rule: Rule) -> Option<u64> {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now >= rule.config.expires_ns {
        return None;
    }
    count(rule, Counter::Matched);
    Some(now)
}

/// The fault applies: count it and report it. The subject is built only now (it costs helpers).
#[inline(always)]
pub fn injected(rule: Rule, now: u64, peer: &Peer, subject: impl FnOnce() -> Subject) {
    count(rule, Counter::Injected);
    emit(rule, now, peer, &subject());
}

/// matched, probability draw, injected, event: the whole decision after the filters for the
/// syscall and cgroup_skb paths (TC puts its loss model in place of the draw). True when the
/// fault applies.
#[inline(always)]
pub fn strike(rule: Rule, peer: &Peer, subject: impl FnOnce() -> Subject) -> bool {
    let Some(now) = matched(rule) else {
        return false;
    };
    if !draw(rule, rule.config.probability) {
        return false;
    }
    injected(rule, now, peer, subject);
    // A dry run counted and reported it; the caller leaves the operation alone.
    rule.config.flags & flags::DRY_RUN == 0
}

/// Proto, peer port and peer address filters (syscall and cgroup_skb faults).
#[inline(always)]
pub fn peer_matches(rule: Rule, peer: &Peer) -> bool {
    let config = rule.config;
    if config.proto != 0 && config.proto != u32::from(peer.proto) {
        return false;
    }
    address_matches(rule, peer)
}

/// The peer port and address filters alone.
#[inline(always)]
pub fn address_matches(rule: Rule, peer: &Peer) -> bool {
    let config = rule.config;
    if config.flags & flags::MATCH_PORT != 0 && !port_matches(rule, filter_field::PEER, peer.port) {
        return false;
    }
    if config.flags & flags::MATCH_PEER != 0
        && !addr_matches(rule, filter_field::PEER, peer.family, &peer.addr)
    {
        return false;
    }
    true
}

/// Whether `port` lies in one of the rule's port ranges for `field` (ranges are stored as
/// prefixes, so this is one lookup whatever their number).
#[inline(always)]
pub fn port_matches(rule: Rule, field: u8, port: u16) -> bool {
    PORTS
        .get(Key::new(
            FILTER_KEY_PREFIX_BITS + 16,
            port_key(rule.index, field, port),
        ))
        .is_some()
}

/// Whether `addr` lies in one of the rule's CIDRs for `field`.
#[inline(always)]
pub fn addr_matches(rule: Rule, field: u8, family: u16, addr: &[u8; 16]) -> bool {
    match family {
        AF_INET => ADDR_V4
            .get(Key::new(
                FILTER_KEY_PREFIX_BITS + 32,
                addr_key(rule.index, field, [addr[0], addr[1], addr[2], addr[3]]),
            ))
            .is_some(),
        AF_INET6 => ADDR_V6
            .get(Key::new(
                FILTER_KEY_PREFIX_BITS + 128,
                addr_key(rule.index, field, *addr),
            ))
            .is_some(),
        _ => false,
    }
}

/// A uniformly random u32: from the kernel, or with `--seed` the next value of a sequence that is
/// the same for the same seed and the same order of draws.
#[inline(always)]
pub fn random_u32(rule: Rule) -> u32 {
    if rule.config.flags & flags::SEEDED == 0 {
        // SAFETY: the helper has no preconditions.
        return unsafe { bpf_get_prandom_u32() };
    }
    let n = next(rule, LossState::Draws);
    // splitmix64 of (seed + n * golden gamma): independent, well-mixed values per index.
    let mut z = rule
        .config
        .packet
        .seed
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// True with probability `threshold / 2^32`.
#[inline(always)]
pub fn draw(rule: Rule, threshold: u64) -> bool {
    u64::from(random_u32(rule)) < threshold
}

/// Increments one of the rule's loss-state slots and returns its previous value.
///
/// A plain read-modify-write: the generic BPF CPU that aya-build targets cannot use the result of
/// an atomic add. Exact while one CPU handles the traffic (a flow usually stays on one); CPUs
/// racing on the same slot can repeat a value, skewing every-nth or first-n by a packet.
#[inline(always)]
pub fn next(rule: Rule, slot: LossState) -> u64 {
    match LOSS_STATE.get_ptr_mut(state_index(rule, slot)) {
        // SAFETY: the map value is a live, aligned u64.
        Some(ptr) => unsafe {
            let previous = *ptr;
            *ptr = previous + 1;
            previous
        },
        None => 0,
    }
}

#[inline(always)]
pub fn state_index(rule: Rule, slot: LossState) -> u32 {
    rule.index * LossState::COUNT + slot as u32
}
