//! The registry of kernel programs: which hook each attaches to and which mechanism it needs.
//! Loading and attaching goes through one function per hook kind instead of per-fault copies.
use std::os::fd::{AsFd as _, OwnedFd};

use aya::{
    Btf, Ebpf,
    programs::{
        KProbe, Lsm, ProgramError, SchedClassifier, TcAttachType,
        tc::{NlOptions, TcAttachOptions, TcHandle},
    },
};
use aya_obj::generated::bpf_attach_type;
use chaos_common::programs as names;

use crate::{
    error::{ChaosError, Result},
    kernel::fmod_ret::{self, FmodRetAttachment},
    kernel::mechanism::Mechanism,
    kernel::sys,
    net::tc_records::FilterRecord,
    scope::CgroupScope,
};

#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// A cgroup hook (sock_addr, skb), attached through a link chaos-bpf creates itself.
    Cgroup(bpf_attach_type),
    /// fmod_ret on this kernel function.
    FmodRet(&'static str),
    /// This BPF LSM hook.
    Lsm(&'static str),
    /// kprobes on these syscalls' entry points (named without the architecture's prefix).
    SyscallKprobe(&'static [&'static str]),
    /// A TC hook of an interface, through tcx or clsact (the mechanism chosen decides).
    Tc(TcAttachType),
}

#[derive(Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub hook: Hook,
    pub mechanism: Mechanism,
    /// The [`chaos_common::scope_hook`] the program looks its rules up under; 0 for TC, whose
    /// rules are found by destination.
    pub scope_hook: u32,
}

macro_rules! program {
    ($const:ident, $name:expr, $hook:expr, $mechanism:ident, $scope_hook:ident) => {
        pub const $const: ProgramSpec = ProgramSpec {
            name: $name,
            hook: $hook,
            mechanism: Mechanism::$mechanism,
            scope_hook: chaos_common::scope_hook::$scope_hook,
        };
    };
    ($const:ident, $name:expr, $hook:expr, $mechanism:ident) => {
        pub const $const: ProgramSpec = ProgramSpec {
            name: $name,
            hook: $hook,
            mechanism: Mechanism::$mechanism,
            scope_hook: 0,
        };
    };
}

program!(
    CONNECT4,
    names::CONNECT4,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET4_CONNECT),
    CgroupSockAddr,
    CONNECT
);
program!(
    CONNECT6,
    names::CONNECT6,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET6_CONNECT),
    CgroupSockAddr,
    CONNECT
);
program!(
    LIMIT4,
    names::LIMIT4,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET4_CONNECT),
    CgroupSockAddr,
    CONNECT_LIMIT
);
program!(
    LIMIT6,
    names::LIMIT6,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET6_CONNECT),
    CgroupSockAddr,
    CONNECT_LIMIT
);
program!(
    LIMIT_RELEASE,
    names::LIMIT_RELEASE,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET_SOCK_RELEASE),
    CgroupSockAddr,
    CONNECT_LIMIT
);
program!(
    SKB_EGRESS,
    names::SKB_EGRESS,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET_EGRESS),
    CgroupSkb,
    EGRESS
);
program!(
    SKB_INGRESS,
    names::SKB_INGRESS,
    Hook::Cgroup(bpf_attach_type::BPF_CGROUP_INET_INGRESS),
    CgroupSkb,
    INGRESS
);
program!(
    FMOD_RET_CONNECT,
    names::FMOD_RET_CONNECT,
    Hook::FmodRet("security_socket_connect"),
    FmodRet,
    CONNECT
);
program!(
    FMOD_RET_RECV,
    names::FMOD_RET_RECV,
    Hook::FmodRet("security_socket_recvmsg"),
    FmodRet,
    RECV
);
program!(
    FMOD_RET_SEND,
    names::FMOD_RET_SEND,
    Hook::FmodRet("security_socket_sendmsg"),
    FmodRet,
    SEND
);
program!(
    LSM_CONNECT,
    names::LSM_CONNECT,
    Hook::Lsm("socket_connect"),
    BpfLsm,
    CONNECT
);
program!(
    LSM_RECV,
    names::LSM_RECV,
    Hook::Lsm("socket_recvmsg"),
    BpfLsm,
    RECV
);
program!(
    LSM_SEND,
    names::LSM_SEND,
    Hook::Lsm("socket_sendmsg"),
    BpfLsm,
    SEND
);
program!(
    FMOD_RET_FILE_OPEN,
    names::FMOD_RET_FILE_OPEN,
    Hook::FmodRet("security_file_open"),
    FmodRet,
    FILE_OPEN
);
program!(
    FMOD_RET_FILE_ACCESS,
    names::FMOD_RET_FILE_ACCESS,
    Hook::FmodRet("security_file_permission"),
    FmodRet,
    FILE_ACCESS
);
program!(
    LSM_FILE_OPEN,
    names::LSM_FILE_OPEN,
    Hook::Lsm("file_open"),
    BpfLsm,
    FILE_OPEN
);
program!(
    LSM_FILE_ACCESS,
    names::LSM_FILE_ACCESS,
    Hook::Lsm("file_permission"),
    BpfLsm,
    FILE_ACCESS
);
program!(
    KPROBE_RECV,
    names::KPROBE_RECV,
    Hook::SyscallKprobe(&["read", "readv", "recvfrom", "recvmsg", "recvmmsg"]),
    KprobeOverride,
    RECV
);
program!(
    KPROBE_SEND,
    names::KPROBE_SEND,
    Hook::SyscallKprobe(&["write", "writev", "sendto", "sendmsg", "sendmmsg"]),
    KprobeOverride,
    SEND
);
program!(
    KPROBE_CONNECT,
    names::KPROBE_CONNECT,
    Hook::SyscallKprobe(&["connect"]),
    KprobeOverride,
    CONNECT
);

program!(
    TC_EGRESS,
    names::TC_EGRESS,
    Hook::Tc(TcAttachType::Egress),
    Tcx
);
program!(
    TC_INGRESS,
    names::TC_INGRESS,
    Hook::Tc(TcAttachType::Ingress),
    Tcx
);

/// Every fault program, for the test that checks the object against this table.
pub const REGISTRY: &[&ProgramSpec] = &[
    &CONNECT4,
    &CONNECT6,
    &LIMIT4,
    &LIMIT6,
    &LIMIT_RELEASE,
    &SKB_EGRESS,
    &SKB_INGRESS,
    &FMOD_RET_CONNECT,
    &FMOD_RET_RECV,
    &FMOD_RET_SEND,
    &LSM_CONNECT,
    &LSM_RECV,
    &LSM_SEND,
    &FMOD_RET_FILE_OPEN,
    &FMOD_RET_FILE_ACCESS,
    &LSM_FILE_OPEN,
    &LSM_FILE_ACCESS,
    &KPROBE_RECV,
    &KPROBE_SEND,
    &KPROBE_CONNECT,
    &TC_EGRESS,
    &TC_INGRESS,
];

/// What attaching needs beyond the program: the cgroup for cgroup hooks, kernel BTF for
/// trampolines and LSM hooks.
pub struct AttachTarget<'a> {
    pub cgroup: Option<&'a CgroupScope>,
    pub btf: Option<&'a Btf>,
    pub interface: Option<&'a crate::net::interface::InterfaceScope>,
    /// For TC hooks: tcx links (`Mechanism::Tcx`) or clsact filters (`Mechanism::TcClsact`).
    pub tc_mechanism: Mechanism,
    /// Where clsact filters and qdiscs are written down, so a later cleanup can undo them.
    pub recorder: Option<&'a std::cell::RefCell<crate::net::tc_records::Recorder>>,
}

/// Attachment state aya does not own; dropping it detaches.
#[derive(Debug)]
pub enum Attachment {
    /// The link lives inside the `Ebpf` instance and goes with it.
    HeldByAya,
    /// A link created by chaos-bpf (cgroup hooks); closing it detaches.
    Link(OwnedFd),
    FmodRet(FmodRetAttachment),
    /// A clsact filter, detached on drop (its record goes with the `Recorder`).
    TcFilter(TcFilter),
}

/// clsact filters go just ahead of the kernel's default first priority (49152), so chaos-bpf sees
/// packets before filters added without one; its programs pass on what they do not act on.
const CHAOS_FILTER_PRIORITY: u16 = 49151;

/// A netlink TC filter taken out of aya, which does not detach such links when they are dropped.
#[derive(Debug)]
pub struct TcFilter(Option<aya::programs::tc::SchedClassifierLink>);

impl Drop for TcFilter {
    fn drop(&mut self) {
        if let Some(link) = self.0.take() {
            // Failing here means the filter is already gone (say, with its interface).
            let _ = aya::programs::links::Link::detach(link);
        }
    }
}

impl Attachment {
    /// The kernel's id of the attached program, as `bpftool prog show` lists it.
    pub fn program_id(&self, ebpf: &Ebpf, name: &'static str) -> Result<u32> {
        if let Attachment::FmodRet(fmod_ret) = self {
            return Ok(fmod_ret.id);
        }
        let program = ebpf.program(name).ok_or(ChaosError::Program {
            name,
            source: ProgramError::NotLoaded,
        })?;
        Ok(program.info().map_err(program_error(name))?.id())
    }
}

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> ChaosError {
    move |source| ChaosError::Program { name, source }
}

fn attach_failed(name: &'static str, reason: impl Into<String>) -> ChaosError {
    ChaosError::Attach {
        name,
        reason: reason.into(),
    }
}

/// Loads a cgroup program (the verifier runs here) without attaching it.
pub fn load_cgroup_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a aya::programs::Program> {
    // A shared object attaches one loaded program to several cgroups: loaded at the first.
    match program_mut(ebpf, name)? {
        aya::programs::Program::CgroupSockAddr(p) => p.load(),
        aya::programs::Program::CgroupSkb(p) => p.load(),
        aya::programs::Program::CgroupSock(p) => p.load(),
        _ => {
            return Err(attach_failed(name, "is not a cgroup program"));
        }
    }
    .or_else(|err| match err {
        ProgramError::AlreadyLoaded => Ok(()),
        err => Err(err),
    })
    .map_err(program_error(name))?;
    ebpf.program(name).ok_or(ChaosError::Program {
        name,
        source: ProgramError::NotLoaded,
    })
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

/// The architecture's prefix of syscall entry points: the functions on the error-injection list.
#[cfg(target_arch = "x86_64")]
pub const SYSCALL_PREFIX: &str = "__x64_sys_";
#[cfg(target_arch = "aarch64")]
pub const SYSCALL_PREFIX: &str = "__arm64_sys_";

/// Loads the program (the verifier runs here) and attaches it. Every attachment is a link held
/// only by this process, so the kernel detaches it when the process exits, however it exits.
pub fn load_and_attach(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    target: &AttachTarget<'_>,
) -> Result<Attachment> {
    let name = spec.name;
    let cgroup = || {
        target
            .cgroup
            .ok_or_else(|| attach_failed(name, "needs a cgroup"))
    };
    let btf = || {
        target
            .btf
            .ok_or_else(|| attach_failed(name, "needs kernel BTF"))
    };
    match spec.hook {
        Hook::Cgroup(attach_type) => {
            let program = load_cgroup_program(ebpf, name)?;
            let fd = program.fd().map_err(program_error(name))?;
            let link = sys::cgroup_link(fd.as_fd(), cgroup()?.dir.as_fd(), attach_type)
                .map_err(|err| attach_failed(name, format!("creating the cgroup link: {err}")))?;
            return Ok(Attachment::Link(link));
        }
        Hook::Lsm(hook) => {
            let btf = btf()?;
            let program: &mut Lsm = program_mut(ebpf, name)?
                .try_into()
                .map_err(program_error(name))?;
            program.load(hook, btf).map_err(program_error(name))?;
            program.attach().map_err(program_error(name))?;
        }
        Hook::SyscallKprobe(syscalls) => {
            let program: &mut KProbe = program_mut(ebpf, name)?
                .try_into()
                .map_err(program_error(name))?;
            program.load().map_err(program_error(name))?;
            for syscall in syscalls {
                program
                    .attach(format!("{SYSCALL_PREFIX}{syscall}"), 0)
                    .map_err(program_error(name))?;
            }
        }
        Hook::Tc(attach_type) => {
            let interface = target
                .interface
                .ok_or_else(|| attach_failed(name, "needs an interface"))?;
            let program: &mut SchedClassifier = program_mut(ebpf, name)?
                .try_into()
                .map_err(program_error(name))?;
            // One TC program serves every interface of a run: it is loaded at the first.
            match program.load() {
                Ok(()) | Err(ProgramError::AlreadyLoaded) => {}
                Err(err) => return Err(program_error(name)(err)),
            }
            if target.tc_mechanism == Mechanism::Tcx {
                let options = TcAttachOptions::TcxOrder(Default::default());
                program
                    .attach_with_options(&interface.name, attach_type, options)
                    .map_err(program_error(name))?;
                return Ok(Attachment::HeldByAya);
            }
            // clsact: these outlive a SIGKILL, so each is recorded before it is created.
            let recorder = target
                .recorder
                .ok_or_else(|| attach_failed(name, "needs a record of TC state"))?;
            let recorder_error =
                |err: std::io::Error| attach_failed(name, format!("recording TC state: {err}"));
            // A note another chaos-bpf run wrote stays: that run added the clsact.
            let noted = recorder
                .borrow()
                .mark_clsact(interface.ifindex)
                .map_err(recorder_error)?;
            match crate::net::netlink::add_clsact(interface.ifindex as i32) {
                Ok(()) => {}
                // Somebody else's clsact: it is not ours to remove.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    if noted {
                        recorder
                            .borrow()
                            .unmark_clsact(interface.ifindex)
                            .map_err(recorder_error)?;
                    }
                }
                Err(err) => {
                    if noted {
                        let _ = recorder.borrow().unmark_clsact(interface.ifindex);
                    }
                    return Err(attach_failed(name, format!("adding clsact: {err}")));
                }
            }
            // The filter's priority and handle are chosen here, so it is recorded first.
            let filter = FilterRecord {
                ifname: interface.name.clone(),
                ingress: attach_type == TcAttachType::Ingress,
                priority: CHAOS_FILTER_PRIORITY,
                handle: recorder.borrow().filter_handle(),
            };
            recorder
                .borrow_mut()
                .add_filter(filter.clone())
                .map_err(recorder_error)?;
            let options = TcAttachOptions::Netlink(NlOptions {
                priority: filter.priority,
                handle: TcHandle::from(filter.handle),
                ..Default::default()
            });
            let id = program
                .attach_with_options(&interface.name, attach_type, options)
                .map_err(program_error(name))?;
            let filter = TcFilter(Some(program.take_link(id).map_err(program_error(name))?));
            return Ok(Attachment::TcFilter(filter));
        }
        Hook::FmodRet(function) => {
            let attachment = fmod_ret::load_and_attach(ebpf, name, function, btf()?)
                .map_err(|reason| attach_failed(name, reason))?;
            return Ok(Attachment::FmodRet(attachment));
        }
    }
    Ok(Attachment::HeldByAya)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_program_is_in_the_object_and_every_map_too() {
        let ebpf =
            aya_obj::Object::parse(crate::kernel::object::CHAOS_OBJECT).expect("object parses");
        for spec in REGISTRY {
            assert!(
                ebpf.programs.contains_key(spec.name),
                "{} missing from the object",
                spec.name
            );
        }
        for name in chaos_common::maps::ALL {
            assert!(
                ebpf.maps.contains_key(*name),
                "map {name} missing from the object"
            );
        }
        for name in chaos_common::programs::ALL {
            assert!(
                ebpf.programs.contains_key(*name),
                "{name} missing from the object"
            );
        }
    }
}
