//! `ingest transform` on simulator data: silver tables hold one row per id with the latest
//! version, gold matches an independent computation, a second run reads only the new files,
//! DuckDB reads every table, bad models exit 2, and a kill -9 mid-transform recovers exactly.
use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A lake holding 7 simulated days of Pancake and C2S, pulled from a simulator started with `sim_args`.
fn pulled(dir: &Path, sim_args: &[&str]) -> std::path::PathBuf {
    let lake = dir.join("lake");
    let sim = Sim::start(sim_args);
    ok(&ingest(
        Some(&sim),
        &lake,
        &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-07"],
    ));
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    lake
}

/// `ingest transform` on `lake` with the shipped models, as a child process.
pub fn spawn_transform(lake: &Path) -> std::process::Child {
    Command::new(BIN)
        .arg("--lake")
        .arg(lake)
        .arg("--sql")
        .arg(shipped_sql())
        .arg("transform")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn secs(s: &str) -> i64 {
    let s = if s.len() == 19 { format!("{s}Z") } else { s.to_string() };
    chrono::DateTime::parse_from_rfc3339(&s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp()
}

/// Latest version per id across every raw file of a stream (by cursor, then landing order).
pub fn latest(lake: &Path, stream_dir: &str, id: &str, cursor: &dyn Fn(&Value) -> i64) -> BTreeMap<String, Value> {
    let mut by_seq: Vec<(i64, String)> = catalogue(lake)
        .into_iter()
        .filter_map(|r| Some((r.seq, r.path?)))
        .collect();
    by_seq.sort();
    let files = raw_files(lake);
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (_, path) in by_seq.iter().filter(|(_, p)| p.contains(stream_dir)) {
        // Superseded files (a re-pulled window) are gone: only current ones count.
        for r in files.get(path).into_iter().flatten() {
            let k = r[id].as_str().unwrap().to_string();
            if out.get(&k).is_none_or(|o| cursor(o) <= cursor(r)) {
                out.insert(k, r.clone());
            }
        }
    }
    out
}

pub fn lead_updated(r: &Value) -> i64 {
    secs(r["attributes"]["updated_at"].as_str().unwrap())
}
pub fn conv_updated(r: &Value) -> i64 {
    secs(r["updated_at"].as_str().unwrap())
}

pub fn check_tables(lake: &Path) {
    // Leads: one row per id, the latest version's values.
    let want = latest(lake, "c2s/_/leads/", "id", &lead_updated);
    let got = query(lake, "SELECT id, status, source_name, to_unixtime(updated_at) AS u, to_unixtime(created_at) AS c FROM silver.c2s_leads");
    assert_eq!(got.len(), want.len(), "silver.c2s_leads rows vs distinct ids");
    for g in &got {
        let w = &want[g["id"].as_str().unwrap()];
        assert_eq!(g["status"], w["attributes"]["lead_status"]["alias"], "{g}");
        assert_eq!(g["u"].as_i64().unwrap(), lead_updated(w), "{g}");
    }
    // Conversations.
    let convs = latest(lake, "/conversations/", "id", &conv_updated);
    let got = query(
        lake,
        "SELECT id, page_id, message_count, to_unixtime(updated_at) AS u FROM silver.pancake_conversations",
    );
    assert_eq!(got.len(), convs.len());
    for g in &got {
        let w = &convs[g["id"].as_str().unwrap()];
        assert_eq!(g["message_count"], w["message_count"]);
        assert_eq!(g["page_id"], w["page_id"]);
        assert_eq!(g["u"].as_i64().unwrap(), conv_updated(w));
    }
    // Gold, computed independently from the raw files.
    let mut per_day: BTreeMap<(String, String), i64> = BTreeMap::new();
    for w in convs.values() {
        *per_day
            .entry((
                w["page_id"].as_str().unwrap().into(),
                w["inserted_at"].as_str().unwrap()[..10].into(),
            ))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, String), i64> = query(
        lake,
        "SELECT page_id, CAST(day AS VARCHAR) AS day, conversations FROM gold.pancake_conversations_per_day",
    )
    .into_iter()
    .map(|r| {
        (
            (r["page_id"].as_str().unwrap().into(), r["day"].as_str().unwrap().into()),
            r["conversations"].as_i64().unwrap(),
        )
    })
    .collect();
    assert_eq!(got, per_day);
    let mut leads_day: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for w in want.values() {
        let created = chrono::DateTime::parse_from_rfc3339(w["attributes"]["created_at"].as_str().unwrap())
            .unwrap()
            .to_utc();
        let a = &w["attributes"];
        *leads_day
            .entry((
                created.format("%Y-%m-%d").to_string(),
                a["lead_status"]["alias"].as_str().unwrap().into(),
                a["lead_source"]["name"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, String, String), i64> = query(
        lake,
        "SELECT CAST(day AS VARCHAR) AS day, status, source_name, leads FROM gold.c2s_leads_per_day",
    )
    .into_iter()
    .map(|r| {
        (
            (
                r["day"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
                r["source_name"].as_str().unwrap().into(),
            ),
            r["leads"].as_i64().unwrap(),
        )
    })
    .collect();
    assert_eq!(got, leads_day);
    // Child table: one row per (conversation, tag) of the latest version.
    let tags: usize = convs.values().map(|w| w["tags"].as_array().unwrap().len()).sum();
    assert_eq!(
        query(lake, "SELECT count(*) AS n FROM silver.pancake_conversation_tags")[0]["n"]
            .as_u64()
            .unwrap() as usize,
        tags
    );
}

/// The `commitInfo` and `txn` actions of a table's latest commit.
fn last_commit(table: &Path) -> (Value, Vec<Value>) {
    commits(table).pop().unwrap()
}

const TABLES: &[&str] = &[
    "silver/c2s_leads",
    "silver/pancake_conversations",
    "silver/pancake_conversation_tags",
    "silver/pancake_conversation_customers",
    "silver/pancake_page_customers",
    "silver/pancake_posts",
    "silver/pancake_tags",
    "silver/pancake_user_list",
    "silver/pancake_users",
    "silver/pancake_user_statistics",
    "silver/pancake_engagement_statistics",
    "silver/pancake_users_engagements",
    "silver/pancake_new_customer_statistics",
    "silver/pancake_ads",
    "silver/pancake_campaign",
    "gold/c2s_leads_per_day",
    "gold/pancake_conversations_per_day",
];

#[test]
fn transform_merges_new_files_exactly_once_and_duckdb_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let lake = pulled(dir.path(), &["--rate-window", "1", "--days", "7", "--seed", "11"]);
    let out = ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    assert!(out.contains("silver.c2s_leads"), "{out}");
    check_tables(&lake);
    let seq1 = catalogue(&lake).iter().map(|r| r.seq).max().unwrap();
    let (_, txns) = last_commit(&lake.join("silver/pancake_conversations"));
    assert_eq!(
        txns,
        vec![serde_json::json!({"appId": "ingest-model/silver.pancake_conversations", "version": seq1})]
    );

    // Nothing new: nothing is applied again.
    let again = ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    assert!(
        again
            .lines()
            .filter(|l| l.starts_with("silver.") && !l.contains("zoho_") && !l.contains("retail_"))
            .all(|l| l.contains("up to date")),
        "{again}"
    );

    // Three more simulated days.
    {
        let sim = Sim::start(&["--rate-window", "1", "--days", "10", "--seed", "11"]);
        ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--to", "2023-09-10"]));
        ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    }
    let cat = catalogue(&lake);
    let seq2 = cat.iter().map(|r| r.seq).max().unwrap();
    let mut new_conv: Vec<String> = cat
        .iter()
        .filter(|r| r.seq > seq1 && r.stream == "conversations")
        .filter_map(|r| r.path.clone())
        .collect();
    new_conv.sort();
    new_conv.dedup();
    assert!(!new_conv.is_empty());
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    let (info, txns) = last_commit(&lake.join("silver/pancake_conversations"));
    let mut read: Vec<String> = info["ingest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    read.sort();
    assert_eq!(read, new_conv, "the second transform must read only the new files");
    assert_eq!(
        txns,
        vec![serde_json::json!({"appId": "ingest-model/silver.pancake_conversations", "version": seq2})]
    );
    check_tables(&lake);
    // A partitioned model: one folder per page, merged with literal partition predicates.
    assert!(lake.join("silver/pancake_user_statistics/page_id=1001").is_dir());
    let (info, _) = last_commit(&lake.join("silver/pancake_user_statistics"));
    assert_eq!(info["operation"], "MERGE", "{info}");
    let updated = query(
        &lake,
        "SELECT count(*) AS n FROM silver.pancake_conversations WHERE updated_at >= TIMESTAMP '2023-09-08T00:00:00Z'",
    );
    assert!(updated[0]["n"].as_i64().unwrap() > 0);

    // DuckDB reads every table and agrees with `ingest query`.
    let mut code = String::new();
    for t in TABLES {
        code.push_str(&format!(
            "print(con.execute(\"SELECT count(*) FROM delta_scan('{}')\").fetchone()[0])\n",
            lake.join(t).display()
        ));
    }
    code.push_str(&format!(
        "for r in con.execute(\"SELECT id, status, epoch(updated_at)::BIGINT FROM delta_scan('{}') ORDER BY id LIMIT 5\").fetchall(): print(*r)\n",
        lake.join("silver/c2s_leads").display()
    ));
    let duck = duckdb(&code);
    let mut want = String::new();
    for t in TABLES {
        let n = query(&lake, &format!("SELECT count(*) AS n FROM {}", t.replace('/', ".")))[0]["n"]
            .as_i64()
            .unwrap();
        assert!(n > 0, "{t} is empty");
        want.push_str(&format!("{n}\n"));
    }
    for r in query(
        &lake,
        "SELECT id, status, to_unixtime(updated_at) AS u FROM silver.c2s_leads ORDER BY id LIMIT 5",
    ) {
        want.push_str(&format!(
            "{} {} {}\n",
            r["id"].as_str().unwrap(),
            r["status"].as_str().unwrap(),
            r["u"]
        ));
    }
    assert_eq!(duck, want);

    // Athena DDL names every table.
    let ddl = ok(&ingest_sql(&lake, &shipped_sql(), &["ddl", "athena"]));
    assert_eq!(
        ddl.matches("TBLPROPERTIES ('table_type' = 'DELTA')").count(),
        TABLES.len(),
        "{ddl}"
    );
}

fn broken_sql(dir: &Path, file: &str, from: &str, to: &str) -> std::path::PathBuf {
    let sql = dir.join("sql");
    let _ = std::fs::remove_dir_all(&sql);
    copy_dir(&shipped_sql(), &sql);
    let p = sql.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    sql
}

fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

/// Every table's rows, ordered, as JSON text.
fn snapshot(lake: &Path) -> BTreeMap<String, Vec<Value>> {
    TABLES
        .iter()
        .map(|t| {
            let name = t.replace('/', ".");
            let mut rows = query(lake, &format!("SELECT * FROM {name}"));
            rows.sort_by_key(|r| r.to_string());
            (name, rows)
        })
        .collect()
}

#[test]
fn bad_models_fail_before_writing_and_a_killed_transform_recovers_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let lake = pulled(dir.path(), &["--rate-window", "1", "--days", "7", "--scale", "4"]);
    let pristine = dir.path().join("pristine");
    copy_dir(&lake, &pristine);

    // SQL that does not parse, a bad header: exit 2, file and line, nothing written. (A model
    // that parses but does not plan fails alone: see below.)
    let cases = [
        (
            "silver/c2s_leads.sql",
            "FROM raw.c2s_leads",
            "FROM raw.c2s_leads WHERE",
            "WHERE",
        ),
        (
            "silver/pancake_posts.sql",
            "-- mode: merge",
            "-- mode: upsert",
            "upsert",
        ),
    ];
    for (file, from, to, needle) in cases {
        let sql = broken_sql(dir.path(), file, from, to);
        let o = ingest_sql(&lake, &sql, &["transform"]);
        let msg = text(&o);
        assert_eq!(o.status.code(), Some(2), "{file} {to}: {msg}");
        let line = line_of(&sql.join(file), needle);
        assert!(
            msg.contains(&format!("{file}:{line}")),
            "{file} {to}: want line {line}: {msg}"
        );
        assert!(
            !lake.join("silver").exists() && !lake.join("gold").exists(),
            "a bad model wrote a table"
        );
    }

    // An unknown table, an unknown function: that model fails alone (exit 1, file and line),
    // its dependents are skipped, every other model commits.
    let plan_cases = [
        ("silver/c2s_leads.sql", "FROM raw.c2s_leads", "FROM raw.c2s_lead", "raw.c2s_lead", "silver/pancake_conversations"),
        ("gold/c2s_leads_per_day.sql", "FROM silver.c2s_leads", "FROM silver.c2s_leeds", "silver.c2s_leeds", "silver/c2s_leads"),
        ("silver/pancake_posts.sql", "try_cast(comment_count AS BIGINT)", "no_such_fn(comment_count)", "no_such_fn", "silver/c2s_leads"),
    ];
    for (file, from, to, needle, other) in plan_cases {
        let sql = broken_sql(dir.path(), file, from, to);
        let scratch = dir.path().join("scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        copy_dir(&pristine, &scratch);
        let o = ingest_sql(&scratch, &sql, &["transform"]);
        let msg = text(&o);
        assert_eq!(o.status.code(), Some(1), "{file} {to}: {msg}");
        let line = line_of(&sql.join(file), needle);
        assert!(msg.contains(&format!("{file}:{line}")), "{file} {to}: want line {line}: {msg}");
        assert!(!scratch.join(file.trim_end_matches(".sql")).exists(), "{file}: the failed model wrote its table");
        assert!(scratch.join(other).join("_delta_log").exists(), "{file}: {other} was not built: {msg}");
    }

    // A clean transform, and a transform killed mid-run then rerun: same tables.
    let clean = dir.path().join("clean");
    copy_dir(&pristine, &clean);
    ok(&ingest_sql(&clean, &shipped_sql(), &["transform"]));
    let want = snapshot(&clean);
    let mut child = spawn_transform(&lake);
    let first = lake.join("silver/c2s_leads/_delta_log");
    for _ in 0..2000 {
        if first.exists() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ended_early = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    let built: BTreeSet<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| lake.join(t).join("_delta_log").exists())
        .collect();
    eprintln!(
        "killed with {} of {} tables built (ended early: {ended_early})",
        built.len(),
        TABLES.len()
    );
    assert!(
        !ended_early && built.len() < TABLES.len(),
        "the transform finished before the kill"
    );
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    let got = snapshot(&lake);
    for (t, rows) in &want {
        assert_eq!(got[t].len(), rows.len(), "{t}: row count after kill and rerun");
    }
    assert!(got == want, "tables differ from a clean run's");
}

#[test]
fn schema_drift_adds_columns_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(sql.join("bronze")).unwrap();
    // No declared schema: the table's columns are only what landed, so a new field is new.
    let nodecl = dir.path().join("no_declarations");
    std::fs::create_dir_all(&nodecl).unwrap();
    std::fs::write(
        sql.join("bronze/c2s_leads.sql"),
        "-- target: bronze.c2s_leads\n-- unique_key: id\n-- order_by: updated_at\n-- mode: merge\n\
         SELECT * EXCLUDE (_partition, _window_start, _window_end, _file, _landed_at),\n  attributes['updated_at'] AS updated_at\nFROM raw.c2s_leads\n",
    )
    .unwrap();
    {
        let sim = Sim::start(&["--rate-window", "1", "--days", "7", "--seed", "3"]);
        ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    }
    ok(&ingest_sql(&lake, &sql, &["--pipelines", nodecl.to_str().unwrap(), "transform"]));
    let cols = |lake: &Path| -> BTreeSet<String> {
        let o = ingest_sql(
            lake,
            &sql,
            &["query", "--format", "csv", "SELECT * FROM bronze.c2s_leads LIMIT 1"],
        );
        ok(&o).lines().next().unwrap().split(',').map(str::to_string).collect()
    };
    let before = cols(&lake);
    // Whether the table's `attributes` struct has gained the `company` field.
    let has_company = |lake: &Path| -> bool {
        ingest_sql(lake, &sql, &["query", "SELECT attributes['company'] AS c FROM bronze.c2s_leads LIMIT 1"])
            .status
            .success()
    };
    assert!(!has_company(&lake), "{before:?}");
    {
        let sim = Sim::start(&["--rate-window", "1", "--days", "10", "--seed", "3"]);
        ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    }
    ok(&ingest_sql(&lake, &sql, &["--pipelines", nodecl.to_str().unwrap(), "transform"]));
    let after = cols(&lake);
    assert!(has_company(&lake) && after.is_superset(&before), "{after:?}");
    let raw = latest(&lake, "c2s/_/leads/", "id", &lead_updated);
    let with = raw.values().filter(|r| r["attributes"].get("company").is_some()).count();
    assert!(with > 0);
    let q = |s: &str| -> i64 {
        let o = ingest_sql(&lake, &sql, &["query", "--format", "json", s]);
        serde_json::from_str::<Value>(ok(&o).lines().next().unwrap()).unwrap()["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(q("SELECT count(*) AS n FROM bronze.c2s_leads") as usize, raw.len());
    assert_eq!(
        q("SELECT count(*) AS n FROM bronze.c2s_leads WHERE attributes['company']['name'] IS NOT NULL") as usize,
        with
    );
    let duck = duckdb(&format!("print(con.execute(\"SELECT count(*) FROM delta_scan('{}') WHERE attributes.company.name IS NOT NULL\").fetchone()[0])", lake.join("bronze/c2s_leads").display()));
    assert_eq!(duck.trim(), with.to_string());
}

#[test]
fn two_concurrent_transforms_cannot_both_apply_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = pulled(dir.path(), &["--rate-window", "1", "--days", "7", "--seed", "5"]);
    let clean = dir.path().join("clean");
    copy_dir(&lake, &clean);
    ok(&ingest_sql(&clean, &shipped_sql(), &["transform"]));
    let (a, b) = (spawn_transform(&lake), spawn_transform(&lake));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    eprintln!(
        "concurrent runs: {:?} {:?}\n{}",
        a.status.code(),
        b.status.code(),
        String::from_utf8_lossy(&b.stderr)
    );
    // Each model commits in one run or the other (a loser exits 1 having applied nothing to
    // that table); whatever the interleaving, a rerun finishes the job and nothing was
    // applied twice.
    for o in [&a, &b] {
        assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(o));
        if !o.status.success() {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("another run committed to this table first"), "{e}");
        }
    }
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    let (got, want) = (snapshot(&lake), snapshot(&clean));
    for (t, rows) in &want {
        assert_eq!(got[t].len(), rows.len(), "{t}: row count after concurrent runs");
    }
    assert!(got == want, "tables differ from a clean run's");
    // --full-refresh rebuilds every table from all landed files: the same tables again.
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "--full-refresh"]));
    assert!(snapshot(&lake) == want, "--full-refresh built different tables");
    let dup = query(
        &lake,
        "SELECT count(*) AS n FROM (SELECT id FROM silver.pancake_conversations GROUP BY id HAVING count(*) > 1)",
    );
    assert_eq!(dup[0]["n"], 0);
}

/// `--memory-limit`: sorts spill to temp files; the tables are the same as without a limit.
/// A limit too small for the engine fails the model cleanly, naming the flag.
#[test]
fn a_memory_limit_spills_and_changes_no_row() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "4", "--scale", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let (free, bounded) = (dir.path().join("free"), dir.path().join("bounded"));
    for lake in [&free, &bounded] {
        ok(&ingest_cmd(Some(&sim), lake, &pipelines(), &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-04"]).output().unwrap());
    }
    ok(&ingest_sql(&free, &shipped_sql(), &["transform", "--memory-limit", "none"]));
    // Spill files go under --temp-dir and are gone when the run ends.
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    ok(&ingest_sql(&bounded, &shipped_sql(), &["transform", "--memory-limit", "2MiB", "--temp-dir", spill.to_str().unwrap()]));
    assert_eq!(walk(&spill), Vec::<std::path::PathBuf>::new(), "spill files left behind");
    for t in ["silver.pancake_conversations", "silver.pancake_conversation_tags", "gold.pancake_conversations_per_day"] {
        let sql = format!("SELECT * FROM {t}");
        let strip = |rows: Vec<serde_json::Value>| {
            let mut v: Vec<String> = rows
                .into_iter()
                .map(|r| {
                    let mut m = r.as_object().unwrap().clone();
                    m.retain(|k, _| !k.starts_with('_'));
                    serde_json::Value::Object(m).to_string()
                })
                .collect();
            v.sort();
            v
        };
        let (a, b) = (strip(query(&free, &sql)), strip(query(&bounded, &sql)));
        assert!(!a.is_empty());
        assert!(a == b, "{t} differs under a memory limit ({} vs {} rows)", a.len(), b.len());
    }
    let o = ingest_sql(&bounded, &shipped_sql(), &["transform", "--full-refresh", "--memory-limit", "1KiB", "silver.pancake_conversations"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("raise --memory-limit"), "{}", text(&o));
    let bad = ingest_sql(&bounded, &shipped_sql(), &["transform", "--memory-limit", "lots"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    // A temp folder that cannot be written is named before anything is written.
    let nowhere = dir.path().join("nowhere");
    let bad = ingest_sql(&dir.path().join("untouched"), &shipped_sql(), &["transform", "--temp-dir", nowhere.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("--temp-dir") && text(&bad).contains("nowhere"), "{}", text(&bad));
    assert!(!dir.path().join("untouched").exists(), "a lake was created despite a bad --temp-dir");
}

/// Files of a Delta table after its latest commit (adds minus removes over the whole log).
fn live_files(table: &Path) -> BTreeSet<String> {
    let mut logs: Vec<_> = walk(&table.join("_delta_log"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    let mut live = BTreeSet::new();
    for l in logs {
        for a in std::fs::read_to_string(&l).unwrap().lines() {
            let a: Value = serde_json::from_str(a).unwrap();
            if let Some(p) = a["add"]["path"].as_str() {
                live.insert(p.to_string());
            }
            if let Some(p) = a["remove"]["path"].as_str() {
                live.remove(p);
            }
        }
    }
    live
}

/// `silver.pancake_conversations` holds one row per conversation of the raw files, its latest
/// version; returns the conversations.
fn conversations_are_latest(lake: &Path) -> BTreeMap<String, Value> {
    let want = latest(lake, "/conversations/", "id", &|r: &Value| secs(r["updated_at"].as_str().unwrap()));
    let rows = query(lake, "SELECT id, to_unixtime(updated_at) AS u FROM silver.pancake_conversations");
    assert_eq!(rows.len(), want.len(), "no key twice, none lost");
    for r in &rows {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["u"].as_i64().unwrap(), secs(want[id]["updated_at"].as_str().unwrap()), "{id}");
    }
    want
}

#[test]
fn a_day_of_only_new_keys_is_appended_without_reading_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(sql.join("silver")).unwrap();
    std::fs::copy(shipped_sql().join("silver/pancake_conversations.sql"), sql.join("silver/pancake_conversations.sql")).unwrap();
    // Ten days in a world that ends on day 10, then day 20 of a longer one: conversations are
    // updated within 3 days of their creation, so every row of day 20 is a new key.
    for (days, from, to) in [("10", "2023-09-01", "2023-09-10"), ("20", "2023-09-20", "2023-09-20")] {
        let sim = Sim::start(&["--rate-window", "1", "--days", days, "--seed", "22", "--scale", "10"]);
        ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "conversations", "--from", from, "--to", to]));
        if days == "10" {
            ok(&ingest_sql(&lake, &sql, &["transform"]));
        }
    }
    let table = lake.join("silver/pancake_conversations");
    let before = live_files(&table);
    let seq = catalogue(&lake).iter().map(|r| r.seq).max().unwrap();
    let out = ok(&ingest_sql(&lake, &sql, &["transform"]));
    let (info, txns) = last_commit(&table);
    assert_eq!(info["operation"], "WRITE", "appended, not merged: {info}");
    assert_eq!(txns, vec![serde_json::json!({"appId": "ingest-model/silver.pancake_conversations", "version": seq})]);
    let after = live_files(&table);
    assert!(before.iter().all(|f| after.contains(f)), "no file of the table rewritten");
    assert!(after.len() > before.len());
    assert!(out.contains(" 0 updated, 0 copied; files: 0 read"), "{out}");

    // Exact: one row per conversation, the latest version of each; DuckDB agrees.
    let want = conversations_are_latest(&lake);
    let n = duckdb(&format!("print(con.execute(\"SELECT count(DISTINCT id), count(*) FROM delta_scan('{}')\").fetchone())", table.display()));
    assert_eq!(n.trim(), format!("({0}, {0})", want.len()));
    // A rerun applies nothing twice.
    let out = ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM silver.pancake_conversations")[0]["n"], want.len());
}

#[test]
fn a_day_merged_into_a_clustered_table_rewrites_only_the_files_holding_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    fn sim_args(days: &str) -> Vec<&str> {
        vec!["--rate-window", "1", "--days", days, "--seed", "21", "--scale", "10"]
    }
    {
        let sim = Sim::start(&sim_args("20"));
        ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "conversations", "--from", "2023-09-01", "--to", "2023-09-19"]));
    }
    // The shipped model (cluster_by inserted_at) with small files, so the table has many.
    let sql = dir.path().join("sql/silver");
    std::fs::create_dir_all(&sql).unwrap();
    let model = std::fs::read_to_string(shipped_sql().join("silver/pancake_conversations.sql")).unwrap();
    assert!(model.contains("-- cluster_by: inserted_at"));
    let model = model.replace("-- cluster_by: inserted_at", "-- cluster_by: inserted_at\n-- target_file_size: 16KiB");
    std::fs::write(sql.join("pancake_conversations.sql"), model).unwrap();
    let sql = dir.path().join("sql");
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    let table = lake.join("silver/pancake_conversations");
    let before = live_files(&table);
    assert!(before.len() >= 8, "a multi-file table: {before:?}");

    // Which keys each file holds, read by DuckDB from the Parquet files themselves.
    let keys_by_file = || -> BTreeMap<String, BTreeSet<String>> {
        let list: Vec<String> = live_files(&table).iter().map(|f| format!("'{}'", table.join(f).display())).collect();
        let out = duckdb(&format!(
            "for f, i in con.execute(\"SELECT filename, id FROM read_parquet([{}], filename=true)\").fetchall(): print(f, i)",
            list.join(", ")
        ));
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for l in out.lines() {
            let (f, id) = l.rsplit_once(' ').unwrap();
            let name = Path::new(f).file_name().unwrap().to_string_lossy().to_string();
            m.entry(name).or_default().insert(id.to_string());
        }
        m
    };
    let held = keys_by_file();
    assert_eq!(held.keys().cloned().collect::<BTreeSet<_>>(), before);
    // Written in inserted_at order: no file's range overlaps the next one's.
    let list: Vec<String> = before.iter().map(|f| format!("'{}'", table.join(f).display())).collect();
    let overlaps = duckdb(&format!(
        "print(con.execute(\"SELECT count(*) FROM (SELECT min(inserted_at) AS lo, lag(max(inserted_at)) OVER (ORDER BY min(inserted_at)) AS prev FROM read_parquet([{}], filename=true) GROUP BY filename) WHERE lo < prev\").fetchone()[0])",
        list.join(", ")
    ));
    assert_eq!(overlaps.trim(), "0", "files of a clustered table hold disjoint inserted_at ranges");

    // One more day lands; its keys are the new raw rows' ids.
    let seq = catalogue(&lake).iter().map(|r| r.seq).max().unwrap();
    {
        let sim = Sim::start(&sim_args("21"));
        ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "conversations", "--to", "2023-09-20"]));
    }
    let files = raw_files(&lake);
    let new_ids: BTreeSet<String> = catalogue(&lake)
        .into_iter()
        .filter(|r| r.seq > seq)
        .filter_map(|r| r.path)
        .flat_map(|p| files.get(&p).cloned().unwrap_or_default())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!new_ids.is_empty());
    let holding: BTreeSet<String> = held
        .iter()
        .filter(|(_, ids)| !ids.is_disjoint(&new_ids))
        .map(|(f, _)| f.clone())
        .collect();
    assert!(!holding.is_empty(), "the day updates conversations created earlier");
    assert!(holding.len() * 3 <= before.len(), "the day's keys sit in a few files: {} of {}", holding.len(), before.len());

    let out = ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert!(out.contains("rewritten"), "the summary names the files the merge touched: {out}");
    let (info, _) = last_commit(&table);
    assert_eq!(info["operation"], "MERGE", "{info}");
    let text = {
        let mut logs: Vec<_> = walk(&table.join("_delta_log")).into_iter().filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
        logs.sort();
        std::fs::read_to_string(logs.last().unwrap()).unwrap()
    };
    let removed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["remove"]["path"].as_str().map(str::to_string))
        .collect();
    assert_eq!(removed, holding, "the merge rewrites exactly the files holding the day's keys");
    let metrics = &info["operationMetrics"];
    assert_eq!(metrics["num_target_files_removed"].as_u64().unwrap() as usize, holding.len(), "{metrics}");
    assert!(
        metrics["num_target_files_skipped_during_scan"].as_u64().unwrap() as usize >= before.len() - holding.len() * 2,
        "files outside the day's inserted_at range are not even read: {metrics}"
    );
    // Untouched files are still there, byte for byte the same objects.
    let after = live_files(&table);
    assert!(before.difference(&holding).all(|f| after.contains(f)));

    // And the table is exact: one row per conversation, the latest version of each.
    let want = conversations_are_latest(&lake);
    let ids: BTreeSet<String> = keys_by_file().into_values().flatten().collect();
    assert_eq!(ids.len(), want.len());

    // `ingest optimize` re-sorts a clustered table (its model says by what): the same rows,
    // in files with disjoint ranges again, and DuckDB reads it.
    let rows_before = query(&lake, "SELECT id, to_unixtime(updated_at) AS u FROM silver.pancake_conversations ORDER BY id");
    let out = ok(&ingest_sql(&lake, &sql, &["optimize", "silver.pancake_conversations"]));
    assert!(out.contains("1 table(s) compacted"), "{out}");
    let (info, _) = last_commit(&table);
    assert_eq!(info["operation"], "OPTIMIZE", "{info}");
    assert_eq!(query(&lake, "SELECT id, to_unixtime(updated_at) AS u FROM silver.pancake_conversations ORDER BY id"), rows_before);
    let list: Vec<String> = live_files(&table).iter().map(|f| format!("'{}'", table.join(f).display())).collect();
    let overlaps = duckdb(&format!(
        "print(con.execute(\"SELECT count(*) FROM (SELECT min(inserted_at) AS lo, lag(max(inserted_at)) OVER (ORDER BY min(inserted_at)) AS prev FROM read_parquet([{}], filename=true) GROUP BY filename) WHERE lo < prev\").fetchone()[0])\nprint(con.execute(\"SELECT count(*) FROM delta_scan('{}')\").fetchone()[0])",
        list.join(", "),
        table.display()
    ));
    assert_eq!(overlaps, format!("0\n{}\n", want.len()));
}

/// Every commit of a table's log, oldest first: (commitInfo, txn actions).
fn commits(table: &Path) -> Vec<(Value, Vec<Value>)> {
    let mut logs: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| {
            let actions: Vec<Value> = std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            let info = actions.iter().find_map(|a| a.get("commitInfo").cloned()).unwrap();
            (info, actions.iter().filter_map(|a| a.get("txn").cloned()).collect())
        })
        .collect()
}

/// New rows past the MERGE's share of the memory limit are spilled and merged in slices by
/// key: the table ends equal to a one-commit MERGE's, only the last slice carries the txn,
/// and a run killed between slices is finished by the next (nothing twice, nothing lost).
#[test]
fn a_merge_larger_than_its_memory_share_lands_in_slices_and_survives_a_kill_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let lake = pulled(dir.path(), &["--rate-window", "1", "--days", "10", "--seed", "5"]);
    let model = ["transform", "silver.pancake_conversations"];
    ok(&ingest_sql(&lake, &shipped_sql(), &model));
    {
        let sim = Sim::start(&["--rate-window", "1", "--days", "10", "--seed", "5"]);
        ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "conversations", "--from", "2023-09-05", "--to", "2023-09-10"]));
    }
    let seq = catalogue(&lake).iter().map(|r| r.seq).max().unwrap();
    let copies: Vec<PathBuf> = ["whole", "sliced", "killed"].iter().map(|n| dir.path().join(n)).collect();
    for c in &copies {
        copy_dir(&lake, c);
    }
    let table = |l: &Path| query(l, "SELECT * FROM silver.pancake_conversations ORDER BY id");
    let sliced = |l: &Path| {
        let mut c = Command::new(BIN);
        c.arg("--lake").arg(l).arg("--sql").arg(shipped_sql()).args(model).env_remove("INGEST_LAKE").env("INGEST_MERGE_SLICE_BYTES", "2000").env("INGEST_LOG", "ingest=info");
        c
    };

    ok(&ingest_sql(&copies[0], &shipped_sql(), &model));
    let want = table(&copies[0]);
    let before = commits(&copies[0].join("silver/pancake_conversations")).len();
    assert!(want.len() > 100, "{}", want.len());

    let out = sliced(&copies[1]).output().unwrap();
    ok(&out);
    let log = commits(&copies[1].join("silver/pancake_conversations"));
    let slices = &log[before - 1..];
    assert!(slices.len() >= 4, "the new rows were merged in {} commit(s): {}", slices.len(), text(&out));
    let app = serde_json::json!({"appId": "ingest-model/silver.pancake_conversations", "version": seq});
    for (i, (info, txns)) in slices.iter().enumerate() {
        assert_eq!(info["ingest"]["slice"], format!("{}/{}", i + 1, slices.len()), "{info}");
        assert_eq!(txns, &if i + 1 == slices.len() { vec![app.clone()] } else { vec![] }, "commit {i}");
    }
    assert_eq!(table(&copies[1]), want, "a sliced MERGE ends where a whole one does");

    // Killed once the first slice is in, the txn not yet moved: the rerun finishes the job.
    let t = copies[2].join("silver/pancake_conversations");
    let mut child = spawn_quiet(sliced(&copies[2]));
    kill_when(&mut child, "the sliced transform", Duration::from_millis(5), Duration::from_secs(120), || {
        commits(&t).iter().any(|(info, _)| info["ingest"]["slice"].is_string())
    });
    let after_kill = commits(&t);
    assert!(!after_kill.iter().any(|(_, txns)| txns.contains(&app)), "killed after the last slice");
    let out = ok(&ingest_sql(&copies[2], &shipped_sql(), &model));
    assert!(!out.contains("up to date"), "{out}");
    assert_eq!(table(&copies[2]), want, "the run after the kill finishes the job: nothing twice, nothing lost");
    assert_eq!(commits(&t).last().unwrap().1, vec![app]);
}

/// Seed 004's per-run output: a model declaring `-- output: csv sep=; …` gets, for each
/// transform that changed it, one file with exactly the rows that run merged; nothing for a
/// run with nothing new; a run whose output could not be written (after its commit) gets its
/// file from the next run, once. DuckDB's `read_csv` of each file equals `ingest query`.
#[test]
fn a_models_output_holds_exactly_the_rows_each_run_merged_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let shipped = std::fs::read_to_string(shipped_sql().join("silver/c2s_leads.sql")).unwrap();
    let model = shipped.replacen("-- mode: merge\n", &format!("-- mode: merge\n-- output: csv sep=; to={}/ name=leads\n", out.display()), 1);
    assert_ne!(model, shipped);
    let sql = write_models(dir.path(), &[("silver/c2s_leads.sql", &model)]);
    let files = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&out).into_iter().flatten().flatten().map(|e| e.path()).collect();
        v.sort();
        v
    };
    let csv_ids = |f: &Path| -> Vec<String> {
        let got = duckdb(&format!(
            "for r in con.execute(\"SELECT id FROM read_csv('{}', delim=';', header=true, all_varchar=true) ORDER BY id\").fetchall(): print(r[0])",
            f.display()
        ));
        got.lines().map(str::to_string).collect()
    };
    let model_ids = |cond: &str| -> Vec<String> {
        let mut v: Vec<String> = query(&lake, &format!("SELECT id FROM silver.c2s_leads WHERE {cond}")).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    // The simulator's data runs up to its last day: a new one with more days (same seed)
    // serves the leads created and updated since.
    let pull_to = |day: &str| {
        let days = day.rsplit('-').next().unwrap().trim_start_matches('0');
        let sim = Sim::start(&["--rate-window", "1", "--days", days, "--seed", "51"]);
        ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]))
    };

    pull_to("2023-09-02");
    let seq1 = catalogue(&lake).iter().map(|r| r.seq).max().unwrap();
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert_eq!(files().len(), 1, "{:?}", files());
    let header = std::fs::read_to_string(&files()[0]).unwrap().lines().next().unwrap().to_string();
    assert!(header.starts_with("id;customer_name;") && !header.contains("_ingest_order") && !header.contains("_landed_at"), "{header}");
    assert_eq!(csv_ids(&files()[0]), model_ids("true"));

    // Nothing new: no file.
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert_eq!(files().len(), 1);

    // New and updated leads: one more file with exactly the rows this run merged.
    pull_to("2023-09-04");
    let seq2 = catalogue(&lake).iter().map(|r| r.seq).max().unwrap();
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert_eq!(files().len(), 2, "{:?}", files());
    let merged = model_ids(&format!("_ingest_order >= {}", (seq1 + 1) * 10_000_000));
    assert!(!merged.is_empty() && merged.len() < model_ids("true").len(), "{} of {}", merged.len(), model_ids("true").len());
    assert_eq!(csv_ids(&files()[1]), merged);

    // The output folder cannot be written: the table commits, the run exits 1; the next run
    // (with nothing new to merge) writes the missing file, once.
    pull_to("2023-09-06");
    std::fs::rename(&out, dir.path().join("out-aside")).unwrap();
    std::fs::write(&out, "not a folder").unwrap();
    let o = ingest_sql(&lake, &sql, &["transform"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("the next transform writes the missing outputs"), "{}", text(&o));
    std::fs::remove_file(&out).unwrap();
    std::fs::rename(dir.path().join("out-aside"), &out).unwrap();
    assert_eq!(files().len(), 2);
    let o = ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert!(o.contains("up to date"), "{o}");
    assert_eq!(files().len(), 3, "{:?}", files());
    assert_eq!(csv_ids(&files()[2]), model_ids(&format!("_ingest_order >= {}", (seq2 + 1) * 10_000_000)));
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert_eq!(files().len(), 3, "written once");
    // A bad output declaration is refused before anything runs, naming file, line and field.
    let bad = write_models(&dir.path().join("bad"), &[("silver/c2s_leads.sql", &model.replace("csv sep=;", "xml"))]);
    let o = ingest_sql(&lake, &bad, &["transform", "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("c2s_leads.sql:5") && text(&o).contains("output"), "{}", text(&o));
}
