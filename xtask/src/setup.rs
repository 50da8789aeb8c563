//! Installs what a fresh machine lacks and nothing else, saying what it installs. A step that
//! cannot be done ends setup with one line: what is missing and how to install it by hand.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::bail;

use crate::util::{is_root, output};

const BPF_LINKER_VERSION: &str = "0.10.4";
/// Debian packages the tests and the demo use: bpftool reads the kernel's program lists.
/// ethtool turns veth checksum offload off, so the corrupt test can watch receivers verify.
/// prometheus is the real server that scrapes the agent in its test. containerd, runc,
/// busybox-static (the local images) and containernetworking-plugins (the pods' bridge) run real
/// CRI pods for the pod-scoping tests; protobuf-compiler is protoc, which k8s-cri's build needs.
const DEBIAN_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "ethtool",
    "prometheus",
    "containerd",
    "runc",
    "busybox-static",
    "containernetworking-plugins",
    "protobuf-compiler",
    // The example backend of the chaos experiments (examples/backend, tests/src/services.rs): a
    // Flask web API with a Redis read-through cache over PostgreSQL, all real servers started by
    // the tests on loopback. Debian's python3-* packages, so no pip is needed for the API.
    "redis-server",
    "postgresql",
    "python3-flask",
    "python3-redis",
    "python3-psycopg2",
    // DNS faults are checked against a real DNS server (dnsmasq, run by the tests in their own
    // network namespaces) through real resolvers: glibc's getaddrinfo and dig.
    "dnsmasq-base",
    "bind9-dnsutils",
    // Headless Chromium renders an experiment's HTML report in its test, as a person would see it.
    "chromium",
];

pub fn run() -> anyhow::Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages(DEBIAN_PACKAGES)?;
    kubectl_kustomize()?;
    manifest_validators()?;
    Ok(())
}

/// The validators of deploy/'s manifests (tests/tests/deploy.rs), pinned: from PyPI, into a
/// virtualenv of the project's because Debian's pip refuses to install into the system.
const MANIFEST_VALIDATORS: &[(&str, &str)] = &[
    // The Kubernetes API's own schemas, bundled: validates manifests and CRDs offline.
    ("kubernetes-validate", "1.37.0"),
    // Checks the example ChaosFaults against the CRD's schema.
    ("check-jsonschema", "0.39.0"),
];

/// Where the validators live: `$CHAOS_BPF_VENV`, else `~/.cache/chaos-bpf/venv` (the test looks
/// there by the same rule).
fn venv_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CHAOS_BPF_VENV") {
        return Ok(dir.into());
    }
    let Some(home) = std::env::var_os("HOME") else {
        bail!("setup: HOME is not set; set it, or CHAOS_BPF_VENV to a directory for a virtualenv");
    };
    Ok(Path::new(&home).join(".cache/chaos-bpf/venv"))
}

/// `kubectl kustomize` renders deploy/ offline (`kubectl apply --dry-run=client` needs a server).
/// Machines of this project come with a kubectl; where none is, Debian's kubernetes-client
/// brings one (kubectl 1.20, whose older kustomize deploy/kustomization.yaml is written for).
fn kubectl_kustomize() -> anyhow::Result<()> {
    let works = || {
        Command::new("kubectl")
            .args(["kustomize", "--help"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works() {
        return Ok(());
    }
    if Command::new("kubectl").arg("--help").output().is_ok() {
        bail!(
            "setup: this kubectl has no `kustomize` subcommand (kubectl 1.14 or newer has); \
             replace it by hand: apt-get install kubernetes-client"
        );
    }
    debian_packages(&["kubernetes-client"])?;
    if !works() {
        bail!(
            "setup: kubernetes-client was installed but `kubectl kustomize` does not run; \
             check by hand: kubectl kustomize deploy/"
        );
    }
    Ok(())
}

/// kubernetes-validate and check-jsonschema at their pinned versions, in the project's virtualenv.
/// A marker file names what was installed, so a second run starts no Python at all.
fn manifest_validators() -> anyhow::Result<()> {
    let venv = venv_dir()?;
    let pins: Vec<String> = MANIFEST_VALIDATORS
        .iter()
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    let marker = venv.join("chaos-bpf-tools.txt");
    let installed = std::fs::read_to_string(&marker).is_ok_and(|m| m == pins.join("\n"))
        // exists() follows the interpreter's symlink: a removed base Python breaks the venv.
        && venv.join("bin/python3").exists()
        && MANIFEST_VALIDATORS
            .iter()
            .all(|(name, _)| venv.join("bin").join(name).is_file());
    if installed {
        return Ok(());
    }
    let by_hand = format!(
        "python3 -m venv {dir} && {dir}/bin/pip install {pins}",
        dir = venv.display(),
        pins = pins.join(" ")
    );
    println!(
        "setup: installing {} into {} (validate deploy/'s manifests offline)",
        pins.join(" "),
        venv.display()
    );
    if !venv.join("bin/python3").exists() {
        let make_venv = || {
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        // Debian's python3 needs python3-venv for ensurepip; other Pythons have it built in.
        if !make_venv() && (debian_packages(&["python3-venv"]).is_err() || !make_venv()) {
            bail!("setup: could not create a Python virtualenv; do it by hand: {by_hand}");
        }
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(&pins)
        .status();
    if !pip.is_ok_and(|s| s.success()) {
        bail!("setup: pip could not install the manifest validators; install by hand: {by_hand}");
    }
    std::fs::write(&marker, pins.join("\n"))?;
    Ok(())
}

/// The eBPF crate builds `core` from source with the nightly toolchain.
fn nightly_rust_src() -> anyhow::Result<()> {
    let Ok(toolchains) = output(Command::new("rustup").args(["toolchain", "list"])) else {
        bail!(
            "setup: rustup is not on PATH; chaos-bpf needs rustup's stable and nightly toolchains \
             (install rustup from your distribution or rustup.rs, then: rustup toolchain install nightly)"
        );
    };
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "setup: no nightly toolchain (the eBPF crate needs it); install it by hand: \
             rustup toolchain install nightly --component rust-src"
        );
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: installing rust-src for the nightly toolchain (eBPF builds core from source)");
    let added = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .status();
    if !added.is_ok_and(|s| s.success()) {
        bail!(
            "setup: could not add rust-src to the nightly toolchain; install it by hand: \
             rustup component add rust-src --toolchain nightly"
        );
    }
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// bpf-linker built against rustc's own LLVM 22, so no LLVM from apt is needed.
fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let by_hand = format!(
        "cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked --no-default-features \
         --features rust-llvm-22"
    );
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (links the eBPF object)");
    let installed = Command::new(env!("CARGO"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "rust-llvm-22",
        ])
        .status();
    if !installed.is_ok_and(|s| s.success()) {
        bail!("setup: building bpf-linker failed; install it by hand: {by_hand}");
    }
    if bpf_linker_version().is_none() {
        bail!(
            "setup: bpf-linker was installed into cargo's bin directory, which is not on PATH; \
             add it (export PATH=\"$HOME/.cargo/bin:$PATH\") and run setup again"
        );
    }
    Ok(())
}

/// Installs the Debian packages of `packages` that are missing (none: nothing runs).
pub fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "setup: apt-get not found (setup installs packages only on Debian and Ubuntu); \
             install by hand with your package manager: {list}"
        );
    }
    if !is_root()
        && !Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
    {
        bail!(
            "setup: installing {list} needs root; run as root (sudo -E cargo xtask ...) or \
             install by hand: sudo apt-get install {list}"
        );
    }
    println!("setup: installing Debian packages {list}");
    let apt = |args: &[&str]| {
        crate::util::privileged("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["update", "-qq"]) {
        bail!("setup: apt-get update failed; install by hand: apt-get install {list}");
    }
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    if !apt(&install) {
        bail!("setup: apt-get install {list} failed; see apt's message above");
    }
    Ok(())
}
