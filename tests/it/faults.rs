//! Faults mid-run: 5xx bursts and truncated bodies are retried; a `kill -9` during a pull
//! followed by a rerun leaves the lake and the catalogue equal to a clean run's.
use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
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
    let mut child = Command::new(BIN)
        .arg("--lake")
        .arg(&killed)
        .arg("--pipelines")
        .arg(pipelines())
        .args(ARGS)
        .envs(sim.env.iter().map(|(k, v)| (k.clone(), v.clone())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few windows are committed, mid-run.
    let log = killed.join("_ingest/catalogue/_delta_log");
    for _ in 0..200 {
        let commits = std::fs::read_dir(&log).map(|d| d.count()).unwrap_or(0);
        if commits >= 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pull ended before the kill; slow the simulator down"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
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
    let leftovers: Vec<_> = walk(&killed)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains('#'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
