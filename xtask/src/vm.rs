//! The VM suite: boots real Debian kernels under qemu (software emulation: KVM fails on these
//! machines), with and without the bpf LSM, runs `chaos-vmtest` from a busybox initramfs and
//! collects a kernel × fault × mechanism matrix from the console.
use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};

use crate::{kernel_build, setup, util};

/// Where a kernel comes from.
enum Source {
    /// The newest Debian package whose name matches this pattern.
    Debian(&'static str),
    /// Built by the project (kernel_build.rs): the one kernel with bpf_override_return.
    Built,
}

/// The kernels and how each is booted: a 6.1-era production kernel and the current 6.12 (with
/// modules), with and without the bpf LSM, and the project's own 6.12 build for kprobe-override.
const KERNELS: &[(&str, Source, &[LsmMode])] = &[
    (
        "debian-6.1-cloud",
        Source::Debian(r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$"),
        BOTH_LSM_MODES,
    ),
    (
        "debian-6.12",
        Source::Debian(r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
        BOTH_LSM_MODES,
    ),
    // Everything is built in and its CONFIG_LSM lists bpf: one boot covers it.
    ("chaos-6.12-kpo", Source::Built, &[WITH_BPF_LSM]),
];

/// (label, kernel command line). Debian's CONFIG_LSM lists `bpf`, so "without" needs an explicit
/// list that omits it.
type LsmMode = (&'static str, &'static str);
const WITH_BPF_LSM: LsmMode = ("bpf-lsm", "lsm=lockdown,capability,bpf");
const BOTH_LSM_MODES: &[LsmMode] = &[WITH_BPF_LSM, ("no-bpf-lsm", "lsm=lockdown,capability")];

const MUSL: &str = "x86_64-unknown-linux-musl";
/// A boot takes about 90 s under emulation here; a hang must not eat CI's time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much of a failed boot's console the error shows.
const CONSOLE_TAIL_LINES: usize = 40;
/// musl-tools is the C compiler for the static build: ring (rustls' crypto, which the Kubernetes
/// client uses) compiles C and assembly.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "cpio",
    "busybox-static",
    "xz-utils",
    "musl-tools",
];

fn vm_dir() -> PathBuf {
    util::workspace().join("target/vm")
}

/// Kernels are cached outside the checkout, so fresh clones on the same machine (CI) reuse them:
/// `$CHAOS_VM_CACHE`, else `~/.cache/chaos-bpf/kernels`.
fn kernel_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAOS_VM_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/chaos-bpf/kernels")
}

pub fn setup() -> anyhow::Result<()> {
    setup::debian_packages(VM_PACKAGES)?;
    let targets = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets.lines().any(|t| t == MUSL) {
        println!("setup: installing the {MUSL} target (static binaries for the VM initramfs)");
        util::exec(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    Ok(())
}

struct Kernel {
    label: &'static str,
    version: String,
    vmlinuz: PathBuf,
    /// The unpacked package, for its modules; `None` where everything is built in.
    root: Option<PathBuf>,
    lsm_modes: &'static [LsmMode],
}

/// Modules the suite loads (none has dependencies): fq for delay, netem and tbf for the bench's
/// comparisons, clsact and cls_bpf for TC before tcx, veth for namespaces.
const MODULES: &[&str] = &[
    "kernel/net/sched/sch_fq.ko",
    "kernel/net/sched/sch_netem.ko",
    "kernel/net/sched/sch_tbf.ko",
    "kernel/net/sched/sch_ingress.ko",
    "kernel/net/sched/cls_bpf.ko",
    "kernel/drivers/net/veth.ko",
];

/// One of `KERNELS`, downloaded or built on first use.
fn kernel(
    (label, source, lsm_modes): &(&'static str, Source, &'static [LsmMode]),
) -> anyhow::Result<Kernel> {
    let mut kernel = match source {
        Source::Debian(pattern) => fetch_kernel(label, pattern)?,
        Source::Built => {
            let built = kernel_build::ensure(&kernel_cache())?;
            Kernel {
                label,
                version: built.version,
                vmlinuz: built.bzimage,
                root: None,
                lsm_modes: &[],
            }
        }
    };
    kernel.lsm_modes = lsm_modes;
    Ok(kernel)
}

fn build_static_binaries() -> anyhow::Result<()> {
    println!("vm: building static binaries for the initramfs");
    util::exec(
        Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                MUSL,
                "-p",
                "chaos-userspace",
                "-p",
                "chaos-tests",
                "--bins",
            ])
            // cc-rs would look for x86_64-linux-musl-gcc; Debian's musl-tools calls it musl-gcc.
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc"),
    )
}

/// The benchmark's in-VM part on the current Debian 6.12, which has both fq and netem.
pub fn bench() -> anyhow::Result<serde_json::Value> {
    setup()?;
    let entry = KERNELS
        .iter()
        .find(|(label, ..)| *label == "debian-6.12")
        .context("the debian-6.12 kernel entry")?;
    let kernel = kernel(entry)?;
    build_static_binaries()?;
    let initramfs = build_initramfs(&kernel)?;
    let boot = format!("{}/bench", kernel.label);
    println!("vm: booting {boot} ({})", kernel.version);
    let console = boot_console(
        &kernel,
        &initramfs,
        &format!("{} chaos_mode=bench", WITH_BPF_LSM.1),
        &boot,
    )?;
    bench_result(&console)
}

/// The in-VM bench's JSON from a console: its `BENCH` line, or why it failed.
fn bench_result(console: &str) -> anyhow::Result<serde_json::Value> {
    if let Some(failure) = console
        .lines()
        .find_map(|l| l.split_once("CHAOS-VM: BENCH-FAILED "))
    {
        bail!("the in-VM benchmark failed: {}", failure.1.trim());
    }
    let report = console
        .lines()
        .find_map(|l| l.split_once("CHAOS-VM: BENCH "))
        .context("the VM printed no benchmark report")?
        .1;
    Ok(serde_json::from_str(report.trim())?)
}

/// The boot whose runner also runs the quick bench after its cases (`bench_quick`): Debian 6.12
/// has both fq and netem, and sharing its boot costs the bench no boot of its own.
const BENCH_BOOT: &str = "debian-6.12/bpf-lsm";

/// The whole VM suite; with `bench_quick`, the in-VM bench's quick pass too, in the suite's
/// Debian 6.12 boot, whose JSON result it returns (`None` when that boot was not selected).
pub fn run(bench_quick: bool) -> anyhow::Result<Option<serde_json::Value>> {
    setup()?;
    let started = Instant::now();
    // CHAOS_VM_ONLY=debian-6.12/bpf-lsm boots just that one while iterating (and fetches or
    // builds no other kernel).
    let only = std::env::var("CHAOS_VM_ONLY").ok();
    let selected = |boot: &str| only.as_deref().is_none_or(|only| boot.starts_with(only));
    let kernels: Vec<Kernel> = KERNELS
        .iter()
        .filter(|(label, _, modes)| {
            modes
                .iter()
                .any(|(mode, _)| selected(&format!("{label}/{mode}")))
        })
        .map(kernel)
        .collect::<anyhow::Result<_>>()?;
    build_static_binaries()?;

    let mut matrix: BTreeMap<(String, String, String), (String, String)> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut bench = None;
    for kernel in &kernels {
        let initramfs = build_initramfs(kernel)?;
        for (mode, cmdline) in kernel.lsm_modes {
            let boot = format!("{}/{mode}", kernel.label);
            if !selected(&boot) {
                continue;
            }
            let with_bench = bench_quick && boot == BENCH_BOOT;
            let cmdline = if with_bench {
                format!("{cmdline} chaos_mode=test-bench-quick")
            } else {
                cmdline.to_string()
            };
            println!("vm: booting {boot} ({}), {cmdline}", kernel.version);
            let boot_started = Instant::now();
            match boot_console(kernel, &initramfs, &cmdline, &boot) {
                Ok(console_text) => {
                    if with_bench {
                        match bench_result(&console_text) {
                            Ok(result) => bench = Some(result),
                            Err(err) => problems.push(format!("{boot}: quick bench: {err:#}")),
                        }
                    }
                    let results = results_of(&console_text);
                    println!(
                        "vm: {boot} finished in {:.0} s",
                        boot_started.elapsed().as_secs_f64()
                    );
                    let plan = plan_of(&console_text);
                    if plan.is_empty() {
                        problems.push(format!("{boot}: the runner planned no case"));
                    }
                    for (fault, mechanism) in plan {
                        if !results.iter().any(|r| r.0 == fault && r.1 == mechanism) {
                            problems.push(format!("{boot}: no report for {fault} via {mechanism}"));
                        }
                    }
                    for (fault, mechanism, status, detail) in results {
                        if status == "FAIL" {
                            problems.push(format!("{boot}: {fault} via {mechanism}: {detail}"));
                        }
                        matrix.insert((boot.clone(), fault, mechanism), (status, detail));
                    }
                }
                Err(err) => problems.push(format!("{boot}: {err:#}")),
            }
        }
    }
    print_matrix(&matrix);
    // Coverage is judged on full runs only: a CHAOS_VM_ONLY run leaves out the other kernels.
    if only.is_none() {
        problems.extend(uncovered_pairs(&matrix));
    }
    println!("vm: suite took {:.0} s", started.elapsed().as_secs_f64());
    fs::write(vm_dir().join("matrix.txt"), render_matrix(&matrix))?;
    if !problems.is_empty() {
        bail!("VM suite failed:\n  {}", problems.join("\n  "));
    }
    Ok(bench)
}

/// Resolves the newest package matching `pattern`, downloads and unpacks it once into the cache.
fn fetch_kernel(label: &'static str, pattern: &str) -> anyhow::Result<Kernel> {
    let cache = kernel_cache();
    fs::create_dir_all(&cache)?;
    let search = || -> anyhow::Result<Vec<String>> {
        let out =
            util::output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    };
    let mut names = search()?;
    if names.is_empty() {
        util::exec(util::privileged("apt-get").args(["update", "-qq"]))?;
        names = search()?;
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    let package = match names.last() {
        Some(name) => name.clone(),
        None => {
            // Offline: fall back to the newest kernel already unpacked for this pattern.
            let regex_free = pattern
                .trim_start_matches('^')
                .split('\\')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut cached: Vec<String> = fs::read_dir(&cache)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&regex_free))
                .collect();
            cached.sort_by(|a, b| natural_cmp(a, b));
            cached
                .pop()
                .with_context(|| format!("no package matches {pattern} and nothing is cached"))?
        }
    };
    let unpacked = cache.join(&package);
    if !unpacked.join("boot").exists() {
        println!("vm: downloading {package}");
        let download = cache.join("download");
        fs::create_dir_all(&download)?;
        util::exec(
            Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(&download),
        )?;
        let deb = fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .context("downloaded .deb not found")?;
        let partial = cache.join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        util::exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &unpacked)?;
        fs::remove_file(&deb)?;
    }
    let vmlinuz = fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the package")?;
    let version = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_start_matches("vmlinuz-")
        .to_string();
    Ok(Kernel {
        label,
        version,
        vmlinuz,
        root: Some(unpacked),
        lsm_modes: &[],
    })
}

/// Orders "6.12.9" before "6.12.117": digit runs compare as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (a, b) = (chunks(a), chunks(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x.0 && y.0, x.1.parse::<u64>(), y.1.parse::<u64>()) {
            (true, Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.1.cmp(&y.1),
        };
        if order != std::cmp::Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t securityfs securityfs /sys/kernel/security
for module in /lib/modules/*.ko; do [ -e "$module" ] && insmod "$module"; done
ip link set lo up
echo "CHAOS-VM: BOOTED $(uname -r) lsm=$(cat /sys/kernel/security/lsm)"
export CHAOS_BPF=/bin/chaos-bpf CHAOS_TESTKIT=/bin/chaos-testkit
# The kernel hands unknown "key=value" boot parameters to init as environment variables.
/bin/chaos-vmtest ${chaos_mode:-test}
echo "CHAOS-VM: EXIT $?"
poweroff -f
"#;

/// A newc cpio with busybox, /init, the static chaos binaries and the kernel's modules.
fn build_initramfs(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let root = vm_dir().join(format!("initramfs-{}", kernel.label));
    let _ = fs::remove_dir_all(&root);
    for dir in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "lib/modules",
        "var/run/netns",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    let modules = kernel
        .root
        .as_ref()
        .map(|root| root.join("lib/modules").join(&kernel.version));
    for module in modules
        .iter()
        .flat_map(|dir| MODULES.iter().map(move |m| (dir, m)))
    {
        let (modules, module) = module;
        let name = Path::new(module).file_name().context("module name")?;
        let plain = modules.join(module);
        let compressed = modules.join(format!("{module}.xz"));
        let target = root.join("lib/modules").join(name);
        if plain.exists() {
            fs::copy(&plain, &target)?;
        } else {
            // busybox insmod takes plain modules: unpack Debian's .ko.xz.
            let out = Command::new("xz")
                .arg("-dc")
                .arg(&compressed)
                .output()
                .context("xz")?;
            ensure!(out.status.success(), "unpacking {}", compressed.display());
            fs::write(&target, out.stdout)?;
        }
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    let release = util::target_dir().join(MUSL).join("release");
    for binary in ["chaos-bpf", "chaos-testkit", "chaos-vmtest"] {
        fs::copy(release.join(binary), root.join("bin").join(binary))
            .with_context(|| format!("copying {binary}"))?;
    }
    fs::write(root.join("init"), INIT)?;
    util::exec(Command::new("chmod").args(["+x"]).arg(root.join("init")))?;
    let archive = vm_dir().join(format!("initramfs-{}.cpio", kernel.label));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . | cpio --quiet -o -H newc > {}",
            archive.display()
        ))
        .current_dir(&root)
        .status()?;
    ensure!(status.success(), "cpio failed");
    Ok(archive)
}

type Result4 = Vec<(String, String, String, String)>;

/// Boots the kernel with `cmdline` added, keeps the console in target/vm/<boot>.log, and returns
/// it once the runner reported FINISHED.
fn boot_console(
    kernel: &Kernel,
    initramfs: &Path,
    cmdline: &str,
    boot: &str,
) -> anyhow::Result<String> {
    let log_path = vm_dir().join(format!("{}.log", boot.replace('/', "-")));
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            // One host thread for both vCPUs: with a thread each (MTTCG), a vCPU could still run
            // an int3 the kernel had already patched out of a static branch (a 6.12 boot died
            // with "Oops: int3" in the scheduler as cpu.max flipped the CFS bandwidth key).
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            &format!("console=ttyS0 panic=-1 quiet {cmdline}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut console = Vec::new();
        let _ = stdout.read_to_end(&mut console);
        console
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "timed out after {} s (console in {})",
                BOOT_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    fs::File::create(&log_path)?.write_all(console.as_bytes())?;
    for line in console
        .lines()
        .filter(|l| l.contains("CHAOS-VM: BOOTED") || l.contains("CHAOS-VM: DOCTOR"))
    {
        println!("  {}", line.trim_end().trim_start_matches("CHAOS-VM: "));
    }
    if !console.contains("CHAOS-VM: FINISHED") {
        // CI keeps only what is printed: show the end of the console, not just its path.
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..].join("\n    | ");
        bail!(
            "the VM did not report FINISHED (console in {}); its last lines:\n    | {tail}",
            log_path.display()
        );
    }
    Ok(console)
}

/// The runner's `RESULT <fault> <mechanism> <status> <detail>` lines.
/// The cases the in-VM runner announced before running them.
fn plan_of(console: &str) -> Vec<(String, String)> {
    console
        .lines()
        .filter_map(|line| {
            let rest = line.trim_end().split_once("CHAOS-VM: PLAN ")?.1;
            let (fault, mechanism) = rest.split_once(' ')?;
            Some((fault.to_string(), mechanism.to_string()))
        })
        .collect()
}

fn results_of(console: &str) -> Result4 {
    console
        .lines()
        .filter_map(|line| {
            let rest = line.trim_end().split_once("CHAOS-VM: RESULT ")?.1;
            let mut parts = rest.splitn(4, ' ');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

type Matrix = BTreeMap<(String, String, String), (String, String)>;

fn render_matrix(matrix: &Matrix) -> String {
    let mut out = format!(
        "{:28} {:14} {:16} {:5} detail\n",
        "kernel/boot", "fault", "mechanism", "result"
    );
    for ((boot, fault, mechanism), (status, detail)) in matrix {
        out.push_str(&format!(
            "{boot:28} {fault:14} {mechanism:16} {status:5} {detail}\n"
        ));
    }
    out
}

fn print_matrix(matrix: &Matrix) {
    println!(
        "\nvm: kernel × fault × mechanism\n{}",
        render_matrix(matrix)
    );
}

/// Every pair must pass on at least one boot, except the known gaps, which are reported.
fn uncovered_pairs(matrix: &Matrix) -> Vec<String> {
    let mut pairs: BTreeMap<(String, String), bool> = BTreeMap::new();
    for ((_, fault, mechanism), (status, _)) in matrix {
        *pairs.entry((fault.clone(), mechanism.clone())).or_default() |= status == "PASS";
    }
    let mut problems = Vec::new();
    for ((fault, mechanism), passed) in pairs {
        if passed {
            continue;
        }
        problems.push(format!("{fault} via {mechanism} passed on no kernel"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_of_kernel_packages() {
        let mut names = [
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.12.9+deb12-amd64-unsigned",
            "linux-image-6.12.48+deb12-amd64-unsigned",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names.last().unwrap(),
            &"linux-image-6.12.117+deb12-amd64-unsigned"
        );
    }
}
