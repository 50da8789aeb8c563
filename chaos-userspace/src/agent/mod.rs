//! `chaos-bpf agent`: a long-lived fault service behind an HTTP JSON API (`api`), for people
//! and CI, and the ChaosFault controller (`kubernetes`) beside it. Every fault it arms carries its deadline into the kernel, the process
//! holds every attachment (nothing is pinned), so a SIGKILL of the agent removes them all.
pub mod api;
mod kubernetes;
pub mod shared;

use std::{
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use crate::wire::{DEFAULT_LISTEN, Listen};
use crate::{
    agent::shared::Shared,
    engine::EngineConfig,
    error::{ChaosError, Result},
    service::{FOLLOW_EVERY, FaultService, moves_in_words},
    telemetry::metrics::{MetricsListener, registry_of},
    termination::Termination,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
};

pub struct AgentOptions {
    pub listen: Listen,
    pub token_file: Option<PathBuf>,
    pub metrics: Option<MetricsListener>,
    pub max_duration: Duration,
    pub max_faults: usize,
    /// Where pods and containers get their names (CRI, or the Kubernetes API's view).
    pub names: Option<crate::workload::PodNames>,
    /// In a cluster: this node's name (ChaosFaults are armed on its pods).
    pub kubernetes_node: Option<String>,
}

/// Request bodies beyond this are refused (413) before they are read.
const BODY_LIMIT: usize = 1 << 20;
/// Ended faults the agent still shows.
const HISTORY: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    kernel: String,
}

/// The token file: a secret, so readable by its owner only (mode 0600 or stricter).
fn read_token(path: &Path) -> Result<Vec<u8>> {
    let refuse = |problem: String| {
        ChaosError::input(
            "--token-file",
            problem,
            "a non-empty file readable by its owner only (chmod 600)",
        )
    };
    let metadata =
        std::fs::metadata(path).map_err(|err| refuse(format!("{}: {err}", path.display())))?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "{} has mode {mode:o}: others could read the token",
            path.display()
        )));
    }
    let token = std::fs::read_to_string(path)
        .map_err(|err| refuse(format!("{}: {err}", path.display())))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(refuse(format!("{} is empty", path.display())));
    }
    Ok(token.as_bytes().to_vec())
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the agent until SIGTERM or Ctrl-C, then stops every fault.
pub async fn run(options: AgentOptions) -> Result<()> {
    let token = options.token_file.as_deref().map(read_token).transpose()?;
    // A TCP port, loopback included, answers every local user: without a token any of them
    // could create faults as root. The Unix socket is root's alone (mode 0600).
    if let Listen::Tcp(addr) = &options.listen
        && token.is_none()
    {
        let reach = if addr.ip().is_loopback() {
            "every local user"
        } else {
            "other hosts"
        };
        return Err(ChaosError::input(
            "--listen",
            format!("{addr} is reachable by {reach} and no --token-file is given"),
            "unix:PATH (root only), or a TCP address with --token-file holding a bearer token",
        ));
    }
    // What a killed agent left (clsact filters, qdiscs, cgroup knobs) is undone before anything
    // new is armed.
    let left = crate::net::tc_records::cleanup_stale()
        .map_err(|err| ChaosError::io("cleaning up what a killed run left", err))?;
    let knobs = crate::faults::pressure::cleanup_stale();
    if left.filters_removed + left.qdiscs_removed + knobs > 0 {
        eprintln!(
            "chaos-bpf agent: undid what a killed run left: {} filter(s), {} qdisc(s), {knobs} \
             knob(s)",
            left.filters_removed, left.qdiscs_removed
        );
    }
    // In a cluster the pods of this node come from the API server, which also names them.
    let mut names = options.names;
    let cluster = match &options.kubernetes_node {
        Some(node) => {
            let client = kube::Client::try_default().await.map_err(|err| {
                ChaosError::input(
                    "--kubernetes",
                    format!("no Kubernetes API: {err}"),
                    "in-cluster credentials (a pod's service account) or KUBECONFIG",
                )
            })?;
            let pods = kubernetes::watch_node_pods(client.clone(), node).await?;
            names = Some(kubernetes::pod_names(pods.clone(), client.clone()));
            eprintln!("chaos-bpf agent: watching the pods of node {node} and every ChaosFault");
            Some((client, node.clone(), pods))
        }
        None => None,
    };
    let service = FaultService::new(
        EngineConfig {
            max_duration: options.max_duration,
            max_faults: options.max_faults,
            history: HISTORY,
        },
        names,
    );
    let warnings = tokio::spawn(crate::service::events::each_warning(
        service.every_event(),
        |message| eprintln!("chaos-bpf agent: {message}"),
    ));
    let shared = Arc::new(Shared::new(service, token));
    let fault_metrics = Arc::clone(&shared.fault_metrics);

    if let Some(listener) = options.metrics {
        let mut registry = registry_of(fault_metrics);
        registry.register(
            "chaos_faults_active",
            "Faults armed now.",
            shared.active.clone(),
        );
        registry.register(
            "chaos_agent_api_requests",
            "API requests answered, by HTTP status code.",
            shared.requests.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                kernel: kernel_release(),
            })
            .set(1);
        registry.register(
            "chaos_build_info",
            "chaos-bpf's version and the kernel's.",
            build,
        );
        if let Some(addr) = listener.local_addr() {
            eprintln!("chaos-bpf agent: metrics on http://{addr}/metrics");
        }
        // The kubelet's probes come here: a port where no fault route is served.
        listener.serve(Arc::new(registry), api::probes(Arc::clone(&shared)))?;
    }

    let router = api::router(Arc::clone(&shared), BODY_LIMIT);
    let mut termination = Termination::install()?;
    let shutdown = async move { termination.recv().await };
    let expiry = tokio::spawn(expire_faults(Arc::clone(&shared)));
    let follower = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            loop {
                tick.tick().await;
                for line in moves_in_words(shared.service.follow_names().await) {
                    eprintln!("chaos-bpf agent: {line}");
                }
            }
        })
    };
    let controller = cluster.map(|(client, node, pods)| {
        tokio::spawn(kubernetes::run(Arc::clone(&shared), client, node, pods))
    });
    let served = match &options.listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|err| {
                ChaosError::input(
                    "--listen",
                    format!("cannot listen on {addr}: {err}"),
                    "a free address such as 127.0.0.1:9477",
                )
            })?;
            // The address bound, which port 0 chose.
            let bound = listener
                .local_addr()
                .map_or(options.listen.clone(), Listen::Tcp);
            if let Listen::Tcp(addr) = &bound {
                // Node-level faults spare the API's port, so callers can still stop them.
                crate::net::reachability::set_agent_port(addr.port());
            }
            eprintln!("chaos-bpf agent: API on {bound}");
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Listen::Unix(path) => {
            let listener = bind_unix(path)?;
            eprintln!("chaos-bpf agent: API on {}", options.listen);
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            served
        }
    };
    expiry.abort();
    follower.abort();
    warnings.abort();
    if let Some(controller) = controller {
        controller.abort();
    }
    // Every fault ends with the agent: the kill switches first, then the rules, then the objects.
    let stopped = shared.service.stop_all("signal").await;
    eprintln!("chaos-bpf agent: stopped {stopped} fault(s)");
    served.map_err(|err| ChaosError::io("serving the API", err))
}

/// A Unix socket for the API, readable and writable by root only from the moment it exists:
/// connect() needs write permission on the socket, and a chmod after bind() would leave a
/// window in which anyone could connect.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| ChaosError::io(format!("creating {}", dir.display()), err))?;
    }
    // A socket left by an agent that was killed; a live agent's would answer (and bind fails).
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    // The process's umask is only narrowed around bind(): nothing else creates files while the
    // agent starts.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    let listener = bound.map_err(|err| {
        ChaosError::input(
            "--listen",
            format!("cannot listen on {}: {err}", path.display()),
            "a socket path no other agent uses",
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| ChaosError::io(format!("securing {}", path.display()), err))?;
    Ok(listener)
}

/// Ends faults as their deadlines pass (the kernel has stopped them already; this detaches
/// what is no longer needed and reports it) and keeps the metrics fresh, once a second at least.
async fn expire_faults(shared: Arc<Shared>) {
    loop {
        let next = shared.service.next_deadline().await;
        let tick = tokio::time::Instant::now() + Duration::from_secs(1);
        let wake = next.map_or(tick, |deadline| tick.min(deadline.into()));
        tokio::time::sleep_until(wake).await;
        shared.service.expire().await;
        shared.refresh_metrics().await;
    }
}
