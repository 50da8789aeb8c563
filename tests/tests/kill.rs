//! The kill fault on the real kernel: every process of the scope (the cgroup and below) dies
//! by SIGKILL, once or --count times --interval apart, each round a JSON line; a dry run counts
//! them and kills nothing; outside the scope nothing is touched.
use std::time::Duration;

use chaos_tests::{TestCgroup, chaos, require_root};

#[test]
fn kill_ends_every_process_of_the_scope_and_only_those() {
    require_root();
    let scope = TestCgroup::new("kill");
    let below = scope.child("below");
    let neighbour = TestCgroup::new("kill-neighbour");
    let mut victims: Vec<_> = [&scope, &below, &below]
        .iter()
        .map(|cgroup| cgroup.command("sleep").arg("60").spawn().expect("sleep"))
        .collect();
    let mut spared = neighbour.command("sleep").arg("60").spawn().expect("sleep");
    let path = scope.path.display().to_string();

    let dry = chaos(&["inject", "kill", "--cgroup", &path, "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(dry.stdout.contains("\"processes\":3"), "{}", dry.stdout);
    assert!(
        victims
            .iter_mut()
            .all(|v| v.try_wait().expect("wait").is_none()),
        "a dry run kills nothing"
    );

    let output = chaos(&[
        "inject",
        "kill",
        "--cgroup",
        &path,
        "--count",
        "2",
        "--interval",
        "200ms",
    ]);
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let rounds: Vec<&str> = output
        .stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"kill\""))
        .collect();
    assert_eq!(rounds.len(), 2, "{}", output.stdout);
    assert!(rounds[0].contains("\"processes\":3"), "{}", rounds[0]);
    // The summary every fault kind ends with: rounds as matched, processes as injected.
    let summary = output.summary();
    assert_eq!(
        (&summary["fault"], &summary["matched"], &summary["injected"]),
        (&"kill".into(), &2.into(), &3.into()),
        "{summary}"
    );
    for victim in &mut victims {
        let status = victim.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        spared.try_wait().expect("wait").is_none(),
        "the neighbour lives"
    );
    let _ = spared.kill();
    let _ = spared.wait();
    drop(below);

    let refused = chaos(&["inject", "kill", "--cgroup", &path, "--port", "80"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--port"), "{}", refused.stderr);
}

/// Through the agent's API: POST a kill fault, its rounds run in the agent, show and list
/// report them, and the event stream carries each round.
#[test]
fn the_agent_kills_through_its_api() {
    require_root();
    let scope = TestCgroup::new("kill-agent");
    let mut victim = scope.command("sleep").arg("60").spawn().expect("sleep");
    let agent = chaos_tests::agent::Agent::start(&[]);
    let created = agent.create(&serde_json::json!({
        "kind": "kill", "scope": {"cgroup": scope.path}, "count": 2, "interval": "300ms"
    }));
    let id = created["id"].as_u64().expect("id");
    let status = victim.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(chaos_tests::eventually(Duration::from_secs(5), || {
        let shown = agent.get(&format!("/v1/faults/{id}")).json();
        shown["state"] == "ended" && shown["counters"]["matched"] == 2
    }));
    let shown = agent.get(&format!("/v1/faults/{id}")).json();
    assert_eq!(shown["counters"]["injected"], 1, "{shown}");
    let listed = agent.get("/v1/faults").json();
    assert!(
        listed["faults"]
            .as_array()
            .expect("faults")
            .iter()
            .any(|f| f["id"] == id)
    );
    let events = agent.get("/v1/events?follow=false").body;
    assert_eq!(events.matches("\"type\":\"kill\"").count(), 2, "{events}");
    assert_eq!(agent.delete(&format!("/v1/faults/{id}")).status, 200);
}
