//! Declared stream schemas (issue 24): every shipped model builds on whatever the APIs send —
//! fresh accounts with no records, fields absent at any depth, ids whose type drifts between
//! pages — and a model that cannot plan fails alone. Contracts (`freeze`, `discard_value`) and
//! `ingest transform --check`.
use crate::common::*;
use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn run(sim: &Sim, pipes: &Path, lake: &Path, args: &[&str]) -> std::process::Output {
    ingest_cmd(Some(sim), lake, pipes, args).arg("--sql").arg(shipped_sql()).output().unwrap()
}

/// Pull every shipped source (Pancake for `days` days).
fn pull_all(sim: &Sim, lake: &Path, days: u32) -> String {
    let to = format!("2023-09-{:02}", days);
    let mut out = String::new();
    for args in [
        vec!["pull", "pancake", "--from", "2023-09-01", "--to", to.as_str()],
        vec!["pull", "c2s"],
        vec!["pull", "zoho_crm"],
        vec!["pull", "zoho_desk"],
        vec!["pull", "ploomes"],
        vec!["pull", "milvus"],
        vec!["pull", "retail_portal"],
    ] {
        out.push_str(&ok(&run(sim, &pipelines(), lake, &args)));
    }
    out
}

fn count(lake: &Path, table: &str) -> u64 {
    query(lake, &format!("SELECT count(*) AS n FROM {table}"))[0]["n"].as_u64().unwrap()
}

/// Every shipped model, from the SQL files' headers.
fn shipped_targets() -> Vec<String> {
    let mut out = Vec::new();
    for f in walk(&shipped_sql()) {
        let text = std::fs::read_to_string(&f).unwrap();
        let t = text.lines().find_map(|l| l.strip_prefix("-- target: ")).unwrap();
        out.push(t.trim().to_string());
    }
    out
}

/// The models a fresh account of each source leaves empty (their inputs hold nothing).
const EMPTIED: &[(&str, &[&str])] = &[
    ("c2s", &["silver.c2s_leads", "gold.c2s_leads_per_day"]),
    (
        "pancake",
        &[
            "silver.pancake_conversations",
            "silver.pancake_conversation_customers",
            "silver.pancake_conversation_tags",
            "silver.pancake_page_customers",
            "silver.pancake_posts",
            "gold.pancake_conversations_per_day",
        ],
    ),
    ("zoho_crm", &["silver.zoho_crm_leads", "silver.zoho_crm_contacts", "silver.zoho_crm_deals", "silver.zoho_crm_deal_details"]),
    ("zoho_desk", &["silver.zoho_desk_tickets"]),
    ("ploomes", &["push.milvus_new_clients", "push.milvus_new_tickets"]),
    ("milvus", &["push.ploomes_new_contacts", "push.milvus_new_tickets"]),
    ("retail_portal", &["push.retail_products"]),
];

#[test]
fn every_shipped_model_builds_on_a_fresh_account_of_each_source_in_turn() {
    let targets = shipped_targets();
    for (source, emptied) in EMPTIED {
        let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--milvus-clients", "10", "--empty", source]);
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        pull_all(&sim, &lake, 2);
        // Nothing of the empty source landed (a Pancake page still has tags, users, statistics).
        let generated = ["/conversations/", "/page_customers/", "/posts/"];
        for k in raw_files(&lake).keys().filter(|k| k.starts_with(&format!("{source}/"))) {
            assert!(*source == "pancake" && !generated.iter().any(|g| k.contains(g)), "{source} landed {k}");
        }
        let out = ok(&run(&sim, &pipelines(), &lake, &["transform"]));
        assert!(!out.contains("FAILED") && !out.contains("skipped"), "{source}: {out}");
        // Every model's table exists; those of the empty source are empty, the others not.
        for t in &targets {
            let n = count(&lake, t);
            if emptied.contains(&t.as_str()) {
                assert_eq!(n, 0, "{source}: {t}");
            } else if !["silver.pancake_campaign", "silver.pancake_ads"].contains(&t.as_str()) {
                // (Campaigns and ads are rare: a page's two days may hold none.)
                assert!(n > 0, "{source}: {t} is empty: {out}");
            }
        }
        // The declared columns are there on a stream that landed nothing.
        if *source == "c2s" {
            let cols = duckdb(&format!(
                "print(con.execute(\"SELECT * FROM delta_scan('{}') LIMIT 0\").description)",
                lake.join("silver/c2s_leads").display()
            ));
            for c in ["customer_email", "seller_id", "status", "updated_at"] {
                assert!(cols.contains(&format!("'{c}'")), "{c}: {cols}");
            }
        }
        // A second transform has nothing to do and fails nothing.
        let again = ok(&run(&sim, &pipelines(), &lake, &["transform"]));
        assert!(!again.contains("FAILED"), "{again}");
    }
}

#[test]
fn seed_001_on_a_fresh_milvus_account_creates_the_clients_then_the_tickets() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5", "--empty", "milvus", "--milvus-clients", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let go = |args: &[&str]| ok(&run(&sim, &pipelines(), &lake, args));
    go(&["pull", "ploomes"]);
    let pulled = go(&["pull", "milvus"]);
    assert!(raw_files(&lake).keys().all(|k| !k.starts_with("milvus/")), "a fresh account landed clients: {pulled}");
    // Every model builds, Pancake's and C2S's included (nothing of them landed: skipped).
    let out = go(&["transform"]);
    assert!(!out.contains("FAILED"), "{out}");
    let want = count(&lake, "push.milvus_new_clients");
    assert!(want > 10, "{out}");
    assert_eq!(count(&lake, "push.milvus_new_tickets"), 0, "no client yet, so no ticket");
    go(&["push", "milvus.clients"]);
    let truth = || http_get_json(&format!("{}/_sim/truth/milvus", sim.base));
    assert_eq!(truth()["clients"].as_u64().unwrap(), want);
    // The new clients' tokens come back with the next pull; then the tickets go, once each.
    go(&["pull", "milvus"]);
    go(&["transform"]);
    let tickets = count(&lake, "push.milvus_new_tickets");
    assert!(tickets > 5, "{tickets}");
    go(&["push", "milvus.tickets"]);
    assert_eq!(truth()["tickets"].as_u64().unwrap(), tickets);
    assert_no_secrets(&[sim.var("MILVUS_TOKEN"), sim.var("PLOOMES_USER_KEY")], &[&out], &lake);
}

/// The latest version of each key of a raw stream, from its raw files in landing order (the
/// catalogue's positions, then line), the way a model's dedupe picks it: a later `order_by`
/// wins, a tie goes to the later landing, a NULL `order_by` never replaces one that is set.
fn latest(lake: &Path, source: &str, stream: &str, key: &dyn Fn(&Value) -> String, order: &dyn Fn(&Value) -> Option<i64>) -> BTreeMap<String, Value> {
    let files = raw_files(lake);
    let mut cat: Vec<_> = catalogue(lake).into_iter().filter(|f| f.source == source && f.stream == stream && f.path.is_some()).collect();
    cat.sort_by_key(|f| f.seq);
    let mut out: BTreeMap<String, (Option<i64>, Value)> = BTreeMap::new();
    for f in cat {
        let Some(recs) = files.get(f.path.as_deref().unwrap()) else { continue }; // superseded
        for r in recs {
            let (k, o) = (key(r), order(r));
            let wins = match out.get(&k) {
                None => true,
                Some((cur, _)) => o.is_some() && (cur.is_none() || o >= *cur),
            };
            if wins {
                out.insert(k, (o, r.clone()));
            }
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn present(v: Option<&Value>) -> bool {
    v.is_some_and(|x| !x.is_null())
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// (rows, distinct keys, non-NULL counts of three columns) of a table, read by DuckDB.
fn duck_counts(lake: &Path, table: &str, key: &str, cols: [&str; 3]) -> (u64, BTreeSet<String>, [u64; 3]) {
    let path = lake.join(table.replace('.', "/"));
    let out = duckdb(&format!(
        "import json\nrows = con.execute(\"SELECT CAST({key} AS VARCHAR) FROM delta_scan('{p}')\").fetchall()\nc = con.execute(\"SELECT count(*), count({a}), count({b}), count({c}) FROM delta_scan('{p}')\").fetchone()\nprint(json.dumps({{'keys': [r[0] for r in rows], 'c': list(c)}}))",
        p = path.display(),
        a = cols[0],
        b = cols[1],
        c = cols[2]
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let keys: BTreeSet<String> = v["keys"].as_array().unwrap().iter().map(text_of).collect();
    let c: Vec<u64> = v["c"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    (c[0], keys, [c[1], c[2], c[3]])
}

#[test]
fn sparse_records_and_drifting_ids_build_every_shipped_model_with_the_raw_files_values() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3", "--sparse", "0.3", "--drift", "--milvus-clients", "20"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    pull_all(&sim, &lake, 3);
    // The simulator did drop optional fields at depth and did serve ids of both types.
    let raw = raw_files(&lake);
    let all = |prefix: &str| raw.iter().filter(|(k, _)| k.starts_with(prefix)).flat_map(|(_, v)| v.iter()).collect::<Vec<_>>();
    let convs = all("pancake/");
    let customers: Vec<&Value> = convs.iter().filter_map(|c| c.get("customers")).filter_map(|c| c.as_array()).flatten().collect();
    assert!(customers.iter().any(|c| c.get("id").is_none()) && customers.iter().any(|c| c.get("id").is_some()));
    let ids: Vec<&Value> = ["ploomes/", "milvus/", "retail_portal/"].iter().flat_map(|p| all(p)).filter_map(|r| r.get("Id").or(r.get("id")).or(r.get("erpId"))).collect();
    assert!(ids.iter().any(|v| v.is_string()) && ids.iter().any(|v| v.is_number()), "{ids:?}");
    let o = run(&sim, &pipelines(), &lake, &["transform"]);
    let out = ok(&o);
    assert!(!out.contains("FAILED") && !out.contains("skipped"), "{out}");
    for t in shipped_targets() {
        count(&lake, &t);
    }

    // Each table against its raw files, absent values as NULL.
    let iso = |v: Option<&Value>| v.and_then(|x| x.as_str()).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp_micros());
    let naive = |v: Option<&Value>| {
        v.and_then(|x| x.as_str()).and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()).map(|t| t.and_utc().timestamp_micros())
    };
    let id = |r: &Value| text_of(&r["id"]);
    let check = |table: &str, want: &BTreeMap<String, Value>, cols: [&str; 3], f: [&dyn Fn(&Value) -> bool; 3]| {
        let (n, keys, got) = duck_counts(&lake, table, if table.contains("customers") { "customer_id" } else { "id" }, cols);
        assert_eq!(n as usize, want.len(), "{table}: rows");
        if !table.contains("customers") {
            assert_eq!(keys, want.keys().cloned().collect::<BTreeSet<_>>(), "{table}: keys");
        }
        for i in 0..3 {
            let expect = want.values().filter(|r| f[i](r)).count() as u64;
            assert_eq!(got[i], expect, "{table}: non-NULL {}", cols[i]);
        }
        assert!(want.len() > 5, "{table}: too few rows to mean anything");
    };
    let leads = latest(&lake, "c2s", "leads", &id, &|r| iso(at(r, &["attributes", "updated_at"])));
    check(
        "silver.c2s_leads",
        &leads,
        ["customer_email", "seller_id", "status"],
        [
            &|r| present(at(r, &["attributes", "customer", "email"])),
            &|r| present(at(r, &["attributes", "seller", "id"])),
            &|r| present(at(r, &["attributes", "lead_status", "alias"])),
        ],
    );
    // Pancake ids are unique per page, the page is part of them.
    let convs = latest(&lake, "pancake", "conversations", &id, &|r| naive(r.get("updated_at")));
    check(
        "silver.pancake_conversations",
        &convs,
        ["snippet", "message_count", "seen"],
        [&|r| present(r.get("snippet")), &|r| present(r.get("message_count")), &|r| present(r.get("seen"))],
    );
    // One row per customer item of each conversation's latest version.
    let items: BTreeMap<String, Value> = convs
        .values()
        .flat_map(|c| c.get("customers").and_then(|x| x.as_array()).cloned().unwrap_or_default().into_iter().enumerate().map(move |(i, x)| (format!("{}#{i}", text_of(&c["id"])), x)))
        .collect();
    check(
        "silver.pancake_conversation_customers",
        &items,
        ["customer_id", "customer_name", "fb_id"],
        [&|r| present(r.get("id")), &|r| present(r.get("name")), &|r| present(r.get("fb_id"))],
    );
    let tickets = latest(&lake, "zoho_desk", "tickets", &id, &|r| iso(r.get("modifiedTime")));
    check(
        "silver.zoho_desk_tickets",
        &tickets,
        ["ticket_number", "subject", "status"],
        [&|r| present(r.get("ticketNumber")), &|r| present(r.get("subject")), &|r| present(r.get("status"))],
    );
    let deals = latest(&lake, "zoho_crm", "deals", &id, &|r| iso(r.get("Modified_Time")));
    check(
        "silver.zoho_crm_deals",
        &deals,
        ["deal_name", "stage", "amount"],
        [&|r| present(r.get("Deal_Name")), &|r| present(r.get("Stage")), &|r| present(r.get("Amount"))],
    );
}

/// An SQL folder in `dir`: the shipped models plus `extra` ones.
fn sql_with(dir: &Path, extra: &[(&str, &str)]) -> std::path::PathBuf {
    copy_dir(&shipped_sql(), &dir.join("sql"));
    write_models(dir, extra)
}

#[test]
fn a_model_naming_a_field_neither_data_nor_declaration_has_fails_alone() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    let sql = sql_with(
        dir.path(),
        &[
            ("silver/typo.sql", "-- target: silver.typo\n-- unique_key: id\nSELECT id,\n  attributes['customer']['emial'] AS email,\n  _ingest_order\nFROM raw.c2s_leads\n"),
            ("gold/after_typo.sql", "-- target: gold.after_typo\n-- mode: replace\nSELECT count(*) AS n FROM silver.typo\n"),
            ("silver/nope.sql", "-- target: silver.nope\n-- mode: replace\nSELECT id FROM raw.c2s_nope\n"),
        ],
    );
    let o = ingest_cmd(None, &lake, &pipelines(), &["transform"]).arg("--sql").arg(&sql).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("silver/typo.sql:4") && err.contains("emial"), "file, line and field not named: {err}");
    assert!(err.contains("silver/nope.sql") && err.contains("raw.c2s_nope"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("skipped: silver.typo failed"), "{out}");
    // The other models of the run committed.
    assert_eq!(count(&lake, "silver.c2s_leads"), 40);
    assert!(count(&lake, "gold.c2s_leads_per_day") > 0);
    assert!(!lake.join("silver/typo").exists() && !lake.join("gold/after_typo").exists());
}

#[test]
fn check_plans_every_shipped_model_against_the_declarations_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let o = ingest_cmd(None, &lake, &pipelines(), &["transform", "--check"]).arg("--sql").arg(shipped_sql()).output().unwrap();
    let out = ok(&o);
    for t in shipped_targets() {
        let line = out.lines().find(|l| l.starts_with(&format!("{t} "))).unwrap_or_else(|| panic!("{t}: {out}"));
        assert!(line.ends_with("plans"), "{line}");
    }
    assert!(!lake.exists(), "--check wrote to the lake");
    // A typo in a nested field of one model: exit 2, naming that model's file and line.
    let sql = sql_with(dir.path(), &[]);
    let f = sql.join("silver/c2s_leads.sql");
    let src = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, src.replace("attributes['customer']['email']", "attributes['customer']['emial']")).unwrap();
    let line = src.lines().position(|l| l.contains("['customer']['email']")).unwrap() + 1;
    let o = ingest_cmd(None, &lake, &pipelines(), &["transform", "--check"]).arg("--sql").arg(&sql).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("silver/c2s_leads.sql:{line}")) && err.contains("emial"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("skipped: silver.c2s_leads failed"), "gold.c2s_leads_per_day: {out}");
    assert!(!lake.exists(), "--check wrote to the lake");
}

#[test]
fn freeze_fails_the_pull_naming_record_and_field_and_discard_value_lands_without_it() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    // The declaration leaves out the lead's `type`, which every record carries.
    let frozen = dir.path().join("frozen");
    std::fs::create_dir_all(&frozen).unwrap();
    let pipes = edited_pipelines(&frozen, "c2s.toml", "[streams.leads.schema]\ntype = \"string\"\n", "[streams.leads.schema]\n");
    let toml = std::fs::read_to_string(pipes.join("c2s.toml")).unwrap();
    std::fs::write(pipes.join("c2s.toml"), toml.replace("primary_key = \"id\"\n", "primary_key = \"id\"\ncontract = \"freeze\"\n")).unwrap();
    let lake = frozen.join("lake");
    let o = ingest_cmd(Some(&sim), &lake, &pipes, &["pull", "c2s"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("contract `freeze`") && all.contains("`type`") && all.contains("record "), "{all}");
    assert!(raw_files(&lake).is_empty(), "a frozen page landed");
    assert!(catalogue(&lake).iter().all(|r| r.path.is_none() && r.watermark.is_none()), "a frozen page was committed");
    assert_no_secrets(&sim.secrets(), &[&all], &lake);

    let discard = dir.path().join("discard");
    std::fs::create_dir_all(&discard).unwrap();
    let pipes = edited_pipelines(&discard, "c2s.toml", "[streams.leads.schema]\ntype = \"string\"\n", "[streams.leads.schema]\n");
    let text2 = std::fs::read_to_string(pipes.join("c2s.toml")).unwrap();
    std::fs::write(pipes.join("c2s.toml"), text2.replace("primary_key = \"id\"\n", "primary_key = \"id\"\ncontract = \"discard_value\"\n")).unwrap();
    let lake = discard.join("lake");
    let o = ingest_cmd(Some(&sim), &lake, &pipes, &["pull", "c2s"]).output().unwrap();
    let out = ok(&o);
    let recs: Vec<Value> = raw_files(&lake).into_values().flatten().collect();
    assert_eq!(recs.len(), 40);
    assert!(recs.iter().all(|r| r.get("type").is_none() && r.get("attributes").is_some()), "{:?}", recs[0]);
    // Every `type`, and the undeclared `archive_details`/`done_details` of lost and won leads.
    let objects = recs.iter().filter(|r| r["attributes"]["lead_status"]["alias"] == "lost" || r["attributes"]["lead_status"]["alias"] == "won").count();
    let set = |v: Option<&Value>| v.is_some_and(|x| !x.is_null());
    assert!(recs.iter().all(|r| !set(r["attributes"].get("archive_details")) && !set(r["attributes"].get("done_details"))));
    assert!(out.contains(&format!("DISCARDED: {} values", 40 + objects)), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("contract `discard_value`"));
}

#[test]
fn pipeline_schema_prints_a_declaration_that_parses() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    let out = ok(&ingest(Some(&sim), &lake, &["pipeline", "schema", "c2s.leads"]));
    assert!(out.contains("[schemas.leads]") && out.contains("id = \"string\""), "{out}");
    assert!(out.contains("lead_status = { alias = \"string\", name = \"string\" }"), "{out}");
    // Pasted into a pipeline file (instead of the shipped declaration), it loads and pulls.
    let pipes = edited_pipelines(dir.path(), "c2s.toml", "[streams.leads.schema]", "[streams.leads.schema_was]");
    let toml = std::fs::read_to_string(pipes.join("c2s.toml")).unwrap();
    let cut = toml.find("[streams.leads.schema_was]").unwrap();
    std::fs::write(pipes.join("c2s.toml"), format!("{}\n{out}", &toml[..cut])).unwrap();
    let lake2 = dir.path().join("lake2");
    ok(&ingest_cmd(Some(&sim), &lake2, &pipes, &["pull", "c2s"]).output().unwrap());
    assert_eq!(raw_files(&lake2).into_values().flatten().count(), 40);
}
