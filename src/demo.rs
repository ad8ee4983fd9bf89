//! `ingest demo`: the simulator in-process on loopback, every bundled pipeline pulled from it
//! into the lake, a summary, and how to read the result. Uses the pipelines compiled into the
//! binary so it runs from any folder.
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::{config, pull, sim};

/// The shipped pipelines, as built into the binary.
pub const PIPELINES: &[(&str, &str)] = &[
    ("pancake", include_str!("../pipelines/pancake.toml")),
    ("c2s", include_str!("../pipelines/c2s.toml")),
];

pub async fn run(lake_spec: &str) -> Result<i32> {
    let cfg = sim::SimConfig {
        rate_window: 2.0,
        ..Default::default()
    };
    let (base, sim, _task) = sim::serve(cfg, "127.0.0.1:0").await?;
    eprintln!("simulator on {base} (7 simulated days from 2023-09-01)");
    for (k, v) in sim::exports(&sim, &base) {
        std::env::set_var(k, v);
    }
    let dir = tempfile::tempdir()?;
    for (name, text) in PIPELINES {
        std::fs::write(dir.path().join(format!("{name}.toml")), text)?;
    }
    let lake = Lake::open(lake_spec)?;
    let to = chrono::NaiveDate::from_ymd_opt(2023, 9, 7).unwrap();
    let from = chrono::NaiveDate::from_ymd_opt(2023, 9, 1);
    let mut failed = false;
    for (name, _) in PIPELINES {
        let p = config::load(dir.path(), name)?;
        let opts = pull::PullOptions {
            from,
            to,
            streams: None,
            full_refresh: false,
            progress: true,
        };
        let report = pull::pull(&p, &lake, &opts).await?;
        println!("== {name}\n{}", report.table());
        failed |= report.failed();
    }
    println!("{}", crate::status::render(&lake, None).await?);
    let root = lake
        .local_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| lake.url.to_string());
    println!("Raw files are under {root}/<source>/<partition>/<stream>/file_<date>.json. Read them with DuckDB:");
    println!("  duckdb -c \"SELECT page_id, count(*) FROM read_json_auto('{root}/pancake/*/conversations/*.json') GROUP BY 1\"");
    println!("  duckdb -c \"SELECT attributes.lead_status.alias AS status, count(*) FROM read_json_auto('{root}/c2s/_/leads/*.json') GROUP BY 1\"");
    if failed {
        return Err(Error::Other("some streams failed".into()));
    }
    Ok(0)
}
