//! Loads fmod_ret programs, which aya 0.14 cannot: its object parser has no `fmod_ret/` section.
//!
//! The kernel crate puts these programs in `fexit/<function>` sections so aya-obj parses them.
//! Here the same embedded object is parsed again, its map references are relocated to the maps
//! aya already created for this fault (so config, counters and events are shared), and the
//! program is loaded with BPF_MODIFY_RETURN and attached through a raw tracepoint link. Both
//! file descriptors belong to the returned value: dropping it, or the process dying, detaches.
use std::{
    collections::HashSet,
    ffi::CStr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{Btf, Ebpf, maps::Map};
use aya_obj::{
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type},
};

use crate::object::CHAOS_OBJECT;

/// A loaded and attached fmod_ret program.
#[derive(Debug)]
pub struct FmodRetAttachment {
    /// The kernel's id of the program, as `bpftool prog show` lists it.
    pub id: u32,
    _link: OwnedFd,
    _program: OwnedFd,
}

/// Loads `program` as fmod_ret on kernel function `function`, using `ebpf`'s maps.
pub fn load_and_attach(
    ebpf: &Ebpf,
    program: &str,
    function: &str,
    btf: &Btf,
) -> Result<FmodRetAttachment, String> {
    let instructions = relocated_instructions(ebpf, program)?;
    let attach_btf_id = btf
        .id_by_type_name_kind(function, BtfKind::Func)
        .map_err(|err| format!("kernel function {function} not in BTF: {err}"))?;
    let program_fd = prog_load(program, &instructions, attach_btf_id)?;
    let link = raw_tracepoint_open(program_fd.as_fd())?;
    Ok(FmodRetAttachment {
        id: program_id(program_fd.as_fd())?,
        _link: link,
        _program: program_fd,
    })
}

fn relocated_instructions(
    ebpf: &Ebpf,
    program: &str,
) -> Result<Vec<aya_obj::generated::bpf_insn>, String> {
    let mut object =
        aya_obj::Object::parse(CHAOS_OBJECT).map_err(|err| format!("parsing the object: {err}"))?;
    let text_sections: HashSet<usize> = object
        .functions
        .keys()
        .map(|(section, _)| *section)
        .collect();
    let object_maps = std::mem::take(&mut object.maps);
    let mut fds: Vec<(&str, RawFd, &aya_obj::Map)> = Vec::new();
    for (name, map) in &object_maps {
        let fd = ebpf
            .map(name)
            .and_then(map_fd)
            .ok_or_else(|| format!("map {name}: no file descriptor for its kind"))?;
        fds.push((name.as_str(), fd.as_raw_fd(), map));
    }
    object
        .relocate_maps(fds.into_iter(), &text_sections)
        .map_err(|err| format!("relocating maps: {err}"))?;
    object
        .relocate_calls(&text_sections)
        .map_err(|err| format!("relocating calls: {err}"))?;
    let key = object
        .programs
        .get(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?
        .function_key();
    let function = object
        .functions
        .get(&key)
        .ok_or_else(|| format!("no code for {program}"))?;
    Ok(function.instructions.clone())
}

/// The map's file descriptor. aya-obj's relocation asserts on a map it is not given, so every
/// kind the kernel object declares must be here (a test loads the object to keep it so).
fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    match map {
        Map::Array(data)
        | Map::PerCpuArray(data)
        | Map::LpmTrie(data)
        | Map::RingBuf(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuHashMap(data)
        | Map::PerCpuLruHashMap(data) => Some(data.fd().as_fd()),
        _ => None,
    }
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a fully initialised bpf_attr of the size passed; the kernel returns a new
    // file descriptor on success, which is owned from here on.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The verifier log is only requested after a failed load, as libbpf does: with a log, a
/// verification that succeeds but writes more than the buffer holds fails with ENOSPC (6.4+).
const VERIFIER_LOG_START: usize = 64 * 1024;
const VERIFIER_LOG_MAX: usize = 16 * 1024 * 1024;

fn prog_load(
    name: &str,
    instructions: &[aya_obj::generated::bpf_insn],
    attach_btf_id: u32,
) -> Result<OwnedFd, String> {
    let load = |log: &mut [u8]| {
        // SAFETY: bpf_attr is plain data; all-zero is its documented "unset" state.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the BPF_PROG_LOAD member of the union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
        load.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
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
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
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
    let last = verifier
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if last.is_empty() {
        Err(format!("loading {name} as fmod_ret: {first_error}"))
    } else {
        Err(format!("loading {name} as fmod_ret: {first_error}: {last}"))
    }
}

fn program_id(program: BorrowedFd<'_>) -> Result<u32, String> {
    // SAFETY: plain data, all-zero is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: as in prog_load.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = program.as_raw_fd() as u32;
    attr.info.info_len = size_of_val(&info) as u32;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: the kernel writes at most info_len bytes into `info`; no descriptor is returned.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            size_of::<bpf_attr>(),
        )
    };
    if result < 0 {
        return Err(format!(
            "reading the program's id: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(info.id)
}

fn raw_tracepoint_open(program: BorrowedFd<'_>) -> Result<OwnedFd, String> {
    // SAFETY: as in prog_load.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // The BPF_RAW_TRACEPOINT_OPEN member; a NULL name attaches a tracing program to the target it
    // was loaded for.
    attr.raw_tracepoint.prog_fd = program.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        .map_err(|err| format!("attaching fmod_ret: {err}"))
}

#[cfg(test)]
mod tests {
    use chaos_common::programs as names;

    use super::*;

    /// Relocation needs a descriptor for every map the object declares: a map kind `map_fd`
    /// does not know used to panic inside aya-obj.
    #[test]
    fn every_fmod_ret_program_relocates_against_the_live_maps() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "creating maps needs root: run through cargo xtask test"
        );
        let ebpf = crate::object::load().expect("the object loads");
        for name in [
            names::FMOD_RET_RECV,
            names::FMOD_RET_SEND,
            names::FMOD_RET_CONNECT,
        ] {
            let instructions = relocated_instructions(&ebpf, name).expect("relocates");
            assert!(instructions.len() > 10, "{name}");
        }
    }
}
