//! `ingest demo`: the simulator in-process on loopback, every bundled pipeline pulled from it,
//! the SQL models run, a summary query, and the DuckDB statement that reads the results. Uses
//! the pipelines and models compiled into the binary so it runs from any folder.
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::{config, pull, sim};

/// The shipped pipelines, as built into the binary.
pub const PIPELINES: &[(&str, &str)] = &[
    ("pancake", include_str!("../pipelines/pancake.toml")),
    ("c2s", include_str!("../pipelines/c2s.toml")),
];

/// The shipped SQL models, as built into the binary (path under sql/, text).
pub const MODELS: &[(&str, &str)] = &[
    (
        "gold/c2s_leads_per_day.sql",
        include_str!("../sql/gold/c2s_leads_per_day.sql"),
    ),
    (
        "gold/pancake_conversations_per_day.sql",
        include_str!("../sql/gold/pancake_conversations_per_day.sql"),
    ),
    ("silver/c2s_leads.sql", include_str!("../sql/silver/c2s_leads.sql")),
    ("silver/pancake_ads.sql", include_str!("../sql/silver/pancake_ads.sql")),
    (
        "silver/pancake_campaign.sql",
        include_str!("../sql/silver/pancake_campaign.sql"),
    ),
    (
        "silver/pancake_conversation_customers.sql",
        include_str!("../sql/silver/pancake_conversation_customers.sql"),
    ),
    (
        "silver/pancake_conversation_tags.sql",
        include_str!("../sql/silver/pancake_conversation_tags.sql"),
    ),
    (
        "silver/pancake_conversations.sql",
        include_str!("../sql/silver/pancake_conversations.sql"),
    ),
    (
        "silver/pancake_engagement_statistics.sql",
        include_str!("../sql/silver/pancake_engagement_statistics.sql"),
    ),
    (
        "silver/pancake_new_customer_statistics.sql",
        include_str!("../sql/silver/pancake_new_customer_statistics.sql"),
    ),
    (
        "silver/pancake_page_customers.sql",
        include_str!("../sql/silver/pancake_page_customers.sql"),
    ),
    (
        "silver/pancake_posts.sql",
        include_str!("../sql/silver/pancake_posts.sql"),
    ),
    (
        "silver/pancake_tags.sql",
        include_str!("../sql/silver/pancake_tags.sql"),
    ),
    (
        "silver/pancake_user_list.sql",
        include_str!("../sql/silver/pancake_user_list.sql"),
    ),
    (
        "silver/pancake_user_statistics.sql",
        include_str!("../sql/silver/pancake_user_statistics.sql"),
    ),
    (
        "silver/pancake_users.sql",
        include_str!("../sql/silver/pancake_users.sql"),
    ),
    (
        "silver/pancake_users_engagements.sql",
        include_str!("../sql/silver/pancake_users_engagements.sql"),
    ),
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
    let sql = dir.path().join("sql");
    for (rel, text) in MODELS {
        let p = sql.join(rel);
        std::fs::create_dir_all(p.parent().expect("a folder"))?;
        std::fs::write(p, text)?;
    }
    let lake = Lake::open(lake_spec)?;
    let to = chrono::NaiveDate::from_ymd_opt(2023, 9, 7).expect("a date");
    let from = chrono::NaiveDate::from_ymd_opt(2023, 9, 1);
    for (name, _) in PIPELINES {
        let p = config::load(dir.path(), name)?;
        let opts = pull::PullOptions {
            from,
            to,
            streams: None,
            full_refresh: false,
            progress: true,
            wait: true,
            partitions: None,
        };
        let report = pull::pull(&p, &lake, &opts).await?;
        println!("== pull {name}\n{}", report.table());
        if report.failed() {
            return Err(Error::Other(format!("pulling {name} failed")));
        }
    }
    let opts = crate::transform::TransformOptions { pipelines: Some(dir.path().to_path_buf()), ..Default::default() };
    let reports = crate::transform::transform(&lake, &sql, &opts).await?;
    println!("== transform\n{}", crate::transform::render(&reports));
    if let Some(f) = reports.iter().find_map(|r| r.failed.clone()) {
        return Err(Error::Other(format!("a model failed: {f}")));
    }
    let summary = "SELECT status, source_name, sum(leads) AS leads FROM gold.c2s_leads_per_day GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 8";
    println!("== {summary}\n{}", crate::query::query(&lake, summary, "table").await?);
    let root = lake
        .local_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| lake.url.as_str().trim_end_matches('/').to_string());
    println!("Raw files: {root}/<source>/<partition>/<stream>/file_<date>.json; tables: {root}/<schema>/<table>.");
    println!("`ingest status` and `ingest query` read them; so does DuckDB:");
    println!(
        "  duckdb -c \"INSTALL delta; LOAD delta; SELECT page_id, day, conversations FROM delta_scan('{root}/gold/pancake_conversations_per_day') ORDER BY 1, 2\""
    );
    Ok(0)
}
