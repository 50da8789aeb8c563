//! A scope resolved to the cgroups it names: once, canonically, opened (every guard rail judges
//! these, never the spelling), with the workloads they are when named by name.
use std::path::PathBuf;

use chaos_model::workloads::PodInfo;

use crate::{
    error::{ChaosError, Result},
    scope::CgroupScope,
};

/// The cgroups a scope names, opened and resolved canonically, with the workloads they are when it names them by name: given, or the
/// one of its process, container or pod, or each pod or container a pod name, selector or
/// container name picks out of `pods`.
pub fn cgroups_of(
    scope: &chaos_model::Scope,
    pods: Option<&[PodInfo]>,
) -> Result<(Vec<CgroupScope>, Vec<String>)> {
    let (paths, workloads) = if scope.needs_names() {
        named_cgroups(scope, pods)?
    } else {
        let workloads = pods.map_or_else(Vec::new, |pods| names_of(scope, pods));
        (cgroup_of(scope)?.into_iter().collect(), workloads)
    };
    let cgroups = paths
        .iter()
        .map(|path| CgroupScope::open(path))
        .collect::<Result<_>>()?;
    Ok((cgroups, workloads))
}

/// The names of a pod uid's or container id's workload, where the runtime knows it.
fn names_of(scope: &chaos_model::Scope, pods: &[PodInfo]) -> Vec<String> {
    let named = |pod: &PodInfo, container: Option<&str>| match container {
        Some(container) => format!("{}/{}/{container}", pod.namespace, pod.name),
        None => format!("{}/{}", pod.namespace, pod.name),
    };
    if let Some(uid) = &scope.pod_uid {
        let wanted = uid.replace('_', "-");
        return pods
            .iter()
            .filter(|p| p.uid == wanted)
            .map(|p| named(p, None))
            .collect();
    }
    if let Some(id) = &scope.container {
        return pods
            .iter()
            .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
            .filter(|(_, c)| c.id.starts_with(id.as_str()))
            .map(|(p, c)| named(p, Some(&c.name)))
            .collect();
    }
    Vec::new()
}

/// Pods and containers chosen by name, resolved to their directories in the kubelet's tree.
fn named_cgroups(
    scope: &chaos_model::Scope,
    pods: Option<&[PodInfo]>,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let field = scope
        .cgroup_sources()
        .into_iter()
        .find(|(_, given)| *given)
        .map_or("scope.containerName", |(field, _)| field);
    let Some(pods) = pods else {
        return Err(ChaosError::input(
            field,
            "pods and containers by name need the names of this node's workloads",
            "--cri-socket PATH (the container runtime's CRI socket, e.g. \
             /run/containerd/containerd.sock), or the agent in a cluster",
        ));
    };
    let selected = chaos_model::workloads::select(scope, pods)?;
    if selected.is_empty() {
        let wanted: Vec<String> = scope
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Err(ChaosError::input(
            field,
            format!(
                "no pod on this node in namespace {} has the labels {}",
                scope
                    .namespace
                    .as_deref()
                    .unwrap_or(chaos_model::workloads::DEFAULT_NAMESPACE),
                wanted.join(",")
            ),
            "a selector of pods running here (kubectl get pods -l ... -o wide)",
        ));
    }
    let root = cgroup2_root()?;
    let mut cgroups = Vec::new();
    for chosen in &selected {
        let dir = match chosen.container {
            Some(container) => crate::workload::container(&root, &container.id),
            None => crate::workload::pod(&root, &chosen.pod.uid),
        };
        cgroups.push(
            dir.map_err(|missing| ChaosError::input(field, missing.problem, missing.accepted))?,
        );
    }
    Ok((cgroups, selected.iter().map(|s| s.describe()).collect()))
}

fn cgroup2_root() -> Result<PathBuf> {
    crate::scope::cgroup2_mount().map(|m| m.point).ok_or_else(|| {
        ChaosError::input(
            "scope.cgroup",
            "this host has no cgroup v2 (only v1 hierarchies are mounted)",
            "a host with cgroup v2, unified or hybrid (cgroup2 mounted, as at /sys/fs/cgroup/unified)",
        )
    })
}

/// The cgroup directory a scope names: given, or the one of its process, container or pod.
fn cgroup_of(scope: &chaos_model::Scope) -> Result<Option<PathBuf>> {
    if let Some(cgroup) = &scope.cgroup {
        return Ok(Some(cgroup.into()));
    }
    let not_found = |field: &'static str| {
        move |missing: crate::workload::NotFound| {
            ChaosError::input(field, missing.problem, missing.accepted)
        }
    };
    let mount = cgroup2_root;
    Ok(Some(match (&scope.pid, &scope.container, &scope.pod_uid) {
        (Some(pid), ..) => {
            crate::workload::process(&mount()?, *pid).map_err(not_found("scope.pid"))?
        }
        (_, Some(id), _) => {
            crate::workload::container(&mount()?, id).map_err(not_found("scope.container"))?
        }
        (.., Some(uid)) => {
            crate::workload::pod(&mount()?, uid).map_err(not_found("scope.podUid"))?
        }
        _ => return Ok(None),
    }))
}
