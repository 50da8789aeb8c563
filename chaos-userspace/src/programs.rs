//! The registry of kernel programs: which hook each attaches to and which mechanism it needs.
//! Loading and attaching goes through one function per hook kind instead of per-fault copies.
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, ProgramError},
};
use chaos_common::programs as names;

use crate::{
    error::{ChaosError, Result},
    mechanism::Mechanism,
    scope::CgroupScope,
};

#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// `cgroup/connect4` or `cgroup/connect6`; the attach type comes from the object's section.
    CgroupSockAddr,
    CgroupSkb(CgroupSkbAttachType),
}

#[derive(Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub hook: Hook,
    pub mechanism: Mechanism,
}

pub const CONNECT4: ProgramSpec = ProgramSpec {
    name: names::CONNECT4,
    hook: Hook::CgroupSockAddr,
    mechanism: Mechanism::CgroupSockAddr,
};
pub const CONNECT6: ProgramSpec = ProgramSpec {
    name: names::CONNECT6,
    hook: Hook::CgroupSockAddr,
    mechanism: Mechanism::CgroupSockAddr,
};
pub const SKB_EGRESS: ProgramSpec = ProgramSpec {
    name: names::SKB_EGRESS,
    hook: Hook::CgroupSkb(CgroupSkbAttachType::Egress),
    mechanism: Mechanism::CgroupSkb,
};
pub const SKB_INGRESS: ProgramSpec = ProgramSpec {
    name: names::SKB_INGRESS,
    hook: Hook::CgroupSkb(CgroupSkbAttachType::Ingress),
    mechanism: Mechanism::CgroupSkb,
};

/// Every fault program, for listings and for the test that checks the object against this table.
pub const REGISTRY: &[&ProgramSpec] = &[&CONNECT4, &CONNECT6, &SKB_EGRESS, &SKB_INGRESS];

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> ChaosError {
    move |source| ChaosError::Program { name, source }
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).ok_or(ChaosError::Program {
        name,
        source: ProgramError::NotLoaded,
    })
}

/// Loads the program into the kernel (the verifier runs here).
pub fn load(ebpf: &mut Ebpf, spec: &ProgramSpec) -> Result<()> {
    let program = program_mut(ebpf, spec.name)?;
    let result = match spec.hook {
        Hook::CgroupSockAddr => {
            let program: &mut CgroupSockAddr =
                program.try_into().map_err(program_error(spec.name))?;
            program.load()
        }
        Hook::CgroupSkb(_) => {
            let program: &mut CgroupSkb = program.try_into().map_err(program_error(spec.name))?;
            program.load()
        }
    };
    result.map_err(program_error(spec.name))
}

/// Attaches a loaded program to the cgroup through a bpf_link held only by this process: when
/// the process exits, however it exits, the kernel detaches it.
///
/// The kernel always adds cgroup links in multi-attach mode, so other tools' programs on the same
/// cgroup keep running; it rejects an explicit BPF_F_ALLOW_MULTI flag on links with EINVAL, hence
/// `Single` here (the flag value 0). Kernels without cgroup links are refused earlier, by the
/// `BpfLink` mechanism check, because a legacy attachment would outlive chaos-bpf.
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

pub fn attach_to_cgroup(ebpf: &mut Ebpf, spec: &ProgramSpec, cgroup: &CgroupScope) -> Result<()> {
    let program = program_mut(ebpf, spec.name)?;
    let result = match spec.hook {
        Hook::CgroupSockAddr => {
            let program: &mut CgroupSockAddr =
                program.try_into().map_err(program_error(spec.name))?;
            program.attach(&cgroup.dir, LINK_MODE).map(drop)
        }
        Hook::CgroupSkb(attach_type) => {
            let program: &mut CgroupSkb = program.try_into().map_err(program_error(spec.name))?;
            program
                .attach(&cgroup.dir, attach_type, LINK_MODE)
                .map(drop)
        }
    };
    result.map_err(program_error(spec.name))
}
