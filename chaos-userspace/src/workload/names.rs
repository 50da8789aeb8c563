//! Where the names of the node's pods and containers come from: the runtime's CRI socket, or
//! a live view the agent keeps (the Kubernetes API's pods of this node). Asked only for scopes
//! that name workloads (`pod`, `selector`, `containerName`).
use std::{path::PathBuf, sync::Arc};

use chaos_model::{Fault, workloads::PodInfo};

use crate::error::Result;

#[derive(Clone)]
pub enum PodNames {
    /// Asked of the runtime each time.
    Cri(PathBuf),
    /// A view kept current by someone else (a Kubernetes reflector).
    Snapshot(Arc<dyn Fn() -> Vec<PodInfo> + Send + Sync>),
}

impl PodNames {
    /// From the CRI socket given, else the runtime's default socket if one is here.
    pub fn cri(socket: Option<&std::path::Path>) -> Option<Self> {
        super::cri::socket_or_default(socket).map(PodNames::Cri)
    }

    pub async fn pods(&self) -> Result<Vec<PodInfo>> {
        match self {
            PodNames::Cri(socket) => super::cri::pods(socket).await,
            PodNames::Snapshot(view) => Ok(view()),
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
        if faults.iter().any(|f| f.needs_names()) {
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
}
