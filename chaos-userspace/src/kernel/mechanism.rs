//! Kernel mechanisms the faults are built on: plain data (names, prerequisites, hints). The
//! probes that find out whether this kernel has each one are in `probe.rs`.
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// cgroup connect4/connect6 hooks that fail the call with `bpf_set_retval`.
    #[serde(rename = "cgroup-sockaddr")]
    CgroupSockAddr,
    /// cgroup_skb ingress/egress packet hooks.
    CgroupSkb,
    /// TC classifier on the clsact qdisc.
    TcClsact,
    /// TC programs through tcx links (6.6+).
    Tcx,
    /// The fq qdisc, which honours `skb->tstamp` (delay).
    FqQdisc,
    /// fmod_ret on `security_*` functions (BPF trampolines).
    FmodRet,
    /// BPF LSM programs, active only with `bpf` in the LSM list.
    BpfLsm,
    /// kprobe with `bpf_override_return`.
    KprobeOverride,
    /// BPF ring buffer for events.
    Ringbuf,
    /// Kernel BTF at /sys/kernel/btf/vmlinux.
    Btf,
    /// bpf_link attachment for cgroups, which the kernel undoes when the holder exits.
    BpfLink,
}

impl Mechanism {
    pub const ALL: [Mechanism; 11] = [
        Mechanism::CgroupSockAddr,
        Mechanism::CgroupSkb,
        Mechanism::TcClsact,
        Mechanism::Tcx,
        Mechanism::FqQdisc,
        Mechanism::FmodRet,
        Mechanism::BpfLsm,
        Mechanism::KprobeOverride,
        Mechanism::Ringbuf,
        Mechanism::Btf,
        Mechanism::BpfLink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::CgroupSockAddr => "cgroup sock_addr + bpf_set_retval",
            Mechanism::CgroupSkb => "cgroup_skb",
            Mechanism::TcClsact => "TC clsact",
            Mechanism::Tcx => "TC tcx",
            Mechanism::FqQdisc => "fq qdisc",
            Mechanism::FmodRet => "fmod_ret (BPF trampolines)",
            Mechanism::BpfLsm => "BPF LSM",
            Mechanism::KprobeOverride => "kprobe + bpf_override_return",
            Mechanism::Ringbuf => "ring buffer",
            Mechanism::Btf => "BTF",
            Mechanism::BpfLink => "bpf_link for cgroups",
        }
    }

    /// The short name used by `--mechanism` and in JSON.
    pub fn id(self) -> &'static str {
        match self {
            Mechanism::CgroupSockAddr => "cgroup-sockaddr",
            Mechanism::CgroupSkb => "cgroup-skb",
            Mechanism::TcClsact => "tc-clsact",
            Mechanism::Tcx => "tcx",
            Mechanism::FqQdisc => "fq-qdisc",
            Mechanism::FmodRet => "fmod-ret",
            Mechanism::BpfLsm => "bpf-lsm",
            Mechanism::KprobeOverride => "kprobe-override",
            Mechanism::Ringbuf => "ringbuf",
            Mechanism::Btf => "btf",
            Mechanism::BpfLink => "bpf-link",
        }
    }

    /// Mechanisms this one cannot work without.
    pub fn prerequisites(self) -> &'static [Mechanism] {
        match self {
            Mechanism::CgroupSockAddr | Mechanism::CgroupSkb => &[Mechanism::BpfLink],
            Mechanism::FmodRet | Mechanism::BpfLsm => &[Mechanism::Btf],
            _ => &[],
        }
    }

    /// Hooks that run for every task on the host and so check the scope themselves, as opposed
    /// to cgroup hooks, which the kernel only runs for the target subtree.
    pub fn is_global_hook(self) -> bool {
        matches!(
            self,
            Mechanism::FmodRet | Mechanism::BpfLsm | Mechanism::KprobeOverride
        )
    }

    /// TC attach mechanisms: one object serves every TC fault of a run.
    pub fn is_tc(self) -> bool {
        matches!(self, Mechanism::Tcx | Mechanism::TcClsact)
    }

    /// What would enable the mechanism where it is missing.
    pub fn enable_hint(self) -> &'static str {
        match self {
            Mechanism::CgroupSockAddr => "kernel 5.18+ with CONFIG_CGROUP_BPF",
            Mechanism::CgroupSkb => "CONFIG_CGROUP_BPF and cgroup v2",
            Mechanism::TcClsact => "CONFIG_NET_CLS_ACT and CONFIG_NET_SCH_INGRESS",
            Mechanism::Tcx => "kernel 6.6+",
            Mechanism::FqQdisc => "CONFIG_NET_SCH_FQ (module sch_fq)",
            Mechanism::FmodRet => {
                "CONFIG_DEBUG_INFO_BTF and CONFIG_BPF_JIT with trampoline support, and no lockdown \
                 or sandbox refusing tracing programs"
            }
            Mechanism::BpfLsm => "CONFIG_BPF_LSM and `bpf` in the lsm= boot parameter",
            Mechanism::KprobeOverride => {
                "CONFIG_KPROBES, CONFIG_BPF_KPROBE_OVERRIDE and CONFIG_FUNCTION_ERROR_INJECTION"
            }
            Mechanism::Ringbuf => "kernel 5.8+",
            Mechanism::Btf => "CONFIG_DEBUG_INFO_BTF",
            Mechanism::BpfLink => "kernel 5.7+",
        }
    }
}
