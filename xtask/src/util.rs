use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

pub fn exec(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    exec(Command::new(env!("CARGO")).args(args))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs cargo so that test binaries run as root: directly when we are root, otherwise through
/// `sudo -E` as the test runner (the opt-in way; nothing else runs privileged).
pub fn cargo_as_root(args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new(env!("CARGO"));
    command.args(args);
    if !is_root() {
        command.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    exec(&mut command)
}

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target directory cargo builds into: `CARGO_TARGET_DIR` when set, as cargo itself does.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Runs one of the project's binaries as root (through `sudo -E` when we are not).
pub fn run_as_root(program: &Path, args: &[&OsStr]) -> anyhow::Result<()> {
    run_as_root_with(program, args, &[])
}

/// [`run_as_root`] with environment variables for the program (kept through `sudo -E`).
pub fn run_as_root_with(
    program: &Path,
    args: &[&OsStr],
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut command = if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("-E").arg(program);
        command
    };
    exec(command.args(args).envs(env.iter().copied()))
}

/// Output of a command that must succeed, as text.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `root`-level command prefix: empty for root, `sudo` otherwise.
pub fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg(program);
        command
    }
}
