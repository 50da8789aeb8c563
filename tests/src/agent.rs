//! A `chaos-bpf agent` started by a test, and a real HTTP client for its API.
use std::{
    io::{BufRead, BufReader, Read as _},
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{TempFile, chaos_bin};

/// A running agent on a loopback port of its own, with a token.
pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    pub token: String,
    pub token_file: TempFile,
    pub metrics: Option<SocketAddr>,
    http: ureq::Agent,
    /// Behind a lock so the agent can be shared by the threads of a test.
    stderr: std::sync::Mutex<mpsc::Receiver<String>>,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

/// A free loopback port (bound and released; the agent binds it right after).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

impl Agent {
    /// Starts `chaos-bpf agent` with a fresh token and `extra` arguments, and waits until its
    /// API answers.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// The same, with environment variables for the agent (KUBECONFIG, NODE_NAME).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Self {
        Self::spawn(Command::new(chaos_bin()), "127.0.0.1:0", extra, env)
    }

    /// An agent in a test's network namespace (`nsenter --net`, which keeps the mounts),
    /// listening on `listen` there; only clients in that network reach it.
    pub fn start_in(netns: &crate::Netns, listen: &str, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns.path()))
            .arg(chaos_bin());
        Self::spawn(command, listen, &[], env)
    }

    fn spawn(
        mut command: Command,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let token = format!(
            "token-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        );
        let token_file = TempFile::new("agent-token", &token);
        std::fs::set_permissions(&token_file.path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 the token");
        let mut args = vec![
            "agent",
            "--listen",
            listen,
            "--token-file",
            token_file.arg(),
        ];
        args.extend_from_slice(extra);
        let mut child = command
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut addr, mut metrics) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while addr.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the agent {args:?} did not start"));
            if let Some(rest) = line.split_once("metrics on http://") {
                metrics = rest.1.trim_end_matches("/metrics").parse().ok();
            }
            if let Some(rest) = line.split_once("API on http://") {
                addr = rest.1.parse().ok();
            }
        }
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            child,
            addr: addr.expect("address"),
            token,
            token_file,
            metrics,
            http,
            stderr: std::sync::Mutex::new(rx),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the agent's token (or `token`, or none).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        self.try_request(method, path, token, body)
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    /// The same, with a transport error (an agent killed mid-request) as an error.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<Answer, ureq::Error> {
        let url = self.url(path);
        let authorization = token.map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("POST", body) => {
                let mut request = self
                    .http
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(value) = &authorization {
                    request = request.header("Authorization", value);
                }
                request.send(body.unwrap_or(""))
            }
            (method, _) => {
                let mut request = match method {
                    "GET" => self.http.get(&url).force_send_body(),
                    "DELETE" => self.http.delete(&url).force_send_body(),
                    other => panic!("no {other} here"),
                };
                if let Some(value) = &authorization {
                    request = request.header("Authorization", value);
                }
                request.send("")
            }
        };
        let mut response = response?;
        let status = response.status().as_u16();
        let mut body = String::new();
        let _ = response.body_mut().as_reader().read_to_string(&mut body);
        Ok(Answer { status, body })
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, Some(&self.token.clone()), None)
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        self.request("POST", path, Some(&self.token.clone()), Some(body))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, Some(&self.token.clone()), None)
    }

    /// Creates a fault and returns its view, asserting 201.
    pub fn create(&self, fault: &serde_json::Value) -> serde_json::Value {
        let answer = self.post("/v1/faults", &fault.to_string());
        assert_eq!(answer.status, 201, "{fault}: {}", answer.body);
        answer.json()
    }

    /// The metrics endpoint's text.
    pub fn scrape(&self) -> String {
        let addr = self.metrics.expect("started with --metrics");
        let mut response = self
            .http
            .get(&format!("http://{addr}/metrics"))
            .call()
            .expect("scrape");
        let mut text = String::new();
        let _ = response.body_mut().as_reader().read_to_string(&mut text);
        text
    }

    pub fn signal(&self, signal: Signal) {
        let _ = kill(self.pid(), signal);
    }

    /// SIGTERM; waits for a clean exit and returns its stderr.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal(Signal::SIGTERM);
        let status = self.child.wait().expect("wait");
        let mut lines = Vec::new();
        if let Ok(stderr) = self.stderr.lock() {
            while let Ok(line) = stderr.recv_timeout(Duration::from_millis(200)) {
                lines.push(line);
            }
        }
        (status.code(), lines.join("\n"))
    }

    /// SIGKILL, as an OOM killer would.
    pub fn kill_hard(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Open descriptors, BPF maps and programs it holds, and its RSS in KiB.
    pub fn footprint(&self) -> Footprint {
        let pid = self.child.id();
        let mut footprint = Footprint::default();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            footprint.fds += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            footprint.maps += u64::from(target.contains("bpf-map"));
            footprint.programs += u64::from(target.contains("bpf-prog"));
            footprint.links +=
                u64::from(target.contains("bpf_link") || target.contains("bpf-link"));
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        footprint.rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        footprint
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Footprint {
    pub fds: u64,
    pub maps: u64,
    pub programs: u64,
    pub links: u64,
    pub rss_kib: u64,
}
