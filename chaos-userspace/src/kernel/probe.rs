//! The probes `doctor` and `inject` run: what the running kernel supports, found out by loading
//! (and where harmless attaching) tiny programs, never by reading version numbers. Depends on the
//! programs and the object; `mechanism.rs` is the plain list they are probed for.
use std::{fs, io, os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf,
    maps::MapType,
    programs::{KProbe, Lsm, SchedClassifier, TcAttachType, tc::TcAttachOptions},
    sys::is_map_supported,
};
use chaos_common::programs as names;
use serde::Serialize;

use crate::{kernel::mechanism::Mechanism, kernel::object, kernel::programs, net::netlink};

/// The outcome of one probe.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub mechanism: Mechanism,
    pub supported: bool,
    /// How it was found out, or why it failed.
    pub detail: String,
}

/// How long a failed probe is believed: a long-lived agent must see a module loaded later
/// (`modprobe sch_fq`). What works keeps working, so a success is kept for the process.
const FAILED_PROBE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Each mechanism is probed once per process while it works, however many faults ask; a failure
/// is probed again after [`FAILED_PROBE_TTL`].
pub fn probe(mechanism: Mechanism) -> Probe {
    type Probed = Vec<(Probe, std::time::Instant)>;
    static PROBED: std::sync::Mutex<Probed> = std::sync::Mutex::new(Vec::new());
    let fresh = |(probe, at): &(Probe, std::time::Instant)| {
        probe.mechanism == mechanism && (probe.supported || at.elapsed() < FAILED_PROBE_TTL)
    };
    if let Some(known) = PROBED
        .lock()
        .ok()
        .and_then(|probed| probed.iter().find(|p| fresh(p)).map(|(p, _)| p.clone()))
    {
        return known;
    }
    let probe = run_probe(mechanism);
    if let Ok(mut probed) = PROBED.lock() {
        probed.retain(|(p, _)| p.mechanism != mechanism);
        probed.push((probe.clone(), std::time::Instant::now()));
    }
    probe
}

fn run_probe(mechanism: Mechanism) -> Probe {
    let outcome = match mechanism {
        Mechanism::CgroupSockAddr => load_from_object(mechanism, &programs::CONNECT4),
        Mechanism::CgroupSkb => load_from_object(mechanism, &programs::SKB_EGRESS),
        Mechanism::TcClsact => {
            in_scratch_netns(|| attach_tc_probe(TcAttachOptions::Netlink(Default::default())))
        }
        Mechanism::Tcx => {
            in_scratch_netns(|| attach_tc_probe(TcAttachOptions::TcxOrder(Default::default())))
        }
        Mechanism::FqQdisc => in_scratch_netns(|| {
            netlink::add_root_qdisc(1, "fq")
                .map(|()| "created an fq root qdisc in a scratch network namespace".to_string())
                .map_err(|err| match err.raw_os_error() {
                    Some(libc::ENOENT) => {
                        "the kernel has no fq qdisc (creating one: ENOENT)".to_string()
                    }
                    _ => format!("creating an fq qdisc failed: {err}"),
                })
        }),
        Mechanism::FmodRet => probe_fmod_ret(),
        Mechanism::BpfLsm => probe_lsm(),
        Mechanism::KprobeOverride => probe_kprobe_override(),
        Mechanism::Ringbuf => match is_map_supported(MapType::RingBuf) {
            Ok(true) => Ok("created a BPF_MAP_TYPE_RINGBUF map".into()),
            Ok(false) => Err("the kernel refused BPF_MAP_TYPE_RINGBUF".into()),
            Err(err) => Err(format!("probe failed: {err}")),
        },
        Mechanism::Btf => crate::kernel::kernel_btf::kernel()
            .map(|_| "parsed /sys/kernel/btf/vmlinux".to_string()),
        Mechanism::BpfLink => probe_bpf_link(),
    };
    match outcome {
        Ok(detail) => Probe {
            mechanism,
            supported: true,
            detail,
        },
        Err(detail) => Probe {
            mechanism,
            supported: false,
            detail,
        },
    }
}

/// The object's program `name` as its type (`SchedClassifier`, `Lsm`, `KProbe` ...).
fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("{name} missing from the object"))?
        .try_into()
        .map_err(|err| format!("{name}: {err}"))
}

fn load_object() -> Result<Ebpf, String> {
    object::load().map_err(|err| format!("loading the object: {err}"))
}

/// Objects whose program a probe verified, each kept for the first shared object of its
/// mechanism: the arm that follows the probe then verifies that program once, not twice.
static VERIFIED: std::sync::Mutex<Vec<(Mechanism, Ebpf)>> = std::sync::Mutex::new(Vec::new());

/// Loads a cgroup program without attaching it: the verifier's verdict is the answer. The object
/// is sized as a shared object is, and kept for it.
fn load_from_object(mechanism: Mechanism, spec: &programs::ProgramSpec) -> Result<String, String> {
    let mut ebpf = object::load_for_rules(object::SHARED_CAPACITY)
        .map_err(|err| format!("loading the object: {err}"))?;
    programs::load_cgroup_program(&mut ebpf, spec.name)
        .map_err(|err| first_line(&format!("{err:#}")))?;
    if let Ok(mut verified) = VERIFIED.lock() {
        verified.retain(|(kept, _)| *kept != mechanism);
        verified.push((mechanism, ebpf));
    }
    Ok(format!("loaded {}", spec.name))
}

/// The object a probe of `mechanism` verified, if it is still kept and has room for `rules`.
pub fn take_verified_object(mechanism: Mechanism, rules: u32) -> Option<Ebpf> {
    if rules != object::SHARED_CAPACITY {
        return None;
    }
    let mut verified = VERIFIED.lock().ok()?;
    let at = verified.iter().position(|(kept, _)| *kept == mechanism)?;
    Some(verified.swap_remove(at).1)
}

/// Unloads the objects no arm took (a plan that was refused, a check that failed): an idle
/// process holds no program.
pub fn drop_verified_objects() {
    if let Ok(mut verified) = VERIFIED.lock() {
        verified.clear();
    }
}

/// Whether a mechanism and everything it rests on work here; the first failure explains why not.
pub fn probe_with_prerequisites(mechanism: Mechanism) -> Probe {
    for prerequisite in mechanism.prerequisites() {
        let probe = probe(*prerequisite);
        if !probe.supported {
            return Probe {
                mechanism,
                supported: false,
                detail: format!("{} missing: {}", prerequisite.name(), probe.detail),
            };
        }
    }
    probe(mechanism)
}

/// Runs `probe` on a thread that has its own, empty network namespace: nothing it creates there
/// can touch the host's interfaces, and everything goes away with the thread.
fn in_scratch_netns(probe: fn() -> Result<String, String>) -> Result<String, String> {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|err| format!("unshare(CLONE_NEWNET): {err}"))?;
        probe()
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

fn attach_tc_probe(options: TcAttachOptions) -> Result<String, String> {
    let netlink = matches!(options, TcAttachOptions::Netlink(_));
    if netlink {
        aya::programs::tc::qdisc_add_clsact("lo").map_err(|err| format!("adding clsact: {err}"))?;
    }
    let mut ebpf = load_object()?;
    let program: &mut SchedClassifier = program_of(&mut ebpf, names::TC_PROBE)?;
    program
        .load()
        .map_err(|err| first_line(&format!("loading {}: {err:#}", names::TC_PROBE)))?;
    program
        .attach_with_options("lo", TcAttachType::Egress, options)
        .map_err(|err| first_line(&format!("attaching: {err:#}")))?;
    Ok(if netlink {
        "attached a classifier to clsact in a scratch network namespace".into()
    } else {
        "attached a classifier through a tcx link in a scratch network namespace".into()
    })
}

/// Loads and attaches the real connect fmod_ret program, unarmed (it returns what it is given),
/// and detaches it again: proof that trampolines and BPF_MODIFY_RETURN work here.
fn probe_fmod_ret() -> Result<String, String> {
    let btf = &crate::kernel::kernel_btf::kernel()
        .map_err(|err| format!("no kernel BTF: {err}"))?
        .aya;
    let ebpf = load_object()?;
    crate::kernel::fmod_ret::load_and_attach(
        &ebpf,
        names::FMOD_RET_CONNECT,
        "security_socket_connect",
        btf,
    )
    .map_err(|err| first_line(&err))?;
    Ok("loaded and attached fmod_ret on security_socket_connect".into())
}

/// Loads the real connect LSM program (never attached here), then checks that the bpf LSM is
/// active: without it the program loads and attaches but never runs.
fn probe_lsm() -> Result<String, String> {
    let btf = &crate::kernel::kernel_btf::kernel()
        .map_err(|err| format!("no kernel BTF: {err}"))?
        .aya;
    let mut ebpf = load_object()?;
    let program: &mut Lsm = program_of(&mut ebpf, names::LSM_CONNECT)?;
    program
        .load("socket_connect", btf)
        .map_err(|err| first_line(&format!("loading lsm/socket_connect: {err:#}")))?;
    match active_lsms() {
        Ok(list) if list.split(',').any(|lsm| lsm == "bpf") => {
            Ok(format!("loaded lsm/socket_connect; active LSMs: {list}"))
        }
        Ok(list) => Err(format!(
            "programs load, but `bpf` is not an active LSM ({list})"
        )),
        Err(err) => Err(format!(
            "programs load, but the active LSM list is unreadable: {err}"
        )),
    }
}

fn active_lsms() -> io::Result<String> {
    fs::read_to_string("/sys/kernel/security/lsm").map(|list| list.trim().to_string())
}

/// Loads the real connect kprobe (calling bpf_override_return) and attaches it, unarmed, to the
/// connect syscall's entry: the attach fails unless the entry point is on the error-injection
/// list. Dropping the object detaches it again.
fn probe_kprobe_override() -> Result<String, String> {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err("no kprobe PMU (CONFIG_KPROBES is off)".into());
    }
    let mut ebpf = load_object()?;
    let program: &mut KProbe = program_of(&mut ebpf, names::KPROBE_CONNECT)?;
    program.load().map_err(|err| {
        let text = format!("{err:#}");
        if text.contains("override_return") || text.contains("unknown func") {
            "the verifier rejects bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE is off)".into()
        } else {
            first_line(&format!("loading {}: {text}", names::KPROBE_CONNECT))
        }
    })?;
    let function = format!("{}connect", programs::SYSCALL_PREFIX);
    program.attach(&function, 0).map_err(|err| {
        first_line(&format!(
            "attaching to {function}: {err:#} (not on the error-injection list?)"
        ))
    })?;
    Ok(format!(
        "attached a kprobe calling bpf_override_return to {function}"
    ))
}

/// Links a cgroup_skb program that passes every packet to this process's own cgroup for a
/// moment: the kernel either creates a cgroup link, which dies with its descriptor, or refuses,
/// and then no cgroup fault can run without outliving chaos-bpf.
fn probe_bpf_link() -> Result<String, String> {
    let cgroup = own_cgroup()?;
    let dir = fs::File::open(&cgroup).map_err(|err| format!("{}: {err}", cgroup.display()))?;
    let program = crate::kernel::sys::load_pass_all_cgroup_skb()
        .map_err(|err| format!("loading a cgroup_skb program: {err}"))?;
    crate::kernel::sys::cgroup_link(
        program.as_fd(),
        dir.as_fd(),
        aya_obj::generated::bpf_attach_type::BPF_CGROUP_INET_EGRESS,
    )
    .map(|_link| format!("created and closed a cgroup link on {}", cgroup.display()))
    .map_err(|err| format!("BPF_LINK_CREATE on a cgroup: {err}"))
}

/// This process's cgroup v2 directory, from /proc/self/cgroup ("0::/path").
fn own_cgroup() -> Result<std::path::PathBuf, String> {
    let mount = crate::scope::cgroup2_mount().ok_or("no cgroup2 mount")?;
    crate::workload::process(&mount.point, std::process::id()).map_err(|missing| missing.problem)
}

/// An error as one line: its first line, and where aya appended the verifier's log, the log's
/// last line (the verifier's actual complaint) instead of the whole log.
fn first_line(text: &str) -> String {
    let (head, log) = text.split_once("Verifier output:").unwrap_or((text, ""));
    let head = head
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .trim_end_matches('.');
    // The verifier ends with statistics ("processed N insns ..."); the complaint comes before.
    let is_statistics = |l: &str| {
        ["processed ", "verification time", "stack depth"]
            .iter()
            .any(|p| l.starts_with(p))
    };
    match log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !is_statistics(l))
    {
        Some(last) => format!("{head}; verifier: {last}"),
        None => head.to_string(),
    }
}
