//! Helpers for the root integration tests. Everything a test creates is owned by a guard whose
//! `Drop` removes it, so a failing (panicking) test still cleans up.
pub mod agent;
pub mod cases;
pub mod kube_api;
pub mod pods;
pub mod services;
pub mod vm_bench;

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The chaos-bpf binary under test: `$CHAOS_BPF`, or the one built beside this executable.
pub fn chaos_bin() -> PathBuf {
    built_binary("CHAOS_BPF", "chaos-bpf")
}

/// The testkit helper: `$CHAOS_TESTKIT`, or the one built beside this executable.
pub fn testkit_bin() -> PathBuf {
    built_binary("CHAOS_TESTKIT", "chaos-testkit")
}

/// `$VAR`, else `name` in this executable's profile directory: test executables live in
/// `target/<profile>/deps/`, binaries (the demo, the bench) in `target/<profile>/` itself.
fn built_binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("executable path");
    let mut dir = exe.parent().expect("executable directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("profile directory");
    }
    dir.join(name)
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests load eBPF programs and must run as root: use `cargo xtask test`"
    );
}

/// The cgroup2 mount point (on hybrid hosts /sys/fs/cgroup/unified).
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, tail) = line.split_once(" - ")?;
            let mount = fields.split_whitespace().nth(4)?;
            tail.starts_with("cgroup2 ").then(|| PathBuf::from(mount))
        })
        .expect("no cgroup2 mount")
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A file for one test (an experiment for `chaos-bpf run`), removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &str) -> Self {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("chaos-{name}-{}-{n}", std::process::id()));
        std::fs::write(&path, contents).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        Self { path }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A cgroup v2 directory made for one test; killed and removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let path = cgroup2_root().join(format!("chaos-test-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path }
    }

    /// A cgroup below this one (drop it before its parent: declare it after).
    pub fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path }
    }

    /// A command that moves itself into this cgroup before exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut command = Command::new(program);
        // SAFETY: only async-signal-safe work (open/write/close) between fork and exec.
        unsafe {
            command.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        command
    }

    /// Runs the testkit inside the cgroup and parses its last stdout line as JSON.
    pub fn testkit(&self, args: &[&str]) -> serde_json::Value {
        let output = self
            .command(testkit_bin())
            .args(args)
            .output()
            .expect("run testkit");
        assert!(
            output.status.success(),
            "testkit {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        last_json_line(&output.stdout)
    }
}

/// A test cgroup whose cpu and memory knobs exist: on a hybrid host (v1 controllers, as here)
/// the v1 cgroups at the same path, as runc makes a container's; on a unified host the v2
/// cgroup, with the controllers enabled in the root's subtree.
pub struct KnobCgroup {
    pub cgroup: TestCgroup,
    /// The v1 directories, by controller.
    pub v1: Vec<(String, PathBuf)>,
}

pub use chaos::faults::pressure::v1_mount;

impl KnobCgroup {
    pub fn new(name: &str) -> Self {
        let cgroup = TestCgroup::new(name);
        let relative = cgroup
            .path
            .strip_prefix(cgroup2_root())
            .expect("below the cgroup2 root")
            .to_path_buf();
        let mut v1 = Vec::new();
        for controller in ["cpu", "memory"] {
            match v1_mount(controller) {
                Some(mount) => {
                    let dir = mount.join(&relative);
                    std::fs::create_dir(&dir)
                        .unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
                    v1.push((controller.to_string(), dir));
                }
                None => {
                    let _ = std::fs::write(
                        cgroup2_root().join("cgroup.subtree_control"),
                        format!("+{controller}"),
                    );
                }
            }
        }
        Self { cgroup, v1 }
    }

    /// The knob file: v1's `v1_file` where the controller is v1, else v2's `v2_file`.
    pub fn knob(&self, controller: &str, v1_file: &str, v2_file: &str) -> PathBuf {
        match self.v1.iter().find(|(c, _)| c == controller) {
            Some((_, dir)) => dir.join(v1_file),
            None => self.cgroup.path.join(v2_file),
        }
    }

    pub fn read(&self, knob: &Path) -> String {
        std::fs::read_to_string(knob)
            .unwrap_or_else(|err| panic!("read {}: {err}", knob.display()))
            .trim()
            .to_string()
    }

    /// A command that moves itself into the cgroup, v1 and v2, before exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut procs: Vec<PathBuf> = vec![self.cgroup.path.join("cgroup.procs")];
        procs.extend(self.v1.iter().map(|(_, dir)| dir.join("cgroup.procs")));
        let mut command = Command::new(program);
        // SAFETY: only async-signal-safe work (open/write/close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for file in &procs {
                    std::fs::write(file, b"0")?;
                }
                Ok(())
            });
        }
        command
    }
}

impl Drop for KnobCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.cgroup.path.join("cgroup.kill"), b"1");
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, dir) in &self.v1 {
            while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The CPU time a process has used, in seconds (utime + stime of /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

/// The share of one CPU `pid` uses over `window`.
pub fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    std::thread::sleep(window);
    (cpu_seconds(pid) - before) / window.as_secs_f64()
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), b"1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn last_json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {text:?}"));
    serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"))
}

/// A running `chaos-bpf inject ...`; SIGKILLed on drop if still running.
pub struct ChaosRun {
    child: Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    /// Reads stdout all along, so a run printing much (an `armed` record per fault of 10,000)
    /// never blocks on a full pipe.
    stdout: Option<std::thread::JoinHandle<String>>,
    /// stdout's lines so far, for the JSON `armed` records while the run goes on.
    stdout_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// What a finished run printed.
pub struct ChaosOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ChaosOutput {
    pub fn summary(&self) -> serde_json::Value {
        last_json_line(self.stdout.as_bytes())
    }

    /// Every summary line, in fault-id order (a `run` prints one per fault).
    pub fn summaries(&self) -> Vec<serde_json::Value> {
        self.records("summary")
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.records("injection")
    }

    /// The JSON lines on stdout of one `type`.
    fn records(&self, kind: &str) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == kind)
            .collect()
    }
}

impl ChaosRun {
    /// Starts chaos-bpf and waits until it says the fault is armed.
    pub fn start(args: &[&str]) -> Self {
        Self::start_program(chaos_bin(), args)
    }

    /// Like `start`, through another program (`ip netns exec NAME chaos-bpf ...`).
    pub fn start_program(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chaos-bpf");
        let stderr = child.stderr.take().expect("stderr");
        let stdout_pipe = child.stdout.take().expect("stdout");
        let stdout_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines_seen = std::sync::Arc::clone(&stdout_lines);
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stdout_pipe).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
                if line.contains("\"armed\"")
                    && let Ok(mut seen) = lines_seen.lock()
                {
                    seen.push(line);
                }
            }
            text
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut run = Self {
            child,
            stderr_lines: rx,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
            stdout_lines,
        };
        // A hang guard, not a performance bound: under emulation (the VM suite) loading and
        // verifying takes seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match run.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let armed = line.contains(" armed ");
                    run.stderr_seen.push(line);
                    if armed {
                        return run;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let output = run.wait();
                    panic!(
                        "chaos-bpf {args:?} exited before arming: {:?}\n{}",
                        output.code, output.stderr
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    assert!(
                        Instant::now() < deadline,
                        "chaos-bpf {args:?} did not arm: {:?}",
                        run.stderr_seen
                    );
                }
            }
        }
    }

    /// The first stderr line: which mechanism, and why not a better one.
    pub fn first_line(&self) -> &str {
        self.stderr_seen.first().map_or("", String::as_str)
    }

    /// The JSON `armed` records on stdout so far (the contract the API's fault resource shares),
    /// waiting up to 5 s for the first.
    pub fn armed_records(&self) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records: Vec<serde_json::Value> = self
                .stdout_lines
                .lock()
                .map(|lines| lines.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["type"] == "armed")
                .collect();
            if !records.is_empty() || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The kernel ids of the programs realising the run's faults, from its `armed` records.
    pub fn program_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for record in self.armed_records() {
            for id in record["fault"]["program_ids"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(id) = id.as_u64().and_then(|id| u32::try_from(id).ok())
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Waits up to 10 s for a stderr line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> Option<String> {
        if let Some(seen) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
            return Some(seen.clone());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.stderr_seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    /// Everything chaos-bpf printed on stderr up to arming.
    pub fn first_lines(&self) -> String {
        self.stderr_seen.join("\n")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGTERM, then the output.
    pub fn stop(mut self) -> ChaosOutput {
        let _ = kill(self.pid(), Signal::SIGTERM);
        self.wait()
    }

    /// SIGKILL, as an OOM killer or `kubectl delete --force` would.
    pub fn kill_hard(mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn wait(&mut self) -> ChaosOutput {
        let status = self.child.wait().expect("wait chaos-bpf");
        let stdout = self
            .stdout
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            stderr.push(line);
        }
        ChaosOutput {
            code: status.code(),
            stdout,
            stderr: stderr.join("\n"),
        }
    }
}

impl Drop for ChaosRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs chaos-bpf to completion (for commands that fail fast or have a --duration).
pub fn chaos(args: &[&str]) -> ChaosOutput {
    let output = Command::new(chaos_bin())
        .args(args)
        .output()
        .expect("run chaos-bpf");
    ChaosOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// IDs of the BPF programs attached to a cgroup, from the kernel (bpftool).
pub fn attached_program_ids(cgroup: &Path) -> Vec<u64> {
    let output = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    let text = String::from_utf8_lossy(&output.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let list: serde_json::Value = serde_json::from_str(text.trim()).expect("bpftool JSON");
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Whether a program with this id is still loaded anywhere in the kernel.
pub fn program_loaded(id: u64) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Which of `ids` the kernel still lists as loaded programs (its own list, through aya, so it
/// works where bpftool is absent, as in the VM).
pub fn still_loaded(ids: &[u32]) -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect()
}

/// Polls `condition` for up to `timeout` (the kernel frees programs asynchronously).
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Half-width of the 99.9% two-sided normal approximation to a binomial count.
pub fn binomial_bound(trials: u64, p: f64) -> f64 {
    3.291 * (trials as f64 * p * (1.0 - p)).sqrt()
}

/// A TCP listener outside every test cgroup, accepting and dropping connections forever.
pub fn tcp_sink(addr: &str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    let local = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    local
}

/// Closes a connection with a reset (SO_LINGER 0) instead of a FIN, so no TIME_WAIT socket is
/// left: thousands of connects in a row do not run out of ports.
pub fn close_without_time_wait(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a live socket with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// `testkit hold` in the cgroup: its report once every attempt is done, and the process, which
/// holds its connections until killed or HOLD_MS pass.
pub fn hold_connections(
    cgroup: &TestCgroup,
    addr: &str,
    count: u32,
    hold_ms: u32,
) -> anyhow::Result<(serde_json::Value, std::process::Child)> {
    use anyhow::Context as _;
    use std::io::BufRead as _;
    let mut child = cgroup
        .command(testkit_bin())
        .args(["hold", addr, &count.to_string(), &hold_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn testkit hold")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    Ok((serde_json::from_str(&line).context("hold report")?, child))
}

/// A TCP listener outside every test cgroup that resets each connection as soon as it accepts
/// it (SO_LINGER 0): the client's connection is reset by the peer.
pub fn tcp_resetter(addr: &str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    let local = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            close_without_time_wait(&stream);
        }
    });
    local
}

/// A TCP server outside every test cgroup that counts the bytes of each connection and replies
/// with the count.
pub fn tcp_counter(addr: &str) -> std::net::SocketAddr {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    let local = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                let _ = write!(stream, "{total}");
            });
        }
    });
    local
}

/// A TCP server outside every test cgroup that greets each connection with "hello\n", then reads
/// until the peer closes: recv calls have data to read and send calls have a reader.
pub fn tcp_talker(addr: &str) -> std::net::SocketAddr {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    let local = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.write_all(b"hello\n");
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    local
}

/// What `chaos-bpf doctor --json` says about one fault × mechanism pair: `Ok(())` when ready,
/// otherwise the reason it is not.
pub fn pair_readiness(
    report: &serde_json::Value,
    fault: &str,
    mechanism: &str,
) -> Result<(), String> {
    let fault_entry = report["faults"]
        .as_array()
        .and_then(|faults| faults.iter().find(|f| f["fault"] == fault))
        .ok_or_else(|| format!("doctor does not list {fault}"))?;
    let pair = fault_entry["mechanisms"]
        .as_array()
        .and_then(|pairs| pairs.iter().find(|p| p["mechanism"] == mechanism))
        .ok_or_else(|| format!("doctor does not list {fault} via {mechanism}"))?;
    if pair["ready"] == true {
        return Ok(());
    }
    if pair["missing"].as_array().is_none_or(|m| m.is_empty()) {
        return Err(format!("chaos-bpf has no {mechanism} programs"));
    }
    let missing: Vec<String> = pair["missing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .map(|m| {
            let detail = report["mechanisms"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["mechanism"] == m))
                .and_then(|p| p["detail"].as_str())
                .unwrap_or_default();
            format!("{m}: {detail}")
        })
        .collect();
    Err(format!("kernel lacks {}", missing.join("; ")))
}

pub fn doctor_report() -> serde_json::Value {
    let output = chaos(&["doctor", "--json"]);
    assert_eq!(output.code, Some(0), "doctor failed: {}", output.stderr);
    serde_json::from_str(&output.stdout).expect("doctor JSON")
}

/// A network namespace made for one test (named `chaos-…` so leak checks see it); deleted on
/// drop, which also removes the veth ends inside it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("chaos-{tag}-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Self { name }
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// `ip -n NAME args...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// chaos-bpf in this network namespace only, as a node agent runs in the host's: `nsenter
    /// --net` keeps the mounts, so cgroup2 stays visible (unlike `ip netns exec`).
    pub fn start_chaos(&self, args: &[&str]) -> ChaosRun {
        let binary = chaos_bin();
        let net = format!("--net={}", self.path());
        let mut full = vec![net.as_str(), binary.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        ChaosRun::start_program("nsenter", &full)
    }

    /// Sends `count` numbered datagrams from here (optionally from `cgroup`) to a receiver in
    /// `to` at `to_addr`, each send succeeding as a drop on the wire should; the receiver's
    /// report (received, delivered, altered, missing).
    pub fn udp_to(
        &self,
        cgroup: Option<&TestCgroup>,
        to: &Netns,
        to_addr: &str,
        count: u64,
    ) -> serde_json::Value {
        let (sent, received) = self.udp_exchange(cgroup, to, to_addr, count);
        assert_eq!(sent["send_errors"], 0, "{sent}");
        received
    }

    /// As `udp_to`, without judging the sender: (the sender's report, the receiver's).
    pub fn udp_exchange(
        &self,
        cgroup: Option<&TestCgroup>,
        to: &Netns,
        to_addr: &str,
        count: u64,
    ) -> (serde_json::Value, serde_json::Value) {
        let (receiver, addr) = to.serve(&[
            "udp-recv",
            &format!("{to_addr}:0"),
            &count.to_string(),
            "2000",
        ]);
        let sent = self.testkit(cgroup, &["udp-send", &addr, &count.to_string()]);
        let received = last_json_line(&receiver.wait_with_output().expect("receiver").stdout);
        (sent, received)
    }

    /// Runs the testkit in this namespace (and `cgroup`, if given); the last JSON line.
    pub fn testkit(&self, cgroup: Option<&TestCgroup>, args: &[&str]) -> serde_json::Value {
        let mut command = match cgroup {
            Some(cgroup) => {
                let mut c = cgroup.command("ip");
                c.args(["netns", "exec", &self.name]).arg(testkit_bin());
                c
            }
            None => self.command(testkit_bin()),
        };
        let output = command.args(args).output().expect("run testkit");
        assert!(
            output.status.success(),
            "testkit {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        last_json_line(&output.stdout)
    }

    /// Starts a testkit server here and returns it with the address it printed after "ready".
    pub fn serve(&self, args: &[&str]) -> (Child, String) {
        let mut command = self.command(testkit_bin());
        command.args(args);
        serve_with(command)
    }

    /// `serve` with the server held to one CPU (steadier benchmark numbers).
    pub fn serve_on_cpu(&self, cpu: usize, args: &[&str]) -> (Child, String) {
        let mut command = self.command("taskset");
        command
            .args(["-c", &cpu.to_string()])
            .arg(testkit_bin())
            .args(args);
        serve_with(command)
    }
}

/// Starts a testkit server and returns it with the address it printed after "ready".
pub fn serve_with(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .trim()
        .strip_prefix("ready ")
        .expect("ready line")
        .to_string();
    (child, addr)
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep it alive; ip netns pids lists them.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two namespaces joined by a veth pair: `a` (10.77.N.1, interface `ca<N>`) and `b` (10.77.N.2,
/// interface `cb<N>`), both private to the test.
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl VethPair {
    /// Turns checksum offload off on both ends, both ways: veth trusts offloaded (partial)
    /// checksums, so only software checksums make the receiver verify what corrupt changed.
    pub fn software_checksums(&self) {
        for (netns, iface) in [(&self.a, &self.a_if), (&self.b, &self.b_if)] {
            let status = netns
                .command("ethtool")
                .args(["-K", iface, "tx", "off", "rx", "off"])
                .stdout(Stdio::null())
                .status()
                .expect("ethtool");
            assert!(status.success(), "ethtool -K {iface} tx off rx off");
        }
    }

    pub fn new(tag: &str) -> Self {
        let a = Netns::new(&format!("{tag}-a"));
        let b = Netns::new(&format!("{tag}-b"));
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let (a_if, b_if) = (
            format!("ca{}x{n}", std::process::id() % 10000),
            format!("cb{}x{n}", std::process::id() % 10000),
        );
        run_ok(Command::new("ip").args([
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ]));
        let subnet = format!("10.77.{n}");
        let (a_addr, b_addr) = (format!("{subnet}.1"), format!("{subnet}.2"));
        a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", &a_if]);
        b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", &b_if]);
        a.ip(&["link", "set", &a_if, "up"]);
        b.ip(&["link", "set", &b_if, "up"]);
        Self {
            a,
            b,
            a_if,
            b_if,
            a_addr,
            b_addr,
        }
    }
}

/// What `tc` and bpftool say is attached to an interface in a namespace: compared before and
/// after a run to prove chaos-bpf removed exactly what it added.
pub fn tc_state(netns: &Netns, iface: &str) -> String {
    let mut state = String::new();
    for args in [
        vec!["tc", "qdisc", "show", "dev", iface],
        vec!["tc", "filter", "show", "dev", iface, "ingress"],
        vec!["tc", "filter", "show", "dev", iface, "egress"],
        vec!["bpftool", "net", "show", "dev", iface],
    ] {
        let output = netns
            .command(args[0])
            .args(&args[1..])
            .output()
            .expect("tc/bpftool");
        state.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    state.push_str(&format!("tcx: {:?}\n", tcx_programs(netns, iface)));
    state
}

/// Names of the tcx programs on an interface (both directions), asked of the kernel from a thread
/// inside the namespace.
pub fn tcx_programs(netns: &Netns, iface: &str) -> Vec<String> {
    let path = netns.path();
    let iface = iface.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tcx_programs_here(&iface)
    })
    .join()
    .expect("tcx query thread")
}

/// The tcx programs attached to `iface` in this network namespace.
pub fn tcx_programs_here(iface: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut names = Vec::new();
    for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, programs) = SchedClassifier::query_tcx(iface, attach_type).expect("query tcx");
        for program in programs {
            names.push(format!(
                "{attach_type:?}:{}",
                program.name_as_str().unwrap_or("?")
            ));
        }
    }
    names
}
