//! The Kubernetes manifests in deploy/, checked offline (no cluster, no API server): the
//! checked-in CRD is what `chaos-bpf crd` prints, kustomize renders the whole set,
//! kubernetes-validate accepts it against the API's own schemas with unknown fields refused, the
//! example ChaosFaults pass the CRD's schema (and their faults the fault model's closed schema)
//! while broken ones fail it, and the DaemonSet and ClusterRole grant what deploy/ promises and
//! nothing more.
//!
//! kubectl comes from PATH; kubernetes-validate and check-jsonschema from the virtualenv `cargo
//! xtask setup` installs them into (`$CHAOS_BPF_VENV`, default `~/.cache/chaos-bpf/venv`), else
//! from PATH.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use chaos_tests::{TempFile, chaos_bin};
use serde::Deserialize as _;
use serde_json::{Value, json};

/// Kubernetes versions the rendered manifests must be valid for (both bundled by
/// kubernetes-validate): the oldest release we claim, and the newest the pinned tool knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

const CAPABILITIES: &[&str] = &[
    "BPF",
    "NET_ADMIN",
    "PERFMON",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_RESOURCE",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The virtualenv holding the Python validators (the same rule as xtask's setup).
fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAOS_BPF_VENV") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    Path::new(&home).join(".cache/chaos-bpf/venv")
}

/// A validation tool: in the project's virtualenv, else on PATH.
fn tool(name: &str) -> PathBuf {
    let in_venv = venv_dir().join("bin").join(name);
    if in_venv.is_file() {
        return in_venv;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is neither in {} nor on PATH: run `cargo xtask setup`",
                in_venv.display()
            )
        })
}

/// Runs a command to its end: whether it succeeded, and its stdout and stderr together.
fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// stdout of a command that must succeed.
fn stdout_of(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Every document of a YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|err| panic!("bad YAML: {err}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `kubectl kustomize deploy/`: what `kubectl apply -k deploy/` would send.
fn render() -> String {
    stdout_of(Command::new("kubectl").arg("kustomize").arg(deploy_dir()))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

fn crd() -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("crd.yaml")).expect("deploy/crd.yaml");
    documents(&text).remove(0)
}

/// The example ChaosFaults, by file name.
fn examples() -> Vec<(String, PathBuf)> {
    let mut examples: Vec<(String, PathBuf)> = std::fs::read_dir(deploy_dir().join("examples"))
        .expect("deploy/examples")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                path,
            )
        })
        .collect();
    examples.sort();
    examples
}

/// check-jsonschema on one YAML instance against a JSON Schema file.
fn check_jsonschema(schema: &TempFile, instance: &Path) -> (bool, String) {
    run(Command::new(tool("check-jsonschema"))
        .args(["--default-filetype", "yaml", "--schemafile"])
        .arg(&schema.path)
        .arg(instance))
}

#[test]
fn crd_is_what_chaos_bpf_crd_prints() {
    let binary = chaos_bin();
    assert!(
        binary.is_file(),
        "{} is missing: cargo build -p chaos-userspace",
        binary.display()
    );
    let generated = stdout_of(Command::new(&binary).arg("crd"));
    let checked_in =
        std::fs::read_to_string(deploy_dir().join("crd.yaml")).expect("deploy/crd.yaml");
    assert!(
        generated == checked_in,
        "deploy/crd.yaml differs from what `chaos-bpf crd` prints (the Rust types changed): \
         regenerate it with `cargo build -p chaos-userspace && target/debug/chaos-bpf crd > \
         deploy/crd.yaml`"
    );
}

#[test]
fn kustomize_renders_every_resource() {
    let docs = documents(&render());
    let kinds: BTreeSet<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().expect("kind"),
                d["metadata"]["name"].as_str().expect("name"),
            )
        })
        .collect();
    let expected = BTreeSet::from([
        ("ClusterRole", "chaos-bpf-agent"),
        ("ClusterRoleBinding", "chaos-bpf-agent"),
        ("CustomResourceDefinition", "chaosfaults.chaos-bpf.dev"),
        ("DaemonSet", "chaos-bpf-agent"),
        ("Namespace", "chaos-bpf"),
        ("ServiceAccount", "chaos-bpf-agent"),
    ]);
    assert_eq!(kinds, expected);
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/name"], "chaos-bpf",
            "{} {} lacks the common label",
            doc["kind"], doc["metadata"]["name"]
        );
    }
    for kind in ["ServiceAccount", "DaemonSet"] {
        assert_eq!(
            find(&docs, kind, "chaos-bpf-agent")["metadata"]["namespace"],
            "chaos-bpf"
        );
    }
    let crd = find(
        &docs,
        "CustomResourceDefinition",
        "chaosfaults.chaos-bpf.dev",
    );
    assert_eq!(crd["spec"]["group"], "chaos-bpf.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "ChaosFault");
    assert_eq!(crd["spec"]["names"]["plural"], "chaosfaults");
    assert_eq!(strings(&crd["spec"]["names"]["shortNames"]), ["cf"]);
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1");
    assert_eq!(version["subresources"]["status"], json!({}));
    // The binding names the ServiceAccount the DaemonSet runs as.
    let binding = find(&docs, "ClusterRoleBinding", "chaos-bpf-agent");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "chaos-bpf-agent", "namespace": "chaos-bpf"}])
    );
    assert_eq!(binding["roleRef"]["name"], "chaos-bpf-agent");
}

#[test]
fn rendered_manifests_pass_kubernetes_validate_strict() {
    let rendered = render();
    let manifests = TempFile::new("deploy-rendered", &rendered);
    for version in KUBERNETES_VERSIONS {
        let (ok, output) = run(Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .arg(&manifests.path));
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{output}");
        // Every resource was checked against a schema, none skipped as unknown.
        assert_eq!(
            output.matches("passed for resource").count(),
            6,
            "kubernetes-validate -k {version}:\n{output}"
        );
    }
    // Proof that --strict refuses unknown fields: a misspelled securityContext field fails.
    let misspelled = rendered.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    assert_ne!(misspelled, rendered);
    let broken = TempFile::new("deploy-misspelled", &misspelled);
    let (ok, output) = run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSIONS[0]])
        .arg(&broken.path));
    assert!(
        !ok && output.contains("readOnlyRootFileSystem"),
        "a misspelled field passed kubernetes-validate --strict:\n{output}"
    );
}

#[test]
fn examples_pass_the_crd_schema_and_broken_resources_fail_it() {
    let schema = &crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(schema.is_object(), "no openAPIV3Schema in deploy/crd.yaml");
    let crd_schema = TempFile::new("chaosfault-schema.json", &schema.to_string());
    // The fault model's own schema is closed (no unknown fields), where the CRD's structural
    // schema lets the API server prune them: it catches a misspelled fault field.
    let fault_schema = TempFile::new(
        "fault-schema.json",
        &stdout_of(Command::new(chaos_bin()).arg("schema")),
    );
    let examples = examples();
    assert!(
        examples.len() >= 2,
        "deploy/examples has {} examples",
        examples.len()
    );
    for (name, path) in &examples {
        let text = std::fs::read_to_string(path).expect("example");
        let resource = documents(&text).remove(0);
        assert_eq!(resource["apiVersion"], "chaos-bpf.dev/v1", "{name}");
        assert_eq!(resource["kind"], "ChaosFault", "{name}");
        let (ok, output) = check_jsonschema(&crd_schema, path);
        assert!(ok, "{name} fails the CRD's schema:\n{output}");
        let fault = TempFile::new("example-fault", &resource["spec"]["fault"].to_string());
        let (ok, output) = check_jsonschema(&fault_schema, &fault.path);
        assert!(
            ok,
            "{name}'s spec.fault fails `chaos-bpf schema`:\n{output}"
        );
    }

    // The checks check: a broken resource of each kind fails, naming what is wrong.
    let (_, first) = &examples[0];
    let valid = documents(&std::fs::read_to_string(first).expect("example")).remove(0);
    let mut bad_mode = valid.clone();
    bad_mode["spec"]["mode"] = json!("Sometimes");
    let mut bad_kind = valid.clone();
    bad_kind["spec"]["fault"]["kind"] = json!("explode");
    let mut bad_value = valid.clone();
    bad_value["spec"]["value"] = json!(-1);
    for (broken, expected) in [
        (bad_mode, "Sometimes"),
        (bad_kind, "explode"),
        (bad_value, "-1"),
    ] {
        let file = TempFile::new("broken-chaosfault", &broken.to_string());
        let (ok, output) = check_jsonschema(&crd_schema, &file.path);
        assert!(
            !ok && output.contains(expected),
            "a ChaosFault with {expected} passed the CRD's schema:\n{output}"
        );
    }
    let mut misspelled = valid["spec"]["fault"].clone();
    misspelled["probabilty"] = json!(0.5);
    let file = TempFile::new("broken-fault", &misspelled.to_string());
    let (ok, output) = check_jsonschema(&fault_schema, &file.path);
    assert!(
        !ok && output.contains("probabilty"),
        "a fault with a misspelled field passed `chaos-bpf schema`:\n{output}"
    );
}

#[test]
fn daemonset_and_cluster_role_grant_only_what_they_promise() {
    let docs = documents(&render());
    let daemonset = find(&docs, "DaemonSet", "chaos-bpf-agent");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "chaos-bpf-agent");
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["terminationGracePeriodSeconds"], 10);
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        daemonset["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    );
    for absent in ["hostIPC", "shareProcessNamespace", "initContainers"] {
        assert!(
            pod[absent].is_null() || pod[absent] == false,
            "{absent} set"
        );
    }

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container, the agent");
    let agent = &containers[0];
    let command = strings(&agent["command"]);
    assert_eq!(&command[..2], ["chaos-bpf", "agent"]);
    let flag = |name: &str| {
        let at = command.iter().position(|a| *a == name);
        at.map(|i| command[i + 1])
            .unwrap_or_else(|| panic!("no {name} in {command:?}"))
    };
    assert!(command.contains(&"--kubernetes"));
    // Secure by default: no port answers for faults (loopback would answer every process of
    // the node, hostNetwork pods included), and no --token-file is needed for the socket.
    assert_eq!(
        flag("--listen"),
        "unix:/run/chaos-bpf/agent.sock",
        "the fault API is a root-only Unix socket"
    );
    assert!(!command.contains(&"--token-file"));
    assert_eq!(flag("--metrics"), "0.0.0.0:9478");
    assert_eq!(flag("--cri-socket"), "/run/containerd/containerd.sock");
    assert_eq!(
        agent["env"],
        json!([{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}])
    );

    let security = &agent["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsUser"], 0);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let mut added = strings(&security["capabilities"]["add"]);
    added.sort_unstable();
    assert_eq!(added, CAPABILITIES, "exactly these capabilities");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["host"], "127.0.0.1", "{probe}");
        assert_eq!(
            get["port"], 9478,
            "{probe}: the metrics port, not the fault API"
        );
    }
    let resources = &agent["resources"];
    assert_eq!(
        resources["requests"],
        json!({"cpu": "50m", "memory": "64Mi"})
    );
    assert_eq!(
        resources["limits"],
        json!({"cpu": "500m", "memory": "256Mi"})
    );

    // Mounts: every host path read-only but the agent's own /run/chaos-bpf, and only these;
    // /sys/fs/cgroup among them.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
    };
    let mut host_mounts = BTreeSet::new();
    for mount in agent["volumeMounts"].as_array().expect("volumeMounts") {
        let name = mount["name"].as_str().expect("mount name");
        if let Some(path) = host_path(name) {
            let writable = path == "/run/chaos-bpf";
            assert_eq!(
                mount["readOnly"] == true,
                !writable,
                "host path {path}: writable is {writable}"
            );
            host_mounts.insert(path);
        }
    }
    assert_eq!(
        host_mounts,
        BTreeSet::from([
            "/run/chaos-bpf",
            "/run/containerd/containerd.sock",
            "/sys/fs/cgroup",
            "/sys/kernel/btf"
        ])
    );
    let cgroup = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/cgroup")
        .expect("a /sys/fs/cgroup mount");
    assert_eq!(cgroup["readOnly"], true);
    let run_dir = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/run/chaos-bpf")
        .expect("a /run/chaos-bpf mount (the root filesystem is read-only)");
    let run_volume = volumes.iter().find(|v| v["name"] == run_dir["name"]);
    assert!(
        run_volume.is_some_and(
            |v| v["hostPath"] == json!({"path": "/run/chaos-bpf", "type": "DirectoryOrCreate"})
        ),
        "the socket's directory is the node's /run/chaos-bpf: {run_volume:?}"
    );
    assert!(
        flag("--listen").ends_with(&format!(
            "{}/agent.sock",
            run_dir["mountPath"].as_str().unwrap()
        )),
        "the socket lives in that volume"
    );

    // RBAC: reads pods and ChaosFaults, patches ChaosFault status; nothing else, no wildcard.
    let role = find(&docs, "ClusterRole", "chaos-bpf-agent");
    let rules: BTreeSet<(Vec<&str>, Vec<&str>, Vec<&str>)> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|rule| {
            let keys: BTreeSet<&str> = rule
                .as_object()
                .expect("rule")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, BTreeSet::from(["apiGroups", "resources", "verbs"]));
            (
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
            )
        })
        .collect();
    let read = vec!["get", "list", "watch"];
    assert_eq!(
        rules,
        BTreeSet::from([
            (vec![""], vec!["pods"], read.clone()),
            (vec!["chaos-bpf.dev"], vec!["chaosfaults"], read),
            (
                vec!["chaos-bpf.dev"],
                vec!["chaosfaults/status"],
                vec!["patch"]
            ),
        ])
    );
}
