//! The few bpf(2) commands chaos-bpf issues itself rather than through aya: loading fmod_ret
//! programs (aya 0.14 cannot), creating cgroup links (aya silently falls back to an attachment
//! that outlives the process on kernels it judges old by version number), and reading a
//! program's id. Every descriptor returned is owned: closing it detaches or unloads.
use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_info, bpf_prog_type,
};

/// bpf(2) for commands that return a new descriptor.
fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: a fresh descriptor returned by the kernel, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a fully initialised bpf_attr of the size passed; the kernel reads and
    // writes only within it (and the buffers it points to, which outlive the call).
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(result)
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain data; all-zero is its documented "unset" state.
    unsafe { std::mem::zeroed() }
}

/// A cgroup link: the kernel detaches the program when the last descriptor closes, that is when
/// chaos-bpf exits however it exits. Links are always multi-attach, so other tools' programs on
/// the cgroup keep running.
pub fn cgroup_link(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: bpf_attach_type,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_LINK_CREATE member of the union.
    let create = unsafe { &mut attr.link_create };
    create.__bindgen_anon_1.prog_fd = program.as_raw_fd() as u32;
    create.__bindgen_anon_2.target_fd = cgroup.as_raw_fd() as u32;
    create.attach_type = attach_type as u32;
    bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// A two-instruction cgroup_skb program that passes every packet: what the cgroup-link probe
/// links for a moment. (The object's own cgroup_skb program keeps the verifier busy for about
/// 35 ms, which every launch paid.)
pub fn load_pass_all_cgroup_skb() -> io::Result<OwnedFd> {
    // SAFETY: bpf_insn is plain data; zero is a valid value of every field.
    let mut instructions: [bpf_insn; 2] = unsafe { std::mem::zeroed() };
    // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 1, "pass".
    instructions[0].code = 0xb7;
    instructions[0].imm = 1;
    // BPF_JMP | BPF_EXIT.
    instructions[1].code = 0x95;
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_PROG_LOAD member of the union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_CGROUP_SKB as u32;
    load.expected_attach_type = bpf_attach_type::BPF_CGROUP_INET_EGRESS as u32;
    load.insns = instructions.as_ptr() as u64;
    load.insn_cnt = instructions.len() as u32;
    load.license = c"GPL".as_ptr() as u64;
    for (dst, src) in load.prog_name.iter_mut().zip(b"chaos_linkprobe") {
        *dst = *src as libc::c_char;
    }
    bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

/// The verifier log is only requested after a failed load, as libbpf does: with a log, a
/// verification that succeeds but writes more than the buffer holds fails with ENOSPC (6.4+).
const VERIFIER_LOG_START: usize = 64 * 1024;
const VERIFIER_LOG_MAX: usize = 16 * 1024 * 1024;

/// Loads a tracing program of `expected_attach_type` for the kernel function `attach_btf_id`.
/// On failure, the error carries the verifier's last line.
pub fn load_tracing_program(
    name: &str,
    instructions: &[bpf_insn],
    expected_attach_type: bpf_attach_type,
    attach_btf_id: u32,
) -> Result<OwnedFd, String> {
    let load = |log: &mut [u8]| {
        let mut attr = zeroed_attr();
        // SAFETY: writing the BPF_PROG_LOAD member of the union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
        load.expected_attach_type = expected_attach_type as u32;
        load.attach_btf_id = attach_btf_id;
        load.insns = instructions.as_ptr() as u64;
        load.insn_cnt = instructions.len() as u32;
        load.license = c"GPL".as_ptr() as u64;
        for (dst, src) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        if !log.is_empty() {
            load.log_level = 1;
            load.log_buf = log.as_mut_ptr() as u64;
            load.log_size = log.len() as u32;
        }
        bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    let first_error = match load(&mut []) {
        Ok(fd) => return Ok(fd),
        Err(err) => err,
    };
    // Load again only to learn why; a log that does not fit is grown, up to a bound.
    let mut log = vec![0u8; VERIFIER_LOG_START];
    loop {
        match load(&mut log) {
            Ok(fd) => return Ok(fd),
            Err(err)
                if err.raw_os_error() == Some(libc::ENOSPC) && log.len() < VERIFIER_LOG_MAX =>
            {
                log = vec![0u8; log.len() * 4];
            }
            // The first error is the one to report: this one may only be about the log.
            Err(_) => break,
        }
    }
    let verifier = CStr::from_bytes_until_nul(&log)
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    match verifier.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => Err(format!("loading {name}: {first_error}: {last}")),
        None => Err(format!("loading {name}: {first_error}")),
    }
}

/// Attaches a tracing program to the target it was loaded for (a NULL tracepoint name).
pub fn attach_tracing(program: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.raw_tracepoint.prog_fd = program.as_raw_fd() as u32;
    bpf_fd(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

/// The kernel's id of a loaded program, as `bpftool prog show` lists it.
pub fn program_id(program: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: plain data, all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = program.as_raw_fd() as u32;
    attr.info.info_len = size_of_val(&info) as u32;
    attr.info.info = (&raw mut info) as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.id)
}

/// Raises the soft limit on open descriptors to the hard one (as the Go runtime does): every
/// armed fault holds its cgroups' directories open, and each cgroup a shared object links to
/// costs one link per program, so 1,000 faults need about 3,000 descriptors where the default
/// soft limit is 1,024. Raising the soft limit up to the hard one never needs a privilege.
pub fn raise_open_files() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Lifts RLIMIT_MEMLOCK where this process may (CAP_SYS_RESOURCE): kernels before 5.11 charge
/// BPF maps against it, and the default (often 64 KiB or 8 MiB) is smaller than a shared
/// object's maps. Newer kernels charge the memory cgroup instead, and a refusal changes nothing
/// there, so the outcome is only reported.
pub fn raise_memlock() -> io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct, which outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
