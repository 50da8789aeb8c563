//! A fresh machine must be able to build the xtask before `cargo xtask setup` has installed the
//! eBPF toolchain (nightly's rust-src and bpf-linker). So no package the xtask is built from may
//! build eBPF: none may have aya-build as a build dependency, the way chaos-userspace does.
//! Read from `cargo metadata`'s resolved graph, so a new path through any crate is caught too.
use std::{
    collections::{BTreeSet, HashMap},
    process::Command,
};

#[test]
fn xtask_builds_without_the_ebpf_toolchain() {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata");

    let packages: HashMap<&str, &serde_json::Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let builds_ebpf = |id: &str| {
        packages[id]["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .any(|d| d["name"] == "aya-build" && d["kind"] == "build")
    };
    // What building the xtask binary compiles: its normal and build dependencies, transitively.
    let xtask = packages
        .values()
        .find(|p| p["name"] == "xtask")
        .and_then(|p| p["id"].as_str())
        .expect("xtask package");
    let mut seen = BTreeSet::new();
    let mut stack = vec![xtask];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let compiled = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if compiled {
                stack.push(dep["pkg"].as_str().expect("pkg"));
            }
        }
    }
    let offenders: Vec<&str> = seen
        .iter()
        .filter(|id| builds_ebpf(id))
        .map(|id| packages[id]["name"].as_str().unwrap_or(id))
        .collect();
    assert!(
        offenders.is_empty(),
        "the xtask's build graph includes {offenders:?}, whose build script builds eBPF: a fresh \
         machine could not compile `cargo xtask setup`"
    );
    assert!(
        seen.len() > 1,
        "the walk found no dependency at all: {seen:?}"
    );
}

/// The check above is only worth something if it would catch the crate that does build eBPF.
#[test]
fn chaos_userspace_is_recognised_as_building_ebpf() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../chaos-userspace/Cargo.toml"),
    )
    .expect("chaos-userspace's manifest");
    let build_deps = manifest
        .split("[build-dependencies]")
        .nth(1)
        .expect("chaos-userspace has build dependencies");
    assert!(build_deps.contains("aya-build"));
}
