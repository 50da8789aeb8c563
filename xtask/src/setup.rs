//! Installs what a fresh machine lacks and nothing else, saying what it installs.
use std::process::Command;

use anyhow::{Context, bail};

use crate::util::{exec, output, privileged};

const BPF_LINKER_VERSION: &str = "0.10.4";
/// Debian packages the tests and the demo use: bpftool reads the kernel's program lists.
/// ethtool turns veth checksum offload off, so the corrupt test can watch receivers verify.
const DEBIAN_PACKAGES: &[&str] = &["bpftool", "iproute2", "ethtool"];

pub fn run() -> anyhow::Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages(DEBIAN_PACKAGES)?;
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context(
        "the nightly toolchain is needed for the eBPF crate (rustup toolchain install nightly)",
    )?;
    if !installed.lines().any(|line| line.starts_with("rust-src")) {
        println!(
            "setup: installing rust-src for the nightly toolchain (eBPF builds core from source)"
        );
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if current
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    println!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} (links the eBPF object; uses rustc's LLVM 22)"
    );
    exec(Command::new(env!("CARGO")).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "rust-llvm-22",
    ]))
}

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
    println!("setup: installing Debian packages {}", missing.join(" "));
    exec(privileged("apt-get").args(["update", "-qq"]))?;
    let status = privileged("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}
