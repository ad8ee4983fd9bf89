//! Pancake against the simulator: every stream of every page lands at the contract's paths,
//! records landed = records served, context on every line, and a second pull resumes from
//! the watermark without duplicate catalogue rows.
use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Raw stream → the simulator route that serves it.
const ROUTES: &[(&str, &[&str])] = &[
    ("conversations", &["conversations"]),
    ("page_customers", &["page_customers"]),
    ("posts", &["posts"]),
    ("tags", &["tags"]),
    ("users", &["user_list"]),
    ("statistics/users", &["user_statistics", "users"]),
    (
        "statistics/customer_engagements",
        &["engagement_statistics", "users_engagements"],
    ),
    ("statistics/pages", &["new_customer_statistics"]),
    ("statistics/ads", &["ads"]),
    ("statistics/pages_campaigns", &["campaign"]),
];

fn requests(sim: &Sim, route: &str) -> u64 {
    sim.stats()["by_route"][format!("pancake/{route}")]["requests"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn pancake_lands_every_stream_then_resumes_from_the_watermark() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "7"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let o1 = ingest(
        Some(&sim),
        &lake,
        &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-07"],
    );
    let summary = ok(&o1);
    assert!(summary.contains("total"), "summary table missing:\n{summary}");

    let pages: Vec<String> = sim.var("PANCAKE_PAGE_IDS").split(',').map(str::to_string).collect();
    assert_eq!(pages.len(), 2);
    let files = raw_files(&lake);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut landed: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (rel, recs) in &files {
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 4, "{rel}");
        let (source, page, stream, file) = (parts[0], parts[1], parts[2], parts[3]);
        assert_eq!(source, "pancake");
        assert!(pages.iter().any(|p| p == page), "{rel}");
        let once = stream == "tags" || stream == "user_list";
        let date = file
            .strip_prefix("file_")
            .and_then(|f| f.strip_suffix(".json"))
            .expect(rel);
        if once {
            assert_eq!(date, today, "{rel}");
        } else {
            assert!(("2023-09-01"..="2023-09-07").contains(&date), "{rel}");
        }
        assert!(!recs.is_empty(), "empty file {rel}");
        for r in recs {
            assert_eq!(
                r["page_id"],
                Value::String(page.into()),
                "{rel}: page_id missing in {r}"
            );
            if once {
                assert!(r["window_start"].is_null(), "{rel}");
            } else {
                assert!(r["window_start"].as_str().unwrap().starts_with(date), "{rel}: {r}");
                assert!(r["window_end"].is_string(), "{rel}");
            }
        }
        *landed.entry(stream.to_string()).or_default() += recs.len() as u64;
        seen.insert((page.to_string(), stream.to_string()));
    }
    for page in &pages {
        for (_, streams) in ROUTES {
            for s in *streams {
                assert!(seen.contains(&(page.clone(), s.to_string())), "no file for {page}/{s}");
            }
        }
    }
    let stats = sim.stats();
    assert_eq!(stats["throttled"], 0);
    for (route, streams) in ROUTES {
        let served = stats["by_route"][format!("pancake/{route}")]["records"]
            .as_u64()
            .unwrap();
        let got: u64 = streams.iter().map(|s| landed.get(*s).copied().unwrap_or(0)).sum();
        assert_eq!(got, served, "{route}: landed {got}, served {served}");
        assert!(served > 0, "{route} served nothing");
    }
    // Split streams: user ids carried into every row.
    for (rel, recs) in &files {
        if rel.contains("/user_statistics/") || rel.contains("/users/") {
            assert!(
                recs.iter()
                    .all(|r| r["user_id"].as_str().is_some_and(|u| u.starts_with('u'))),
                "{rel}"
            );
        }
    }

    // The catalogue describes every file, once.
    let cat1 = catalogue(&lake);
    let cat_paths: BTreeSet<String> = cat1.iter().filter_map(|r| r.path.clone()).collect();
    assert_eq!(cat_paths, files.keys().cloned().collect::<BTreeSet<_>>());
    let pairs: Vec<(String, String)> = cat1
        .iter()
        .filter_map(|r| Some((r.path.clone()?, r.sha256.clone()?)))
        .collect();
    assert_eq!(
        pairs.len(),
        pairs.iter().collect::<BTreeSet<_>>().len(),
        "duplicate catalogue rows"
    );
    for r in cat1.iter().filter(|r| r.path.is_some()) {
        assert_eq!(r.records as usize, files[r.path.as_ref().unwrap()].len());
    }
    let wm: Vec<_> = cat1
        .iter()
        .filter(|r| r.request == "posts")
        .filter_map(|r| r.watermark.clone())
        .collect();
    assert_eq!(wm.iter().max().unwrap(), "2023-09-08T00:00:00Z");

    // Second pull, no --from: every windowed stream re-reads a day (lookback 1d), so posts
    // asks for 09-07, 09-08 and 09-09; conversations too.
    let posts_before = requests(&sim, "posts");
    let conv_before = requests(&sim, "conversations");
    let once_before = (requests(&sim, "tags"), requests(&sim, "users"));
    assert_eq!(once_before, (pages.len() as u64, pages.len() as u64));
    let o2 = ingest(Some(&sim), &lake, &["pull", "pancake", "--to", "2023-09-09"]);
    ok(&o2);
    // Seed 003's tags and user_list are landed once: not asked again.
    assert_eq!((requests(&sim, "tags"), requests(&sim, "users")), once_before);
    assert!(text(&o2).contains("landed once already: skipped"), "{}", text(&o2));
    assert_eq!(requests(&sim, "posts") - posts_before, 3 * pages.len() as u64);
    assert!(requests(&sim, "conversations") - conv_before >= 3 * pages.len() as u64);
    let cat2 = catalogue(&lake);
    let new_rows = &cat2[cat1.len()..];
    for r in new_rows {
        if let Some(ws) = &r.window_start {
            let floor = "2023-09-07";
            assert!(ws.as_str() >= floor, "second run re-landed {r:?}");
        }
    }
    let pairs: Vec<(String, String)> = cat2
        .iter()
        .filter_map(|r| Some((r.path.clone()?, r.sha256.clone()?)))
        .collect();
    assert_eq!(
        pairs.len(),
        pairs.iter().collect::<BTreeSet<_>>().len(),
        "duplicate catalogue rows after rerun"
    );
    let wm: Vec<_> = cat2
        .iter()
        .filter(|r| r.request == "posts")
        .filter_map(|r| r.watermark.clone())
        .collect();
    assert_eq!(wm.iter().max().unwrap(), "2023-09-10T00:00:00Z");
    let files2 = raw_files(&lake);
    for (rel, recs) in &files2 {
        match files.get(rel) {
            Some(old) => assert_eq!(old, recs, "{rel} changed although its window's data did not"),
            None => assert!(
                rel.ends_with("2023-09-08.json") || rel.ends_with("2023-09-09.json"),
                "unexpected new file {rel}"
            ),
        }
    }

    // DuckDB reads the raw files and the Delta catalogue and agrees.
    let convs: usize = files2
        .iter()
        .filter(|(k, _)| k.contains("/conversations/"))
        .map(|(_, v)| v.len())
        .sum();
    let posts_rows = cat2.iter().filter(|r| r.request == "posts").count();
    let got = duckdb(&format!(
        "print(con.execute(\"SELECT count(*) FROM read_json_auto('{l}/pancake/*/conversations/*.json')\").fetchone()[0])\n\
         print(*con.execute(\"SELECT count(*), max(watermark) FROM delta_scan('{l}/_ingest/catalogue') WHERE request = 'posts'\").fetchone())",
        l = lake.display()
    ));
    assert_eq!(got, format!("{convs}\n{posts_rows} 2023-09-10T00:00:00Z\n"));

    let status = ok(&ingest(None, &lake, &["status", "pancake"]));
    assert!(
        status.contains("conversations") && status.contains("2023-09-10T00:00:00Z"),
        "{status}"
    );

    assert_no_secrets(&sim.secrets(), &[&text(&o1), &text(&o2), &status], &lake);

    // --full-refresh lands the once-streams again.
    ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--streams", "tags,user_list", "--full-refresh"]));
    assert_eq!((requests(&sim, "tags"), requests(&sim, "users")), (once_before.0 * 2, once_before.1 * 2));
    // `refresh_every` belongs to a once-stream; a once-stream has no window.
    let dir2 = tempfile::tempdir().unwrap();
    for (from, to, field) in [
        ("records = \"tags\"\nonce = true", "records = \"tags\"\nrefresh_every = \"7d\"", "streams.tags.refresh_every"),
        ("records = \"tags\"\nonce = true", "records = \"tags\"\nonce = true\nrefresh_every = \"5m\"", "streams.tags.refresh_every"),
    ] {
        let p = edited_pipelines(&dir2.path().join(field.replace('.', "_") + to.len().to_string().as_str()), "pancake.toml", from, to);
        let o = ingest_cmd(Some(&sim), &dir2.path().join("lake"), &p, &["pull", "pancake"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(field), "{}", text(&o));
    }
}

/// Seed 003's historic file without a date suffix: with `backfill_template`, a `--from`
/// backfill lands each window in a date-less file (`file_.json`, `file__2.json`, …); the daily
/// pull after it lands `file_<date>.json` for the windows it re-reads, superseding only those.
/// The records then equal a pull without the template's: nothing lost, nothing twice.
#[test]
fn a_backfill_lands_date_less_files_and_a_daily_pull_supersedes_only_its_windows() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let p = edited_pipelines(dir.path(), "pancake.toml", "[source]\n", "[source]\nbackfill_template = \"{source}/{partition}/{stream}/file_.json\"\n");
    let lake = dir.path().join("lake");
    let pull = |lake: &std::path::Path, pipelines: &std::path::Path, args: &[&str]| {
        let mut a = vec!["pull", "pancake", "--streams", "posts"];
        a.extend_from_slice(args);
        ok(&ingest_cmd(Some(&sim), lake, pipelines, &a).output().unwrap())
    };
    pull(&lake, &p, &["--from", "2023-09-01", "--to", "2023-09-04"]);
    let names = |lake: &std::path::Path| -> BTreeSet<String> {
        raw_files(lake).keys().filter(|k| k.contains("/posts/")).map(|k| k.rsplit('/').next().unwrap().to_string()).collect()
    };
    let first = names(&lake);
    assert!(!first.is_empty());
    assert!(first.iter().all(|f| f == "file_.json" || (f.starts_with("file__") && !f.contains("2023"))), "{first:?}");
    let pages = sim.var("PANCAKE_PAGE_IDS").split(',').count();
    let landed_posts = || catalogue(&lake).iter().filter(|r| r.request == "posts" && r.path.is_some()).count();
    assert_eq!(landed_posts(), 4 * pages, "one file per window and page");
    // The daily pull (lookback 1d) re-reads 09-04 (unchanged: kept as it is) and lands 09-05
    // under its dated name.
    pull(&lake, &p, &["--to", "2023-09-05"]);
    let after = names(&lake);
    assert!(after.contains("file_2023-09-05.json"), "{after:?}");
    assert!(after.iter().all(|f| !f.contains("2023") || f.contains("09-04") || f.contains("09-05")), "{after:?}");
    let reference = dir.path().join("reference");
    pull(&reference, &pipelines(), &["--from", "2023-09-01", "--to", "2023-09-05"]);
    let ids = |lake: &std::path::Path| -> Vec<String> {
        query(lake, "SELECT CAST(id AS VARCHAR) AS id FROM raw.pancake_posts ORDER BY id").iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let (got, want) = (ids(&lake), ids(&reference));
    assert!(!want.is_empty());
    assert_eq!(got, want);
}
