//! connect-error, recv-error and send-error: a socket call fails with a chosen errno.
//!
//! Each call can be failed by several kernel mechanisms, in order of preference; `--mechanism`
//! forces one, otherwise the first one this kernel supports is used:
//! 1. cgroup sock_addr + `bpf_set_retval` (connect only): the kernel runs it only for the cgroup.
//! 2. fmod_ret on `security_socket_*`: needs BTF and BPF trampolines, no special config.
//! 3. BPF LSM `socket_*` hooks: needs `bpf` in the active LSM list.
//! 4. kprobe + `bpf_override_return` on the syscall entry points: needs
//!    CONFIG_FUNCTION_ERROR_INJECTION and CONFIG_BPF_KPROBE_OVERRIDE.
use chaos_common::FaultKind;

use crate::filters::Filters;
use crate::{
    errno::Errno,
    kernel::mechanism::Mechanism,
    kernel::programs::{self, ProgramSpec},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketCall {
    Connect,
    /// read(), recv(), recvfrom(), recvmsg(): all reach `security_socket_recvmsg`.
    Recv,
    /// write(), send(), sendto(), sendmsg(): all reach `security_socket_sendmsg`.
    Send,
}

impl SocketCall {
    pub fn kind(self) -> FaultKind {
        match self {
            SocketCall::Connect => FaultKind::ConnectError,
            SocketCall::Recv => FaultKind::RecvError,
            SocketCall::Send => FaultKind::SendError,
        }
    }

    /// The mechanisms that can fail this call, best first.
    pub const fn mechanisms(self) -> &'static [Mechanism] {
        match self {
            SocketCall::Connect => &[
                Mechanism::CgroupSockAddr,
                Mechanism::FmodRet,
                Mechanism::BpfLsm,
                Mechanism::KprobeOverride,
            ],
            SocketCall::Recv | SocketCall::Send => &[
                Mechanism::FmodRet,
                Mechanism::BpfLsm,
                Mechanism::KprobeOverride,
            ],
        }
    }

    /// The programs that realise this call's fault with `mechanism`; `None` where there are none.
    pub fn programs(self, mechanism: Mechanism) -> Option<&'static [&'static ProgramSpec]> {
        Some(match (self, mechanism) {
            (SocketCall::Connect, Mechanism::CgroupSockAddr) => {
                &[&programs::CONNECT4, &programs::CONNECT6]
            }
            (SocketCall::Connect, Mechanism::FmodRet) => &[&programs::FMOD_RET_CONNECT],
            (SocketCall::Recv, Mechanism::FmodRet) => &[&programs::FMOD_RET_RECV],
            (SocketCall::Send, Mechanism::FmodRet) => &[&programs::FMOD_RET_SEND],
            (SocketCall::Connect, Mechanism::BpfLsm) => &[&programs::LSM_CONNECT],
            (SocketCall::Recv, Mechanism::BpfLsm) => &[&programs::LSM_RECV],
            (SocketCall::Send, Mechanism::BpfLsm) => &[&programs::LSM_SEND],
            (SocketCall::Connect, Mechanism::KprobeOverride) => &[&programs::KPROBE_CONNECT],
            (SocketCall::Recv, Mechanism::KprobeOverride) => &[&programs::KPROBE_RECV],
            (SocketCall::Send, Mechanism::KprobeOverride) => &[&programs::KPROBE_SEND],
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SocketCallError {
    pub call: SocketCall,
    pub errno: Errno,
    pub filters: Filters,
    /// Forced by `--mechanism`; `None` lets chaos-bpf choose.
    pub mechanism: Option<Mechanism>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_has_programs_for_each_implemented_mechanism() {
        for call in [SocketCall::Connect, SocketCall::Recv, SocketCall::Send] {
            for mechanism in call.mechanisms() {
                let programs = call.programs(*mechanism).expect("programs");
                assert!(programs.iter().all(|p| p.mechanism == *mechanism));
            }
        }
        assert!(
            SocketCall::Recv
                .programs(Mechanism::CgroupSockAddr)
                .is_none()
        );
    }
}
