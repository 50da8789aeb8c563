//! The node's workloads as names: pods with their namespace, name, labels and containers, as the
//! container runtime (CRI) or the Kubernetes API reports them. Choosing which of them a scope
//! names is pure logic, here; turning the chosen pods and containers into cgroups is the
//! engine's (it reads the cgroup tree the kubelet laid out).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{FieldError, Scope};

/// A pod on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its running containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerInfo>,
    /// Its pod IPs (none for a pod on the host's network, whose address is the node's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<std::net::IpAddr>,
}

/// A running container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The runtime's id (64 hex digits for containerd, CRI-O and Docker).
    pub id: String,
    /// Its name in the pod spec.
    pub name: String,
}

/// One workload a scope names: a whole pod, or one container of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected<'a> {
    pub pod: &'a PodInfo,
    pub container: Option<&'a ContainerInfo>,
}

impl Selected<'_> {
    /// `namespace/name`, and `/container` for a container.
    pub fn describe(&self) -> String {
        let pod = format!("{}/{}", self.pod.namespace, self.pod.name);
        match self.container {
            Some(container) => format!("{pod}/{}", container.name),
            None => pod,
        }
    }
}

/// The namespace a selector looks in when none is given, as kubectl.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The pods (or, with `containerName`, the containers) of `pods` that the scope names. A scope
/// that names none of them is an error naming the field, for a user who expects a target; a
/// selector may match nothing (the caller decides whether that is an error).
pub fn select<'a>(scope: &Scope, pods: &'a [PodInfo]) -> Result<Vec<Selected<'a>>, FieldError> {
    let chosen: Vec<&PodInfo> = if let Some(uid) = &scope.pod_uid {
        let wanted = uid.replace('_', "-");
        let pod = pods.iter().find(|p| p.uid == wanted).ok_or_else(|| {
            FieldError::new(
                "scope.podUid",
                format!("no pod with uid {uid} on this node"),
                "the uid of a pod running here (kubectl get pod -o jsonpath='{.metadata.uid}')",
            )
        })?;
        vec![pod]
    } else if let Some(pod) = &scope.pod {
        let found = pods
            .iter()
            .find(|p| format!("{}/{}", p.namespace, p.name) == *pod)
            .ok_or_else(|| {
                FieldError::new(
                    "scope.pod",
                    format!("no pod {pod} on this node"),
                    "NAMESPACE/NAME of a pod running here (kubectl get pods -o wide)",
                )
            })?;
        vec![found]
    } else if !scope.selector.is_empty() {
        let namespace = scope.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        pods.iter()
            .filter(|p| p.namespace == namespace && labels_match(&scope.selector, &p.labels))
            .collect()
    } else {
        return Ok(Vec::new());
    };
    let Some(name) = &scope.container_name else {
        return Ok(chosen
            .into_iter()
            .map(|pod| Selected {
                pod,
                container: None,
            })
            .collect());
    };
    let containers: Vec<Selected> = chosen
        .iter()
        .flat_map(|pod| {
            pod.containers
                .iter()
                .filter(|c| c.name == *name)
                .map(|container| Selected {
                    pod,
                    container: Some(container),
                })
        })
        .collect();
    if containers.is_empty() && !chosen.is_empty() {
        let mut names: Vec<&str> = chosen
            .iter()
            .flat_map(|p| p.containers.iter().map(|c| c.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        return Err(FieldError::new(
            "scope.containerName",
            format!("no running container {name} in the pods named"),
            format!("one of their containers: {}", names.join(", ")),
        ));
    }
    Ok(containers)
}

/// Equality selection, as `matchLabels`: every wanted label is present with its value.
pub fn labels_match(wanted: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// The addresses of the pods `peerSelector` names (in `peerNamespace`, default `default`), in
/// order and without repeats: the peers a partition cuts off, as the pods are now.
pub fn peer_addresses(matches: &crate::Match, pods: &[PodInfo]) -> Vec<std::net::IpAddr> {
    if matches.peer_selector.is_empty() {
        return Vec::new();
    }
    let namespace = matches
        .peer_namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE);
    let mut addresses: Vec<std::net::IpAddr> = pods
        .iter()
        .filter(|p| p.namespace == namespace && labels_match(&matches.peer_selector, &p.labels))
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], containers: &[&str]) -> PodInfo {
        PodInfo {
            uid: format!("uid-{name}"),
            namespace: namespace.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, c)| ContainerInfo {
                    id: format!("{name}{i:0>60}"),
                    name: c.to_string(),
                })
                .collect(),
            ips: Vec::new(),
        }
    }

    #[test]
    fn peers_by_label_are_the_pod_ips_of_the_namespace() {
        let mut pods = node();
        for (i, pod) in pods.iter_mut().enumerate() {
            pod.ips = vec![format!("10.0.0.{}", 10 - i).parse().unwrap()];
        }
        let all_ips: Vec<_> = pods.iter().map(|p| p.ips[0]).collect();
        let mut matches = crate::Match::default();
        assert!(
            peer_addresses(&matches, &pods).is_empty(),
            "no selector, no peers"
        );
        let (first, rest) = pods.split_first().unwrap();
        matches.peer_selector = first.labels.clone();
        matches.peer_namespace = Some(first.namespace.clone());
        let peers = peer_addresses(&matches, &pods);
        assert!(peers.contains(&first.ips[0]));
        let mut sorted = peers.clone();
        sorted.sort();
        assert_eq!(peers, sorted, "in order");
        for other in rest {
            let same =
                other.namespace == first.namespace && labels_match(&first.labels, &other.labels);
            assert_eq!(peers.contains(&other.ips[0]), same, "{}", other.name);
        }
        matches.peer_namespace = Some("elsewhere".into());
        assert!(peer_addresses(&matches, &pods).is_empty());
        assert_eq!(all_ips.len(), pods.len());
    }

    fn node() -> Vec<PodInfo> {
        vec![
            pod(
                "default",
                "redis-0",
                &[("app", "redis"), ("tier", "cache")],
                &["redis", "exporter"],
            ),
            pod(
                "default",
                "redis-1",
                &[("app", "redis")],
                &["redis", "exporter"],
            ),
            pod(
                "shop",
                "redis-2",
                &[("app", "redis"), ("tier", "cache")],
                &["redis"],
            ),
            pod("default", "api-0", &[("app", "api")], &["api"]),
        ]
    }

    fn names(selected: &[Selected]) -> Vec<String> {
        selected.iter().map(Selected::describe).collect()
    }

    #[test]
    fn selectors_match_every_label_in_one_namespace() {
        let pods = node();
        let mut scope = Scope {
            selector: [("app".into(), "redis".into())].into(),
            ..Scope::default()
        };
        assert_eq!(
            names(&select(&scope, &pods).unwrap()),
            ["default/redis-0", "default/redis-1"]
        );
        scope.selector.insert("tier".into(), "cache".into());
        assert_eq!(names(&select(&scope, &pods).unwrap()), ["default/redis-0"]);
        scope.namespace = Some("shop".into());
        assert_eq!(names(&select(&scope, &pods).unwrap()), ["shop/redis-2"]);
        scope.namespace = Some("nowhere".into());
        assert!(select(&scope, &pods).unwrap().is_empty());
    }

    #[test]
    fn container_names_narrow_pods_to_containers() {
        let pods = node();
        let scope = Scope {
            selector: [("app".into(), "redis".into())].into(),
            container_name: Some("redis".into()),
            ..Scope::default()
        };
        assert_eq!(
            names(&select(&scope, &pods).unwrap()),
            ["default/redis-0/redis", "default/redis-1/redis"]
        );
        let scope = Scope {
            pod: Some("default/api-0".into()),
            container_name: Some("redis".into()),
            ..Scope::default()
        };
        let refused = select(&scope, &pods).unwrap_err();
        assert_eq!(refused.path, "scope.containerName");
        assert!(refused.accepted.contains("api"), "{refused}");
    }

    #[test]
    fn pods_by_name_and_uid() {
        let pods = node();
        let by_name = Scope {
            pod: Some("shop/redis-2".into()),
            ..Scope::default()
        };
        assert_eq!(names(&select(&by_name, &pods).unwrap()), ["shop/redis-2"]);
        let by_uid = Scope {
            pod_uid: Some("uid-api-0".into()),
            container_name: Some("api".into()),
            ..Scope::default()
        };
        assert_eq!(
            names(&select(&by_uid, &pods).unwrap()),
            ["default/api-0/api"]
        );
        let missing = Scope {
            pod: Some("default/nope".into()),
            ..Scope::default()
        };
        assert_eq!(select(&missing, &pods).unwrap_err().path, "scope.pod");
    }
}
