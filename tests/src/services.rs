//! The example backend of the chaos experiments (examples/backend): Redis, PostgreSQL and the web
//! API over both, real services from Debian's packages, each started by a test on a loopback port
//! of its own and inside the cgroup the test gives, so a fault can be scoped to exactly one of
//! them. Each guard's `Drop` kills every process it started, waits for them and removes its
//! temporary directory, so a panicking test leaves nothing behind either. Declare a service after
//! its cgroup, so that it is dropped first.
use std::{
    collections::HashMap,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{TestCgroup, agent::free_port};

/// A hang guard for a service to start, not a performance bound.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Redis on 127.0.0.1, without persistence.
pub struct Redis {
    pub port: u16,
    /// From spawning to answering PING.
    pub started_in: Duration,
    // Fields drop in order: the process is killed before its directory is removed.
    process: Service,
    dir: TempDir,
}

impl Redis {
    pub fn start(cgroup: &TestCgroup) -> Redis {
        Self::start_on(cgroup, free_port().port())
    }

    /// On a given port: a Redis started again after it was killed, as a supervisor would.
    pub fn start_on(cgroup: &TestCgroup, port: u16) -> Redis {
        Self::start_command(cgroup.command("redis-server"), port)
    }

    /// In a cgroup whose cpu and memory knobs exist (v1 beside v2 on a hybrid host), for the
    /// pressure faults.
    pub fn start_with_knobs(cgroup: &crate::KnobCgroup) -> Redis {
        Self::start_command(cgroup.command("redis-server"), free_port().port())
    }

    fn start_command(mut command: Command, port: u16) -> Redis {
        let begin = Instant::now();
        let dir = TempDir::new("redis");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            // Nothing written to disk: a cache that loses everything when killed.
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir.path);
        let mut redis = Redis {
            port,
            started_in: Duration::ZERO,
            process: Service::spawn("redis-server", command, &dir.path.join("redis.log")),
            dir,
        };
        redis
            .process
            .wait_ready("answering PING", || redis_ping(port));
        redis.started_in = begin.elapsed();
        redis
    }

    /// Whether Redis answers PING now.
    pub fn ping(&self) -> bool {
        redis_ping(self.port)
    }

    /// Its temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }
}

fn redis_ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && answer == *b"+PONG\r\n"
}

/// A PostgreSQL cluster of its own (initdb into a temporary directory), trusting loopback
/// connections.
pub struct Postgres {
    pub port: u16,
    /// `host=127.0.0.1 port=P user=postgres dbname=postgres`, for libpq and psycopg2.
    pub dsn: String,
    /// From initdb to accepting queries.
    pub started_in: Duration,
    bin: PathBuf,
    data: PathBuf,
    process: Service,
    dir: TempDir,
}

impl Postgres {
    pub fn start(cgroup: &TestCgroup) -> Postgres {
        let begin = Instant::now();
        let bin = postgres_bin_dir();
        // initdb refuses to run as root and the server must own its data directory: both run as
        // the `postgres` user of Debian's package.
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("no `postgres` user: install postgresql (cargo xtask setup)");
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        let dir = TempDir::new("postgres");
        nix::unistd::chown(&dir.path, Some(user.uid), Some(user.gid)).expect("chown the data dir");
        let data = dir.path.join("data");

        let initdb_log = dir.path.join("initdb.log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            // A throwaway cluster: no fsync of the new files.
            .arg("--no-sync")
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(log_file(&initdb_log))
            .stderr(log_file(&initdb_log));
        run_as(&mut initdb, uid, gid);
        let status = initdb.status().expect("run initdb");
        assert!(
            status.success(),
            "initdb: {status}\n{}",
            log_tail(&initdb_log)
        );

        let port = free_port().port();
        let mut command = cgroup.command(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
            // The Unix socket goes to the temporary directory, not /var/run/postgresql.
            .arg("-k")
            .arg(&dir.path)
            // Dynamic shared memory as files in the data directory rather than in /dev/shm,
            // where a killed server would leave them.
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            // Durability is not what the tests are about: no waiting on the disk.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .current_dir(&dir.path);
        run_as(&mut command, uid, gid);
        let mut postgres = Postgres {
            port,
            dsn: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            started_in: Duration::ZERO,
            bin,
            data,
            process: Service::spawn("postgres", command, &dir.path.join("postgres.log")),
            dir,
        };
        let pg_isready = postgres.bin.join("pg_isready");
        postgres.process.wait_ready("accepting connections", || {
            Command::new(&pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
                .status()
                .is_ok_and(|s| s.success())
        });
        // Accepting is not yet authenticating: one query proves the trust setup too.
        assert_eq!(postgres.psql("SELECT 1"), "1");
        postgres.started_in = begin.elapsed();
        postgres
    }

    /// Its temporary directory: the cluster (data/), its socket and logs; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Runs SQL through psql over TCP and returns its unaligned output (panics on an error).
    pub fn psql(&self, sql: &str) -> String {
        let output = self
            .psql_command(Command::new(self.bin.join("psql")), sql)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.process.log()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// psql running SQL from inside a cgroup, to be spawned by the caller: a client of the
    /// workload under test.
    pub fn psql_in(&self, cgroup: &TestCgroup, sql: &str) -> Command {
        self.psql_command(cgroup.command(self.bin.join("psql")), sql)
    }

    fn psql_command(&self, mut command: Command, sql: &str) -> Command {
        command
            // -X: no ~/.psqlrc; ON_ERROR_STOP: a failing statement fails psql.
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.dsn,
            ])
            .args(["-c", sql]);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown, what `pg_ctl stop -m immediate` sends: the postmaster SIGQUITs its
        // children (which are their own process groups), waits for them and removes its shared
        // memory before exiting.
        if self.process.running() {
            let _ = kill(self.process.pid(), Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.process.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Whatever did not stop in time is killed with all its descendants.
        self.process.kill();
        // A postmaster that had to be killed leaves postmaster.pid behind and its System V
        // shared memory segment (the segment's id is the second number on the file's 7th line).
        if let Ok(pidfile) = fs::read_to_string(self.data.join("postmaster.pid"))
            && let Some(id) = pidfile
                .lines()
                .nth(6)
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|id| id.parse::<i32>().ok())
        {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

/// Debian installs the server's programs (initdb, postgres) outside PATH, in
/// /usr/lib/postgresql/<version>/bin: the newest version there, else `$CHAOS_PG_BIN`.
fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAOS_PG_BIN") {
        return dir.into();
    }
    fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .expect(
            "no /usr/lib/postgresql/<version>/bin/initdb: install postgresql (cargo xtask setup)",
        )
}

/// The example web API (examples/backend/app.py) on 127.0.0.1.
pub struct WebApi {
    pub port: u16,
    /// `http://127.0.0.1:P`, without a trailing slash.
    pub url: String,
    /// From spawning to answering /healthz (the table is created by then).
    pub started_in: Duration,
    process: Service,
    dir: TempDir,
}

impl WebApi {
    /// Starts the API on Redis and PostgreSQL; with `fallback` it serves from PostgreSQL when
    /// Redis fails, else it answers 503.
    pub fn start(cgroup: &TestCgroup, redis: &Redis, pg: &Postgres, fallback: bool) -> WebApi {
        Self::start_with(cgroup, redis, pg, fallback, None, &[])
    }

    /// `start` with more of app.py's options (`--pg-pool-idle 0`).
    pub fn start_with_options(
        cgroup: &TestCgroup,
        redis: &Redis,
        pg: &Postgres,
        fallback: bool,
        options: &[&str],
    ) -> WebApi {
        Self::start_with(cgroup, redis, pg, fallback, None, options)
    }

    /// `start`, reaching Redis by a DNS name that the resolv.conf given names a server for: the
    /// API runs in a mount namespace of its own with that file over /etc/resolv.conf.
    pub fn start_resolving(
        cgroup: &TestCgroup,
        redis: &Redis,
        pg: &Postgres,
        fallback: bool,
        redis_name: &str,
        resolv_conf: &Path,
    ) -> WebApi {
        Self::start_with(
            cgroup,
            redis,
            pg,
            fallback,
            Some((redis_name, resolv_conf)),
            &[],
        )
    }

    fn start_with(
        cgroup: &TestCgroup,
        redis: &Redis,
        pg: &Postgres,
        fallback: bool,
        resolving: Option<(&str, &Path)>,
        options: &[&str],
    ) -> WebApi {
        let begin = Instant::now();
        let dir = TempDir::new("webapi");
        let port = free_port().port();
        // Debian's interpreter, whatever python3 comes first in PATH (a pyenv one lacks Debian's
        // Flask); -I ignores PYTHONPATH and user site-packages, -u leaves the log unbuffered.
        let mut command = match resolving {
            None => cgroup.command("/usr/bin/python3"),
            Some((_, resolv_conf)) => {
                let mut command = cgroup.command("unshare");
                command
                    .args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
                    .arg(resolv_conf)
                    .arg("/usr/bin/python3");
                command
            }
        };
        command.args(["-I", "-u"]).arg(backend_app());
        if let Some((name, _)) = resolving {
            command.args(["--redis-host", name]);
        }
        command
            .args(["--port", &port.to_string()])
            .args(["--redis-port", &redis.port.to_string()])
            .args(["--pg-dsn", &pg.dsn])
            .current_dir(&dir.path);
        if fallback {
            command.arg("--fallback");
        }
        command.args(options);
        let url = format!("http://127.0.0.1:{port}");
        let mut api = WebApi {
            port,
            url: url.clone(),
            started_in: Duration::ZERO,
            process: Service::spawn("web API", command, &dir.path.join("api.log")),
            dir,
        };
        let healthz = format!("{url}/healthz");
        api.process.wait_ready("answering /healthz", || {
            matches!(http_get(&healthz, Duration::from_secs(1)), Ok((200, _)))
        });
        api.started_in = begin.elapsed();
        api
    }

    /// `GET url + path` with a 5 s timeout.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(&format!("{}{path}", self.url), Duration::from_secs(5))
    }

    /// `get`, asserting it was answered, with the body parsed as JSON.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self
            .get(path)
            .unwrap_or_else(|err| panic!("{err}\n{}", self.log()));
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("GET {path}: {status} {body:?}: {err}\n{}", self.log()));
        (status, json)
    }

    /// Its temporary directory (its working directory and log); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The end of the API's log (its Redis errors, tracebacks).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// examples/backend/app.py of this source tree, or `$CHAOS_BACKEND_APP`.
pub fn backend_app() -> PathBuf {
    if let Some(path) = std::env::var_os("CHAOS_BACKEND_APP") {
        return path.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/backend/app.py")
}

/// A blocking GET: the status (any, errors included) and the body, or why there was no answer
/// (refused, timed out) within `timeout`.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        // Loopback only: never through an HTTP_PROXY from the environment.
        .proxy(None)
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|err| format!("GET {url}: {err}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|err| format!("GET {url}: reading the body: {err}"))?;
    Ok((status, body))
}

/// The processes in a cgroup now (empty once a service's guard is dropped).
pub fn cgroup_pids(cgroup: &TestCgroup) -> Vec<i32> {
    fs::read_to_string(cgroup.path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// A started server, its output going to a log file; killed with all its descendants on drop.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn spawn(name: &'static str, mut command: Command, log: &Path) -> Service {
        // A file, not a pipe: nobody has to read it for the server to go on writing.
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file(log))
            .stderr(log_file(log))
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {name} ({command:?}): {err}"));
        Service {
            name,
            child,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log(&self) -> String {
        format!(
            "--- {} log ({}):\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log)
        )
    }

    /// Polls `ready` until it holds; panics with the log if the server exits or 30 s pass.
    fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready() {
            if let Some(status) = self.exit_status() {
                panic!(
                    "{} exited before {what}: {status}\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not {what} after {READY_TIMEOUT:?}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the server and every process descended from it, and waits until they are gone.
    /// Each is stopped (SIGSTOP) as it is found, so none can fork a process the walk misses; the
    /// walk goes by parent pid because PostgreSQL's children each make a process group of their
    /// own.
    fn kill(&mut self) {
        if !self.running() {
            return;
        }
        let leader = self.child.id() as i32;
        let _ = kill(Pid::from_raw(leader), Signal::SIGSTOP);
        let mut tree = vec![leader];
        loop {
            let parents = parent_pids();
            let new: Vec<i32> = parents
                .iter()
                .filter(|(pid, parent)| tree.contains(parent) && !tree.contains(pid))
                .map(|(pid, _)| *pid)
                .collect();
            if new.is_empty() {
                break;
            }
            for pid in new {
                let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                tree.push(pid);
            }
        }
        for pid in &tree {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        // The descendants were reparented when the leader died: another process reaps them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tree[1..].iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every process's parent pid, from /proc/<pid>/stat.
fn parent_pids() -> HashMap<i32, i32> {
    let mut parents = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(parent) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) {
            parents.insert(pid, parent);
        }
    }
    parents
}

/// The fields of /proc/<pid>/stat after the command name: state, parent pid, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// Makes `command` run as `uid`:`gid` (no supplementary groups). The switch is a `pre_exec`
/// step, so it comes after `TestCgroup::command`'s move into the cgroup, which needs root; the
/// standard library's own `uid()` would switch before it.
fn run_as(command: &mut Command, uid: u32, gid: u32) {
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A directory for one service instance (its data, socket and log), or a test's files, removed
/// on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(kind: &str) -> TempDir {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("chaos-svc-{kind}-{}-{n}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A log file opened for appending, as a child's stdout or stderr.
fn log_file(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|err| panic!("open {}: {err}", path.display()))
}

/// The last 40 lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// dnsmasq answering in a test's network namespace on 127.0.0.1:53 and [::1]:53, with the
/// namespace's own resolv.conf (`ip netns exec` binds /etc/netns/NAME/resolv.conf over
/// /etc/resolv.conf), so glibc's resolver in the namespace asks it; or on one address of this
/// namespace (a pod bridge's gateway), for pods. Every name in `records` resolves; any other gets
/// REFUSED (no upstream). Removed, resolv.conf included, on drop.
pub struct Dnsmasq {
    // Fields drop in order: the server first, then its files.
    process: Service,
    resolv_dir: Option<PathBuf>,
    dir: TempDir,
}

impl Dnsmasq {
    pub fn start(netns: &crate::Netns, records: &[(&str, &str)]) -> Dnsmasq {
        let resolv_dir = PathBuf::from("/etc/netns").join(&netns.name);
        fs::create_dir_all(&resolv_dir).expect("create /etc/netns/NAME");
        // One attempt of one second: a lost query fails the lookup quickly.
        fs::write(
            resolv_dir.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("write the namespace's resolv.conf");
        let server = Self::spawn(
            netns.command("dnsmasq"),
            &["127.0.0.1", "::1"],
            records,
            Some(resolv_dir),
        );
        let name = netns.name.clone();
        server.wait_answering(records, |probe| {
            let mut dig = Command::new("ip");
            dig.args(["netns", "exec", &name, "dig"]).args(probe);
            dig
        })
    }

    /// On `address` of this network namespace only.
    pub fn start_on(address: &str, records: &[(&str, &str)]) -> Dnsmasq {
        let server = Self::spawn(Command::new("dnsmasq"), &[address], records, None);
        let server_arg = format!("@{address}");
        server.wait_answering(records, |probe| {
            let mut dig = Command::new("dig");
            dig.args(probe.iter().map(|a| {
                if *a == "@127.0.0.1" {
                    server_arg.as_str()
                } else {
                    a
                }
            }));
            dig
        })
    }

    fn spawn(
        mut command: Command,
        listen: &[&str],
        records: &[(&str, &str)],
        resolv_dir: Option<PathBuf>,
    ) -> Dnsmasq {
        let dir = TempDir::new("dnsmasq");
        let mut config = String::from("no-resolv\nno-hosts\nbind-interfaces\nport=53\nuser=root\n");
        for address in listen {
            config.push_str(&format!("listen-address={address}\n"));
        }
        for (name, address) in records {
            config.push_str(&format!("address=/{name}/{address}\n"));
        }
        let config_path = dir.path.join("dnsmasq.conf");
        fs::write(&config_path, config).expect("write dnsmasq.conf");
        command
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", config_path.display()))
            .arg(format!("--pid-file={}", dir.path.join("pid").display()));
        Dnsmasq {
            process: Service::spawn("dnsmasq", command, &dir.path.join("dnsmasq.log")),
            resolv_dir,
            dir,
        }
    }

    /// Waits until dig gets an answer for the first record.
    fn wait_answering(
        mut self,
        records: &[(&str, &str)],
        dig: impl Fn(&[&str]) -> Command,
    ) -> Dnsmasq {
        let probe = records.first().map_or("localhost", |(name, _)| *name);
        self.process.wait_ready("answering queries", || {
            dig(&["+short", "+tries=1", "+time=1", "@127.0.0.1", probe])
                .output()
                .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
        });
        self
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.process.kill();
        if let Some(dir) = &self.resolv_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}
