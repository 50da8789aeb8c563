//! The kernel's DNS parser, and the TC header parser it sits on, fuzzed through
//! `BPF_PROG_TEST_RUN`: 120,000 generated packets (queries for matching and other names in any
//! case, with EDNS, truncated, oversized, with label pointers and bad label lengths, several
//! questions, responses, other opcodes, non-DNS payloads on port 53, IPv4 options and fragments,
//! IPv6 extension headers, TCP) run through the real program of a real dns-error fault. A
//! reference parser written here says which must be answered: those come back as the exact
//! answer (addresses, ports and MACs swapped, QR and NXDOMAIN set, a valid UDP checksum) with a
//! redirect; every other packet comes back unchanged with "no verdict"; and the fault's counters
//! equal the number answered.
use std::time::Instant;

use chaos_tests::{Netns, require_root};

const PACKETS: u32 = 120_000;
const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_REDIRECT: i32 = 7;

/// xorshift64*: reproducible packets from a fixed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A query's name as labels; some random, some the fault's, in random case.
fn labels(rng: &mut Rng) -> Vec<Vec<u8>> {
    let pick: &[&[&str]] = &[
        &["payments", "example", "com"],
        &["other", "example", "com"],
        &["db", "internal"],
        &["a", "b", "internal"],
        &["internal"],
        &["payments", "example", "com", "evil"],
        &["xpayments", "example", "com"],
    ];
    let mut name: Vec<Vec<u8>> = if rng.chance(70) {
        pick[rng.below(pick.len() as u64) as usize]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect()
    } else {
        (0..1 + rng.below(6))
            .map(|_| {
                let len = 1 + rng.below(20) as usize;
                rng.bytes(len)
            })
            .collect()
    };
    for label in &mut name {
        for byte in label.iter_mut() {
            if rng.chance(30) {
                *byte = byte.to_ascii_uppercase();
            }
        }
    }
    name
}

/// The DNS message: a query, then perhaps broken in one of the ways a parser must survive.
fn dns_message(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(5) {
        let len = rng.below(80) as usize;
        return rng.bytes(len); // not DNS at all
    }
    let mut message = Vec::new();
    let id = rng.next() as u16;
    let mut flags: u16 = 0x0100;
    if rng.chance(5) {
        flags |= 0x8000; // a response
    }
    if rng.chance(3) {
        flags |= (1 + rng.below(15) as u16) << 11; // another opcode
    }
    let questions: u16 = if rng.chance(4) {
        rng.below(4) as u16
    } else {
        1
    };
    let edns = rng.chance(40);
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&flags.to_be_bytes());
    message.extend_from_slice(&questions.to_be_bytes());
    message.extend_from_slice(&[0, 0, 0, 0, 0, u8::from(edns)]);
    let mut name = labels(rng);
    if rng.chance(3) {
        // Oversized: past 255 bytes on the wire.
        name = (0..5 + rng.below(5)).map(|_| vec![b'x'; 63]).collect();
    }
    for label in &name {
        message.push(label.len() as u8);
        message.extend_from_slice(label);
    }
    match rng.below(100) {
        0..=2 => message.extend_from_slice(&[0xc0, 12]), // a label pointer
        3..=4 => {
            let bad = 64 + rng.below(128) as u8; // a length DNS does not have
            message.push(bad);
            message.extend_from_slice(&rng.bytes(4));
        }
        _ => message.push(0),
    }
    let qtype: u16 = [1, 28, 15, 255][rng.below(4) as usize];
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&[0, 1]);
    if edns {
        message.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8]);
        message.extend_from_slice(&rng.bytes(8));
    }
    if rng.chance(10) {
        let keep = rng.below(message.len() as u64 + 1) as usize;
        message.truncate(keep); // truncated anywhere
    }
    message
}

/// Whether the fault (payments.example.com, *.internal; UDP port 53) must answer this message:
/// the reference the kernel's parser is held to.
fn must_answer(message: &[u8]) -> bool {
    if message.len() < 12 {
        return false;
    }
    let flags = u16::from_be_bytes([message[2], message[3]]);
    let questions = u16::from_be_bytes([message[4], message[5]]);
    if flags & 0xf800 != 0 || questions != 1 {
        return false;
    }
    let mut labels: Vec<Vec<u8>> = Vec::new();
    let mut at = 12;
    loop {
        let Some(&len) = message.get(at) else {
            return false;
        };
        if len == 0 {
            break;
        }
        if len > 63 {
            return false;
        }
        let len = usize::from(len);
        let Some(label) = message.get(at + 1..at + 1 + len) else {
            return false;
        };
        labels.push(label.to_ascii_lowercase());
        at += 1 + len;
        if at - 12 >= 255 {
            return false; // with the root byte, longer than 255
        }
    }
    // The query type must be there too.
    if message.len() < at + 3 {
        return false;
    }
    let exact: Vec<Vec<u8>> = ["payments", "example", "com"]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    labels == exact || (labels.len() >= 2 && labels.last().is_some_and(|l| l == b"internal"))
}

struct Frame {
    bytes: Vec<u8>,
    /// Where the UDP header starts, and whether the reference expects an answer.
    l4: usize,
    answer: bool,
}

fn checksum_add(sum: &mut u32, bytes: &[u8]) {
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        *sum += u32::from(word);
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP checksum of the frame as it stands (with the pseudo-header), 0 when it is valid.
fn udp_checksum_residue(frame: &[u8], v6: bool, l4: usize) -> u16 {
    let mut sum = 0u32;
    let udp = &frame[l4..];
    if v6 {
        checksum_add(&mut sum, &frame[22..54]);
    } else {
        checksum_add(&mut sum, &frame[26..34]);
    }
    sum += 17 + udp.len() as u32;
    checksum_add(&mut sum, udp);
    fold(sum)
}

fn frame(rng: &mut Rng) -> Frame {
    let message = dns_message(rng);
    let v6 = rng.chance(25);
    let tcp = rng.chance(4);
    let port: u16 = if rng.chance(92) {
        53
    } else {
        rng.below(65536) as u16
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    let mut fragment = false;
    let mut extension = false;
    let l4;
    let l4_len = if tcp { 20 } else { 8 } + message.len();
    if v6 {
        extension = rng.chance(8);
        bytes.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        let payload = l4_len + if extension { 8 } else { 0 };
        bytes.extend_from_slice(&(payload as u16).to_be_bytes());
        bytes.push(if extension {
            0
        } else if tcp {
            6
        } else {
            17
        });
        bytes.push(64);
        bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 53]);
        if extension {
            bytes.extend_from_slice(&[if tcp { 6 } else { 17 }, 0, 1, 4, 0, 0, 0, 0]);
        }
        l4 = bytes.len();
    } else {
        let option_words = if rng.chance(10) {
            1 + rng.below(10) as usize
        } else {
            0
        };
        fragment = rng.chance(4);
        bytes.extend_from_slice(&[0x08, 0x00, 0x45 + option_words as u8, 0]);
        let total = 20 + option_words * 4 + l4_len;
        bytes.extend_from_slice(&(total as u16).to_be_bytes());
        bytes.extend_from_slice(&[0, 1]);
        bytes.extend_from_slice(
            &(if fragment {
                0x20u16 + 1 + rng.below(100) as u16
            } else {
                0x4000
            })
            .to_be_bytes(),
        );
        bytes.extend_from_slice(&[64, if tcp { 6 } else { 17 }, 0, 0]);
        bytes.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 53]);
        let mut sum = 0;
        checksum_add(&mut sum, &bytes[14..34]);
        let ip_checksum = fold(sum);
        bytes[24..26].copy_from_slice(&ip_checksum.to_be_bytes());
        bytes.extend(std::iter::repeat_n(1u8, option_words * 4)); // NOPs
        l4 = bytes.len();
    }
    let sport = 1024 + rng.below(60000) as u16;
    bytes.extend_from_slice(&sport.to_be_bytes());
    bytes.extend_from_slice(&port.to_be_bytes());
    if tcp {
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        bytes.extend_from_slice(&(l4_len as u16).to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
    }
    bytes.extend_from_slice(&message);
    if !tcp && (v6 || rng.chance(80)) {
        // A real checksum (IPv4 may also say "none": 0).
        let residue = udp_checksum_residue(&bytes, v6, l4);
        bytes[l4 + 6..l4 + 8].copy_from_slice(&residue.to_be_bytes());
    }
    let answer = !tcp && !fragment && !extension && port == 53 && must_answer(&message);
    Frame { bytes, l4, answer }
}

/// The answer the kernel must make of `query`.
fn expected_answer(query: &Frame) -> Vec<u8> {
    let mut out = query.bytes.clone();
    let v6 = out[12] == 0x86;
    out[0..6].copy_from_slice(&query.bytes[6..12]);
    out[6..12].copy_from_slice(&query.bytes[0..6]);
    let (a, b, len) = if v6 { (22, 38, 16) } else { (26, 30, 4) };
    out[a..a + len].copy_from_slice(&query.bytes[b..b + len]);
    out[b..b + len].copy_from_slice(&query.bytes[a..a + len]);
    let l4 = query.l4;
    out[l4..l4 + 2].copy_from_slice(&query.bytes[l4 + 2..l4 + 4]);
    out[l4 + 2..l4 + 4].copy_from_slice(&query.bytes[l4..l4 + 2]);
    let header = l4 + 8;
    let old = u16::from_be_bytes([out[header + 2], out[header + 3]]);
    let new = 0x8000 | (old & 0x7910) | 0x0080 | 3;
    out[header + 2..header + 4].copy_from_slice(&new.to_be_bytes());
    out
}

/// BPF_PROG_TEST_RUN on the program: (verdict, the packet as the program left it).
fn test_run(fd: i32, packet: &[u8]) -> (i32, Vec<u8>) {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = [0u64; 10];
    // struct { prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat, ... }
    let words = attr.as_mut_ptr() as *mut u32;
    // SAFETY: writes within the zeroed attribute buffer, laid out as the kernel's union bpf_attr.
    unsafe {
        *words = fd as u32;
        *words.add(2) = packet.len() as u32;
        *words.add(3) = out.len() as u32;
    }
    attr[2] = packet.as_ptr() as u64;
    attr[3] = out.as_mut_ptr() as u64;
    // SAFETY: the attribute points at live buffers of the sizes given.
    let status = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            10, /* BPF_PROG_TEST_RUN */
            attr.as_mut_ptr(),
            80,
        )
    };
    assert_eq!(
        status,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel filled retval and data_size_out.
    let (retval, size) = unsafe { (*words.add(1) as i32, *words.add(3) as usize) };
    out.truncate(size);
    (retval, out)
}

/// A descriptor of the loaded program `id` (BPF_PROG_GET_FD_BY_ID).
fn program_fd(id: u32) -> i32 {
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: a bpf_attr with prog_id set.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 13, attr.as_mut_ptr(), 16) };
    assert!(
        fd >= 0,
        "BPF_PROG_GET_FD_BY_ID {id}: {}",
        std::io::Error::last_os_error()
    );
    fd as i32
}

#[test]
fn the_dns_parser_answers_exactly_the_matching_queries_of_120k_generated_packets() {
    require_root();
    let netns = Netns::new("dns-fuzz");
    // An interface rule: BPF_PROG_TEST_RUN's packets have no socket (so no cgroup) and come
    // from lo (ifindex 1), which the rule on this namespace's lo names.
    let run = netns.start_chaos(&[
        "inject",
        "dns-error",
        "--iface",
        "lo",
        "--name",
        "payments.example.com",
        "--name",
        "*.internal",
        "--rcode",
        "nxdomain",
        "--duration",
        "300s",
    ]);
    let id = *run.program_ids().first().expect("the egress program");
    let fd = program_fd(id);
    let mut rng = Rng(0x5eed_d115_c0de_f00d);
    let (mut answered, mut unchanged) = (0u64, 0u64);
    let started = Instant::now();
    for n in 0..PACKETS {
        let frame = frame(&mut rng);
        let (verdict, out) = test_run(fd, &frame.bytes);
        if frame.answer {
            assert_eq!(
                verdict, TC_ACT_REDIRECT,
                "packet {n} must be answered: {:02x?}",
                frame.bytes
            );
            // Everything as expected but the checksum, which is checked for validity next.
            let mut expected = expected_answer(&frame);
            expected[frame.l4 + 6..frame.l4 + 8].copy_from_slice(&out[frame.l4 + 6..frame.l4 + 8]);
            assert_eq!(out, expected, "packet {n}: the answer differs");
            let v6 = frame.bytes[12] == 0x86;
            let stored = u16::from_be_bytes([out[frame.l4 + 6], out[frame.l4 + 7]]);
            if v6 || stored != 0 {
                assert_eq!(
                    udp_checksum_residue(&out, v6, frame.l4),
                    0,
                    "packet {n}: checksum"
                );
            }
            answered += 1;
        } else {
            assert_eq!(
                verdict, TC_ACT_UNSPEC,
                "packet {n} must pass: {:02x?}",
                frame.bytes
            );
            assert_eq!(out, frame.bytes, "packet {n} was changed");
            unchanged += 1;
        }
    }
    let elapsed = started.elapsed();
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    let summary = run.stop().summary();
    println!(
        "{PACKETS} packets in {:.2} s: {answered} answered, {unchanged} unchanged; {summary}",
        elapsed.as_secs_f64()
    );
    assert!(
        answered > 10_000 && unchanged > 50_000,
        "the generator covers both"
    );
    assert_eq!(summary["injected"], answered, "the counters agree");
    assert_eq!(summary["matched"], answered, "{summary}");
}
