//! Where the names of the node's pods and containers come from: the runtime's CRI socket, or
//! a live view the agent keeps (the Kubernetes API's pods of this node). Asked only for scopes
//! that name workloads (`pod`, `selector`, `containerName`).
use std::{future::Future, path::PathBuf, pin::Pin, sync::Arc};

use chaos_model::{Fault, workloads::PodInfo};

use crate::error::Result;

/// Every pod of the cluster, asked for when a peer selector needs them (a watch started on
/// first use, so an agent no fault asks for peers keeps no cluster-wide view).
pub type ClusterPods =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Vec<PodInfo>>> + Send>> + Send + Sync>;

#[derive(Clone)]
pub enum PodNames {
    /// Asked of the runtime each time.
    Cri(PathBuf),
    /// A view kept current by someone else (a Kubernetes reflector of this node's pods), and
    /// where the cluster's pods are, for peers on other nodes.
    Snapshot {
        node: Arc<dyn Fn() -> Vec<PodInfo> + Send + Sync>,
        cluster: ClusterPods,
    },
}

impl PodNames {
    /// From the CRI socket given, else the runtime's default socket if one is here.
    pub fn cri(socket: Option<&std::path::Path>) -> Option<Self> {
        super::cri::socket_or_default(socket).map(PodNames::Cri)
    }

    /// This node's pods.
    pub async fn pods(&self) -> Result<Vec<PodInfo>> {
        match self {
            PodNames::Cri(socket) => super::cri::pods(socket).await,
            PodNames::Snapshot { node, .. } => Ok(node()),
        }
    }

    /// The pods peer selectors choose among: the cluster's where it is known, else this
    /// node's (a runtime knows no other).
    pub async fn peers(&self) -> Result<Vec<PodInfo>> {
        match self {
            PodNames::Cri(socket) => super::cri::pods(socket).await,
            PodNames::Snapshot { cluster, .. } => cluster().await,
        }
    }

    /// The pods, if any of `faults` needs names; `None` where none does or no source is known
    /// (planning then says what is missing). Scopes by pod uid or container id are found in the
    /// cgroup tree without names, but their names let the guard rails see a kube-system pod:
    /// for those they are asked for too, and a runtime that does not answer changes nothing.
    pub async fn for_faults<'a>(
        names: Option<&Self>,
        faults: impl Iterator<Item = &'a Fault>,
    ) -> Result<Option<Vec<PodInfo>>> {
        let faults: Vec<&Fault> = faults.collect();
        let Some(names) = names else {
            return Ok(None);
        };
        if faults.iter().any(|f| f.scope.needs_names()) {
            return Ok(Some(names.pods().await?));
        }
        if faults
            .iter()
            .any(|f| f.scope.pod_uid.is_some() || f.scope.container.is_some())
        {
            return Ok(names.pods().await.ok());
        }
        Ok(None)
    }

    /// The pods peer selectors choose among, if any of `faults` has one.
    pub async fn peers_for_faults<'a>(
        names: Option<&Self>,
        mut faults: impl Iterator<Item = &'a Fault>,
    ) -> Result<Option<Vec<PodInfo>>> {
        match names {
            Some(names) if faults.any(|f| !f.matches.peer_selector.is_empty()) => {
                Ok(Some(names.peers().await?))
            }
            _ => Ok(None),
        }
    }
}
