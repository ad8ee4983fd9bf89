//! The run log (`_ingest/runs`, `ingest runs`) and `${last:…}`: every pull logs one row per
//! stream, failures included; a pipeline reads the previous run's last record back into its
//! next request.
use crate::common::*;
use std::path::Path;

fn run(sim: &Sim, p: &Path, lake: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    ingest_cmd(Some(sim), lake, p, args).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn the_run_log_holds_every_pull_and_last_drives_the_next_request() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let seen = || http_get_json(&format!("{}/_sim/last_query/c2s/leads", sim.base))["marker"].clone();

    // No previous run and no default: an input error before any request.
    let strict = edited_pipelines(dir.path(), "c2s.toml", "params = { sort = \"updated_at\" }", "params = { sort = \"updated_at\", marker = \"${last:id}\" }");
    let o = run(&sim, &strict, &lake, &[], &["pull", "c2s"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("${last:id}") && text(&o).contains("c2s.toml"), "{}", text(&o));
    assert_eq!(sim.stats()["requests"], 0);
    assert!(!lake.join("_ingest").exists(), "bad input wrote to the lake");

    let p = edited_pipelines(dir.path(), "c2s.toml", "params = { sort = \"updated_at\" }", "params = { sort = \"updated_at\", marker = \"${last:id:-first}\" }");
    ok(&run(&sim, &p, &lake, &[], &["pull", "c2s"]));
    assert_eq!(seen(), "first");
    let files = raw_files(&lake);
    let last_id = files.values().next().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    let log = ok(&run(&sim, &p, &lake, &[], &["runs"]));
    assert!(log.contains("_/leads") && log.contains(" ok ") && log.contains(&last_id), "{log}");
    ok(&run(&sim, &p, &lake, &[], &["pull", "c2s"]));
    assert_eq!(seen(), last_id.as_str(), "the second request did not carry the last id");

    // A failed pull is logged too, with the error (no token in it).
    let bad = edited_pipelines(dir.path(), "c2s.toml", "max_attempts = 8\nbase_delay_ms = 500", "max_attempts = 2\nbase_delay_ms = 10");
    let o = run(&sim, &bad, &lake, &[("C2S_BASE_URL", "http://127.0.0.1:9")], &["pull", "c2s"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = ok(&run(&sim, &p, &lake, &[], &["runs", "c2s", "--failed"]));
    assert_eq!(failed.lines().filter(|l| l.contains("FAILED")).count(), 1, "{failed}");
    assert!(failed.contains("127.0.0.1:9"), "{failed}");
    let all = ok(&run(&sim, &p, &lake, &[], &["runs"]));
    assert_eq!(all.lines().filter(|l| l.contains("_/leads")).count(), 3, "{all}");
    assert_no_secrets(&sim.secrets(), &[&all, &text(&o)], &lake);
}
