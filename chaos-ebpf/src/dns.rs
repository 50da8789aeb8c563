//! DNS queries as the TC programs see them: the question's name, looked up once among the names
//! of every DNS rule, and the answer a dns-error rule makes in the kernel and sends back to the
//! asking socket. Only standard queries with one question match: responses, other opcodes, name
//! compression (which queries never use), names longer than DNS allows and truncated packets are
//! left alone.
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::__sk_buff, cty::c_void, helpers::generated::bpf_skb_load_bytes, maps::lpm_trie::Key,
    programs::TcContext,
};
use chaos_common::{
    AF_INET, DNS_ANY_RULE, DNS_NAME_BYTES, DnsKey, DnsName, DnsWork, FILTER_KEY_PREFIX_BITS,
    filter_field, port_key, proto,
};

use crate::{
    maps::{DNS_NAMES, DNS_WORK, PORTS},
    matching::dns_armed,
};

/// The question of the packet at hand, as [`read_question`] left it.
#[derive(Clone, Copy)]
pub struct Question {
    /// The DNS rules (one bit per rule's `dns_slot`) whose names cover the query's name: 0 when
    /// none does, or when the packet is not a query.
    pub rules: u64,
    /// Where the DNS header starts: after the UDP header, or after TCP's length prefix.
    pub header: u32,
    pub qtype: u32,
}

/// The packet's question, read from this CPU's scratch (no stack, so no extra verifier state).
#[inline(always)]
pub fn current() -> Option<Question> {
    let work = DNS_WORK.get(0)?;
    Some(Question {
        rules: work.rules,
        header: work.header,
        qtype: work.qtype,
    })
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV4_FRAGMENT_OFFSET: u16 = 0x1fff;
const HEADER_BYTES: usize = 12;
const QR_RESPONSE: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const RECURSION_DESIRED: u16 = 0x0100;
const RECURSION_AVAILABLE: u16 = 0x0080;
const CHECKING_DISABLED: u16 = 0x0010;
/// Labels longer than this are not labels: 0xc0 starts a compression pointer.
const MAX_LABEL: usize = 63;
/// A name with its root label is at most 255 bytes on the wire.
const MAX_WIRE_NAME: usize = 255;
/// BPF_F_MARK_MANGLED_0: a zero UDP checksum (IPv4's "none") stays zero.
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Reads the packet's DNS question into this CPU's scratch, with the DNS rules its name matches:
/// one trie lookup on the name's labels in reverse order, however many names the rules give. Only
/// while the object has DNS rules, and only for packets to one of their ports. Called first thing
/// with the context alone, and parsing the headers it needs itself, so the verifier checks it
/// from one state rather than once per way the TC parser can end.
#[inline(never)]
pub fn read_question(skb: *mut __sk_buff) {
    if !dns_armed() {
        // No DNS rule in this object, so nothing reads the scratch (the flag is set before any
        // DNS rule is armed).
        return;
    }
    let Some(work) = DNS_WORK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry; a program runs to its end on one CPU.
    let work = unsafe { &mut *work };
    // Until the question is read and matched, no DNS rule matches this packet.
    work.rules = 0;
    let ctx = TcContext::new(skb);
    if let Some((l4_offset, tcp)) = query_transport(&ctx) {
        let _ = question(&ctx, work, l4_offset, tcp);
    }
}

/// Where the TCP or UDP header of a packet to a DNS rule's port starts, and whether it is TCP.
#[inline(always)]
fn query_transport(ctx: &TcContext) -> Option<(usize, bool)> {
    let (l4_offset, protocol) = match u16::from_be(ctx.load::<u16>(12).ok()?) {
        ETH_P_IP => {
            let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
            let header = usize::from(version_ihl & 0x0f) * 4;
            let fragment = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
            if header < 20 || fragment & IPV4_FRAGMENT_OFFSET != 0 {
                return None;
            }
            (ETH_HLEN + header, ctx.load::<u8>(ETH_HLEN + 9).ok()?)
        }
        // Extension headers are not walked: such packets are not read as queries.
        ETH_P_IPV6 => (ETH_HLEN + 40, ctx.load::<u8>(ETH_HLEN + 6).ok()?),
        _ => return None,
    };
    if protocol != proto::UDP && protocol != proto::TCP {
        return None;
    }
    let port = u16::from_be(ctx.load::<u16>(l4_offset + 2).ok()?);
    PORTS.get(Key::new(
        FILTER_KEY_PREFIX_BITS + 16,
        port_key(DNS_ANY_RULE, filter_field::PEER, port),
    ))?;
    Some((l4_offset, protocol == proto::TCP))
}

#[inline(always)]
fn question(ctx: &TcContext, work: &mut DnsWork, l4_offset: usize, tcp: bool) -> Option<()> {
    let header = if tcp {
        let data_offset: u8 = ctx.load(l4_offset + 12).ok()?;
        // DNS over TCP: a two-byte length, then the message.
        l4_offset + usize::from(data_offset >> 4) * 4 + 2
    } else {
        l4_offset + 8
    };
    let flags = u16::from_be(ctx.load::<u16>(header + 2).ok()?);
    let questions = u16::from_be(ctx.load::<u16>(header + 4).ok()?);
    if flags & (QR_RESPONSE | OPCODE) != 0 || questions != 1 {
        return None;
    }
    let name_at = header + HEADER_BYTES;
    // As many of the name's bytes as there are, up to the buffer: a length in [1, 256] the
    // verifier can see, whatever the compiler makes of the comparisons.
    let available = (ctx.len() as usize).checked_sub(name_at)?;
    if available == 0 {
        return None;
    }
    let loaded = ((available.min(DNS_NAME_BYTES) - 1) & 0xff) + 1;
    // SAFETY: `loaded` bytes fit the buffer; the helper checks the packet's bounds.
    let status = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            name_at as u32,
            work.raw.as_mut_ptr() as *mut c_void,
            loaded as u32,
        )
    };
    if status != 0 {
        return None;
    }
    // The labels up to the root: `end` is the name's length without the root byte. The loops
    // keep their state in the scratch (see DnsWork), so each turn ends in one verifier state.
    // SAFETY (every volatile access below): fields of this CPU's scratch entry.
    unsafe { write_volatile(&mut work.end, 0) };
    let mut complete = false;
    for _ in 0..=MAX_WIRE_NAME / 2 {
        let end = unsafe { read_volatile(&work.end) } as usize;
        if end >= loaded || end >= MAX_WIRE_NAME {
            return None;
        }
        let length = usize::from(work.raw[end & 0xff]);
        if length == 0 {
            complete = true;
            break;
        }
        if length > MAX_LABEL {
            return None;
        }
        unsafe { write_volatile(&mut work.end, (end + length + 1) as u32) };
    }
    if !complete {
        return None;
    }
    let end = unsafe { read_volatile(&work.end) } as usize;
    if end >= MAX_WIRE_NAME {
        return None;
    }
    let qtype = u16::from_be(ctx.load::<u16>(name_at + end + 1).ok()?);
    // The key: each label [start, next) moves to end - next, copied from the packet with its
    // length byte, so the labels come in reverse order while each keeps its own.
    unsafe { write_volatile(&mut work.next, 0) };
    let key_start = work.key.name.as_mut_ptr();
    for _ in 0..=MAX_WIRE_NAME / 2 {
        // Both read back each turn, so the compiler cannot drop the bound checks as implied by
        // each other, which older verifiers (6.1) need to see against constants.
        let start = unsafe { read_volatile(&work.next) } as usize;
        let end = unsafe { read_volatile(&work.end) } as usize;
        if start >= end || start >= MAX_WIRE_NAME || end >= MAX_WIRE_NAME {
            break;
        }
        let length = usize::from(work.raw[start & 0xff]) & MAX_LABEL;
        let next = start + 1 + length;
        let at = end.wrapping_sub(next) & 0xff;
        // SAFETY: at most 64 bytes from an offset below 256 of the key's name, which the raw
        // bytes follow in the same scratch entry: within the map value, as the verifier checks.
        let status = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb as *const c_void,
                (name_at + start) as u32,
                key_start.add(at) as *mut c_void,
                (length + 1) as u32,
            )
        };
        if status != 0 {
            return None;
        }
        unsafe { write_volatile(&mut work.next, next as u32) };
    }
    // Lowercase, four bytes at a time and without branches (length bytes are below 64, so only
    // letters change): the rules' names are lowercase.
    let words = work.key.name.as_mut_ptr() as *mut u32;
    for i in 0..DNS_NAME_BYTES / 4 {
        // SAFETY: within the key's name; 4-aligned, as the name's offset in DnsWork is.
        unsafe {
            let word = words.add(i).read();
            words.add(i).write(lowercase(word));
        }
    }
    let end = unsafe { read_volatile(&work.end) } as usize;
    if end >= MAX_WIRE_NAME {
        return None;
    }
    let key = &mut work.key;
    key.name[end] = 0;
    key.prefix_bits = ((end + 1) * 8) as u32;
    // SAFETY: DnsKey has the layout of the trie's key (prefix length, then the data).
    let lookup = unsafe { &*(key as *const DnsKey as *const Key<DnsName>) };
    let entry = DNS_NAMES.get(lookup)?;
    // An entry as long as the name (or its terminator) is the name itself; a shorter one is a
    // domain the name lies under.
    work.rules = if entry.key_bytes as usize >= end {
        entry.at
    } else {
        entry.under
    };
    work.header = header as u32;
    work.qtype = u32::from(qtype);
    Some(())
}

const _: () = assert!(DNS_NAME_BYTES == MAX_WIRE_NAME + 1);
const _: () = assert!(core::mem::offset_of!(chaos_common::DnsWork, key) % 4 == 0);

/// ASCII letters of four bytes lowercased (SWAR): per byte, bit 7 of h + 0x3f says h >= 'A' and
/// bit 7 of h + 0x25 says h > 'Z', where h is the byte without its top bit (so no carry crosses
/// bytes); bytes with the top bit set are left alone.
#[inline(always)]
fn lowercase(word: u32) -> u32 {
    let low = word & 0x7f7f_7f7f;
    let from_a = low + 0x3f3f_3f3f;
    let past_z = low + 0x2525_2525;
    let upper = from_a & !past_z & !word & 0x8080_8080;
    word | (upper >> 2)
}

/// Turns the query into its answer in place: addresses, ports and MACs swapped, the header's QR
/// bit and `rcode` set, the UDP checksum updated (swaps leave it unchanged). The caller redirects
/// it back the way it came. The question (and an EDNS record, echoed as servers do) stays.
#[inline(always)]
pub fn answer(ctx: &TcContext, family: u16, l4_offset: usize, header: usize, rcode: u32) -> bool {
    answer_in_place(ctx, family, l4_offset, header, rcode).is_some()
}

#[inline(always)]
fn answer_in_place(
    ctx: &TcContext,
    family: u16,
    l4_offset: usize,
    header: usize,
    rcode: u32,
) -> Option<()> {
    let old_flags: u16 = ctx.load(header + 2).ok()?;
    let kept = u16::from_be(old_flags) & (OPCODE | RECURSION_DESIRED | CHECKING_DISABLED);
    let new_flags = (QR_RESPONSE | kept | RECURSION_AVAILABLE | (rcode as u16 & 0x0f)).to_be();
    let macs: [[u8; 6]; 2] = ctx.load(0).ok()?;
    ctx.store(0, &[macs[1], macs[0]], 0).ok()?;
    if family == AF_INET {
        let addrs: [u32; 2] = ctx.load(ETH_HLEN + 12).ok()?;
        ctx.store(ETH_HLEN + 12, &[addrs[1], addrs[0]], 0).ok()?;
    } else {
        let addrs: [[u32; 4]; 2] = ctx.load(ETH_HLEN + 8).ok()?;
        ctx.store(ETH_HLEN + 8, &[addrs[1], addrs[0]], 0).ok()?;
    }
    let ports: [u16; 2] = ctx.load(l4_offset).ok()?;
    ctx.store(l4_offset, &[ports[1], ports[0]], 0).ok()?;
    ctx.store(header + 2, &new_flags, 0).ok()?;
    ctx.l4_csum_replace(
        l4_offset + 6,
        u64::from(old_flags),
        u64::from(new_flags),
        2 | BPF_F_MARK_MANGLED_0,
    )
    .ok()
}
