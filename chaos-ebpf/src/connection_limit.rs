//! connection-limit through cgroup hooks: the connect hooks admit a TCP connection or refuse it
//! with the rule's errno (`bpf_set_retval`, as connect-error), and the release hook gives a
//! counted socket's seat back when the socket goes, however it goes: closed, reset by the peer,
//! its process killed. Counting sockets from connect() to their release is what a client's pool
//! sees: a slot is busy from the moment it connects until it is closed.
//!
//! With a seat count, a connection takes the first free seat of its rule by an atomic insert,
//! so CPUs racing for the last seat cannot both win (the generic BPF CPU aya-build targets has
//! no fetching atomics to count with). With a rate, a generic cell rate algorithm (a token
//! bucket kept as the time its next token is due) is updated under a per-rule lock.
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_socket_cookie},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use chaos_common::{LossState, MAX_CONNECTION_SEATS, MAX_RULES_PER_DESTINATION, proto};
use chaos_common::{flags, scope_hook};

use crate::{
    connect::{ALLOW, peer_v4, peer_v6, reject_with},
    maps::{CONN_HELD, CONN_SEATS, LOSS_STATE, RATE_LOCK},
    matching::state_index,
    matching::{Peer, Rule, armed_rule, injected, killed, matched, peer_matches, scoped_rules},
    telemetry::Subject,
};

/// Attempts at a rate rule's lock before the connection is refused: another CPU holds it for a
/// few instructions, so a busy bucket refuses rather than spins.
const LOCK_TRIES: u32 = 8;

#[cgroup_sock_addr(connect4)]
pub fn chaos_limit4(ctx: SockAddrContext) -> i32 {
    admit(&ctx, &peer_v4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn chaos_limit6(ctx: SockAddrContext) -> i32 {
    admit(&ctx, &peer_v6(&ctx))
}

/// A socket of a limited cgroup is released: the seat it holds, if any, is free again. Runs
/// even after the kill switch, so no count outlives its socket.
#[cgroup_sock(sock_release)]
pub fn chaos_limit_rel(ctx: SockContext) -> i32 {
    // SAFETY: the context is this program's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    if let Some(seat) = unsafe { CONN_HELD.get(cookie) }.copied() {
        // Userspace may have emptied the rule's seats (its fault ended) and the seat may be
        // someone else's since: only this socket's own seat is given back.
        // SAFETY: as above.
        if unsafe { CONN_SEATS.get(seat) }.copied() == Some(cookie) {
            let _ = CONN_SEATS.remove(seat);
        }
        let _ = CONN_HELD.remove(cookie);
    }
    1
}

#[inline(always)]
fn admit(ctx: &SockAddrContext, peer: &Peer) -> i32 {
    if killed() || peer.proto != proto::TCP {
        return ALLOW;
    }
    let Some(rules) = scoped_rules(scope_hook::CONNECT_LIMIT, |level| {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    }) else {
        return ALLOW;
    };
    // SAFETY: the context is this program's socket address.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // A socket connecting again (after a failed attempt) already holds its seat.
    // SAFETY: only presence is read.
    if unsafe { CONN_HELD.get(cookie) }.is_some() {
        return ALLOW;
    }
    // The first armed rule whose filters match decides, as for every fault; the seat scan runs
    // once, after the loop, so the verifier walks it once rather than once per rule.
    let mut deciding = None;
    for slot in 0..MAX_RULES_PER_DESTINATION {
        if slot as u32 >= rules.count {
            break;
        }
        let Some(rule) = armed_rule(rules.rules[slot]) else {
            continue;
        };
        if !peer_matches(rule, peer) {
            continue;
        }
        // Past its deadline a rule is as if absent.
        if let Some(now) = matched(rule) {
            deciding = Some((rule, now));
            break;
        }
    }
    let Some((rule, now)) = deciding else {
        return ALLOW;
    };
    let admitted = if rule.config.limit.max_connections > 0 {
        take_seat(rule, cookie)
    } else {
        take_token(rule, now)
    };
    if admitted {
        return ALLOW;
    }
    injected(rule, now, peer, || Subject::current_task(rule.config.errno));
    // A dry run counted and reported the refusal; the connection goes ahead, uncounted.
    if rule.config.flags & flags::DRY_RUN != 0 {
        return ALLOW;
    }
    reject_with(rule.config.errno)
}

/// Takes the first free seat of the rule for the socket; false when every seat is held.
#[inline(always)]
fn take_seat(rule: Rule, cookie: u64) -> bool {
    let seats = rule.config.limit.max_connections;
    for seat in 0..MAX_CONNECTION_SEATS {
        if seat >= seats {
            return false;
        }
        let key = [rule.index, seat];
        if CONN_SEATS
            .insert(key, cookie, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            if CONN_HELD.insert(cookie, key, u64::from(BPF_ANY)).is_err() {
                // Nowhere to note who holds it, so its release could not give it back: the
                // connection is refused rather than counted forever.
                let _ = CONN_SEATS.remove(key);
                return false;
            }
            return true;
        }
    }
    false
}

/// A token of the rule's bucket, if one is due: the generic cell rate algorithm, with `due` the
/// time the next token is due. A connection is admitted while `due` runs at most the burst ahead
/// of now, and moves it one interval on.
#[inline(always)]
fn take_token(rule: Rule, now: u64) -> bool {
    let limit = &rule.config.limit;
    let mut locked = false;
    for _ in 0..LOCK_TRIES {
        if RATE_LOCK
            .insert(rule.index, 1, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            locked = true;
            break;
        }
    }
    if !locked {
        return false;
    }
    let admitted = match LOSS_STATE.get_ptr_mut(state_index(rule, LossState::Departure)) {
        // SAFETY: a live, aligned u64 of this array, written by one CPU at a time (the lock).
        Some(due) => unsafe {
            let next = (*due).max(now);
            if next - now > limit.burst_ns {
                false
            } else {
                *due = next + limit.interval_ns;
                true
            }
        },
        None => false,
    };
    let _ = RATE_LOCK.remove(rule.index);
    admitted
}
