//! The agent in a cluster: it watches the pods of its node (a reflector on `spec.nodeName`, as
//! the kubelet's own view) and every ChaosFault, arms each resource's faults on the targets it
//! chooses on this node, one engine fault per pod or container, stops them when the resource
//! goes or its duration passes, and writes its node's status entry by server-side apply (field
//! manager `chaos-bpf/<node>`). A restarted agent re-reads the resources and re-arms what is
//! still due, for the time left; what its predecessor held died with it.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{engine::FaultId, error::ChaosError, workload::PodNames};
use chaos_kube::{
    ChaosFault, ChaosFaultStatus, Mode,
    pods::pod_info,
    select,
    status::{NodeStatus, Phase},
};
use chaos_model::{Fault, HumanDuration, Scope, workloads::PodInfo};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt as _, reflector, watcher},
};

use super::shared::Shared;

/// How often the resources are compared with what is armed (besides every watch event).
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How often cluster-wide candidates are listed again for modes other than All.
const CANDIDATES_EVERY: Duration = Duration::from_secs(10);

/// The pods of this node as the Kubernetes API reports them, for scopes by name; and, for peers
/// by label, every pod of the cluster, from a watch started the first time a fault asks.
pub fn pod_names(store: reflector::Store<Pod>, client: Client) -> PodNames {
    let cluster: Arc<tokio::sync::OnceCell<reflector::Store<Pod>>> = Arc::default();
    PodNames::Snapshot {
        node: Arc::new(move || {
            store
                .state()
                .iter()
                .filter_map(|pod| pod_info(pod))
                .collect()
        }),
        cluster: Arc::new(move || {
            let (cluster, client) = (Arc::clone(&cluster), client.clone());
            Box::pin(async move {
                let store = cluster
                    .get_or_try_init(|| watch_cluster_pods(client))
                    .await?;
                Ok(store
                    .state()
                    .iter()
                    .filter_map(|pod| pod_info(pod))
                    .collect())
            })
        }),
    }
}

/// Watches every pod of the cluster, keeping of each only what peers are chosen by (its names,
/// labels, addresses, and whether it is on its node's network): a few hundred bytes a pod.
async fn watch_cluster_pods(client: Client) -> Result<reflector::Store<Pod>, ChaosError> {
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<Pod>::all(client), watcher::Config::default()).modify(|pod| {
        pod.managed_fields_mut().clear();
        pod.annotations_mut().clear();
        let host_network = pod.spec.as_ref().and_then(|spec| spec.host_network);
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            host_network,
            ..Default::default()
        });
        pod.status = pod
            .status
            .take()
            .map(|status| k8s_openapi::api::core::v1::PodStatus {
                pod_ip: status.pod_ip,
                pod_ips: status.pod_ips,
                ..Default::default()
            });
    });
    keep_reflecting(reader, writer, stream, "watching the cluster's pods").await
}

/// Feeds a watch into its store for as long as the process runs; the store once the first list
/// is in.
async fn keep_reflecting(
    reader: reflector::Store<Pod>,
    writer: reflector::store::Writer<Pod>,
    events: impl futures_util::Stream<Item = watcher::Result<watcher::Event<Pod>>> + Send + 'static,
    what: &'static str,
) -> Result<reflector::Store<Pod>, ChaosError> {
    let stream = reflector(writer, events)
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
        .wait_until_ready()
        .await
        .map_err(|err| ChaosError::io(what, std::io::Error::other(err)))?;
    Ok(reader)
}

/// Watches this node's pods; returns their store once the first list is in.
pub async fn watch_node_pods(
    client: Client,
    node: &str,
) -> Result<reflector::Store<Pod>, ChaosError> {
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let events = watcher(Api::<Pod>::all(client), config);
    keep_reflecting(reader, writer, events, "watching this node's pods").await
}

/// What this agent armed for one resource.
#[derive(Default)]
struct Armed {
    /// Target key (pod uid, or container id) → (its name, the engine's fault id).
    faults: BTreeMap<String, (String, FaultId)>,
    /// Why targets could not be armed.
    errors: Vec<String>,
    /// The targets chosen but not armed: still selected, and reported with their errors.
    failed: Vec<String>,
    /// Chosen pods' uids cluster-wide (modes other than All), and when they were listed.
    chosen: Option<(Instant, Vec<String>)>,
    /// The entry last written, to patch only on change.
    written: Option<NodeStatus>,
    /// The resource's namespace and name, to write its status.
    namespace: String,
    name: String,
}

pub struct Controller {
    shared: Arc<Shared>,
    client: Client,
    node: String,
    pods: reflector::Store<Pod>,
    faults: reflector::Store<ChaosFault>,
    armed: HashMap<String, Armed>,
    max_duration: Duration,
}

/// Runs until the process ends.
pub async fn run(shared: Arc<Shared>, client: Client, node: String, pods: reflector::Store<Pod>) {
    let max_duration = shared.service.config().max_duration;
    let (faults, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            Api::<ChaosFault>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let (changed, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(stream.for_each(move |_| {
        let changed = changed.clone();
        async move {
            let _ = changed.try_send(());
        }
    }));
    let mut controller = Controller {
        shared,
        client,
        node,
        pods,
        faults,
        armed: HashMap::new(),
        max_duration,
    };
    loop {
        if controller.faults.wait_until_ready().await.is_err() {
            return;
        }
        controller.reconcile().await;
        let _ = tokio::time::timeout(RECONCILE_EVERY, wake.recv()).await;
    }
}

impl Controller {
    async fn reconcile(&mut self) {
        let resources = self.faults.state();
        let live: Vec<String> = resources.iter().filter_map(|r| r.uid()).collect();
        // Resources deleted: their faults stop; there is no status left to write.
        let gone: Vec<String> = self
            .armed
            .keys()
            .filter(|uid| !live.contains(uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(armed) = self.armed.remove(&uid) {
                self.stop_all(&armed, "deleted").await;
            }
        }
        for resource in resources {
            if let Err(err) = self.reconcile_one(&resource).await {
                eprintln!(
                    "chaos-bpf agent: ChaosFault {}/{}: {err}",
                    resource.namespace().unwrap_or_default(),
                    resource.name_any()
                );
            }
        }
    }

    async fn reconcile_one(&mut self, resource: &ChaosFault) -> Result<(), ChaosError> {
        let Some(uid) = resource.uid() else {
            return Ok(());
        };
        let remaining = self.remaining(resource);
        let desired = match remaining {
            Some(_) if resource.metadata.deletion_timestamp.is_none() => {
                self.desired(resource, &uid).await
            }
            _ => Ok(BTreeMap::new()),
        };
        let mut armed = self.armed.remove(&uid).unwrap_or_default();
        armed.namespace = resource.namespace().unwrap_or_default();
        armed.name = resource.name_any();
        armed.errors.clear();
        armed.failed.clear();
        let desired = match desired {
            Ok(desired) => desired,
            Err(err) => {
                armed.errors.push(err);
                BTreeMap::new()
            }
        };
        // Stopped first: a target that left (a restarted container's old id) or the end.
        let leaving: Vec<String> = armed
            .faults
            .keys()
            .filter(|key| !desired.contains_key(*key))
            .cloned()
            .collect();
        for key in leaving {
            if let Some((_, id)) = armed.faults.remove(&key) {
                let _ = self.shared.service.stop(id, "kubernetes").await;
            }
        }
        for (key, (name, mut fault)) in desired {
            if armed.faults.contains_key(&key) {
                continue;
            }
            fault.duration = remaining.map(HumanDuration);
            match self.arm(fault).await {
                Ok(id) => {
                    armed.faults.insert(key, (name, id));
                }
                Err(err) => {
                    eprintln!(
                        "chaos-bpf agent: ChaosFault {}/{}: {name} could not be armed: {err}",
                        armed.namespace, armed.name
                    );
                    armed.errors.push(format!("{name}: {err}"));
                    armed.failed.push(name);
                }
            }
        }
        let entry = self.entry(&armed, remaining.is_none()).await;
        let result = match entry {
            Some(entry) if armed.written.as_ref() != Some(&entry) => {
                let written = self.write_status(resource, &armed, entry.clone()).await;
                if written.is_ok() {
                    armed.written = Some(entry);
                }
                written
            }
            _ => Ok(()),
        };
        self.armed.insert(uid, armed);
        result
    }

    /// Time left before the resource's deadline (its creation plus its duration, else its
    /// fault's, else the agent's maximum); `None` once it has passed.
    fn remaining(&self, resource: &ChaosFault) -> Option<Duration> {
        let spec = &resource.spec;
        let max = self.max_duration;
        let lifetime = spec
            .duration
            .or(spec.fault.duration)
            .map_or(max, |d| d.0.min(max));
        let created = resource.metadata.creation_timestamp.as_ref()?;
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64()
            - created.0.as_second() as f64;
        let left = lifetime.as_secs_f64() - age.max(0.0);
        (left > 0.0).then(|| Duration::from_secs_f64(left))
    }

    /// This node's targets of the resource, each with the fault to arm: key → (name, fault).
    async fn desired(
        &mut self,
        resource: &ChaosFault,
        uid: &str,
    ) -> Result<BTreeMap<String, (String, Fault)>, String> {
        let spec = &resource.spec;
        if !spec.fault.scope.is_empty() {
            return Err(
                "spec.fault.scope: the selector chooses the targets; leave scope empty".into(),
            );
        }
        let namespace = resource.namespace().unwrap_or_default();
        let node_pods: Vec<PodInfo> = self
            .pods
            .state()
            .iter()
            .filter_map(|p| pod_info(p))
            .collect();
        let mut chosen = select::candidates(&spec.selector, &namespace, &node_pods);
        if spec.mode != Mode::All {
            let cluster = self.chosen_cluster_wide(resource, uid).await?;
            chosen.retain(|pod| cluster.contains(&pod.uid));
        }
        let mut desired = BTreeMap::new();
        for target in select::targets(&spec.selector, &chosen) {
            let scope = match target.container {
                Some(container) => Scope {
                    container: Some(container.id.clone()),
                    ..Scope::default()
                },
                None => Scope {
                    pod_uid: Some(target.pod.uid.clone()),
                    ..Scope::default()
                },
            };
            let key = target
                .container
                .map_or_else(|| target.pod.uid.clone(), |c| c.id.clone());
            let fault = Fault {
                scope,
                ..spec.fault.clone()
            };
            desired.insert(key, (target.describe(), fault));
        }
        Ok(desired)
    }

    /// The uids the mode chooses among every candidate in the cluster, listed again now and then.
    async fn chosen_cluster_wide(
        &mut self,
        resource: &ChaosFault,
        uid: &str,
    ) -> Result<Vec<String>, String> {
        if let Some((at, chosen)) = self.armed.get(uid).and_then(|a| a.chosen.as_ref())
            && at.elapsed() < CANDIDATES_EVERY
        {
            return Ok(chosen.clone());
        }
        let spec = &resource.spec;
        let own = resource.namespace().unwrap_or_default();
        let namespaces = if spec.selector.namespaces.is_empty() {
            vec![own.clone()]
        } else {
            spec.selector.namespaces.clone()
        };
        let labels: Vec<String> = spec
            .selector
            .label_selectors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut pods = Vec::new();
        for namespace in &namespaces {
            let listed = Api::<Pod>::namespaced(self.client.clone(), namespace)
                .list(&ListParams::default().labels(&labels.join(",")))
                .await
                .map_err(|err| format!("listing candidate pods in {namespace}: {err}"))?;
            pods.extend(listed.items.iter().filter_map(pod_info));
        }
        let candidates = select::candidates(&spec.selector, &own, &pods);
        let chosen: Vec<String> = select::choose(spec, uid, candidates)
            .iter()
            .map(|p| p.uid.clone())
            .collect();
        self.armed.entry(uid.to_string()).or_default().chosen =
            Some((Instant::now(), chosen.clone()));
        Ok(chosen)
    }

    async fn arm(&self, fault: Fault) -> Result<FaultId, ChaosError> {
        let view = self.shared.service.create(fault).await?;
        self.shared.refresh_active().await;
        Ok(view.id)
    }

    async fn stop_all(&self, armed: &Armed, by: &'static str) {
        let ids: Vec<FaultId> = armed.faults.values().map(|(_, id)| *id).collect();
        self.shared.service.stop_each(&ids, by).await;
        self.shared.refresh_active().await;
    }

    /// This node's entry: `None` when it has nothing to say (no target here, ever).
    async fn entry(&self, armed: &Armed, ended: bool) -> Option<NodeStatus> {
        let (mut matched, mut injected) = (0, 0);
        for (_, id) in armed.faults.values() {
            if let Some(view) = self.shared.service.view(*id).await {
                matched += view.counters.matched;
                injected += view.counters.injected;
            }
        }
        // Selected whether armed or not: a target that failed is reported with its error.
        let mut targets: Vec<String> = armed
            .faults
            .values()
            .map(|(name, _)| name.clone())
            .chain(armed.failed.iter().cloned())
            .collect();
        targets.sort();
        let phase = if ended {
            Phase::Recovered
        } else if !armed.errors.is_empty() && armed.faults.is_empty() {
            Phase::Failed
        } else if armed.errors.is_empty() {
            Phase::Injected
        } else {
            Phase::Injecting
        };
        if targets.is_empty() && armed.errors.is_empty() && armed.written.is_none() {
            return None;
        }
        let targets = if ended {
            armed
                .written
                .as_ref()
                .map(|w| w.targets.clone())
                .unwrap_or_default()
        } else {
            targets
        };
        let (matched, injected) = match (&armed.written, ended) {
            (Some(last), true) => (last.matched.max(matched), last.injected.max(injected)),
            _ => (matched, injected),
        };
        Some(NodeStatus {
            node: self.node.clone(),
            phase,
            targets,
            matched,
            injected,
            errors: armed.errors.clone(),
        })
    }

    /// Server-side apply of this node's entry and the conditions as this agent sees them.
    async fn write_status(
        &self,
        resource: &ChaosFault,
        armed: &Armed,
        entry: NodeStatus,
    ) -> Result<(), ChaosError> {
        let seen = resource.status.clone().unwrap_or_default();
        let whole = seen.with_node(entry.clone());
        let patch = serde_json::json!({
            "apiVersion": "chaos-bpf.dev/v1",
            "kind": "ChaosFault",
            "status": ChaosFaultStatus { nodes: vec![entry], conditions: whole.conditions },
        });
        let api = Api::<ChaosFault>::namespaced(self.client.clone(), &armed.namespace);
        let params = PatchParams::apply(&format!("chaos-bpf/{}", self.node)).force();
        api.patch_status(&armed.name, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
            .map_err(|err| ChaosError::io("writing the status", std::io::Error::other(err)))
    }
}
