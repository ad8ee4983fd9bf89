//! Transform on real-world data: optional fields the API omits, a model failing on its data
//! next to good ones, strings where numbers were, a batch missing a field, int → float across
//! runs, a NULL `order_by`, a join of two raw streams read whole, append of a re-pulled window.
use crate::common::*;
use ingest::lake::state::{commit_rows, LandedFile};
use ingest::lake::{Lake, RawFile};
use serde_json::{json, Value};
use std::path::Path;

/// Land `recs` as one file of raw stream `t_<stream>` through the engine's own writer and
/// catalogue (slot `slot`: a later landing of the same slot supersedes the earlier one).
fn land(lake: &Path, stream: &str, slot: &str, recs: &[Value]) {
    let n = catalogue(lake).len();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let l = Lake::open(lake.to_str().unwrap()).unwrap();
        let rel = format!("t/_/{stream}/file_{slot}_{n}.json");
        let mut f = RawFile::create(&l, &rel).await.unwrap();
        f.write(recs).await.unwrap();
        let (records, bytes) = (f.records as i64, f.bytes as i64);
        let (sha, schema) = f.finish().await.unwrap();
        let mut rows = vec![LandedFile {
            seq: 0,
            source: "t".into(),
            partition: "_".into(),
            stream: stream.into(),
            request: stream.into(),
            window_start: None,
            window_end: None,
            path: Some(rel),
            records,
            bytes,
            sha256: Some(sha),
            min_cursor: None,
            max_cursor: None,
            watermark: None,
            run_id: "test".into(),
            landed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            slot: Some(format!("t/_/{stream}/{slot}")),
            schema: Some(schema),
        }];
        commit_rows(&l, None, &mut rows, &[]).await.unwrap();
    });
}


#[test]
fn every_shipped_model_builds_when_the_api_omits_optional_fields() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3", "--omit-optional"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03"]));
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    let o = ingest_sql(&lake, &shipped_sql(), &["transform"]);
    let out = ok(&o);
    assert!(!out.contains("FAILED"), "{out}");
    // Only models of sources not pulled here are skipped.
    for l in out.lines().filter(|l| l.contains("skipped")) {
        assert!(!l.contains("c2s_") && !l.contains("pancake_"), "{l}");
    }
    // `company` is declared (pipelines/c2s.toml): a typed NULL column, no guess from the SQL.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("no landed record has this field"), "{err}");
    let leads = query(&lake, "SELECT count(*) AS n, count(company) AS c, count(seller_id) AS s, count(DISTINCT id) AS d FROM silver.c2s_leads");
    assert_eq!(leads[0]["n"], 60);
    assert_eq!(leads[0]["d"], 60);
    assert_eq!(leads[0]["c"], 0);
    assert_eq!(leads[0]["s"], 0);
    let convs = query(&lake, "SELECT count(*) AS n, count(snippet) AS s FROM silver.pancake_conversations");
    assert!(convs[0]["n"].as_u64().unwrap() > 0);
    assert_eq!(convs[0]["s"], 0);
    let posts = query(&lake, "SELECT count(*) AS n, count(likes) AS l FROM silver.pancake_posts");
    assert!(posts[0]["n"].as_u64().unwrap() > 0);
    assert_eq!(posts[0]["l"], 0);
}

#[test]
fn a_model_failing_on_its_data_does_not_stop_the_others() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    let sql = write_models(
        dir.path(),
        &[
            (
                "silver/leads.sql",
                "-- target: silver.leads\n-- unique_key: id\nSELECT id, attributes['customer']['name'] AS name, _ingest_order FROM raw.c2s_leads\n",
            ),
            (
                "silver/bad.sql",
                "-- target: silver.bad\n-- unique_key: id\nSELECT id,\n  CAST(attributes['customer']['name'] AS BIGINT) AS name_as_number,\n  _ingest_order\nFROM raw.c2s_leads\n",
            ),
            ("gold/after_bad.sql", "-- target: gold.after_bad\n-- mode: replace\nSELECT count(*) AS n FROM silver.bad\n"),
            (
                "silver/tolerant.sql",
                "-- target: silver.tolerant\n-- unique_key: id\nSELECT id, try_cast(attributes['customer']['name'] AS BIGINT) AS n, _ingest_order FROM raw.c2s_leads\n",
            ),
        ],
    );
    let o = ingest_sql(&lake, &sql, &["transform"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("silver/bad.sql"), "model file not named: {err}");
    assert!(err.contains("column `name_as_number`"), "column not named: {err}");
    assert!(err.contains("Cannot cast string"), "value not shown: {err}");
    assert!(err.contains("c2s/_/leads/file_"), "raw file not named: {err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("skipped: silver.bad failed"), "{out}");
    // The unrelated models committed; the failed one and its dependent wrote nothing.
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM silver.leads")[0]["n"], 40);
    let t = query(&lake, "SELECT count(*) AS n, count(n) AS c FROM silver.tolerant");
    assert_eq!((t[0]["n"].as_u64(), t[0]["c"].as_u64()), (Some(40), Some(0)));
    assert!(!lake.join("silver/bad").exists() && !lake.join("gold/after_bad").exists());
}

#[test]
fn raw_schemas_widen_nulls_never_win_and_joins_read_whole_streams() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = write_models(
        dir.path(),
        &[
            (
                "silver/s.sql",
                "-- target: silver.s\n-- unique_key: id\n-- order_by: u\nSELECT id, v, extra, x, u, _ingest_order FROM raw.t_s\n",
            ),
            (
                "silver/joined.sql",
                "-- target: silver.joined\n-- unique_key: id\n-- reads: all\nSELECT a.id, a.v, b.w FROM raw.t_a a JOIN raw.t_b b ON a.id = b.id\n",
            ),
        ],
    );
    land(&lake, "s", "w1", &[json!({"id": 1, "v": "a", "extra": 5, "x": 1, "u": "2023-01-02"})]);
    land(&lake, "a", "w1", &[json!({"id": 1, "v": "left"})]);
    land(&lake, "b", "w0", &[json!({"id": 99, "w": "unmatched"})]);
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert!(query(&lake, "SELECT id FROM silver.joined").is_empty());
    // A batch without `extra`, `x` now a float, and a NULL order_by for id 1.
    land(&lake, "s", "w2", &[json!({"id": 2, "v": "b", "x": 1.5, "u": "2023-01-01"}), json!({"id": 1, "v": "stale", "x": 2, "u": null})]);
    land(&lake, "b", "w1", &[json!({"id": 1, "w": "right"})]);
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    let rows = query(&lake, "SELECT id, v, extra, x, u FROM silver.s ORDER BY id");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["v"], "a", "a NULL order_by replaced a row that had one: {rows:?}");
    assert_eq!(rows[0]["extra"], 5);
    assert_eq!(rows[0]["u"], "2023-01-02");
    assert_eq!(rows[1]["v"], "b");
    assert!(rows[1]["extra"].is_null());
    assert_eq!(rows[1]["x"].as_f64(), Some(1.5));
    assert_eq!(rows[0]["x"].as_f64(), Some(1.0));
    let j = query(&lake, "SELECT id, v, w FROM silver.joined");
    assert_eq!(j, vec![json!({"id": 1, "v": "left", "w": "right"})]);
}

#[test]
fn append_takes_each_landed_file_once_even_when_a_window_is_pulled_again() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = write_models(
        dir.path(),
        &[(
            "silver/posts_log.sql",
            "-- target: silver.posts_log\n-- mode: append\nSELECT id, page_id, _file FROM raw.pancake_posts\n",
        )],
    );
    let pull = ["pull", "pancake", "--streams", "posts", "--from", "2023-09-01", "--to", "2023-09-03"];
    ok(&ingest(Some(&sim), &lake, &pull));
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    let raw: usize = raw_files(&lake).values().map(Vec::len).sum();
    ok(&ingest(Some(&sim), &lake, &pull));
    ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "posts", "--to", "2023-09-03"]));
    ok(&ingest_sql(&lake, &sql, &["transform"]));
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM silver.posts_log")[0]["n"].as_u64(), Some(raw as u64));
}
