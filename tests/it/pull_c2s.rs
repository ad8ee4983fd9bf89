//! C2S against the simulator at 10 requests per 3 s: the budget is saturated but never
//! exceeded; the first run is a full load, the second is incremental on `updated_gte`
//! (keyset paging: each request restarts at the last `updated_at` seen).
use crate::common::*;
use std::collections::BTreeSet;
use std::time::Instant;

#[test]
fn c2s_full_then_incremental_within_the_rate_budget() {
    let sim = Sim::start(&["--rate-window", "3", "--days", "7", "--scale", "10", "--seed", "7"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let t0 = Instant::now();
    let o1 = ingest(Some(&sim), &lake, &["pull", "c2s"]);
    let elapsed = t0.elapsed().as_secs_f64();
    ok(&o1);
    let stats = sim.stats();
    let leads = &stats["by_route"]["c2s/leads"];
    let pages = leads["requests"].as_u64().unwrap();
    assert_eq!(stats["throttled"], 0, "the budget was exceeded: {stats}");
    let files = raw_files(&lake);
    assert_eq!(files.len(), 1, "{:?}", files.keys());
    let (rel, recs) = files.iter().next().unwrap();
    assert!(rel.starts_with("c2s/_/leads/file_"), "{rel}");
    // Keyset paging re-serves the boundary second's rows: dropped as exact repeats.
    let served = leads["records"].as_u64().unwrap();
    assert!(recs.len() as u64 <= served && served <= recs.len() as u64 + 2 * pages, "{served} served, {} landed", recs.len());
    assert_eq!(recs.len(), 7 * 20 * 10, "one lead per id created in 7 days");
    let ids: BTreeSet<&str> = recs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), recs.len());
    assert!(pages <= (recs.len() as u64).div_ceil(48) + 1, "{pages} pages for {} leads", recs.len());
    let ideal = pages as f64 / 10.0 * 3.0;
    eprintln!("c2s: {pages} pages in {elapsed:.2}s, ideal {ideal:.2}s");
    assert!(
        elapsed <= ideal * 1.1,
        "{pages} pages took {elapsed:.2}s, ideal {ideal:.2}s"
    );

    let cat1 = catalogue(&lake);
    let wm1 = cat1.last().unwrap().watermark.clone().unwrap();
    let max_updated = recs
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r["attributes"]["updated_at"].as_str().unwrap())
                .unwrap()
                .to_utc()
        })
        .max()
        .unwrap();
    assert_eq!(wm1, max_updated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));

    // Three more simulated days: leads created and updated since the watermark come back.
    drop(sim);
    let sim = Sim::start(&["--rate-window", "3", "--days", "10", "--scale", "10", "--seed", "7"]);
    let o2 = ingest(Some(&sim), &lake, &["pull", "c2s"]);
    ok(&o2);
    let stats = sim.stats();
    assert_eq!(stats["throttled"], 0);
    let files = raw_files(&lake);
    assert_eq!(files.len(), 2, "{:?}", files.keys());
    let (rel2, recs2) = files.iter().find(|(k, _)| k.as_str() != rel).unwrap();
    assert!(rel2.ends_with("_2.json"), "{rel2}");
    assert!(!recs2.is_empty());
    assert!(recs2.len() < 10 * 20 * 10, "incremental run pulled everything");
    for r in recs2 {
        let u = chrono::DateTime::parse_from_rfc3339(r["attributes"]["updated_at"].as_str().unwrap())
            .unwrap()
            .to_utc();
        let floor = max_updated - chrono::Duration::minutes(1);
        assert!(u >= floor, "{u} is older than the watermark minus the lookback {floor}");
    }
    assert!(stats["by_route"]["c2s/leads"]["requests"].as_u64().unwrap() <= (recs2.len() as u64).div_ceil(48) + 1);
    // Leads updated after the first run's horizon reappear with a newer version.
    let again = recs2.iter().filter(|r| ids.contains(r["id"].as_str().unwrap())).count();
    assert!(again > 0, "no updated lead came back");
    let cat2 = catalogue(&lake);
    assert_eq!(cat2.len(), cat1.len() + 1);
    assert!(cat2.last().unwrap().watermark.as_ref().unwrap() > &wm1);
    assert_no_secrets(&sim.secrets(), &[&text(&o1), &text(&o2)], &lake);
}
