//! Which pods a ChaosFault chooses. Candidates are the pods its selector names; the mode keeps
//! all of them or the first N by a ranking every agent computes alike (FNV-1a of the resource's
//! uid and the pod's, stable across versions and hosts, unlike std's hasher), so each node's
//! agent arms exactly its share without talking to the others.
use chaos_model::workloads::{PodInfo, Selected, labels_match};

use crate::{ChaosFaultSpec, Mode, TargetSelector};

/// The pods the selector names, wherever they run: in its namespaces (default the resource's
/// own), with every label, and among the named pods if any are named.
pub fn candidates<'a>(
    selector: &TargetSelector,
    own_namespace: &str,
    pods: &'a [PodInfo],
) -> Vec<&'a PodInfo> {
    let in_namespace = |pod: &PodInfo| {
        if selector.namespaces.is_empty() {
            pod.namespace == own_namespace
        } else {
            selector.namespaces.contains(&pod.namespace)
        }
    };
    pods.iter()
        .filter(|pod| in_namespace(pod))
        .filter(|pod| labels_match(&selector.label_selectors, &pod.labels))
        .filter(|pod| selector.pods.is_empty() || selector.pods.contains(&pod.name))
        .collect()
}

/// The candidates the mode keeps, best-ranked first.
pub fn choose<'a>(
    spec: &ChaosFaultSpec,
    resource_uid: &str,
    mut candidates: Vec<&'a PodInfo>,
) -> Vec<&'a PodInfo> {
    let count = match spec.mode {
        Mode::All => return candidates,
        Mode::One => 1,
        Mode::Fixed => spec.value.unwrap_or(1) as usize,
        Mode::Percent => {
            let percent = spec.value.unwrap_or(100).min(100) as usize;
            (candidates.len() * percent).div_ceil(100)
        }
    };
    candidates.sort_by_key(|pod| rank(resource_uid, &pod.uid));
    candidates.truncate(count);
    candidates
}

/// The chosen pods' targets: each whole pod, or its containers of the named names.
pub fn targets<'a>(selector: &TargetSelector, chosen: &[&'a PodInfo]) -> Vec<Selected<'a>> {
    chosen
        .iter()
        .flat_map(|pod| {
            let whole = selector.container_names.is_empty().then_some(Selected {
                pod,
                container: None,
            });
            let containers = pod
                .containers
                .iter()
                .filter(|c| selector.container_names.contains(&c.name))
                .map(move |container| Selected {
                    pod,
                    container: Some(container),
                });
            whole.into_iter().chain(containers)
        })
        .collect()
}

fn rank(resource_uid: &str, pod_uid: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    resource_uid
        .bytes()
        .chain([b'/'])
        .chain(pod_uid.bytes())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
}

#[cfg(test)]
mod tests {
    use chaos_model::workloads::ContainerInfo;

    use super::*;

    fn pods() -> Vec<PodInfo> {
        (0..10)
            .map(|i| PodInfo {
                uid: format!("00000000-0000-0000-0000-00000000000{i}"),
                namespace: if i < 8 { "shop" } else { "other" }.into(),
                name: format!("redis-{i}"),
                labels: [("app".to_string(), "redis".to_string())].into(),
                containers: vec![
                    ContainerInfo {
                        id: format!("{i:0>64}"),
                        name: "redis".into(),
                    },
                    ContainerInfo {
                        id: format!("{:0>64}", i + 100),
                        name: "exporter".into(),
                    },
                ],
                ips: Vec::new(),
            })
            .collect()
    }

    fn spec(mode: Mode, value: Option<u32>) -> ChaosFaultSpec {
        ChaosFaultSpec {
            selector: TargetSelector {
                label_selectors: [("app".to_string(), "redis".to_string())].into(),
                ..TargetSelector::default()
            },
            mode,
            value,
            fault: chaos_model::Fault::default(),
            duration: None,
        }
    }

    #[test]
    fn namespaces_default_to_the_resources_own() {
        let pods = pods();
        let spec = spec(Mode::All, None);
        assert_eq!(candidates(&spec.selector, "shop", &pods).len(), 8);
        assert_eq!(candidates(&spec.selector, "other", &pods).len(), 2);
        let named = TargetSelector {
            namespaces: vec!["shop".into(), "other".into()],
            pods: vec!["redis-1".into(), "redis-9".into()],
            ..TargetSelector::default()
        };
        assert_eq!(candidates(&named, "x", &pods).len(), 2);
    }

    #[test]
    fn modes_choose_the_same_pods_whatever_the_order_seen() {
        let pods = pods();
        let all = candidates(&spec(Mode::All, None).selector, "shop", &pods);
        let mut reversed = all.clone();
        reversed.reverse();
        for (mode, value, count) in [
            (Mode::One, None, 1),
            (Mode::Fixed, Some(3), 3),
            (Mode::Percent, Some(30), 3),
            (Mode::Percent, Some(100), 8),
            (Mode::All, None, 8),
        ] {
            let spec = spec(mode, value);
            let chosen = choose(&spec, "uid-a", all.clone());
            assert_eq!(chosen.len(), count, "{mode:?}");
            let mut again: Vec<&str> = choose(&spec, "uid-a", reversed.clone())
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let mut first: Vec<&str> = chosen.iter().map(|p| p.name.as_str()).collect();
            first.sort_unstable();
            again.sort_unstable();
            assert_eq!(first, again, "every agent agrees ({mode:?})");
        }
        let one = |uid: &str| {
            choose(&spec(Mode::One, None), uid, all.clone())[0]
                .name
                .clone()
        };
        let picks: std::collections::BTreeSet<String> =
            (0..20).map(|i| one(&format!("resource-{i}"))).collect();
        assert!(picks.len() > 2, "another resource, another pick: {picks:?}");
    }

    #[test]
    fn container_names_narrow_each_pod() {
        let pods = pods();
        let chosen: Vec<&PodInfo> = pods.iter().take(2).collect();
        let mut selector = TargetSelector::default();
        assert_eq!(targets(&selector, &chosen).len(), 2);
        selector.container_names = vec!["redis".into()];
        let narrowed = targets(&selector, &chosen);
        assert_eq!(narrowed.len(), 2);
        assert_eq!(narrowed[0].describe(), "shop/redis-0/redis");
    }
}
