//! The `ChaosFault` custom resource (group `chaos-bpf.dev`, short name `cf`), derived from Rust
//! types so the CRD's schema is the fault model's own.
use std::collections::BTreeMap;

use chaos_model::{Fault, HumanDuration};
use kube::{CustomResource, CustomResourceExt as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::NodeStatus;

/// A fault for the pods a selector chooses, on every node they run on.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos-bpf.dev",
    version = "v1",
    kind = "ChaosFault",
    plural = "chaosfaults",
    shortname = "cf",
    namespaced,
    status = "ChaosFaultStatus",
    // The schema is generated below, made structural first: kube's own conversion refuses the
    // fault model's multi-typed values.
    schema = "disabled",
    printcolumn = r#"{"name":"Fault","type":"string","jsonPath":".spec.fault.kind"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChaosFaultSpec {
    /// Which pods (and containers) are candidates.
    #[serde(default)]
    pub selector: TargetSelector,
    /// How many of the candidates get the fault (default All).
    #[serde(default)]
    pub mode: Mode,
    /// Fixed: how many pods; Percent: which share of the candidates (rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u32>,
    /// The fault, as `chaos-bpf schema` describes it, without a scope: the selector decides.
    pub fault: Fault,
    /// How long after the resource's creation the fault stops on every node (default: the
    /// fault's own duration, else the agent's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub duration: Option<HumanDuration>,
}

/// Candidates: pods in these namespaces (default: the resource's) with all these labels, or named
/// pods; optionally only their containers of these names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_selectors: BTreeMap<String, String>,
    /// Pod names, in the namespaces above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Narrows each pod to its containers of these names: their own cgroups, so the pod's other
    /// containers are spared, packets included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}

/// How many candidates are chosen. Every node's agent ranks the same candidates the same way
/// (by a hash of the resource's uid and each pod's), so they agree without talking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    #[default]
    All,
    One,
    Fixed,
    Percent,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosFaultStatus {
    /// One entry per node, each written only by that node's agent (server-side apply, field
    /// manager `chaos-bpf/<node>`).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<NodeStatus>,
    /// Selected, AllInjected, AllRecovered.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<crate::status::Condition>,
}

/// The CRD as YAML (`chaos-bpf crd`, `deploy/crd.yaml`): kube's derived definition, with the
/// fault model's multi-typed values (a port as 80 or "80-90", a probability as 0.3 or "30%")
/// made structural, as the API server requires.
pub fn crd_yaml() -> String {
    let mut crd = serde_json::to_value(ChaosFault::crd()).unwrap_or_default();
    if let Some(version) = crd.pointer_mut("/spec/versions/0") {
        version["schema"] = serde_json::json!({ "openAPIV3Schema": resource_schema() });
    }
    serde_yaml::to_string(&crd).unwrap_or_default()
}

/// The resource's OpenAPI v3 schema: spec and status from their Rust types, every subschema
/// inlined (the API server takes no `$ref`), then made structural.
fn resource_schema() -> serde_json::Value {
    let mut settings = schemars::generate::SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let mut generator = schemars::SchemaGenerator::new(settings);
    let mut schema = serde_json::json!({
        "description": "A fault for the pods a selector chooses, on every node they run on.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": generator.subschema_for::<ChaosFaultSpec>(),
            "status": generator.subschema_for::<ChaosFaultStatus>(),
        },
    });
    make_structural(&mut schema);
    schema
}

/// A structural schema gives every node one type: `[integer, string]` becomes
/// `x-kubernetes-int-or-string`; other unions keep no type and say that any value is preserved
/// (the agent's parser still checks them, as for every front end). Enums documented variant by
/// variant become plain enums; `properties` go without `additionalProperties` (the API server
/// prunes unknown fields instead); unsigned formats, which OpenAPI lacks, go.
fn make_structural(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            if map.contains_key("properties") {
                map.remove("additionalProperties");
            }
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            if let Some(serde_json::Value::Array(variants)) = map.get("oneOf").cloned()
                && let Some(values) = variants
                    .iter()
                    .map(|v| v.get("const").cloned())
                    .collect::<Option<Vec<_>>>()
            {
                map.remove("oneOf");
                map.insert("type".into(), "string".into());
                map.insert("enum".into(), values.into());
            }
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            if let Some(serde_json::Value::Array(types)) = map.get("type").cloned() {
                let mut names: Vec<&str> = types
                    .iter()
                    .filter_map(|t| t.as_str())
                    .filter(|t| *t != "null")
                    .collect();
                names.sort_unstable();
                map.remove("type");
                match names.as_slice() {
                    [one] => {
                        map.insert("type".into(), (*one).into());
                        map.insert("nullable".into(), true.into());
                    }
                    ["integer", "string"] => {
                        map.insert("x-kubernetes-int-or-string".into(), true.into());
                    }
                    _ => {
                        map.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
                    }
                }
            }
            for value in map.values_mut() {
                make_structural(value);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(make_structural),
        _ => {}
    }
}
