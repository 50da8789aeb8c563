//! The status each node's agent writes: its own entry of `status.nodes` (targets, counts, phase,
//! errors), and the conditions as that agent sees the whole.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ChaosFaultStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Being armed on this node's targets.
    Injecting,
    /// Armed on every target of this node.
    Injected,
    /// Stopped and disarmed (deleted, or its duration passed).
    Recovered,
    /// Could not be armed here; `errors` says why.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub phase: Phase,
    /// The pods or containers chosen on this node (`namespace/pod[/container]`).
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub matched: u64,
    #[serde(default)]
    pub injected: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True" or "False".
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

impl ChaosFaultStatus {
    /// The status with `entry` in place of the node's old one, and the conditions recomputed
    /// from every node's entry.
    pub fn with_node(&self, entry: NodeStatus) -> ChaosFaultStatus {
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .iter()
            .filter(|n| n.node != entry.node)
            .cloned()
            .collect();
        nodes.push(entry);
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let conditions = conditions(&nodes);
        ChaosFaultStatus { nodes, conditions }
    }
}

fn conditions(nodes: &[NodeStatus]) -> Vec<Condition> {
    let targeted: Vec<&NodeStatus> = nodes.iter().filter(|n| !n.targets.is_empty()).collect();
    let condition = |type_: &str, holds: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if holds { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
    };
    let targets: usize = targeted.iter().map(|n| n.targets.len()).sum();
    // "Every targeted node is in `phase`", with the nodes that are not yet named.
    let all_in = |type_: &str, phase: Phase, reason: &str, verb: &str| {
        let pending: Vec<&str> = targeted
            .iter()
            .filter(|n| n.phase != phase)
            .map(|n| n.node.as_str())
            .collect();
        let holds = !targeted.is_empty() && pending.is_empty();
        condition(
            type_,
            holds,
            if holds { reason } else { "Waiting" },
            if pending.is_empty() {
                String::new()
            } else {
                format!("not {verb} on {}", pending.join(", "))
            },
        )
    };
    vec![
        condition(
            "Selected",
            targets > 0,
            if targets > 0 {
                "TargetsFound"
            } else {
                "NoTargets"
            },
            format!("{targets} target(s) on {} node(s)", targeted.len()),
        ),
        all_in("AllInjected", Phase::Injected, "Injected", "injected"),
        all_in("AllRecovered", Phase::Recovered, "Recovered", "recovered"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, phase: Phase, targets: usize) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            phase,
            targets: (0..targets).map(|i| format!("default/p{i}")).collect(),
            matched: 0,
            injected: 0,
            errors: Vec::new(),
        }
    }

    fn status_of(conditions: &[Condition], type_: &str) -> String {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn each_node_replaces_its_own_entry_and_conditions_follow_all() {
        let status = ChaosFaultStatus::default()
            .with_node(entry("b", Phase::Injected, 1))
            .with_node(entry("a", Phase::Injecting, 2));
        assert_eq!(status.nodes.len(), 2);
        assert_eq!(status.nodes[0].node, "a");
        assert_eq!(status_of(&status.conditions, "Selected"), "True");
        assert_eq!(status_of(&status.conditions, "AllInjected"), "False");
        let status = status.with_node(entry("a", Phase::Injected, 2));
        assert_eq!(status.nodes.len(), 2, "replaced, not added");
        assert_eq!(status_of(&status.conditions, "AllInjected"), "True");
        let status = status
            .with_node(entry("a", Phase::Recovered, 2))
            .with_node(entry("b", Phase::Recovered, 1))
            .with_node(entry("c", Phase::Recovered, 0));
        assert_eq!(status_of(&status.conditions, "AllRecovered"), "True");
        let empty = ChaosFaultStatus::default().with_node(entry("a", Phase::Injected, 0));
        assert_eq!(status_of(&empty.conditions, "Selected"), "False");
    }
}
