//! A kernel of the project's own for the VM suite: no distribution kernel available here has
//! CONFIG_FUNCTION_ERROR_INJECTION, so `kprobe + bpf_override_return` could run nowhere. This
//! builds Debian's `linux-source-6.12` from `tinyconfig` plus exactly what the suite needs (BPF,
//! BTF, kprobes with error injection, trampolines, the BPF LSM, cgroup v2, veth, fq, netem), all
//! built in. The result is cached, keyed by the source version and the option list, so it is
//! built once per machine (about 10 to 15 minutes on 2 cores).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail, ensure};

use crate::{setup, util};

const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// What building needs besides gcc and make; pahole must be there before configuring, or
/// Kconfig silently drops DEBUG_INFO_BTF.
const BUILD_PACKAGES: &[&str] = &["flex", "bison", "bc", "libelf-dev", "pahole", "libssl-dev"];

/// Options turned on over tinyconfig. Each must come out `=y` (checked after olddefconfig).
const OPTIONS: &[&str] = &[
    // A 64-bit SMP machine with a serial console, an initramfs and ACPI (so poweroff exits qemu).
    "64BIT",
    "SMP",
    "PRINTK",
    "PRINTK_TIME",
    "TTY",
    "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
    "PCI",
    "ACPI",
    "BLK_DEV_INITRD",
    "BINFMT_ELF",
    "BINFMT_SCRIPT",
    "PROC_FS",
    "PROC_SYSCTL",
    "SYSFS",
    "DEVTMPFS",
    "TMPFS",
    "SHMEM",
    "MULTIUSER",
    "FUTEX",
    "EPOLL",
    "EVENTFD",
    "SIGNALFD",
    "TIMERFD",
    "POSIX_TIMERS",
    "FILE_LOCKING",
    "ADVISE_SYSCALLS",
    // fq's departure times need fine timers.
    "HIGH_RES_TIMERS",
    "HZ_1000",
    // Scopes: cgroup v2 and network namespaces.
    "CGROUPS",
    "NAMESPACES",
    "NET_NS",
    // Networking: IPv4, IPv6, veth, TC with clsact, fq and netem.
    "NET",
    "INET",
    "IPV6",
    "UNIX",
    "PACKET",
    "NETDEVICES",
    "NET_CORE",
    "VETH",
    "NET_SCHED",
    "NET_SCH_FQ",
    "NET_SCH_NETEM",
    "NET_SCH_INGRESS",
    "NET_CLS_ACT",
    "NET_CLS_BPF",
    "NET_ACT_BPF",
    // BPF with cgroup hooks, tracing, trampolines and kernel BTF.
    "BPF_SYSCALL",
    "BPF_JIT",
    "BPF_JIT_ALWAYS_ON",
    "CGROUP_BPF",
    "PERF_EVENTS",
    "FTRACE",
    "FUNCTION_TRACER",
    "DYNAMIC_FTRACE",
    "DEBUG_KERNEL",
    "DEBUG_INFO_DWARF5",
    "DEBUG_INFO_BTF",
    // The point of this kernel: kprobes whose programs may override a return value.
    "KPROBES",
    "KPROBE_EVENTS",
    "BPF_EVENTS",
    "FUNCTION_ERROR_INJECTION",
    "BPF_KPROBE_OVERRIDE",
    // security_socket_* hooks for fmod_ret, and the BPF LSM.
    "SECURITY",
    "SECURITY_NETWORK",
    "SECURITYFS",
    "BPF_LSM",
];

/// `scripts/config` arguments besides enabling `OPTIONS`.
const OTHER_SETTINGS: &[&str] = &[
    "--disable",
    "DEBUG_INFO_NONE",
    "--disable",
    "UNWINDER_GUESS",
    "--enable",
    "UNWINDER_ORC",
    "--set-str",
    "LSM",
    "lockdown,capability,bpf",
];

/// The cache key of the configuration: FNV-1a over every option and setting, stable across
/// Rust releases (unlike std's hasher), so only a changed configuration rebuilds.
fn config_key() -> u64 {
    OPTIONS
        .iter()
        .chain(OTHER_SETTINGS)
        .flat_map(|word| word.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// A built kernel image and its release string.
pub struct Built {
    pub bzimage: PathBuf,
    pub version: String,
}

/// The cached kernel, built first if the cache lacks it.
pub fn ensure(cache: &Path) -> anyhow::Result<Built> {
    setup::debian_packages(BUILD_PACKAGES)?;
    let source_version = package_version(SOURCE_PACKAGE)?;
    let dir = cache.join(format!("chaos-kpo-{source_version}-{:016x}", config_key()));
    let (bzimage, release) = (dir.join("bzImage"), dir.join("release"));
    if !bzimage.exists() || !release.exists() {
        build(cache, &dir)?;
    }
    Ok(Built {
        bzimage,
        version: fs::read_to_string(release)?.trim().to_string(),
    })
}

fn package_version(package: &str) -> anyhow::Result<String> {
    let policy = util::output(Command::new("apt-cache").args(["policy", package]))?;
    let candidate = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_string);
    match candidate {
        Some(version) => Ok(version),
        None => {
            util::exec(util::privileged("apt-get").args(["update", "-qq"]))?;
            let policy = util::output(Command::new("apt-cache").args(["policy", package]))?;
            policy
                .lines()
                .find_map(|l| l.trim().strip_prefix("Candidate: "))
                .filter(|v| *v != "(none)")
                .map(str::to_string)
                .with_context(|| format!("apt-cache knows no {package}"))
        }
    }
}

fn build(cache: &Path, dir: &Path) -> anyhow::Result<()> {
    let work = cache.join("build-work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    println!("vm: building the kprobe-override kernel from {SOURCE_PACKAGE} (once per machine)");
    util::exec(
        Command::new("apt-get")
            .args(["download", "-q", SOURCE_PACKAGE])
            .current_dir(&work),
    )?;
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("the downloaded source package")?;
    util::exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&work))?;
    let tarball = fs::read_dir(work.join("usr/src"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .context("the source tarball")?;
    util::exec(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .current_dir(&work),
    )?;
    let source = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "usr"))
        .context("the unpacked source tree")?;
    let make = |args: &[&str]| {
        util::exec(
            Command::new("make")
                .arg("ARCH=x86_64")
                .args(args)
                .current_dir(&source),
        )
    };
    make(&["tinyconfig"])?;
    let mut config = Command::new("scripts/config");
    config.current_dir(&source).args(["--file", ".config"]);
    for option in OPTIONS {
        config.args(["--enable", option]);
    }
    config.args(OTHER_SETTINGS);
    util::exec(&mut config)?;
    make(&["olddefconfig"])?;
    let resolved = fs::read_to_string(source.join(".config"))?;
    let missing: Vec<&str> = OPTIONS
        .iter()
        .copied()
        .filter(|o| !resolved.contains(&format!("\nCONFIG_{o}=y")))
        .collect();
    ensure!(
        missing.is_empty(),
        "Kconfig dropped CONFIG_{} (a dependency is missing)",
        missing.join(", CONFIG_")
    );
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    make(&[jobs.as_str(), "bzImage"])?;
    let release = util::output(
        Command::new("make")
            .args(["ARCH=x86_64", "-s", "kernelrelease"])
            .current_dir(&source),
    )?;
    let partial = dir.with_file_name(format!(
        "{}.partial",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("chaos-kpo")
    ));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    fs::copy(
        source.join("arch/x86/boot/bzImage"),
        partial.join("bzImage"),
    )?;
    fs::write(partial.join("release"), release.trim())?;
    fs::copy(source.join(".config"), partial.join("config"))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&partial, dir)?;
    // The tree is 1.7 GB unpacked and more built: only the image is kept.
    fs::remove_dir_all(&work)?;
    if !dir.join("bzImage").exists() {
        bail!("the build left no bzImage");
    }
    Ok(())
}
