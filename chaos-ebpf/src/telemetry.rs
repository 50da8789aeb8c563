//! Exact per-CPU counters, and sampled events through the ring buffer.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
};
use chaos_common::{Counter, Event};

use crate::{
    maps::{COUNTERS, EVENT_BUDGET, EVENTS},
    matching::{Peer, Rule},
};

#[inline(always)]
pub fn count(rule: Rule, counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(rule.index * Counter::COUNT + counter as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and programs do not nest here.
        unsafe { *slot += 1 };
    }
}

/// Who the injection happened to, where the hook knows it.
pub struct Subject {
    pub cgroup_id: u64,
    pub pid: u32,
    pub comm: [u8; 16],
    pub errno: u32,
    pub direction: u8,
}

impl Subject {
    /// The task making the failed call (syscall faults run in its context).
    #[inline(always)]
    pub fn current_task(errno: u32) -> Self {
        Self {
            // SAFETY: helpers without preconditions.
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
            errno,
            direction: 0,
        }
    }
}

/// Emits one event, unless this CPU used its budget for the current second or the ring is full;
/// either case is counted, so the counters stay exact when events are sampled. `now` is
/// `bpf_ktime_get_ns()`, already read for the rule's deadline.
#[inline(always)]
pub fn emit(rule: Rule, now: u64, peer: &Peer, subject: &Subject) {
    let config = rule.config;
    if config.events_per_sec == 0 {
        return;
    }
    if !take_budget(rule, now, config.events_per_sec) {
        count(rule, Counter::EventsSampledOut);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(rule, Counter::EventsLost);
        return;
    };
    entry.write(Event {
        ktime_ns: now,
        cgroup_id: subject.cgroup_id,
        fault_id: config.fault_id,
        kind: config.kind,
        pid: subject.pid,
        errno: subject.errno,
        peer_addr: peer.addr,
        peer_port: peer.port,
        family: peer.family,
        proto: peer.proto,
        direction: subject.direction,
        _pad: [0; 2],
        comm: subject.comm,
    });
    entry.submit(0);
}

#[inline(always)]
fn take_budget(rule: Rule, now: u64, per_second: u32) -> bool {
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(rule.index) else {
        return false;
    };
    // SAFETY: per-CPU slot, see `count`.
    let budget = unsafe { &mut *budget };
    let window = now / 1_000_000_000;
    if budget.window != window {
        budget.window = window;
        budget.emitted = 0;
    }
    if budget.emitted >= u64::from(per_second) {
        return false;
    }
    budget.emitted += 1;
    true
}
