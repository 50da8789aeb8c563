//! Real containerd pods for the tests, driven through the CRI API the way a kubelet drives them,
//! with no kubelet, API server or registry (the recipe is /work/shared/notes/containers.md).
//!
//! Each [`Containerd`] owns a numbered run: `$TMPDIR/chaos-containerd-<n>` holds containerd's
//! config, root, state, socket, images and logs; its pods sit on the bridge `chaoscni<n>` in
//! 10.213.<n>.0/24, the network `chaos-pods-<n>`. Dropping it removes all of that and what
//! containerd, runc and CNI leave outside it; a run whose test was SIGKILLed is removed by the
//! next `start()`. Start-up and teardown hold `$TMPDIR/chaos-containerd.lock`, so runs in parallel
//! (threads or processes) neither take one number nor clean up each other's pods.
use std::{
    collections::BTreeMap,
    fs::File,
    future::Future,
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_cri::v1 as cri;
use nix::{
    fcntl::{Flock, FlockArg},
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use sha2::{Digest as _, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cgroup2_root;

/// The image every container runs: busybox-static and its applets.
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:test";
/// The sandbox image: the same layer, sleeping.
pub const PAUSE_IMAGE: &str = "localhost/pause:test";

const RUN_PREFIX: &str = "chaos-containerd-";
const BRIDGE_PREFIX: &str = "chaoscni";
const NETWORK_PREFIX: &str = "chaos-pods-";
/// Run numbers, and so the third octet of the pods' subnets (10.213.<n>.0/24).
const SLOTS: std::ops::RangeInclusive<u32> = 1..=250;
const BUSYBOX: &str = "/bin/busybox";
/// A hang guard for one CRI call, not a performance bound.
const CRI_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod's QoS class, which decides its cgroup parent under the kubelet's cgroupfs driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// The kubelet's cgroup parent for a pod: `/kubepods[/<class>]/pod<uid>`.
    pub fn cgroup_parent(self, uid: &str) -> String {
        match self {
            Qos::Guaranteed => format!("/kubepods/pod{uid}"),
            Qos::Burstable => format!("/kubepods/burstable/pod{uid}"),
            Qos::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub qos: Qos,
    pub host_network: bool,
    pub containers: Vec<ContainerSpec>,
}

impl PodSpec {
    /// A pod in namespace `default` with a fresh uid, no labels, its own network and no
    /// containers yet.
    pub fn new(name: &str, qos: Qos) -> Self {
        Self {
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: new_uid(),
            labels: BTreeMap::new(),
            qos,
            host_network: false,
            containers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    /// What the container runs (`/bin/sleep infinity`, `sh -c '...'`): busybox applets.
    pub command: Vec<String>,
}

impl ContainerSpec {
    pub fn new(name: &str, command: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub sandbox_id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub containers: Vec<RunningContainer>,
    /// The pod's eth0 address (none for hostNetwork pods).
    pub ip: Option<IpAddr>,
    /// What CreateContainer needs again when a container restarts.
    sandbox_config: cri::PodSandboxConfig,
    specs: Vec<ContainerSpec>,
}

impl Pod {
    pub fn container(&self, name: &str) -> &RunningContainer {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("pod {} has no container {name}", self.name))
    }

    /// The pod-level cgroup v2 directory (`.../kubepods/besteffort/pod<uid>`).
    pub fn cgroup(&self) -> PathBuf {
        let parent = self
            .sandbox_config
            .linux
            .as_ref()
            .map_or("", |linux| linux.cgroup_parent.as_str());
        cgroup2_root().join(parent.trim_start_matches('/'))
    }
}

#[derive(Debug, Clone)]
pub struct RunningContainer {
    pub id: String,
    pub name: String,
    /// Its init process, from ContainerStatus's verbose info.
    pub pid: u32,
    /// Its cgroup v2 directory, e.g. `/sys/fs/cgroup/unified/kubepods/besteffort/pod<uid>/<id>`.
    pub cgroup: PathBuf,
    /// 0 when the pod started, one more at each restart (the kubelet's restart count).
    pub attempt: u32,
}

#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A containerd started for the test, with everything under its own run directory. Fields drop
/// in order: the client, the runtime, containerd itself, then the run's leftovers.
pub struct Containerd {
    socket: PathBuf,
    /// Sandboxes still running, stopped on drop.
    sandboxes: Mutex<Vec<String>>,
    channel: Channel,
    runtime: tokio::runtime::Runtime,
    daemon: Daemon,
    run: Run,
}

impl Containerd {
    /// Removes what earlier runs left, then starts containerd and imports the busybox and pause
    /// images into its `k8s.io` namespace.
    pub fn start() -> Containerd {
        Self::try_start().unwrap_or_else(|err| panic!("starting containerd: {err:#}"))
    }

    fn try_start() -> anyhow::Result<Containerd> {
        // Shims daemonize, so they would be orphaned to PID 1, which on these machines never
        // reaps: as a subreaper this process gets them, and reaps them on drop.
        nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
        let run = Run::claim()?;
        run.write_config()?;
        run.create_bridge()?;
        let images = run.dir.join("images.tar");
        std::fs::write(&images, image_archive()?).context("write the image archive")?;
        let daemon = Daemon::spawn(&run)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let socket = run.socket();
        let channel = runtime.block_on(connect(&socket))?;
        let containerd = Containerd {
            socket,
            sandboxes: Mutex::new(Vec::new()),
            channel,
            runtime,
            daemon,
            run,
        };
        containerd.wait_ready()?;
        containerd.import(&images)?;
        Ok(containerd)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The run directory (config, root, state, logs), gone after drop.
    pub fn run_dir(&self) -> &Path {
        &self.run.dir
    }

    /// The bridge the pods' veths are on (`chaoscni<n>`).
    pub fn bridge(&self) -> String {
        self.run.bridge()
    }

    /// The host's address on the bridge, which the pods reach on-link (10.213.<n>.1).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.run.slot as u8, 1)
    }

    /// Whether `ip` is in this run's pod subnet (10.213.<n>.0/24).
    pub fn in_subnet(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == self.gateway().octets()[..3])
    }

    /// RunPodSandbox as the kubelet calls it (metadata, labels, cgroup parent, namespaces), then
    /// CreateContainer and StartContainer for each container.
    pub fn run_pod(&self, spec: &PodSpec) -> Pod {
        self.try_run_pod(spec)
            .unwrap_or_else(|err| panic!("pod {}: {err:#}\n{}", spec.name, self.daemon_log()))
    }

    fn try_run_pod(&self, spec: &PodSpec) -> anyhow::Result<Pod> {
        let cgroup_parent = spec.qos.cgroup_parent(&spec.uid);
        // Recorded before runc makes it, so a SIGKILLed run's pods can be found and removed.
        self.run.record_pod_cgroup(&cgroup_parent)?;
        let sandbox_config = sandbox_config(spec, &cgroup_parent, &self.run.dir);
        std::fs::create_dir_all(&sandbox_config.log_directory).context("pod log directory")?;
        let sandbox_id = self
            .call(
                "RunPodSandbox",
                self.client().run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(sandbox_config.clone()),
                    runtime_handler: String::new(),
                }),
            )?
            .pod_sandbox_id;
        self.lock_sandboxes().push(sandbox_id.clone());
        let status = self
            .call(
                "PodSandboxStatus",
                self.client()
                    .pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: sandbox_id.clone(),
                        verbose: false,
                    }),
            )?
            .status
            .context("PodSandboxStatus without a status")?;
        let ip = match status.network.map(|n| n.ip).filter(|ip| !ip.is_empty()) {
            Some(ip) => Some(ip.parse().with_context(|| format!("pod ip {ip:?}"))?),
            None => None,
        };
        let mut pod = Pod {
            sandbox_id,
            uid: spec.uid.clone(),
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            containers: Vec::new(),
            ip,
            sandbox_config,
            specs: spec.containers.clone(),
        };
        for container in &spec.containers {
            let running = self.start_container(&pod, container, 0)?;
            pod.containers.push(running);
        }
        Ok(pod)
    }

    /// CRI ExecSync: runs `cmd` in the container and waits for it (at most `timeout`).
    pub fn exec(&self, container_id: &str, cmd: &[&str], timeout: Duration) -> ExecOutput {
        let request = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.as_secs_f64().ceil().max(1.0) as i64,
        };
        let response = self
            .call_within(
                timeout + CRI_TIMEOUT,
                "ExecSync",
                self.client().exec_sync(request),
            )
            .unwrap_or_else(|err| panic!("exec {cmd:?} in {container_id}: {err:#}"));
        ExecOutput {
            exit_code: response.exit_code,
            stdout: String::from_utf8_lossy(&response.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&response.stderr).into_owned(),
        }
    }

    /// What the kubelet does when a container dies: removes it and starts a new one with the same
    /// name (attempt + 1) in the same sandbox. Updates `pod` and returns the new container.
    pub fn restart_container(&self, pod: &mut Pod, name: &str) -> RunningContainer {
        self.try_restart_container(pod, name)
            .unwrap_or_else(|err| panic!("restart {name} in pod {}: {err:#}", pod.name))
    }

    fn try_restart_container(&self, pod: &mut Pod, name: &str) -> anyhow::Result<RunningContainer> {
        let index = pod
            .containers
            .iter()
            .position(|c| c.name == name)
            .with_context(|| format!("no container {name}"))?;
        let old = pod.containers[index].clone();
        let spec = pod
            .specs
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .with_context(|| format!("no spec for {name}"))?;
        self.remove_container(&old.id)?;
        let new = self.start_container(pod, &spec, old.attempt + 1)?;
        pod.containers[index] = new.clone();
        Ok(new)
    }

    /// What the kubelet does when a pod's sandbox died (every process of the pod killed): the
    /// old sandbox removed, a new one run with the same config (the same uid, so the same pod
    /// cgroup), and its containers started again. Updates `pod`.
    pub fn restart_pod(&self, pod: &mut Pod) {
        self.try_restart_pod(pod)
            .unwrap_or_else(|err| panic!("restart pod {}: {err:#}", pod.name))
    }

    fn try_restart_pod(&self, pod: &mut Pod) -> anyhow::Result<()> {
        let shim: Vec<Pid> = processes_mentioning(&self.run.dir)
            .into_iter()
            .filter(|pid| cmdline(*pid).contains(&pod.sandbox_id))
            .collect();
        // The shim may still be noticing that every task of the pod died ("ttrpc: closed"): the
        // kubelet retries its StopPodSandbox too.
        let mut tries = 0;
        while let Err(err) = self.remove_sandbox(&pod.sandbox_id) {
            tries += 1;
            if tries == 20 {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        kill_and_reap(&shim, Duration::from_secs(2));
        pod.sandbox_id = self
            .call(
                "RunPodSandbox",
                self.client().run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(pod.sandbox_config.clone()),
                    runtime_handler: String::new(),
                }),
            )?
            .pod_sandbox_id;
        self.lock_sandboxes().push(pod.sandbox_id.clone());
        let attempt = pod.containers.first().map_or(0, |c| c.attempt + 1);
        pod.containers.clear();
        for spec in pod.specs.clone() {
            let running = self.start_container(pod, &spec, attempt)?;
            pod.containers.push(running);
        }
        Ok(())
    }

    /// StopPodSandbox and RemovePodSandbox (which removes its containers), then the pod's now
    /// empty cgroup directories.
    pub fn stop_pod(&self, pod: &Pod) {
        // The pod's shim (started with the sandbox's id) exits after the removal: reap it.
        let shim: Vec<Pid> = processes_mentioning(&self.run.dir)
            .into_iter()
            .filter(|pid| cmdline(*pid).contains(&pod.sandbox_id))
            .collect();
        self.remove_sandbox(&pod.sandbox_id)
            .unwrap_or_else(|err| panic!("stop pod {}: {err:#}", pod.name));
        kill_and_reap(&shim, Duration::from_secs(2));
        if let Some(linux) = &pod.sandbox_config.linux {
            remove_cgroup_everywhere(&linux.cgroup_parent, Duration::from_secs(5));
        }
    }

    fn remove_sandbox(&self, sandbox_id: &str) -> anyhow::Result<()> {
        self.call(
            "StopPodSandbox",
            self.client().stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            }),
        )?;
        self.call(
            "RemovePodSandbox",
            self.client()
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                }),
        )?;
        self.lock_sandboxes().retain(|id| id != sandbox_id);
        Ok(())
    }

    fn start_container(
        &self,
        pod: &Pod,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> anyhow::Result<RunningContainer> {
        let config = container_config(pod, spec, attempt);
        let id = self
            .call(
                "CreateContainer",
                self.client().create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.sandbox_id.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.sandbox_config.clone()),
                }),
            )?
            .container_id;
        self.call(
            "StartContainer",
            self.client().start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            }),
        )?;
        let status = self.call(
            "ContainerStatus",
            self.client().container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            }),
        )?;
        let info: serde_json::Value = status
            .info
            .get("info")
            .context("ContainerStatus without verbose info")
            .and_then(|info| serde_json::from_str(info).context("verbose info JSON"))?;
        let pid = info["pid"]
            .as_u64()
            .filter(|&pid| pid > 0)
            .with_context(|| format!("no pid in verbose info: {info}"))?;
        let cgroups_path = info["runtimeSpec"]["linux"]["cgroupsPath"]
            .as_str()
            .with_context(|| format!("no cgroupsPath in verbose info: {info}"))?;
        Ok(RunningContainer {
            id,
            name: spec.name.clone(),
            pid: u32::try_from(pid).context("pid")?,
            cgroup: cgroup2_root().join(cgroups_path.trim_start_matches('/')),
            attempt,
        })
    }

    /// StopContainer at once (a sleeping PID 1 ignores SIGTERM), then RemoveContainer.
    fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        self.call(
            "StopContainer",
            self.client().stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout: 0,
            }),
        )?;
        self.call(
            "RemoveContainer",
            self.client().remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            }),
        )?;
        Ok(())
    }

    /// Waits until the CRI plugin says the runtime and the pod network are ready.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.call(
                "Status",
                self.client().status(cri::StatusRequest { verbose: false }),
            );
            let conditions = status
                .as_ref()
                .ok()
                .and_then(|s| s.status.as_ref())
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let ready = |kind: &str| conditions.iter().any(|c| c.r#type == kind && c.status);
            if ready("RuntimeReady") && ready("NetworkReady") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("CRI not ready: {status:?}\n{}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr images import`, then waits until the CRI plugin lists both images.
    fn import(&self, archive: &Path) -> anyhow::Result<()> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .context("run ctr (cargo xtask setup installs containerd)")?;
        ensure!(
            output.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for image in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
            loop {
                let mut images =
                    cri::image_service_client::ImageServiceClient::new(self.channel.clone());
                let status = self.call(
                    "ImageStatus",
                    images.image_status(cri::ImageStatusRequest {
                        image: Some(cri::ImageSpec {
                            image: image.to_string(),
                            ..Default::default()
                        }),
                        verbose: false,
                    }),
                )?;
                if status.image.is_some() {
                    break;
                }
                ensure!(Instant::now() < deadline, "CRI does not see {image}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// A CRI runtime client on this containerd, for what the harness does not wrap (to see pods
    /// as the product sees them); run its calls with [`Containerd::block_on`].
    pub fn client(&self) -> cri::runtime_service_client::RuntimeServiceClient<Channel> {
        cri::runtime_service_client::RuntimeServiceClient::new(self.channel.clone())
    }

    /// Runs a future on the harness's runtime (for calls on [`Containerd::client`]).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> anyhow::Result<T> {
        self.call_within(CRI_TIMEOUT, what, request)
    }

    fn call_within<T>(
        &self,
        timeout: Duration,
        what: &str,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> anyhow::Result<T> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, request).await })
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(anyhow!("{what}: {}: {}", status.code(), status.message())),
            Err(_) => Err(anyhow!("{what}: no answer in {timeout:?}")),
        }
    }

    fn lock_sandboxes(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The end of containerd's log, for failure messages.
    fn daemon_log(&self) -> String {
        log_tail(&self.run.dir.join("containerd.log"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The shims, found while their command lines still name the run (a zombie's is empty).
        let containerd = Pid::from_raw(self.daemon.0.id() as i32);
        let shims: Vec<Pid> = processes_mentioning(&self.run.dir)
            .into_iter()
            .filter(|&pid| pid != containerd)
            .collect();
        let sandboxes = self.lock_sandboxes().clone();
        for id in sandboxes {
            if let Err(err) = self.remove_sandbox(&id) {
                eprintln!("pods: {err:#}");
            }
        }
        // Shims exit once their sandbox is removed; any still running are killed.
        kill_and_reap(&shims, Duration::from_secs(2));
        reap_exited_shims();
    }
}

/// The containerd process; SIGTERM on drop, SIGKILL if it lingers, and always reaped.
struct Daemon(Child);

impl Daemon {
    fn spawn(run: &Run) -> anyhow::Result<Self> {
        let log = File::create(run.dir.join("containerd.log")).context("containerd log")?;
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(run.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("containerd log")?)
            .stderr(log);
        // Its own session, as the recipe starts it (setsid): a terminal's signals are the test's.
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let mut daemon = Daemon(
            command
                .spawn()
                .context("run containerd (cargo xtask setup installs it)")?,
        );
        let socket = run.socket();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = daemon.0.try_wait() {
                bail!(
                    "containerd exited ({status}):\n{}",
                    log_tail(&run.dir.join("containerd.log"))
                );
            }
            ensure!(
                Instant::now() < deadline,
                "containerd's socket did not answer:\n{}",
                log_tail(&run.dir.join("containerd.log"))
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(daemon)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One numbered run: its directory and the names derived from its number. Removing it (on drop,
/// or by a later `start()` once its test is dead) takes everything it can have left behind.
struct Run {
    slot: u32,
    dir: PathBuf,
}

impl Run {
    /// Under the lock: removes dead runs, takes a free number and records this process as owner.
    fn claim() -> anyhow::Result<Self> {
        let _lock = lock()?;
        let live = remove_dead_runs()?;
        if live.is_empty() {
            sweep_shared();
        }
        for slot in SLOTS.filter(|slot| !live.contains(slot)) {
            let dir = run_dir(slot);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err).with_context(|| format!("mkdir {}", dir.display())),
            }
            // The Run exists only once its owner is recorded: its drop takes the lock held here.
            let me = std::process::id();
            let owner = start_time(me)
                .context("own start time")
                .and_then(|started| {
                    std::fs::write(dir.join("owner"), format!("{me} {started}"))
                        .context("write owner")
                });
            if let Err(err) = owner {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
            return Ok(Run { slot, dir });
        }
        bail!("all {} containerd run numbers are taken", SLOTS.count())
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn bridge(&self) -> String {
        format!("{BRIDGE_PREFIX}{}", self.slot)
    }

    fn network(&self) -> String {
        format!("{NETWORK_PREFIX}{}", self.slot)
    }

    /// containerd's config: the defaults, with the recipe's changes. Only what differs is
    /// written; containerd fills each plugin's other settings with its defaults.
    fn write_config(&self) -> anyhow::Result<()> {
        let dir = self.dir.display();
        let config = format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{dir}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc cannot write a negative oom_score_adj without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{dir}/cni"
  max_conf_num = 1
"#
        );
        std::fs::write(self.dir.join("config.toml"), config).context("write config.toml")?;
        // The bridge is made here with the host's address (see create_bridge), so the plugin
        // neither sets one nor turns on IPv4 forwarding, which isGateway would do.
        let subnet = format!("10.213.{}", self.slot);
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.network(),
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge(),
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": format!("{subnet}.0/24"),
                        "rangeStart": format!("{subnet}.2"),
                        "gateway": format!("{subnet}.1"),
                    }]],
                    "dataDir": self.dir.join("cni-ipam"),
                },
            }],
        });
        std::fs::create_dir(self.dir.join("cni")).context("mkdir cni")?;
        std::fs::write(
            self.dir.join("cni/10-chaos-pods.conflist"),
            serde_json::to_string_pretty(&conflist)?,
        )
        .context("write the CNI conflist")?;
        Ok(())
    }

    /// The pods' bridge, with the host's address on it: pods reach the host on-link and nothing
    /// is routed off the machine.
    fn create_bridge(&self) -> anyhow::Result<()> {
        let bridge = self.bridge();
        let address = format!("10.213.{}.1/24", self.slot);
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &address, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            ip(&args)?;
        }
        Ok(())
    }

    fn record_pod_cgroup(&self, cgroup_parent: &str) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pod-cgroups"))
            .context("open pod-cgroups")?;
        writeln!(file, "{cgroup_parent}").context("record a pod cgroup")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let guard = lock();
        if let Err(err) = &guard {
            eprintln!("pods: cleaning up without the lock: {err:#}");
        }
        remove_run(self.slot, &self.dir);
        if remove_dead_runs().is_ok_and(|live| live.is_empty()) {
            sweep_shared();
        }
    }
}

/// Everything one run can leave: its processes (containerd, shims, ctr), its pods' processes and
/// cgroups in every hierarchy, mounts under its directory, runc's state for its containers, its
/// bridge, libcni's cache for its network, and the directory.
fn remove_run(slot: u32, dir: &Path) {
    kill_and_reap(&processes_mentioning(dir), Duration::ZERO);
    let parents = std::fs::read_to_string(dir.join("pod-cgroups")).unwrap_or_default();
    for parent in parents.lines().filter(|l| !l.is_empty()) {
        // A dead run's containers still run: kill them, and reap those orphaned to this process.
        let pod = cgroup2_root().join(parent.trim_start_matches('/'));
        let pids = cgroup_tree_pids(&pod);
        let _ = std::fs::write(pod.join("cgroup.kill"), b"1");
        kill_and_reap(&pids, Duration::ZERO);
        if !remove_cgroup_everywhere(parent, Duration::from_secs(10)) {
            eprintln!("pods: could not remove cgroup {parent} everywhere");
        }
    }
    unmount_under(dir);
    let dir_text = dir.display().to_string();
    for entry in read_dir_paths(Path::new("/run/containerd/runc/k8s.io")) {
        let state = std::fs::read_to_string(entry.join("state.json")).unwrap_or_default();
        if state.contains(&dir_text) {
            let _ = std::fs::remove_dir_all(&entry);
        }
    }
    let bridge = format!("{BRIDGE_PREFIX}{slot}");
    if Path::new("/sys/class/net").join(&bridge).exists()
        && let Err(err) = ip(&["link", "del", &bridge])
    {
        eprintln!("pods: {err:#}");
    }
    // libcni caches each attachment as <network>-<sandbox id>-<interface>, and DEL, which a
    // dead run never made, removes it: for this run's network and for containerd's loopback.
    let network = format!("{NETWORK_PREFIX}{slot}");
    let sandboxes: Vec<String> = ["root", "state"]
        .iter()
        .flat_map(|sub| read_dir_paths(&dir.join(sub).join("io.containerd.grpc.v1.cri/sandboxes")))
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
        .collect();
    for entry in read_dir_paths(Path::new("/var/lib/cni/results")) {
        let name = entry.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&format!("{network}-"))
            || sandboxes.iter().any(|id| name.contains(&format!("-{id}-")))
        {
            let _ = std::fs::remove_file(&entry);
        }
    }
    let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&network));
    if let Err(err) = std::fs::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("pods: remove {}: {err}", dir.display());
    }
}

/// Removes the runs whose owner is dead (a test SIGKILLed before its drop) and the bridges of
/// runs that no longer exist; returns the live runs' numbers. Call with the lock held.
fn remove_dead_runs() -> anyhow::Result<Vec<u32>> {
    let mut live = Vec::new();
    for path in read_dir_paths(&std::env::temp_dir()) {
        let Some(slot) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(RUN_PREFIX))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if owner_alive(&path) {
            live.push(slot);
        } else {
            eprintln!(
                "pods: removing the leftovers of a dead run, {}",
                path.display()
            );
            remove_run(slot, &path);
        }
    }
    for path in read_dir_paths(Path::new("/sys/class/net")) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(slot) = name
            .strip_prefix(BRIDGE_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
            && !live.contains(&slot)
        {
            ip(&["link", "del", &name])?;
        }
    }
    Ok(live)
}

/// What runs leave in places they share, removed when no run is live: empty `kubepods` trees in
/// every cgroup hierarchy, containerd 1.6's `/run/containerd/{s,fifo,runc}` (unless a system
/// containerd uses them) and libcni's empty `/var/lib/cni`.
fn sweep_shared() {
    for hierarchy in cgroup_hierarchies() {
        remove_empty_tree(&hierarchy.join("kubepods"));
    }
    let run_containerd = Path::new("/run/containerd");
    if !run_containerd.join("containerd.sock").exists() {
        for sub in ["s", "fifo", "runc"] {
            let _ = std::fs::remove_dir_all(run_containerd.join(sub));
        }
        let _ = std::fs::remove_dir(run_containerd);
    }
    remove_empty_tree(Path::new("/var/lib/cni"));
}

/// The run directories' lock, held while runs are claimed and removed.
fn lock() -> anyhow::Result<Flock<File>> {
    let path = std::env::temp_dir().join("chaos-containerd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow!("flock {}: {errno}", path.display()))
}

fn run_dir(slot: u32) -> PathBuf {
    std::env::temp_dir().join(format!("{RUN_PREFIX}{slot}"))
}

/// Whether the process named in the run's `owner` file (pid and start time, so a reused pid does
/// not count) still runs.
fn owner_alive(dir: &Path) -> bool {
    let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else {
        return false;
    };
    let mut fields = owner.split_whitespace();
    let (Some(pid), Some(started)) = (fields.next(), fields.next()) else {
        return false;
    };
    pid.parse::<u32>()
        .ok()
        .and_then(start_time)
        .is_some_and(|t| t.to_string() == started)
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Live processes whose command line names `dir` (containerd, its shims, ctr).
fn processes_mentioning(dir: &Path) -> Vec<Pid> {
    let needle = format!("{}/", dir.display());
    let me = Pid::this();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && cmdline(pid).contains(&needle))
        .collect()
}

fn all_pids() -> Vec<Pid> {
    read_dir_paths(Path::new("/proc"))
        .into_iter()
        .filter_map(|path| path.file_name()?.to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect()
}

/// A process's command line, arguments joined by NULs (empty for a zombie).
fn cmdline(pid: Pid) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_default()
}

/// Reaps shims adopted by this process that exited before anyone looked for them.
fn reap_exited_shims() {
    let me = Pid::this().to_string();
    for pid in all_pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        if head.ends_with("(containerd-shim")
            && fields.next() == Some("Z")
            && fields.next() == Some(me.as_str())
        {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Waits up to `grace` for `pids` to exit, SIGKILLs the rest, and reaps those that are this
/// process's children (its own, or orphans it adopted as subreaper).
fn kill_and_reap(pids: &[Pid], grace: Duration) {
    let mut deadline = Instant::now() + grace;
    let mut waiting: Vec<Pid> = pids.to_vec();
    let mut killed = false;
    while !waiting.is_empty() {
        waiting.retain(|&pid| match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => true,
            Ok(_) => false,
            // Not a child: someone else reaps it; done once it is gone or a zombie.
            Err(_) => process_running(pid),
        });
        if Instant::now() >= deadline {
            if killed {
                for pid in &waiting {
                    eprintln!("pods: process {pid} outlived SIGKILL");
                }
                return;
            }
            for &pid in &waiting {
                let _ = kill(pid, Signal::SIGKILL);
            }
            killed = true;
            deadline = Instant::now() + Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process exists and is not a zombie.
fn process_running(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// The processes in a cgroup v2 directory and below.
fn cgroup_tree_pids(dir: &Path) -> Vec<Pid> {
    let mut pids: Vec<Pid> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .map(Pid::from_raw)
        .collect();
    for child in read_dir_paths(dir).into_iter().filter(|p| p.is_dir()) {
        pids.extend(cgroup_tree_pids(&child));
    }
    pids
}

/// Every cgroup hierarchy mounted on this machine (the v1 controllers and cgroup2).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, tail) = line.split_once(" - ")?;
            let mount = fields.split_whitespace().nth(4)?;
            (tail.starts_with("cgroup ") || tail.starts_with("cgroup2 "))
                .then(|| PathBuf::from(mount))
        })
        .collect()
}

/// Removes a cgroup (`/kubepods/.../pod<uid>`) and its children in every hierarchy, retrying
/// until `timeout` while killed processes exit; whether it is gone everywhere.
fn remove_cgroup_everywhere(cgroup: &str, timeout: Duration) -> bool {
    let dirs: Vec<PathBuf> = cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(cgroup.trim_start_matches('/')))
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        let mut gone = true;
        for dir in &dirs {
            gone &= remove_empty_tree(dir);
        }
        if gone || Instant::now() >= deadline {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// rmdir depth-first, leaving what is not empty; whether `dir` is gone.
fn remove_empty_tree(dir: &Path) -> bool {
    for child in read_dir_paths(dir) {
        if child.is_dir() && !child.is_symlink() {
            remove_empty_tree(&child);
        }
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

/// Lazily unmounts what is mounted under `dir` (a dead run's netns and rootfs mounts), deepest
/// first.
fn unmount_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in mounts {
        if let Err(err) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("pods: umount {}: {err}", mount.display());
        }
    }
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!(
        "containerd log ({}):\n{}",
        path.display(),
        lines[start..].join("\n")
    )
}

async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]")
        .context("endpoint")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .context("connect to containerd's CRI socket")
}

/// The sandbox config a kubelet would send: metadata, the pod's labels plus the kubelet's own,
/// the QoS cgroup parent, and the host's network namespace for hostNetwork pods.
fn sandbox_config(spec: &PodSpec, cgroup_parent: &str, run_dir: &Path) -> cri::PodSandboxConfig {
    let mut labels: std::collections::HashMap<String, String> =
        spec.labels.clone().into_iter().collect();
    labels.extend(pod_labels(spec.name.as_str(), &spec.namespace, &spec.uid));
    let network = if spec.host_network {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: spec.name.clone(),
            uid: spec.uid.clone(),
            namespace: spec.namespace.clone(),
            attempt: 0,
        }),
        // A hostNetwork pod shares the host's UTS namespace and so its hostname.
        hostname: if spec.host_network {
            String::new()
        } else {
            spec.name.clone()
        },
        log_directory: run_dir
            .join("pods")
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid))
            .display()
            .to_string(),
        labels,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(network)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The kubelet's namespaces: the pod's (or the host's) network, a PID namespace per container.
fn namespace_options(network: cri::NamespaceMode) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: network as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn pod_labels(name: &str, namespace: &str, uid: &str) -> [(String, String); 3] {
    [
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            namespace.to_string(),
        ),
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
    ]
}

/// The container config a kubelet would send: metadata with the attempt, the kubelet's labels,
/// the sandbox's namespaces, and a log file in the pod's log directory.
fn container_config(pod: &Pod, spec: &ContainerSpec, attempt: u32) -> cri::ContainerConfig {
    let mut labels: std::collections::HashMap<String, String> =
        pod_labels(&pod.name, &pod.namespace, &pod.uid)
            .into_iter()
            .collect();
    labels.insert(
        "io.kubernetes.container.name".to_string(),
        spec.name.clone(),
    );
    let namespaces = pod
        .sandbox_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: spec.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX_IMAGE.to_string(),
            ..Default::default()
        }),
        command: spec.command.clone(),
        labels,
        log_path: format!("{}/{attempt}.log", spec.name),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: namespaces,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod uid shaped like the API server's (a v4 UUID), unique across processes and runs.
pub fn new_uid() -> String {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let bits = Sha256::digest(format!(
        "{} {} {}",
        std::process::id(),
        now.as_nanos(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let hex: String = bits.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// A docker-archive tarball holding the busybox and pause images: one layer (busybox-static, its
/// applet links and the usual empty directories), one config per image, and the manifest.
fn image_archive() -> anyhow::Result<Vec<u8>> {
    let layer = busybox_layer()?;
    let layer_digest = format!("{:x}", Sha256::digest(&layer));
    let layer_path = format!("{layer_digest}/layer.tar");
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut archive = tar::Builder::new(Vec::new());
    append_file(&mut archive, &layer_path, &layer, 0o644)?;
    let mut manifest = Vec::new();
    for (tag, cmd) in [
        (BUSYBOX_IMAGE, vec!["sh"]),
        (PAUSE_IMAGE, vec!["/bin/sleep", "infinity"]),
    ] {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        }))?;
        let config_path = format!("{:x}.json", Sha256::digest(&config));
        append_file(&mut archive, &config_path, &config, 0o644)?;
        manifest.push(serde_json::json!({
            "Config": config_path,
            "RepoTags": [tag],
            "Layers": [layer_path],
        }));
    }
    append_file(
        &mut archive,
        "manifest.json",
        &serde_json::to_vec(&manifest)?,
        0o644,
    )?;
    archive.into_inner().context("finish the image archive")
}

fn busybox_layer() -> anyhow::Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("read {BUSYBOX} (cargo xtask setup installs busybox-static)"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("busybox --list-full")?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut dirs: std::collections::BTreeSet<String> = [
        "bin", "dev", "etc", "proc", "sys", "tmp", "run", "root", "sbin", "usr", "usr/bin",
        "usr/sbin",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for applet in applets.lines() {
        let mut parent = Path::new(applet).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.display().to_string());
            parent = dir.parent();
        }
    }
    let mut layer = tar::Builder::new(Vec::new());
    // BTreeSet order puts each parent before its children.
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        layer
            .append_data(&mut header, dir, std::io::empty())
            .context("layer directory")?;
    }
    append_file(&mut layer, "bin/busybox", &busybox, 0o755)?;
    for applet in applets
        .lines()
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
    {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        layer
            .append_link(&mut header, applet, "/bin/busybox")
            .with_context(|| format!("layer link {applet}"))?;
    }
    layer.into_inner().context("finish the layer")
}

fn append_file(
    archive: &mut tar::Builder<Vec<u8>>,
    path: &str,
    contents: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(contents.len() as u64);
    archive
        .append_data(&mut header, path, contents)
        .with_context(|| format!("archive {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_the_api_servers_and_differ() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36, "{a}");
        assert_eq!(
            a.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
    }

    #[test]
    fn qos_classes_map_to_the_kubelets_cgroup_parents() {
        assert_eq!(Qos::Guaranteed.cgroup_parent("u"), "/kubepods/podu");
        assert_eq!(
            Qos::Burstable.cgroup_parent("u"),
            "/kubepods/burstable/podu"
        );
        assert_eq!(
            Qos::BestEffort.cgroup_parent("u"),
            "/kubepods/besteffort/podu"
        );
    }
}
