//! Loads fmod_ret programs, which aya 0.14 cannot: its object parser has no `fmod_ret/` section.
//!
//! The kernel crate puts these programs in `fexit/<function>` sections so aya-obj parses them.
//! Here the same embedded object is parsed again, its map references are relocated to the maps
//! aya already created for this fault (so config, counters and events are shared), and the
//! program is loaded with BPF_MODIFY_RETURN and attached through a raw tracepoint link. Both
//! file descriptors belong to the returned value: dropping it, or the process dying, detaches.
use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
};

use aya::{Btf, Ebpf, maps::Map};
use aya_obj::{btf::BtfKind, generated::bpf_attach_type};

use crate::{kernel::object::CHAOS_OBJECT, kernel::sys};

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
    let program_fd = sys::load_tracing_program(
        program,
        &instructions,
        bpf_attach_type::BPF_MODIFY_RETURN,
        attach_btf_id,
    )?;
    let link = sys::attach_tracing(program_fd.as_fd())
        .map_err(|err| format!("attaching fmod_ret: {err}"))?;
    Ok(FmodRetAttachment {
        id: sys::program_id(program_fd.as_fd())
            .map_err(|err| format!("reading the program's id: {err}"))?,
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
        let ebpf = crate::kernel::object::load().expect("the object loads");
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
