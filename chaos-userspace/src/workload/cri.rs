//! Names from the container runtime: the CRI API over its Unix socket (containerd, CRI-O), the
//! way Tetragon and Inspektor Gadget read it. A sandbox carries the pod's metadata and labels as
//! the kubelet set them, a container its name; the cgroup tree then gives each its directory.
use std::path::{Path, PathBuf};

use chaos_model::workloads::{ContainerInfo, PodInfo};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{ChaosError, Result};

/// A connected CRI runtime service.
pub struct Cri {
    client: RuntimeServiceClient<Channel>,
    socket: PathBuf,
}

impl Cri {
    /// Connects to the runtime's socket (`/run/containerd/containerd.sock`,
    /// `/var/run/crio/crio.sock`).
    pub async fn connect(socket: &Path) -> Result<Self> {
        let path = socket.to_path_buf();
        // The URI is unused: every connection is the Unix socket.
        let channel = Endpoint::from_static("http://[::]")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|err| cri_input(socket, format!("cannot connect: {err}")))?;
        Ok(Self {
            client: RuntimeServiceClient::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    /// The ready pods with their running containers and pod IPs.
    pub async fn pods(&mut self) -> Result<Vec<PodInfo>> {
        let sandboxes = self
            .client
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    state: Some(PodSandboxStateValue {
                        state: PodSandboxState::SandboxReady as i32,
                    }),
                    ..PodSandboxFilter::default()
                }),
            })
            .await
            .map_err(|status| self.failed("ListPodSandbox", status))?
            .into_inner()
            .items;
        let containers = self
            .client
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..ContainerFilter::default()
                }),
            })
            .await
            .map_err(|status| self.failed("ListContainers", status))?
            .into_inner()
            .containers;
        let mut pods = Vec::with_capacity(sandboxes.len());
        for sandbox in sandboxes {
            let Some(metadata) = sandbox.metadata else {
                continue;
            };
            let ips = self.pod_ips(&sandbox.id).await;
            pods.push(PodInfo {
                uid: metadata.uid,
                namespace: metadata.namespace,
                name: metadata.name,
                labels: sandbox.labels.into_iter().collect(),
                containers: containers
                    .iter()
                    .filter(|c| c.pod_sandbox_id == sandbox.id)
                    .filter_map(|c| {
                        Some(ContainerInfo {
                            id: c.id.clone(),
                            name: c.metadata.as_ref()?.name.clone(),
                        })
                    })
                    .collect(),
                ips,
            });
        }
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(pods)
    }

    /// A sandbox's IPs from its status (ListPodSandbox has none). A pod on the node's network
    /// reports none; a sandbox gone meanwhile has none.
    async fn pod_ips(&mut self, sandbox: &str) -> Vec<std::net::IpAddr> {
        let Ok(status) = self
            .client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.to_string(),
                verbose: false,
            })
            .await
        else {
            return Vec::new();
        };
        let Some(network) = status.into_inner().status.and_then(|s| s.network) else {
            return Vec::new();
        };
        let mut ips: Vec<std::net::IpAddr> = std::iter::once(network.ip.as_str())
            .chain(network.additional_ips.iter().map(|ip| ip.ip.as_str()))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        ips
    }

    fn failed(&self, call: &str, status: tonic::Status) -> ChaosError {
        cri_input(&self.socket, format!("{call}: {}", status.message()))
    }
}

fn cri_input(socket: &Path, problem: String) -> ChaosError {
    ChaosError::input(
        "--cri-socket",
        format!("{}: {problem}", socket.display()),
        "the container runtime's CRI socket (containerd: /run/containerd/containerd.sock, \
         CRI-O: /var/run/crio/crio.sock)",
    )
}

/// The node's pods by name through CRI, in one call for a caller without a runtime at hand.
pub async fn pods(socket: &Path) -> Result<Vec<PodInfo>> {
    Cri::connect(socket).await?.pods().await
}

/// Where the runtimes put their CRI sockets, tried in order when none is given.
const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
];

/// The given socket, else the first runtime socket present on this host.
pub fn socket_or_default(given: Option<&Path>) -> Option<PathBuf> {
    given.map(Path::to_path_buf).or_else(|| {
        DEFAULT_SOCKETS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
    })
}
