//! Faults mid-run: 5xx bursts and truncated bodies are retried; a `kill -9` during a pull
//! followed by a rerun leaves the lake and the catalogue equal to a clean run's.
use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const ARGS: &[&str] = &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-07"];

/// path → (sha256, records) of the latest catalogue row of each file.
fn described(lake: &std::path::Path) -> BTreeMap<String, (String, i64)> {
    catalogue(lake)
        .into_iter()
        .filter_map(|r| Some((r.path?, (r.sha256?, r.records))))
        .collect()
}

#[test]
fn faults_and_a_kill_leave_the_same_lake_as_a_clean_run() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    {
        let sim = Sim::start(&["--rate-window", "1"]);
        ok(&ingest(Some(&sim), &clean, ARGS));
    }
    let want_files = raw_files(&clean);
    let want_cat = described(&clean);
    assert!(want_files.len() > 50);

    // 5xx and truncated bodies: retried, nothing lost, nothing twice.
    let faulty = dir.path().join("faulty");
    let sim = Sim::start(&["--rate-window", "1", "--fail-every", "5", "--truncate-every", "7"]);
    let o = ingest(Some(&sim), &faulty, ARGS);
    let out = ok(&o);
    let retries: u64 = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .rev()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries > 20, "expected retries in the summary:\n{out}");
    assert_eq!(raw_files(&faulty), want_files);
    assert_eq!(described(&faulty), want_cat);
    assert_no_secrets(&sim.secrets(), &[&text(&o)], &faulty);
    drop(sim);

    // kill -9 in the middle of a slow pull, then a rerun.
    let killed = dir.path().join("killed");
    let sim = Sim::start(&["--rate-window", "1", "--slow-every", "1", "--slow-ms", "40"]);
    // Commits every 50 ms (not once a second) so that several land before the kill.
    let mut cmd = ingest_cmd(Some(&sim), &killed, &pipelines(), ARGS);
    cmd.env("INGEST_COMMIT_EVERY_MS", "50");
    let mut child = spawn_quiet(cmd);
    // Kill once a few windows are committed, mid-run.
    let log = killed.join("_ingest/catalogue/_delta_log");
    let commits = || std::fs::read_dir(&log).map(|d| d.count()).unwrap_or(0);
    kill_when(&mut child, "the pull (slow the simulator down)", Duration::from_millis(25), Duration::from_secs(5), || commits() >= 6);
    let partial = described(&killed);
    assert!(
        !partial.is_empty() && partial.len() < want_cat.len(),
        "kill landed {} of {} files",
        partial.len(),
        want_cat.len()
    );
    ok(&ingest(Some(&sim), &killed, ARGS));
    assert_eq!(raw_files(&killed), want_files);
    assert_eq!(described(&killed), want_cat);
    let pairs: Vec<(String, String)> = catalogue(&killed)
        .into_iter()
        .filter_map(|r| Some((r.path?, r.sha256?)))
        .collect();
    assert_eq!(
        pairs.len(),
        pairs.iter().collect::<BTreeSet<_>>().len(),
        "duplicate catalogue rows"
    );
    // No staging part in the raw folders. (A kill inside a Delta commit can leave a
    // `_delta_log/<version>.json#n` or `part-….parquet#n` part in a state table, which no
    // Delta reader lists; a later pull or `ingest vacuum` removes it once it is a minute old.)
    let leftovers: Vec<_> = walk(&killed)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains('#') && !p.starts_with(killed.join("_ingest")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Current catalogued files of one source: path → sha256.
fn current(lake: &std::path::Path, source: &str) -> BTreeMap<String, String> {
    ingest::lake::state::current_files(&catalogue(lake))
        .into_iter()
        .filter(|r| r.source == source)
        .filter_map(|r| Some((r.path?, r.sha256?)))
        .collect()
}

fn unrecorded(lake: &std::path::Path) -> Vec<String> {
    let cur: BTreeSet<String> = ingest::lake::state::current_files(&catalogue(lake))
        .into_iter()
        .filter_map(|r| r.path)
        .collect();
    walk(lake)
        .into_iter()
        .map(|p| p.strip_prefix(lake).unwrap().to_string_lossy().to_string())
        .filter(|r| !r.starts_with('_') && !r.contains("_delta_log") && (r.starts_with("pancake/") || r.starts_with("c2s/")))
        .filter(|r| !cur.contains(r))
        .collect()
}

fn silver(lake: &std::path::Path) -> Vec<Vec<serde_json::Value>> {
    [
        "SELECT id, status, to_unixtime(updated_at) AS u FROM silver.c2s_leads ORDER BY id",
        "SELECT id, message_count, to_unixtime(updated_at) AS u FROM silver.pancake_conversations ORDER BY id",
        "SELECT id FROM silver.pancake_posts ORDER BY id",
        "SELECT * FROM gold.pancake_conversations_per_day ORDER BY 1, 2",
    ]
    .iter()
    .map(|q| query(lake, q))
    .collect()
}

#[test]
fn kill_9_at_seeded_points_then_a_rerun_equals_a_clean_run() {
    const PANCAKE: &[&str] = &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-04"];
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(&["--rate-window", "1", "--days", "4", "--slow-every", "1", "--slow-ms", "15"]);
    let clean = dir.path().join("clean");
    ok(&ingest(Some(&sim), &clean, PANCAKE));
    ok(&ingest(Some(&sim), &clean, &["pull", "c2s"]));
    ok(&ingest_sql(&clean, &shipped_sql(), &["transform"]));
    let want_raw = current(&clean, "pancake");
    let want_tables = silver(&clean);

    let lake = dir.path().join("killed");
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut orphans_seen = 0;
    for point in 0..30 {
        let op = next(3);
        let delay = Duration::from_millis(30 + next(900));
        let args: &[&str] = match op {
            0 => PANCAKE,
            1 => &["pull", "c2s"],
            _ => &["transform"],
        };
        let mut cmd = ingest_cmd(Some(&sim), &lake, &pipelines(), args);
        cmd.arg("--sql").arg(shipped_sql());
        let mut child = spawn_quiet(cmd);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL, wherever it is (or already done)
        child.wait().unwrap();
        let left = unrecorded(&lake);
        if !left.is_empty() {
            orphans_seen += 1;
            let status = ok(&ingest(Some(&sim), &lake, &["status"]));
            assert!(status.contains("no catalogue row lists"), "point {point}: status does not list {left:?}:\n{status}");
        }
        // The rerun: whatever was killed is finished.
        match op {
            0 => ok(&ingest(Some(&sim), &lake, PANCAKE)),
            1 => ok(&ingest(Some(&sim), &lake, &["pull", "c2s"])),
            _ => {
                ok(&ingest(Some(&sim), &lake, PANCAKE));
                ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]))
            }
        };
        ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
        let left = unrecorded(&lake);
        assert!(left.is_empty(), "point {point}: unrecorded files after the rerun: {left:?}");
    }
    eprintln!("kill points that left unrecorded files: {orphans_seen}");
    assert_eq!(current(&lake, "pancake"), want_raw);
    assert_eq!(silver(&lake), want_tables);
    let files = raw_files(&lake);
    for (rel, sha) in current(&lake, "pancake") {
        assert!(files.contains_key(&rel), "{rel} catalogued but missing");
        let bytes = std::fs::read(lake.join(&rel)).unwrap();
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha, "{rel}: the recorded hash describes other bytes");
    }
}

/// SIGTERM mid-pull (Kubernetes ending a pod, `ingest serve` cancelling): the pull ends at its
/// next page or window boundary, exits 1, leaves no lease behind and a run-log row that says
/// it was stopped; the windows it committed stay; a rerun — no `--wait`, no takeover needed —
/// ends with the lake a clean pull makes.
#[test]
fn sigterm_ends_a_pull_at_a_boundary_releasing_its_lease_and_a_rerun_finishes() {
    let slow = Sim::start(&["--days", "4", "--seed", "37", "--rate-window", "1", "--reply-delay-ms", "150"]);
    let fast = Sim::start(&["--days", "4", "--seed", "37", "--rate-window", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let args = ["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-04"];
    let mut child = ingest_cmd(Some(&slow), &lake, &pipelines(), &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-pull: a window has been committed.
    let t0 = std::time::Instant::now();
    while catalogue(&lake).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "nothing was committed");
        assert!(child.try_wait().unwrap().is_none(), "the pull ended before the signal: nothing was tested");
        std::thread::sleep(Duration::from_millis(20));
    }
    let committed = catalogue(&lake).len();
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("stop requested"), "{log}");
    assert!(catalogue(&lake).len() >= committed, "a committed window was lost");
    assert!(walk(&lake.join("_ingest/leases")).is_empty(), "the stopped pull left its lease");
    let runs = query(&lake, "SELECT error FROM _ingest.runs WHERE NOT success");
    assert!(runs.iter().any(|r| r["error"].as_str().is_some_and(|e| e.contains("stopped by a signal"))), "{runs:?}");
    ok(&ingest_cmd(Some(&fast), &lake, &pipelines(), &args).output().unwrap());
    let clean = dir.path().join("clean");
    ok(&ingest_cmd(Some(&fast), &clean, &pipelines(), &args).output().unwrap());
    let records = |l: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = raw_files(l).into_iter().flat_map(|(p, rs)| rs.into_iter().map(move |r| format!("{p} {r}"))).collect();
        v.sort();
        v
    };
    assert_eq!(records(&lake), records(&clean));
}
