//! Exactly-once under real conditions: one writer per source (lease), positions in commit
//! order across sources, leads updated while a pull pages through them (and an API that
//! sometimes ignores `updated_gte`), fractional times at window edges, late rows, and the
//! simulator's rows carrying only documented fields.
use crate::common::*;
use crate::transform::{check_tables, spawn_transform};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn spawn(sim: &Sim, lake: &Path, args: &[&str]) -> Child {
    ingest_cmd(Some(sim), lake, &pipelines(), args)
        .arg("-q")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> std::process::Output {
    c.wait_with_output().unwrap()
}

/// Raw files under the lake that the catalogue does not list as current.
fn unrecorded(lake: &Path) -> Vec<String> {
    let current: BTreeSet<String> = ingest::lake::state::current_files(&catalogue(lake))
        .into_iter()
        .filter_map(|r| r.path)
        .collect();
    raw_files(lake).into_keys().filter(|k| !current.contains(k)).collect()
}

fn positions_strictly_increase(lake: &Path) {
    let seqs: Vec<i64> = catalogue(lake).iter().map(|r| r.seq).collect();
    let uniq: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(uniq.len(), seqs.len(), "duplicate catalogue positions");
}

#[test]
fn a_second_pull_of_a_source_waits_or_exits_1() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "10", "--slow-every", "1", "--slow-ms", "150"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let first = spawn(&sim, &lake, &["pull", "c2s"]);
    let lease = lake.join("_ingest/leases/c2s.json");
    let t0 = Instant::now();
    while !lease.exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lease.exists(), "the first pull took no lease");
    let second = ingest(Some(&sim), &lake, &["pull", "c2s"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("a pull of c2s is running since"), "{msg}");
    assert!(msg.contains(&format!("pid {}", first.id())), "{msg}");
    // A pull of another source is not blocked.
    let other = spawn(&sim, &lake, &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-01"]);
    let waiting = spawn(&sim, &lake, &["pull", "c2s", "--wait"]);
    let o1 = finish(first);
    assert!(o1.status.success(), "{}", text(&o1));
    let o3 = finish(waiting);
    assert!(o3.status.success(), "{}", text(&o3));
    let o2 = finish(other);
    assert!(o2.status.success(), "{}", text(&o2));
    assert!(!lease.exists(), "the lease was not released");
    // Nothing duplicated: the waiting run only re-read its lookback; silver has one row per lead.
    positions_strictly_increase(&lake);
    let cat = catalogue(&lake);
    let c2s: Vec<_> = cat.iter().filter(|r| r.source == "c2s" && r.path.is_some()).collect();
    assert!(!c2s.is_empty());
    let files = raw_files(&lake);
    let first_file = &files[c2s[0].path.as_ref().unwrap()];
    assert_eq!(first_file.len(), 10 * 20);
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.c2s_leads"]));
    let n = query(&lake, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM silver.c2s_leads");
    assert_eq!(n[0]["n"], 200);
    assert_eq!(n[0]["d"], 200);
    assert!(unrecorded(&lake).is_empty());
}

#[test]
fn concurrent_pulls_of_two_sources_and_transforms_miss_nothing() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "10", "--live-updates", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut transformed = 0;
    for round in 1..=10 {
        // Each round lands new Pancake windows and new/updated leads, side by side, while a
        // transform runs against whatever is committed at that moment (started once the
        // pulls have had answers: an event, not a clock).
        let day = format!("2023-09-{round:02}");
        let served = sim.stats()["requests"].as_u64().unwrap();
        let p = spawn(&sim, &lake, &["pull", "pancake", "--from", &day, "--to", &day]);
        let c = spawn(&sim, &lake, &["pull", "c2s"]);
        let t0 = std::time::Instant::now();
        while sim.stats()["requests"].as_u64().unwrap() < served + 4 && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = spawn_transform(&lake);
        let (op, oc, ot) = (finish(p), finish(c), finish(t));
        assert!(op.status.success(), "round {round}: {}", text(&op));
        assert!(oc.status.success(), "round {round}: {}", text(&oc));
        // A transform may fail a model (exit 1, nothing of it applied); it must never apply
        // twice or skip — and the rounds' transforms must mostly run, or the final one alone
        // would make this test pass.
        assert!(ot.status.code().is_some_and(|c| c <= 1), "round {round}: {}", text(&ot));
        transformed += ot.status.success() as usize;
    }
    assert!(transformed >= 8, "only {transformed} of 10 rounds' transforms succeeded");
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    positions_strictly_increase(&lake);
    assert!(unrecorded(&lake).is_empty(), "{:?}", unrecorded(&lake));
    // Every silver table equals an independent computation from the catalogued raw files.
    check_tables(&lake);
}

#[test]
fn leads_updated_during_pulls_end_exact_even_when_the_api_ignores_the_bound() {
    let sim = Sim::start(&[
        "--rate-window",
        "1",
        "--days",
        "30",
        "--live-updates",
        "5",
        "--ignore-filter-every",
        "4",
        "--fractional",
        "--no-retry-after",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    for _ in 0..10 {
        ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    }
    // Changes stop; one more incremental pull must then catch everything.
    http_get_json(&format!("{}/_sim/freeze", sim.base));
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.c2s_leads"]));
    let truth: BTreeMap<String, i64> = http_get_json(&format!("{}/_sim/truth/c2s", sim.base))["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let t = chrono::DateTime::parse_from_rfc3339(l["updated_at"].as_str().unwrap()).unwrap();
            (l["id"].as_str().unwrap().to_string(), t.timestamp_millis())
        })
        .collect();
    assert!(truth.len() > 600, "no lead was created live: {}", truth.len());
    let got: BTreeMap<String, i64> = query(
        &lake,
        "SELECT id, CAST(updated_at AS BIGINT) / 1000 AS ms FROM silver.c2s_leads",
    )
    .into_iter()
    .map(|r| (r["id"].as_str().unwrap().to_string(), r["ms"].as_i64().unwrap()))
    .collect();
    let missing: Vec<_> = truth.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{} leads never landed: {missing:?}", missing.len());
    let stale: Vec<_> = truth.iter().filter(|(k, v)| got.get(*k) != Some(v)).collect();
    assert!(stale.is_empty(), "{} leads lost an update: {:?}", stale.len(), &stale[..stale.len().min(5)]);
    assert_eq!(got.len(), truth.len());
    let stats = sim.stats();
    assert!(stats["throttled"].as_u64().unwrap() <= 5, "{stats}");
}

#[test]
fn fractional_times_at_window_edges_and_late_rows_land() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3", "--fractional", "--late-after", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let t0 = Instant::now();
    let args = ["pull", "pancake", "--streams", "conversations", "--from", "2023-09-01", "--to", "2023-09-03"];
    ok(&ingest(Some(&sim), &lake, &args));
    let late_visible = || http_get_json(&format!("{}/_sim/late", sim.base))["visible"] == true;
    assert!(!late_visible(), "the first pull ran past the late rows' arrival ({:?})", t0.elapsed());
    let convs = |lake: &Path| -> BTreeMap<String, Value> {
        raw_files(lake)
            .into_iter()
            .filter(|(k, _)| k.contains("/conversations/"))
            .flat_map(|(_, v)| v)
            .map(|r| (r["id"].as_str().unwrap().to_string(), r))
            .collect()
    };
    let first = convs(&lake);
    // Each day's first conversation is created at 23:59:59.500: in its window, not lost.
    let edge: Vec<_> = first
        .values()
        .filter(|r| r["inserted_at"].as_str().unwrap().ends_with("23:59:59.500"))
        .collect();
    assert_eq!(edge.len(), 3 * 2, "one per day and page: {:?}", edge.len());
    // Late rows arrive in the last (already pulled) day; the next run's lookback finds them.
    // (waits for the simulator to serve them, not for a clock)
    while !late_visible() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the late rows never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "conversations", "--to", "2023-09-03"]));
    let second = convs(&lake);
    let late: Vec<_> = second.keys().filter(|k| !first.contains_key(*k)).collect();
    assert_eq!(late.len(), 2 * 2, "late rows: {late:?}");
    assert!(unrecorded(&lake).is_empty(), "{:?}", unrecorded(&lake));
    // The re-pulled window superseded its file: one current file per window, no duplicates.
    let cat = catalogue(&lake);
    let current = ingest::lake::state::current_files(&cat);
    let per_slot: BTreeSet<_> = current.iter().map(|r| (r.partition.clone(), r.window_start.clone())).collect();
    assert_eq!(per_slot.len(), current.len());
}

/// Field names APIS.md documents for Pancake ads, campaigns and tags and for C2S leads (plus
/// the injected context).
#[test]
fn simulated_rows_have_only_documented_fields() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "7"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(
        Some(&sim),
        &lake,
        &["pull", "pancake", "--streams", "ads,campaign", "--from", "2023-09-01", "--to", "2023-09-07"],
    ));
    let context = ["page_id", "window_start", "window_end"];
    let documented: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("ads", vec!["name", "status", "currency", "reach", "impressions", "spend"]),
        (
            "campaign",
            vec!["account_id", "ad_id", "adset_id", "budget_remaining", "currency", "daily_budget", "status"],
        ),
    ]);
    let mut seen = BTreeSet::new();
    for (rel, recs) in raw_files(&lake) {
        let stream = rel.split('/').nth(2).unwrap().to_string();
        let allowed = &documented[stream.as_str()];
        for r in recs {
            for k in r.as_object().unwrap().keys() {
                assert!(
                    allowed.contains(&k.as_str()) || context.contains(&k.as_str()),
                    "{rel}: field `{k}` is not in APIS.md"
                );
            }
        }
        seen.insert(stream);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // C2S leads and Pancake tags: the record shapes APIS.md gives, key for key.
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "tags"]));
    let attrs = [
        "customer", "lead_status", "lead_source", "channel", "company", "seller", "product", "archive_details",
        "done_details", "created_at", "updated_at",
    ];
    let nested: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("customer", vec!["name", "email", "phone"]),
        ("lead_status", vec!["alias", "name"]),
        ("lead_source", vec!["id", "name"]),
        ("channel", vec!["name"]),
        ("company", vec!["name"]),
        ("seller", vec!["id", "name"]),
        ("product", vec!["prop_ref"]),
    ]);
    let files = raw_files(&lake);
    let leads: Vec<&Value> = files.iter().filter(|(k, _)| k.starts_with("c2s/")).flat_map(|(_, v)| v).collect();
    assert!(!leads.is_empty());
    for l in &leads {
        let keys: BTreeSet<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["type", "id", "attributes"]), "{l}");
        for (k, v) in l["attributes"].as_object().unwrap() {
            assert!(attrs.contains(&k.as_str()), "lead field `{k}` is not in APIS.md");
            if let (Some(allowed), Some(o)) = (nested.get(k.as_str()), v.as_object()) {
                for kk in o.keys() {
                    assert!(allowed.contains(&kk.as_str()), "lead field `{k}.{kk}` is not in APIS.md");
                }
            }
        }
    }
    let tags: Vec<&Value> = files.iter().filter(|(k, _)| k.contains("/tags/")).flat_map(|(_, v)| v).collect();
    assert!(!tags.is_empty());
    for t in tags {
        let keys: BTreeSet<&str> =
            t.as_object().unwrap().keys().map(String::as_str).filter(|k| !context.contains(k)).collect();
        assert_eq!(keys, BTreeSet::from(["id", "text", "color", "lighten_color"]), "{t}");
    }
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.pancake_ads", "silver.pancake_campaign"]));
    let ads = query(&lake, "SELECT count(*) AS n, count(DISTINCT CAST(date AS VARCHAR)) AS d FROM silver.pancake_ads");
    assert!(ads[0]["n"].as_u64().unwrap() > 0);
    assert!(ads[0]["d"].as_u64().unwrap() > 1);
}

#[test]
fn status_lists_and_vacuum_removes_only_what_no_catalogue_row_lists() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "posts", "--from", "2023-09-01", "--to", "2023-09-02"]));
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.pancake_posts"]));
    let before = raw_files(&lake);
    // What a crash between writing a file and committing it leaves behind.
    let orphan = "pancake/1001/posts/file_2023-09-02_2.json";
    std::fs::write(lake.join(orphan), "{\"id\":\"ghost\"}\n").unwrap();
    let status = ok(&ingest(Some(&sim), &lake, &["status"]));
    assert!(status.contains("no catalogue row lists") && status.contains(orphan), "{status}");
    let o = ok(&ingest(Some(&sim), &lake, &["vacuum"]));
    assert!(o.contains("removed 1 raw file(s)"), "{o}");
    assert_eq!(raw_files(&lake), before);
    let status = ok(&ingest(Some(&sim), &lake, &["status"]));
    assert!(!status.contains("no catalogue row lists"), "{status}");
    let bad = ingest(Some(&sim), &lake, &["vacuum", "silver.nope"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM silver.pancake_posts")[0]["n"].as_u64().unwrap() as usize,
        before.values().map(Vec::len).sum::<usize>());
}

/// `ingest optimize` compacts the catalogue (one small file per pull commit) into one file and
/// writes a checkpoint; rows and transform watermarks are unchanged, DuckDB reads it, and the
/// next pull and transform apply exactly the new data.
#[test]
fn optimize_compacts_the_catalogue_and_changes_nothing_else() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // A commit per landed window (not one a second), so the catalogue gets many small files.
    let run = |args: &[&str]| {
        ok(&ingest_cmd(Some(&sim), &lake, &pipelines(), args).arg("--sql").arg(shipped_sql()).env("INGEST_COMMIT_EVERY_MS", "0").output().unwrap())
    };
    run(&["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-04"]);
    run(&["transform"]);
    let rows = || query(&lake, "SELECT count(*) AS n, max(seq) AS s FROM _ingest.catalogue")[0].clone();
    let silver = || query(&lake, "SELECT count(*) AS n FROM silver.pancake_conversations")[0]["n"].as_u64().unwrap();
    let (before, conversations) = (rows(), silver());
    let parquet = |d: &str| std::fs::read_dir(lake.join(d)).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".parquet")).count();
    let small = parquet("_ingest/catalogue");
    assert!(small > 5, "{small} catalogue files");
    let out = run(&["optimize"]);
    assert!(out.contains(&format!("_ingest.catalogue {:>width$} {:>11}", small, 1, width = 40 - "_ingest.catalogue".len() + 13)), "{out}");
    assert_eq!(rows(), before, "optimize changed the catalogue's rows");
    assert_eq!(silver(), conversations);
    assert!(lake.join("_ingest/catalogue/_delta_log/_last_checkpoint").exists(), "no checkpoint written");
    let n = duckdb(&format!("print(con.execute(\"SELECT count(*) FROM delta_scan('{}')\").fetchone()[0])", lake.join("_ingest/catalogue").display()));
    assert_eq!(n.trim(), before["n"].to_string());
    // Nothing new: a transform applies nothing; a new day lands and is applied once.
    let t = run(&["transform", "silver.pancake_conversations"]);
    assert_eq!(silver(), conversations, "{t}");
    run(&["pull", "pancake", "--from", "2023-09-05", "--to", "2023-09-05"]);
    run(&["transform", "silver.pancake_conversations"]);
    let raw = query(&lake, "SELECT count(DISTINCT id) AS n FROM raw.pancake_conversations")[0]["n"].as_u64().unwrap();
    assert_eq!(silver(), raw);
    assert!(silver() > conversations);
    // Pulls compact the catalogue themselves past a threshold (32 files; 5 here).
    let other = dir.path().join("other");
    let o = ingest_cmd(Some(&sim), &other, &pipelines(), &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-04"])
        .env("INGEST_COMPACT_CATALOGUE_OVER", "5")
        .env("INGEST_COMMIT_EVERY_MS", "0")
        .output()
        .unwrap();
    ok(&o);
    let optimize: Vec<String> = std::fs::read_dir(other.join("_ingest/catalogue/_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .filter(|log| log.contains("\"operation\":\"OPTIMIZE\""))
        .collect();
    assert!(!optimize.is_empty() && other.join("_ingest/catalogue/_delta_log/_last_checkpoint").exists(), "the pull did not compact the catalogue");
    // Snappy, as the commits it packs: a Zstd file came out at half their size, still "small",
    // and the next pull compacted it again.
    let added: Vec<&str> = optimize.iter().flat_map(|log| log.lines()).filter(|l| l.starts_with("{\"add\"")).collect();
    assert!(!added.is_empty() && added.iter().all(|l| l.contains(".snappy.parquet")), "{added:?}");
    let b = query(&other, "SELECT count(*) AS n FROM _ingest.catalogue");
    assert_eq!(b[0]["n"], before["n"], "the compacted catalogue lost or gained rows");
}

/// The state a pull reads without scanning the catalogue (lake::state): a stream's watermark
/// kept as a txn equals the max over its rows after every commit, a backfill of old windows
/// (outside the days a plain pull reads) supersedes their files instead of adding new ones and
/// never lowers the watermark, the next plain pull starts from that watermark, and a run that
/// ended cleanly leaves no unfinished-run marker.
#[test]
fn a_backfill_supersedes_old_windows_and_never_lowers_the_watermark() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "12"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pull = |args: &[&str]| {
        let mut a = vec!["pull", "pancake", "--streams", "conversations", "--partitions", "1001"];
        a.extend_from_slice(args);
        ok(&ingest(Some(&sim), &lake, &a))
    };
    // The txn the last commit recorded per app, from the Delta log (no checkpoint at this size).
    let txns = || {
        let mut out: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        for f in walk(&lake.join("_ingest/catalogue/_delta_log")) {
            let Some(v) = f.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) else { continue };
            if f.extension().is_none_or(|e| e != "json") {
                continue;
            }
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                let a: Value = serde_json::from_str(line).unwrap();
                if let Some(t) = a.get("txn") {
                    let app = t["appId"].as_str().unwrap().to_string();
                    if out.get(&app).is_none_or(|(w, _)| *w < v) {
                        out.insert(app, (v, t["version"].as_i64().unwrap()));
                    }
                }
            }
        }
        out
    };
    let check = |what: &str| {
        let rows = catalogue(&lake);
        let max = rows.iter().filter_map(|r| r.watermark.clone()).max().unwrap();
        let secs = chrono::DateTime::parse_from_rfc3339(&max).unwrap().timestamp();
        assert_eq!(txns()["ingest-watermark/pancake/1001/conversations"].1, secs, "{what}: watermark txn != max over rows ({max})");
        let markers: Vec<String> = std::fs::read_dir(lake.join("_ingest/unfinished/pancake"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(markers, vec!["tracked".to_string()], "{what}: a clean run left its marker");
        assert_eq!(unrecorded(&lake), Vec::<String>::new(), "{what}");
        rows
    };
    pull(&["--from", "2023-09-01", "--to", "2023-09-10"]);
    let first = check("first pull");
    let files = raw_files(&lake);
    let count = |rows: &[ingest::lake::state::LandedFile]| rows.iter().filter(|r| r.path.is_some()).count();
    // A backfill of the first three days, a week behind the watermark.
    pull(&["--from", "2023-09-01", "--to", "2023-09-03"]);
    let backfilled = check("backfill");
    assert_eq!(raw_files(&lake).len(), files.len(), "a backfill adds files instead of superseding");
    assert_eq!(
        backfilled.iter().filter_map(|r| r.watermark.clone()).max(),
        first.iter().filter_map(|r| r.watermark.clone()).max(),
        "the backfill lowered the watermark"
    );
    assert!(count(&backfilled) >= count(&first));
    // A plain pull resumes from the watermark less the one-day lookback, not from the backfill.
    pull(&["--to", "2023-09-11"]);
    let rows = check("next pull");
    let last_run = &rows.last().unwrap().run_id;
    let starts: BTreeSet<String> = rows.iter().filter(|r| &r.run_id == last_run).filter_map(|r| r.window_start.clone()).collect();
    assert_eq!(starts.iter().next().map(String::as_str), Some("2023-09-10T00:00:00Z"), "{starts:?}");
    assert_eq!(rows.iter().filter_map(|r| r.watermark.clone()).max().as_deref(), Some("2023-09-12T00:00:00Z"));
}
