//! A local Kubernetes API server for the agent's controller: it serves the list and watch calls
//! kube-rs makes for pods and ChaosFaults, and records the status patches the agent sends, in
//! the API's own JSON shapes (the objects are written as an API server returns them). No real
//! cluster is used: this, real containerd pods and the real kernel stand in for a node.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path as UrlPath, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, patch},
};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::TempFile;

/// A status patch the agent sent: where, with which field manager, and the body.
#[derive(Clone, Debug)]
pub struct StatusPatch {
    pub namespace: String,
    pub name: String,
    pub field_manager: String,
    pub force: bool,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct Objects {
    resource_version: u64,
    /// By uid.
    pods: BTreeMap<String, Value>,
    /// By namespace/name.
    faults: BTreeMap<String, Value>,
    patches: Vec<StatusPatch>,
}

struct ApiState {
    objects: Mutex<Objects>,
    pod_events: broadcast::Sender<Value>,
    fault_events: broadcast::Sender<Value>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    state: Arc<ApiState>,
    kubeconfig: TempFile,
    _runtime: tokio::runtime::Runtime,
}

impl FakeApiServer {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime for the API server");
        let state = Arc::new(ApiState {
            objects: Mutex::new(Objects::default()),
            pod_events: broadcast::channel(256).0,
            fault_events: broadcast::channel(256).0,
        });
        let router = Router::new()
            .route("/api/v1/pods", get(node_pods))
            .route("/api/v1/namespaces/{ns}/pods", get(namespace_pods))
            .route("/apis/chaos-bpf.dev/v1/chaosfaults", get(faults))
            .route(
                "/apis/chaos-bpf.dev/v1/namespaces/{ns}/chaosfaults/{name}/status",
                patch(patch_status),
            )
            .with_state(Arc::clone(&state));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the API server");
        let addr = listener.local_addr().expect("address");
        runtime.spawn(async move { axum::serve(listener, router).await });
        let kubeconfig = TempFile::new(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: agent\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: agent\n\
                 current-context: test\n"
            ),
        );
        Self {
            addr,
            state,
            kubeconfig,
            _runtime: runtime,
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig.path
    }

    /// Adds or replaces a pod (by uid) and tells the watchers.
    pub fn put_pod(&self, mut pod: Value) {
        let uid = pod["metadata"]["uid"]
            .as_str()
            .expect("pod uid")
            .to_string();
        let event = {
            let mut objects = self.state.objects.lock().expect("objects");
            objects.resource_version += 1;
            pod["metadata"]["resourceVersion"] = json!(objects.resource_version.to_string());
            let kind = if objects.pods.contains_key(&uid) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            objects.pods.insert(uid, pod.clone());
            json!({"type": kind, "object": pod})
        };
        let _ = self.state.pod_events.send(event);
    }

    /// Adds or replaces a ChaosFault (uid, resourceVersion and creationTimestamp filled in as
    /// the API server would) and tells the watchers. Returns it as stored.
    pub fn put_fault(&self, mut fault: Value) -> Value {
        let key = format!(
            "{}/{}",
            fault["metadata"]["namespace"].as_str().expect("namespace"),
            fault["metadata"]["name"].as_str().expect("name")
        );
        let event = {
            let mut objects = self.state.objects.lock().expect("objects");
            objects.resource_version += 1;
            let rv = objects.resource_version;
            let previous = objects.faults.get(&key).cloned();
            let metadata = &mut fault["metadata"];
            metadata["resourceVersion"] = json!(rv.to_string());
            if metadata["uid"].is_null() {
                metadata["uid"] = previous.as_ref().map_or_else(
                    || json!(format!("cf-uid-{rv}")),
                    |p| p["metadata"]["uid"].clone(),
                );
            }
            if metadata["creationTimestamp"].is_null() {
                metadata["creationTimestamp"] = previous.as_ref().map_or_else(
                    || json!(now_rfc3339()),
                    |p| p["metadata"]["creationTimestamp"].clone(),
                );
            }
            fault["apiVersion"] = json!("chaos-bpf.dev/v1");
            fault["kind"] = json!("ChaosFault");
            let kind = if previous.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            objects.faults.insert(key, fault.clone());
            json!({"type": kind, "object": fault})
        };
        let stored = event["object"].clone();
        let _ = self.state.fault_events.send(event);
        stored
    }

    pub fn delete_fault(&self, namespace: &str, name: &str) {
        let event = {
            let mut objects = self.state.objects.lock().expect("objects");
            objects.resource_version += 1;
            let rv = objects.resource_version;
            let Some(mut fault) = objects.faults.remove(&format!("{namespace}/{name}")) else {
                return;
            };
            fault["metadata"]["resourceVersion"] = json!(rv.to_string());
            json!({"type": "DELETED", "object": fault})
        };
        let _ = self.state.fault_events.send(event);
    }

    pub fn fault(&self, namespace: &str, name: &str) -> Option<Value> {
        let objects = self.state.objects.lock().expect("objects");
        objects.faults.get(&format!("{namespace}/{name}")).cloned()
    }

    pub fn patches(&self) -> Vec<StatusPatch> {
        self.state.objects.lock().expect("objects").patches.clone()
    }
}

fn now_rfc3339() -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

type Params = Query<BTreeMap<String, String>>;

/// `fieldSelector=spec.nodeName=N` and `labelSelector=k=v,...`, as the agent sends them.
fn selected(pod: &Value, params: &BTreeMap<String, String>) -> bool {
    let node_ok = params
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .is_none_or(|node| pod["spec"]["nodeName"] == node);
    let labels_ok = params.get("labelSelector").is_none_or(|selector| {
        selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pod["metadata"]["labels"][key] == value
        })
    });
    node_ok && labels_ok
}

async fn node_pods(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    list_or_watch(&state, params, None, true)
}

async fn namespace_pods(
    State(state): State<Arc<ApiState>>,
    UrlPath(namespace): UrlPath<String>,
    Query(params): Params,
) -> Response {
    list_or_watch(&state, params, Some(namespace), true)
}

async fn faults(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    list_or_watch(&state, params, None, false)
}

fn list_or_watch(
    state: &ApiState,
    params: BTreeMap<String, String>,
    namespace: Option<String>,
    pods: bool,
) -> Response {
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let in_scope = move |object: &Value| {
        namespace
            .as_ref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns.as_str())
            && (!pods || selected(object, &params))
    };
    if watch {
        let events = if pods {
            &state.pod_events
        } else {
            &state.fault_events
        };
        let stream = tokio_stream_of(events.subscribe()).filter_map(move |event| {
            let keep = in_scope(&event["object"]);
            async move { keep.then(|| Ok::<_, std::io::Error>(Bytes::from(format!("{event}\n")))) }
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_default();
    }
    let objects = state.objects.lock().expect("objects");
    let (kind, items): (&str, Vec<Value>) = if pods {
        (
            "PodList",
            objects
                .pods
                .values()
                .filter(|p| in_scope(p))
                .cloned()
                .collect(),
        )
    } else {
        (
            "ChaosFaultList",
            objects
                .faults
                .values()
                .filter(|f| in_scope(f))
                .cloned()
                .collect(),
        )
    };
    let api_version = if pods { "v1" } else { "chaos-bpf.dev/v1" };
    axum::Json(json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": objects.resource_version.to_string()},
        "items": items,
    }))
    .into_response()
}

fn tokio_stream_of(
    receiver: broadcast::Receiver<Value>,
) -> impl futures_util::Stream<Item = Value> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((event, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Server-side apply of `status`, as far as the agent needs: the node's entry replaces the
/// entry of the same node, conditions replace conditions.
async fn patch_status(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body)
        .or_else(|_| serde_yaml::from_slice::<Value>(&body).map_err(|e| e.to_string()))
    {
        Ok(body) => body,
        Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (stored, event) = {
        let mut objects = state.objects.lock().expect("objects");
        objects.patches.push(StatusPatch {
            namespace: namespace.clone(),
            name: name.clone(),
            field_manager: params.get("fieldManager").cloned().unwrap_or_default(),
            force: params.get("force").is_some_and(|f| f == "true"),
            content_type,
            body: body.clone(),
        });
        objects.resource_version += 1;
        let rv = objects.resource_version;
        let Some(fault) = objects.faults.get_mut(&format!("{namespace}/{name}")) else {
            return (StatusCode::NOT_FOUND, "no such ChaosFault").into_response();
        };
        let status = &mut fault["status"];
        if status.is_null() {
            *status = json!({"nodes": [], "conditions": []});
        }
        for entry in body["status"]["nodes"].as_array().into_iter().flatten() {
            let nodes = status["nodes"].as_array_mut().expect("nodes");
            nodes.retain(|n| n["node"] != entry["node"]);
            nodes.push(entry.clone());
        }
        if let Some(conditions) = body["status"].get("conditions") {
            status["conditions"] = conditions.clone();
        }
        fault["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = fault.clone();
        (
            stored.clone(),
            json!({"type": "MODIFIED", "object": stored}),
        )
    };
    let _ = state.fault_events.send(event);
    axum::Json(stored).into_response()
}
