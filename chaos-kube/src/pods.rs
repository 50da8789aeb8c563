//! A Kubernetes Pod as the node's inventory sees it: uid, names, labels and the runtime ids of
//! its running containers. (Host networking is read from the kernel, the netns of a process.)
use chaos_model::workloads::{ContainerInfo, PodInfo};
use k8s_openapi::api::core::v1::Pod;

/// The pod's entry, `None` for one without a uid (not from the API server).
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let metadata = &pod.metadata;
    let containers = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|c| {
            Some(ContainerInfo {
                id: runtime_id(c.container_id.as_deref()?)?.to_string(),
                name: c.name.clone(),
            })
        })
        .collect();
    // podIPs where the API server has them; podIP alone on older ones. A hostNetwork pod's
    // address is its node's, which no peer selector should take.
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false);
    let ips = pod
        .status
        .as_ref()
        .filter(|_| !host_network)
        .map(|status| {
            let listed = status.pod_ips.iter().flatten().map(|ip| ip.ip.as_str());
            listed
                .chain(status.pod_ip.as_deref())
                .filter_map(|ip| ip.parse().ok())
                .collect::<Vec<std::net::IpAddr>>()
        })
        .map(|mut ips| {
            ips.sort_unstable();
            ips.dedup();
            ips
        })
        .unwrap_or_default();
    Some(PodInfo {
        uid: metadata.uid.clone()?,
        namespace: metadata.namespace.clone().unwrap_or_default(),
        name: metadata.name.clone().unwrap_or_default(),
        labels: metadata.labels.clone().unwrap_or_default(),
        containers,
        ips,
    })
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>`: the id.
fn runtime_id(container_id: &str) -> Option<&str> {
    container_id.split_once("://").map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_from_the_api_server() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "redis-0", "namespace": "shop", "uid": "u-1", "labels": {"app": "redis"}},
            "spec": {"hostNetwork": true, "nodeName": "n1", "containers": [{"name": "redis"}, {"name": "exporter"}]},
            "status": {"containerStatuses": [
                {"name": "redis", "containerID": "containerd://abc123", "ready": true, "restartCount": 0, "image": "r", "imageID": "",
                 "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}},
                {"name": "exporter", "containerID": "containerd://def456", "ready": false, "restartCount": 3, "image": "e", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        }))
        .unwrap();
        let info = pod_info(&pod).unwrap();
        assert_eq!(info.uid, "u-1");
        assert!(
            info.ips.is_empty(),
            "a hostNetwork pod's address is its node's"
        );
        assert_eq!(info.containers.len(), 1, "only running containers");
        assert_eq!(info.containers[0].id, "abc123");
    }

    #[test]
    fn a_pods_ips_are_its_peers_addresses() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "shop", "uid": "u-2"},
            "spec": {"containers": [{"name": "db"}]},
            "status": {"podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}, {"ip": "fd00::7"}]}
        }))
        .unwrap();
        let ips: Vec<String> = pod_info(&pod)
            .unwrap()
            .ips
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(ips, ["10.244.1.7", "fd00::7"]);
    }
}
