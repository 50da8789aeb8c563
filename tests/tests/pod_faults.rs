//! Faults on real containerd pods (no kubelet, no API server: containerd's CRI API, kubelet-style
//! cgroups, CNI bridge networking; see tests/src/pods.rs). Each scope by name or id hits exactly
//! its processes: real syscalls in the containers fail with the errno, real packets are lost,
//! and the pod's other container and the neighbouring pods are spared. A ChaosFault served by a
//! local API server (no real cluster) reaches the selected containers through the agent's
//! controller, follows a restarted container, and gets its node's status written.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use chaos_tests::{
    ChaosRun,
    agent::Agent,
    eventually,
    kube_api::FakeApiServer,
    pods::{ContainerSpec, Containerd, Pod, PodSpec, Qos},
    require_root, tcp_sink,
};
use serde_json::json;

/// One node at a time: each test starts its own containerd, pods and chaos-bpf.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the tests' pods run: nothing but a process to exec beside.
const SLEEP: &[&str] = &["/bin/sleep", "infinity"];

fn pod(name: &str, qos: Qos, labels: &[(&str, &str)], containers: &[&str]) -> PodSpec {
    let mut spec = PodSpec::new(name, qos);
    spec.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.containers = containers
        .iter()
        .map(|c| ContainerSpec::new(c, SLEEP))
        .collect();
    spec
}

/// The node of these tests: `web` (two containers: app and sidecar, best effort), `canary` (same
/// app label, another tier, burstable) and `cache` (another app, guaranteed), and a TCP server
/// on the bridge's gateway address, outside every pod.
struct Node {
    containerd: Containerd,
    web: Pod,
    canary: Pod,
    cache: Pod,
    server: SocketAddr,
}

impl Node {
    fn start() -> Self {
        let containerd = Containerd::start();
        let web = containerd.run_pod(&pod(
            "web",
            Qos::BestEffort,
            &[("app", "web"), ("tier", "main")],
            &["app", "sidecar"],
        ));
        let canary = containerd.run_pod(&pod(
            "canary",
            Qos::Burstable,
            &[("app", "web"), ("tier", "canary")],
            &["app"],
        ));
        let cache = containerd.run_pod(&pod(
            "cache",
            Qos::Guaranteed,
            &[("app", "cache")],
            &["redis"],
        ));
        let server = tcp_sink(&format!("{}:0", containerd.gateway()));
        Self {
            containerd,
            web,
            canary,
            cache,
            server,
        }
    }

    /// A connect from inside the container (busybox nc, exec'd through CRI): `None` if it
    /// connected, else what nc said.
    fn connect_error(&self, container_id: &str) -> Option<String> {
        let target = format!(
            "nc -w 2 {} {} </dev/null",
            self.server.ip(),
            self.server.port()
        );
        let out = self.containerd.exec(
            container_id,
            &["sh", "-c", &target],
            Duration::from_secs(10),
        );
        (out.exit_code != 0).then(|| format!("{}{}", out.stdout, out.stderr))
    }

    /// Which of the containers fail to connect, by `pod/container`.
    fn refused(&self) -> Vec<String> {
        let mut refused = Vec::new();
        for pod in [&self.web, &self.canary, &self.cache] {
            for container in &pod.containers {
                if let Some(said) = self.connect_error(&container.id) {
                    assert!(
                        said.contains("Connection refused"),
                        "{}/{}: {said}",
                        pod.name,
                        container.name
                    );
                    refused.push(format!("{}/{}", pod.name, container.name));
                }
            }
        }
        refused
    }

    fn socket(&self) -> &str {
        self.containerd.socket().to_str().expect("socket path")
    }

    /// Arms connect-error to the server on `scope` (CLI flags) and returns which containers
    /// were refused while it ran.
    fn refused_under(&self, scope: &[&str]) -> Vec<String> {
        let port = self.server.port().to_string();
        let mut args = vec![
            "inject",
            "connect-error",
            "--cri-socket",
            self.socket(),
            "--port",
            &port,
            "--duration",
            "60s",
        ];
        args.extend_from_slice(scope);
        let run = ChaosRun::start(&args);
        let refused = self.refused();
        let output = run.stop();
        assert_eq!(output.code, Some(0), "{}", output.stderr);
        refused
    }
}

#[test]
fn scopes_by_pod_container_name_pid_and_selector_hit_exactly_their_processes() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    assert!(
        node.refused().is_empty(),
        "nothing is refused without a fault"
    );
    let web_app = node.web.container("app");
    let sidecar = node.web.container("sidecar");
    for (scope, expected) in [
        (
            vec!["--pod-uid", node.web.uid.as_str()],
            vec!["web/app", "web/sidecar"],
        ),
        (vec!["--container", &web_app.id[..12]], vec!["web/app"]),
        (
            vec!["--pod", "default/web", "--container-name", "app"],
            vec!["web/app"],
        ),
        (
            vec![
                "--pod-uid",
                node.web.uid.as_str(),
                "--container-name",
                "sidecar",
            ],
            vec!["web/sidecar"],
        ),
        (vec!["--pid", &sidecar.pid.to_string()], vec!["web/sidecar"]),
        (
            vec!["--selector", "app=web", "--container-name", "app"],
            vec!["web/app", "canary/app"],
        ),
        (
            vec!["--selector", "app=web,tier=canary"],
            vec!["canary/app"],
        ),
        (
            vec!["--pod-uid", node.cache.uid.as_str()],
            vec!["cache/redis"],
        ),
    ] {
        let mut refused = node.refused_under(&scope);
        refused.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(refused, expected, "scope {scope:?}");
    }
    assert!(node.refused().is_empty(), "every fault is gone");
}

#[test]
fn a_container_scoped_drop_loses_only_that_containers_packets() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    let gateway = node.containerd.gateway().to_string();
    let ping = |container: &str| {
        let out = node.containerd.exec(
            container,
            &["ping", "-c", "5", "-i", "0.2", "-W", "1", &gateway],
            Duration::from_secs(20),
        );
        let summary = out
            .stdout
            .lines()
            .find(|l| l.contains("packets transmitted"));
        summary.unwrap_or_default().to_string()
    };
    let canary = &node.canary.container("app").id;
    let run = ChaosRun::start(&[
        "inject",
        "drop",
        "--cri-socket",
        node.socket(),
        "--pod",
        "default/canary",
        "--container-name",
        "app",
        "--duration",
        "60s",
    ]);
    let hit = ping(canary);
    let spared = ping(&node.web.container("app").id);
    let output = run.stop();
    assert!(
        hit.contains("5 packets transmitted, 0 packets received"),
        "{hit}"
    );
    assert!(
        spared.contains("5 packets transmitted, 5 packets received"),
        "{spared}"
    );
    assert!(
        output.summary()["injected"].as_u64().unwrap_or(0) >= 5,
        "{}",
        output.stdout
    );
    assert!(
        ping(canary).contains("5 packets received"),
        "gone with chaos-bpf"
    );
}

#[test]
fn a_pod_scope_covers_a_restarted_container_from_its_first_syscall() {
    require_root();
    let _serial = one_at_a_time();
    let mut node = Node::start();
    let port = node.server.port().to_string();
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--pod-uid",
        &node.web.uid,
        "--port",
        &port,
        "--duration",
        "60s",
    ]);
    let old = node.web.container("app").id.clone();
    let started = Instant::now();
    let new = node.containerd.restart_container(&mut node.web, "app");
    let restarted_in = started.elapsed();
    assert_ne!(new.id, old);
    // The first connect the new container makes is refused: it sits below the pod's cgroup,
    // which the rule is keyed on, so there is no gap to measure.
    let first = node.connect_error(&new.id);
    println!("restart took {restarted_in:?}; the new container's first connect: {first:?} (gap 0)");
    assert!(first.is_some_and(|said| said.contains("Connection refused")));
    run.stop();

    // Narrowed to a container by name, the rule follows the name to the new container's cgroup
    // (names are resolved again every 200 ms while such a fault runs).
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cri-socket",
        node.socket(),
        "--pod",
        "default/web",
        "--container-name",
        "app",
        "--port",
        &port,
        "--duration",
        "60s",
    ]);
    assert!(node.connect_error(&node.web.container("app").id).is_some());
    let started = Instant::now();
    let new = node.containerd.restart_container(&mut node.web, "app");
    let restarted_in = started.elapsed();
    let mut first_refused = None;
    while started.elapsed() < Duration::from_secs(10) {
        if node.connect_error(&new.id).is_some() {
            first_refused = Some(started.elapsed());
            break;
        }
    }
    println!(
        "by container name: restart took {restarted_in:?}, first refused connect after {first_refused:?}"
    );
    assert!(
        first_refused.is_some(),
        "the restarted container is not covered"
    );
    assert!(
        node.connect_error(&node.web.container("sidecar").id)
            .is_none(),
        "the sibling is still spared"
    );
    let output = run.stop();
    assert!(
        output.stderr.contains("now on default/web/app"),
        "{}",
        output.stderr
    );
}

/// Kubernetes Pod JSON for a CRI pod, as the API server would show it on node `node`.
fn pod_json(pod: &Pod, labels: &[(&str, &str)], node: &str) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": pod.containers.iter().map(|c| json!({"name": c.name, "image": "localhost/busybox:test"})).collect::<Vec<_>>(),
        },
        "status": {
            "phase": "Running",
            "containerStatuses": pod.containers.iter().map(|c| json!({
                "name": c.name, "containerID": format!("containerd://{}", c.id),
                "ready": true, "restartCount": c.attempt, "image": "localhost/busybox:test", "imageID": "",
                "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}},
            })).collect::<Vec<_>>(),
        },
    })
}

#[test]
fn a_chaosfault_reaches_the_selected_containers_and_follows_a_restart() {
    require_root();
    let _serial = one_at_a_time();
    let mut node = Node::start();
    let api = FakeApiServer::start();
    let web_labels = [("app", "web"), ("tier", "main")];
    api.put_pod(pod_json(&node.web, &web_labels, "node-a"));
    api.put_pod(pod_json(
        &node.canary,
        &[("app", "web"), ("tier", "canary")],
        "node-a",
    ));
    api.put_pod(pod_json(&node.cache, &[("app", "cache")], "node-a"));
    let agent = Agent::start_with_env(
        &["--kubernetes", "--node-name", "node-a"],
        &[("KUBECONFIG", api.kubeconfig().as_os_str())],
    );
    api.put_fault(json!({
        "metadata": {"name": "web-refused", "namespace": "default"},
        "spec": {
            "selector": {"labelSelectors": {"app": "web"}, "containerNames": ["app"]},
            "mode": "All",
            "fault": {"kind": "connect-error", "errno": "ECONNREFUSED", "match": {"port": [node.server.port()]}},
            "duration": "120s",
        },
    }));
    let injected_entry = || {
        api.patches().iter().rev().find_map(|patch| {
            let entry = patch.body["status"]["nodes"][0].clone();
            (entry["phase"] == "Injected").then_some((patch.clone(), entry))
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || injected_entry().is_some()),
        "no Injected status: {:?}",
        api.patches()
    );
    let (patch, entry) = injected_entry().expect("entry");
    assert_eq!(patch.field_manager, "chaos-bpf/node-a");
    assert!(patch.force, "server-side apply with force");
    assert!(
        patch.content_type.contains("apply-patch"),
        "{}",
        patch.content_type
    );
    assert_eq!(entry["node"], "node-a");
    assert_eq!(
        entry["targets"],
        json!(["default/canary/app", "default/web/app"])
    );
    let mut refused = node.refused();
    refused.sort();
    assert_eq!(refused, ["canary/app", "web/app"]);

    // A restart: the API server reports the new container id, the agent arms it.
    let started = Instant::now();
    let new = node.containerd.restart_container(&mut node.web, "app");
    api.put_pod(pod_json(&node.web, &web_labels, "node-a"));
    let reported = started.elapsed();
    assert!(
        eventually(Duration::from_secs(10), || node
            .connect_error(&new.id)
            .is_some()),
        "the restarted container is not covered"
    );
    println!(
        "restart to first refused connect: {:?} (the API server reported it after {reported:?})",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            api.fault("default", "web-refused").is_some_and(|f| {
                f["status"]["nodes"][0]["injected"].as_u64().unwrap_or(0) > 0
                    && f["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "AllInjected" && c["status"] == "True")
            })
        }),
        "counts and conditions: {:?}",
        api.fault("default", "web-refused")
    );

    // An agent that dies takes its faults with it; the next one re-arms what is still due.
    let program_ids: Vec<u64> = agent.get("/v1/faults").json()["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["state"] == "armed")
        .flat_map(|f| f["program_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_u64())
        .collect();
    assert!(!program_ids.is_empty());
    agent.kill_hard();
    assert!(
        program_ids
            .iter()
            .all(|id| !chaos_tests::program_loaded(*id)),
        "nothing outlives the agent"
    );
    assert!(node.refused().is_empty(), "no fault outlives the agent");
    let agent = Agent::start_with_env(
        &["--kubernetes", "--node-name", "node-a"],
        &[("KUBECONFIG", api.kubeconfig().as_os_str())],
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let mut refused = node.refused();
            refused.sort();
            refused == ["canary/app", "web/app"]
        }),
        "the restarted agent re-arms the resource"
    );

    // A resource's duration runs from its creation: past it the node reports Recovered.
    api.put_fault(json!({
        "metadata": {"name": "cache-briefly", "namespace": "default"},
        "spec": {
            "selector": {"labelSelectors": {"app": "cache"}},
            "fault": {"kind": "connect-error", "match": {"port": [node.server.port()]}},
            "duration": "3s",
        },
    }));
    let cache = &node.cache.container("redis").id;
    // The node's phase reaches `wanted`, then the container's connects are as it says.
    for (wanted, refused) in [("Injected", true), ("Recovered", false)] {
        let phase = || {
            api.fault("default", "cache-briefly")
                .map(|f| f["status"]["nodes"][0]["phase"].clone())
                .unwrap_or_default()
        };
        assert!(
            eventually(Duration::from_secs(10), || phase() == wanted),
            "{:?}",
            api.fault("default", "cache-briefly")
        );
        assert_eq!(node.connect_error(cache).is_some(), refused, "{wanted}");
    }

    api.delete_fault("default", "web-refused");
    assert!(
        eventually(Duration::from_secs(10), || node.refused().is_empty()),
        "deleting the resource stops the fault"
    );
    let faults = agent.get("/v1/faults").json();
    assert!(
        faults["faults"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|f| f["state"] == "ended"),
        "{faults}"
    );
}

/// TC faults on a pod act on its host-side veth, found through the netns of any of its
/// processes: a whole pod's pings are lost, a container's alone when its name narrows the pod
/// (its cgroup tells its packets apart). A hostNetwork pod has no veth: cgroup-scoped faults
/// work on it, and a TC fault that needs its veth is refused with the reason.
#[test]
fn tc_faults_use_a_pods_veth_and_host_network_pods_are_told_why_not() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    let mut host_spec = pod("hostnet", Qos::BestEffort, &[("app", "hostnet")], &["app"]);
    host_spec.host_network = true;
    let hostnet = node.containerd.run_pod(&host_spec);
    let gateway = node.containerd.gateway().to_string();
    let lost = |container: &str| {
        let out = node.containerd.exec(
            container,
            &["ping", "-c", "4", "-i", "0.2", "-W", "1", &gateway],
            Duration::from_secs(20),
        );
        out.stdout
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default()
            .contains("0 packets received")
    };
    let web_app = &node.web.container("app").id;
    let sidecar = &node.web.container("sidecar").id;
    let canary = &node.canary.container("app").id;
    for (scope, hit, spared) in [
        (
            vec!["--pod", "default/web"],
            vec![web_app, sidecar],
            vec![canary],
        ),
        (
            vec!["--pod", "default/web", "--container-name", "sidecar"],
            vec![sidecar],
            vec![web_app, canary],
        ),
    ] {
        let mut args = vec![
            "inject",
            "drop",
            "--mechanism",
            "tcx",
            "--cri-socket",
            node.socket(),
            "--duration",
            "60s",
        ];
        args.extend_from_slice(&scope);
        let run = ChaosRun::start(&args);
        assert!(
            run.first_lines().contains("host-side veth"),
            "{scope:?}: {}",
            run.first_lines()
        );
        for container in &hit {
            assert!(lost(container), "{scope:?}: {container} keeps its packets");
        }
        for container in &spared {
            assert!(!lost(container), "{scope:?}: {container} loses its packets");
        }
        run.stop();
    }

    let refused = chaos_tests::chaos(&[
        "inject",
        "drop",
        "--mechanism",
        "tcx",
        "--direction",
        "ingress",
        "--cri-socket",
        node.socket(),
        "--pod",
        "default/hostnet",
        "--duration",
        "5s",
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("hostNetwork") && refused.stderr.lines().count() <= 2,
        "{}",
        refused.stderr
    );
    let port = node.server.port().to_string();
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cri-socket",
        node.socket(),
        "--pod",
        "default/hostnet",
        "--port",
        &port,
        "--duration",
        "60s",
    ]);
    let said = node.connect_error(&hostnet.container("app").id);
    assert!(
        said.is_some_and(|s| s.contains("Connection refused")),
        "a cgroup-scoped fault works on a hostNetwork pod"
    );
    assert!(node.connect_error(web_app).is_none());
    run.stop();
}

/// dns-error on one container of a pod: its lookups (busybox nslookup, to a real dnsmasq on the
/// bridge's gateway) get the kernel's NXDOMAIN while its sibling in the same network namespace
/// resolves; on a hostNetwork pod, by its cgroup on the host's interfaces. Healed afterwards.
#[test]
fn dns_error_reaches_one_container_of_a_pod_and_spares_its_sibling() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    let mut host_spec = pod("hostnet", Qos::BestEffort, &[("app", "hostnet")], &["app"]);
    host_spec.host_network = true;
    let hostnet = node.containerd.run_pod(&host_spec);
    let gateway = node.containerd.gateway().to_string();
    let dns =
        chaos_tests::services::Dnsmasq::start_on(&gateway, &[("payments.example.com", "10.9.9.9")]);
    let lookup = |container: &str| {
        let out = node.containerd.exec(
            container,
            &["nslookup", "payments.example.com", &gateway],
            Duration::from_secs(20),
        );
        format!("{}{}", out.stdout, out.stderr)
    };
    let sidecar = &node.web.container("sidecar").id;
    let web_app = &node.web.container("app").id;
    let host_app = &hostnet.container("app").id;
    for (scope, hit, spared) in [
        (
            vec!["--pod", "default/web", "--container-name", "sidecar"],
            sidecar,
            web_app,
        ),
        (vec!["--pod", "default/hostnet"], host_app, web_app),
    ] {
        let mut args = vec![
            "inject",
            "dns-error",
            "--cri-socket",
            node.socket(),
            "--name",
            "payments.example.com",
            "--rcode",
            "nxdomain",
            "--duration",
            "60s",
        ];
        args.extend_from_slice(&scope);
        let run = ChaosRun::start(&args);
        let said = lookup(hit);
        assert!(
            said.contains("NXDOMAIN"),
            "{scope:?}: {said}\n{}",
            dns.log()
        );
        let said = lookup(spared);
        assert!(said.contains("10.9.9.9"), "{scope:?}: the sibling: {said}");
        let summary = run.stop().summary();
        assert!(summary["injected"].as_u64() >= Some(1), "{summary}");
        assert!(lookup(hit).contains("10.9.9.9"), "{scope:?}: healed");
    }
}

/// A dry run on a selector: every chosen container keeps connecting, and the summary counts what
/// the fault would have done to each target, by its cgroup.
#[test]
fn a_dry_run_on_a_selector_counts_each_target() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    let port = node.server.port().to_string();
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cri-socket",
        node.socket(),
        "--selector",
        "app=web",
        "--container-name",
        "app",
        "--port",
        &port,
        "--dry-run",
        "--duration",
        "60s",
    ]);
    let web_app = node.web.container("app");
    let canary_app = node.canary.container("app");
    for _ in 0..3 {
        assert!(
            node.connect_error(&web_app.id).is_none(),
            "a dry run injects nothing"
        );
    }
    assert!(node.connect_error(&canary_app.id).is_none());
    let output = run.stop();
    let summary = output.summary();
    let by_cgroup = &summary["events_by_cgroup"];
    let id_of = |c: &chaos_tests::pods::RunningContainer| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&c.cgroup).expect("cgroup"))
            .to_string()
    };
    assert_eq!(by_cgroup[id_of(web_app)], 3, "{summary}");
    assert_eq!(by_cgroup[id_of(canary_app)], 1, "{summary}");
    assert_eq!(summary["injected"], 4, "{summary}");
}

/// kube-system is reached only when named: a pod there by uid is refused (exit 2, nothing
/// attached), by `--pod kube-system/NAME` it is the user's intent. A pod whose container holds a
/// process named like the container runtime is refused however it is named (pod uid, pod name,
/// selector, container id, container name), and a ChaosFault selecting it reports why.
#[test]
fn kube_system_pods_and_runtime_lookalikes_are_reached_only_when_named() {
    require_root();
    let _serial = one_at_a_time();
    let containerd = Containerd::start();
    let mut spec = pod(
        "coredns",
        Qos::Burstable,
        &[("k8s-app", "kube-dns")],
        &["coredns"],
    );
    spec.namespace = "kube-system".into();
    let system = containerd.run_pod(&spec);
    let socket = containerd.socket().to_str().expect("socket").to_string();
    let refused = chaos_tests::chaos(&[
        "inject",
        "connect-error",
        "--cri-socket",
        &socket,
        "--pod-uid",
        &system.uid,
        "--port",
        "9",
        "--duration",
        "5s",
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("kube-system"), "{}", refused.stderr);
    assert!(chaos_tests::attached_program_ids(&system.cgroup()).is_empty());
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cri-socket",
        &socket,
        "--pod",
        "kube-system/coredns",
        "--port",
        "9",
        "--duration",
        "30s",
    ]);
    assert!(!chaos_tests::attached_program_ids(&system.cgroup()).is_empty());
    run.stop();

    let labels = [("app", "lookalike")];
    let lookalike = containerd.run_pod(&pod("lookalike", Qos::BestEffort, &labels, &["app"]));
    let app = lookalike.container("app").clone();
    let dir = std::env::temp_dir().join(format!("lookalike-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let binary = dir.join("containerd");
    std::fs::copy("/bin/sleep", &binary).expect("copy sleep");
    let procs = app.cgroup.join("cgroup.procs");
    let mut command = std::process::Command::new(&binary);
    command.arg("300");
    // SAFETY: only async-signal-safe work (open/write/close) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            std::fs::write(&procs, b"0")
        });
    }
    let mut runtime = command
        .spawn()
        .expect("a runtime lookalike in the container");
    for scope in [
        &["--pod-uid", lookalike.uid.as_str()][..],
        &["--pod", "default/lookalike"][..],
        &["--selector", "app=lookalike"][..],
        &["--container", app.id.as_str()][..],
        &["--pod", "default/lookalike", "--container-name", "app"][..],
    ] {
        let mut args = vec![
            "inject",
            "connect-error",
            "--cri-socket",
            &socket,
            "--port",
            "9",
            "--duration",
            "5s",
        ];
        args.extend_from_slice(scope);
        let refused = chaos_tests::chaos(&args);
        assert_eq!(refused.code, Some(2), "{scope:?}: {}", refused.stderr);
        assert_eq!(
            refused.stderr.trim().lines().count(),
            1,
            "{}",
            refused.stderr
        );
        assert!(
            refused
                .stderr
                .contains("holds the container runtime (containerd)"),
            "{scope:?}: {}",
            refused.stderr
        );
    }
    let api = FakeApiServer::start();
    api.put_pod(pod_json(&lookalike, &labels, "node-a"));
    let agent = Agent::start_with_env(
        &["--kubernetes", "--node-name", "node-a"],
        &[("KUBECONFIG", api.kubeconfig().as_os_str())],
    );
    api.put_fault(json!({
        "metadata": {"name": "lookalike-refused", "namespace": "default"},
        "spec": {
            "selector": {"labelSelectors": {"app": "lookalike"}},
            "mode": "All",
            "fault": {"kind": "connect-error", "match": {"port": [9]}},
            "duration": "60s",
        },
    }));
    let failed = || {
        api.fault("default", "lookalike-refused")
            .map(|f| f["status"]["nodes"][0].clone())
            .filter(|entry| entry["phase"] == "Failed")
    };
    assert!(
        eventually(Duration::from_secs(20), || failed().is_some()),
        "{:?}",
        api.fault("default", "lookalike-refused")
    );
    let entry = failed().expect("a Failed entry");
    assert!(
        entry["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("holds the container runtime (containerd)")),
        "{entry}"
    );
    for cgroup in [lookalike.cgroup(), app.cgroup.clone()] {
        assert!(chaos_tests::attached_program_ids(&cgroup).is_empty());
    }
    drop(agent.stop());
    let _ = runtime.kill();
    let _ = runtime.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guides' "kill one Redis pod", the Kubernetes way: a ChaosFault of kind kill, mode One,
/// count 3, interval 2s over two `app=redis` pods beside another pod. The test plays the
/// kubelet and starts a killed pod again at once (same uid, same cgroup). Exactly one redis pod dies, the same one
/// every round (mode One chooses it by a stable hash); the other redis pod and the neighbour
/// live. The node's status counts the rounds and processes, and after the third round nothing
/// more is killed. A second resource deleted after its first round kills no more.
#[test]
fn a_chaosfault_kill_of_mode_one_kills_the_same_pod_every_round() {
    require_root();
    let _serial = one_at_a_time();
    let containerd = Containerd::start();
    let redis = [("app", "redis")];
    let mut pods = vec![
        containerd.run_pod(&pod("redis-a", Qos::BestEffort, &redis, &["redis"])),
        containerd.run_pod(&pod("redis-b", Qos::BestEffort, &redis, &["redis"])),
        containerd.run_pod(&pod("web", Qos::BestEffort, &[("app", "web")], &["app"])),
    ];
    let api = FakeApiServer::start();
    for (pod, labels) in pods
        .iter()
        .zip([&redis[..], &redis[..], &[("app", "web")][..]])
    {
        api.put_pod(pod_json(pod, labels, "node-a"));
    }
    let agent = Agent::start_with_env(
        &["--kubernetes", "--node-name", "node-a"],
        &[("KUBECONFIG", api.kubeconfig().as_os_str())],
    );
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    api.put_fault(json!({
        "metadata": {"name": "redis-killed", "namespace": "default"},
        "spec": {
            "selector": {"labelSelectors": {"app": "redis"}},
            "mode": "One",
            "fault": {"kind": "kill", "count": 3, "interval": "2s"},
            "duration": "60s",
        },
    }));
    // Each round: one container dies; the test restarts it as the kubelet would.
    let mut killed = Vec::new();
    for round in 1..=3 {
        let mut dead = None;
        let found = eventually(Duration::from_secs(10), || {
            dead = pods.iter().position(|pod| !alive(pod.containers[0].pid));
            dead.is_some()
        });
        assert!(found, "round {round}: no container died");
        let index = dead.expect("a dead container");
        killed.push(pods[index].name.clone());
        // Every process of the pod died, its sandbox's included: the pod starts again.
        containerd.restart_pod(&mut pods[index]);
        let others_alive = pods
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .all(|(_, pod)| alive(pod.containers[0].pid));
        assert!(others_alive, "round {round}: only the chosen pod dies");
    }
    println!("killed, round by round: {killed:?}");
    assert!(killed[0].starts_with("redis-"), "{killed:?}");
    assert!(
        killed.iter().all(|k| *k == killed[0]),
        "the same pod: {killed:?}"
    );
    // The status counts the three rounds and the processes they killed: two a round, the pod's
    // sandbox (pause) and its container.
    assert!(
        eventually(Duration::from_secs(10), || {
            api.fault("default", "redis-killed").is_some_and(|f| {
                let entry = &f["status"]["nodes"][0];
                entry["matched"] == 3 && entry["injected"] == 6
            })
        }),
        "{:?}",
        api.fault("default", "redis-killed")
    );
    let entry =
        api.fault("default", "redis-killed").expect("the resource")["status"]["nodes"][0].clone();
    assert_eq!(
        entry["targets"],
        json!([format!("default/{}", killed[0])]),
        "{entry}"
    );
    // No fourth round.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        pods.iter().all(|pod| alive(pod.containers[0].pid)),
        "no more kills"
    );
    api.delete_fault("default", "redis-killed");

    // Deleting the resource ends its rounds.
    api.put_fault(json!({
        "metadata": {"name": "web-killed", "namespace": "default"},
        "spec": {
            "selector": {"labelSelectors": {"app": "web"}},
            "fault": {"kind": "kill", "count": 10, "interval": "1500ms"},
            "duration": "60s",
        },
    }));
    let web = 2;
    assert!(
        eventually(Duration::from_secs(10), || !alive(
            pods[web].containers[0].pid
        )),
        "the web pod's first round"
    );
    api.delete_fault("default", "web-killed");
    assert!(
        eventually(Duration::from_secs(10), || {
            agent.get("/v1/faults").json()["faults"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|f| f["state"] != "armed")
        }),
        "deleting the resource stops its kill"
    );
    containerd.restart_pod(&mut pods[web]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alive(pods[web].containers[0].pid),
        "no round after the deletion"
    );
    drop(agent.stop());
    for pod in &pods {
        containerd.stop_pod(pod);
    }
}

/// A partition between real pods: `a` is cut off from the pods labelled `app=b`. Connections
/// between them time out both ways (a partition, not a refusal), `c` still reaches both and
/// they reach it, a pod that joins `app=b` while the fault runs is cut off too, and everything
/// heals when it ends.
#[test]
fn a_partition_cuts_two_pods_apart_both_ways_spares_a_third_and_follows_new_peers() {
    require_root();
    let _serial = one_at_a_time();
    let containerd = Containerd::start();
    const PORT: &str = "8080";
    let server = |name: &str, app: &str| {
        let mut spec = PodSpec::new(name, Qos::BestEffort);
        spec.labels = [("app".to_string(), app.to_string())].into();
        spec.containers = vec![ContainerSpec::new(
            "web",
            &["/bin/sh", "-c", "exec httpd -f -p 8080 -h /"],
        )];
        containerd.run_pod(&spec)
    };
    let a = server("a", "a");
    let b = server("b", "b");
    let c = server("c", "c");
    // `None` when `from` connects to `to`, else what nc said and how long it took.
    let reach = |from: &Pod, to: &Pod| -> Option<(String, Duration)> {
        let ip = to.ip.expect("a pod ip").to_string();
        let started = Instant::now();
        let out = containerd.exec(
            &from.container("web").id,
            &["sh", "-c", &format!("nc -w 2 {ip} {PORT} </dev/null")],
            Duration::from_secs(10),
        );
        (out.exit_code != 0).then(|| (format!("{}{}", out.stdout, out.stderr), started.elapsed()))
    };
    let cut_off = |x: &Pod, y: &Pod| {
        for (from, to) in [(x, y), (y, x)] {
            let (said, took) = reach(from, to)
                .unwrap_or_else(|| panic!("{} still reaches {}", from.name, to.name));
            assert!(
                !said.contains("refused") && took >= Duration::from_millis(1900),
                "{} → {}: a partition times out, it does not refuse: {said} after {took:?}",
                from.name,
                to.name
            );
        }
    };
    let connected = |x: &Pod, y: &Pod| {
        for (from, to) in [(x, y), (y, x)] {
            assert_eq!(reach(from, to), None, "{} → {}", from.name, to.name);
        }
    };
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
        assert!(
            eventually(Duration::from_secs(10), || reach(x, y).is_none()
                && reach(y, x).is_none()),
            "{} and {} reach each other before the fault",
            x.name,
            y.name
        );
    }
    let mut run = ChaosRun::start(&[
        "inject",
        "partition",
        "--cri-socket",
        containerd.socket().to_str().expect("socket path"),
        "--pod",
        "default/a",
        "--peer-selector",
        "app=b",
        "--duration",
        "120s",
    ]);
    let b_ip = b.ip.expect("b's ip").to_string();
    assert!(run.first_lines().contains(&b_ip), "{}", run.first_lines());
    cut_off(&a, &b);
    connected(&a, &c);
    connected(&b, &c);
    // A new peer: found by its label within the follower's period.
    let b2 = server("b2", "b");
    let b2_ip = b2.ip.expect("b2's ip").to_string();
    let followed = run.wait_for_line(&b2_ip);
    assert!(
        followed.as_deref().is_some_and(|l| l.contains("peers now")),
        "{followed:?}\n{}",
        run.first_lines()
    );
    cut_off(&a, &b2);
    connected(&b2, &c);
    let summary = run.stop().summary();
    assert!(summary["injected"].as_u64() >= Some(4), "{summary}");
    for peer in [&b, &b2, &c] {
        connected(&a, peer);
    }
}

/// connection-limit on a real pod: its container may hold 2 connections to the pods labelled
/// `app=db` at once; of 4 opened together, 2 are refused at once (busybox nc's own words), and
/// after the fault all 4 connect.
#[test]
fn a_pod_holds_at_most_max_connections_to_its_peers() {
    require_root();
    let _serial = one_at_a_time();
    let containerd = Containerd::start();
    let pod = |name: &str, app: &str, command: &str| {
        let mut spec = PodSpec::new(name, Qos::BestEffort);
        spec.labels = [("app".to_string(), app.to_string())].into();
        spec.containers = vec![ContainerSpec::new("main", &["/bin/sh", "-c", command])];
        containerd.run_pod(&spec)
    };
    let db = pod("db", "db", "exec httpd -f -p 8080 -h /");
    let client = pod("client", "client", "exec sleep 3600");
    let db_ip = db.ip.expect("db's ip").to_string();
    // Four connections at once, each held ~3 s; prints REFUSED for each one refused.
    let four_at_once = format!(
        "for i in 1 2 3 4; do (sleep 3 | nc -w 2 {db_ip} 8080 >/dev/null 2>/tmp/e$i; \
         grep -q refused /tmp/e$i && echo REFUSED) & done; wait"
    );
    let refused = || {
        let out = containerd.exec(
            &client.container("main").id,
            &["sh", "-c", &four_at_once],
            Duration::from_secs(20),
        );
        out.stdout.matches("REFUSED").count()
    };
    assert!(
        eventually(Duration::from_secs(10), || refused() == 0),
        "the client reaches db before the fault"
    );
    let run = ChaosRun::start(&[
        "inject",
        "connection-limit",
        "--cri-socket",
        containerd.socket().to_str().expect("socket path"),
        "--pod",
        "default/client",
        "--peer-selector",
        "app=db",
        "--port",
        "8080",
        "--max",
        "2",
        "--duration",
        "120s",
    ]);
    assert!(run.first_lines().contains(&db_ip), "{}", run.first_lines());
    assert_eq!(refused(), 2);
    let summary = run.stop().summary();
    assert_eq!(summary["injected"], 2, "{summary}");
    assert_eq!(refused(), 0, "all four connect once the fault is gone");
}

/// A ChaosFault partition through the agent, whose peers by label are on another node: the
/// agent finds them in the cluster's pods (a watch it starts for the first peer selector), not
/// in its node's. The peer here is a pod the API server places on node-b, whose address is the
/// bridge's gateway, where a real server listens: `cache` (chosen) times out reaching it, `web`
/// (not chosen) connects.
#[test]
fn a_chaosfault_partition_finds_peers_on_other_nodes() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    let api = FakeApiServer::start();
    api.put_pod(pod_json(&node.web, &[("app", "web")], "node-a"));
    api.put_pod(pod_json(&node.cache, &[("app", "cache")], "node-a"));
    let gateway = node.containerd.gateway().to_string();
    api.put_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "default", "uid": "uid-db-0", "labels": {"app": "db"}},
        "spec": {"nodeName": "node-b", "containers": [{"name": "db", "image": "postgres"}]},
        "status": {"phase": "Running", "podIP": gateway, "podIPs": [{"ip": gateway}]},
    }));
    let agent = Agent::start_with_env(
        &["--kubernetes", "--node-name", "node-a"],
        &[("KUBECONFIG", api.kubeconfig().as_os_str())],
    );
    api.put_fault(json!({
        "metadata": {"name": "cache-from-db", "namespace": "default"},
        "spec": {
            "selector": {"labelSelectors": {"app": "cache"}},
            "mode": "All",
            "fault": {"kind": "partition", "match": {"peerSelector": {"app": "db"}}},
            "duration": "120s",
        },
    }));
    let cache = &node.cache.container("redis").id;
    let web = &node.web.container("app").id;
    assert!(
        eventually(Duration::from_secs(30), || node
            .connect_error(cache)
            .is_some()),
        "cache still reaches db-0 on node-b: {:?}",
        api.patches()
    );
    let said = node.connect_error(cache).unwrap_or_default();
    assert!(!said.contains("refused"), "a partition times out: {said}");
    assert_eq!(node.connect_error(web), None, "web is not chosen");
    api.delete_fault("default", "cache-from-db");
    assert!(
        eventually(Duration::from_secs(30), || node
            .connect_error(cache)
            .is_none()),
        "healed"
    );
    drop(agent);
}

/// cpu-pressure on a selector: each chosen pod's own cgroup gets its own quota (the v1 cgroup at
/// the pod's path on this hybrid host, where runc put the pod), the other pod keeps its own,
/// and every quota is put back.
#[test]
fn cpu_pressure_on_a_selector_sets_each_pods_own_knob() {
    require_root();
    let _serial = one_at_a_time();
    let node = Node::start();
    let knob = |pod: &Pod| {
        let relative = pod
            .cgroup()
            .strip_prefix(chaos_tests::cgroup2_root())
            .expect("below the cgroup2 root")
            .to_path_buf();
        match chaos_tests::v1_mount("cpu") {
            Some(mount) => mount.join(relative).join("cpu.cfs_quota_us"),
            None => pod.cgroup().join("cpu.max"),
        }
    };
    let read = |pod: &Pod| {
        std::fs::read_to_string(knob(pod))
            .expect("the pod's cpu knob")
            .trim()
            .to_string()
    };
    let before: Vec<String> = [&node.web, &node.canary, &node.cache]
        .iter()
        .map(|p| read(p))
        .collect();
    let run = ChaosRun::start(&[
        "inject",
        "cpu-pressure",
        "--cri-socket",
        node.socket(),
        "--selector",
        "app=web",
        "--cpu",
        "0.3",
        "--duration",
        "60s",
    ]);
    for pod in [&node.web, &node.canary] {
        assert!(
            read(pod).starts_with("30000"),
            "{}: {}",
            pod.name,
            read(pod)
        );
    }
    assert_eq!(read(&node.cache), before[2], "not chosen");
    let summary = run.stop().summary();
    assert_eq!(summary["injected"], 2, "two pods: {summary}");
    let after: Vec<String> = [&node.web, &node.canary, &node.cache]
        .iter()
        .map(|p| read(p))
        .collect();
    assert_eq!(after, before, "put back");
}
