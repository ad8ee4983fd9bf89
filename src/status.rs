//! `ingest status`: what the catalogue says per source, partition and stream — watermark,
//! files, records, last run. Reads only.
use crate::error::Result;
use crate::lake::state::{self, LandedFile};
use crate::lake::Lake;
use std::collections::BTreeMap;

#[derive(Default)]
struct Line {
    files: u64,
    records: i64,
    bytes: i64,
    watermark: Option<String>,
    last_landed: String,
    last_run: String,
}

pub async fn render(lake: &Lake, source: Option<&str>) -> Result<String> {
    let rows: Vec<LandedFile> = state::read_catalogue(lake, source).await?;
    let version = state::open_table(lake, state::CATALOGUE)
        .await?
        .and_then(|t| t.version());
    let mut out = format!(
        "lake: {}\ncatalogue: {} rows, Delta version {}\n\n",
        lake.url,
        rows.len(),
        version.map_or("-".into(), |v| v.to_string())
    );
    if rows.is_empty() {
        out.push_str("nothing landed yet\n");
        return Ok(out);
    }
    // Latest row per path wins (a re-landed window replaces its file).
    let mut latest: BTreeMap<String, &LandedFile> = BTreeMap::new();
    for r in &rows {
        if let Some(p) = &r.path {
            latest.insert(p.clone(), r);
        }
    }
    let mut lines: BTreeMap<(String, String, String), Line> = BTreeMap::new();
    for r in &rows {
        let l = lines
            .entry((r.source.clone(), r.partition.clone(), r.stream.clone()))
            .or_default();
        if r.watermark > l.watermark {
            l.watermark = r.watermark.clone();
        }
        if r.landed_at > l.last_landed {
            l.last_landed = r.landed_at.clone();
            l.last_run = r.run_id.chars().take(8).collect();
        }
    }
    for r in latest.values() {
        let l = lines
            .get_mut(&(r.source.clone(), r.partition.clone(), r.stream.clone()))
            .unwrap();
        l.files += 1;
        l.records += r.records;
        l.bytes += r.bytes;
    }
    out.push_str(&format!(
        "{:<10} {:<10} {:<24} {:>6} {:>9} {:>11}  {:<21} {:<21} {}\n",
        "source", "partition", "stream", "files", "records", "bytes", "watermark", "last landed", "run"
    ));
    for ((s, p, st), l) in lines {
        out.push_str(&format!(
            "{:<10} {:<10} {:<24} {:>6} {:>9} {:>11}  {:<21} {:<21} {}\n",
            s,
            p,
            st,
            l.files,
            l.records,
            l.bytes,
            l.watermark.unwrap_or_else(|| "-".into()),
            l.last_landed,
            l.last_run
        ));
    }
    out.push_str(&tables(lake).await?);
    Ok(out)
}

/// Each modelled table: Delta version, rows, and the catalogue position its model consumed.
async fn tables(lake: &Lake) -> Result<String> {
    let rels = crate::query::delta_tables(lake).await?;
    let rels: Vec<_> = rels.into_iter().filter(|r| !r.starts_with('_')).collect();
    if rels.is_empty() {
        return Ok(String::new());
    }
    let mut out = format!(
        "\n{:<44} {:>8} {:>10} {:>10}\n",
        "table", "version", "rows", "watermark"
    );
    for rel in rels {
        let Some(t) = state::open_table(lake, &rel).await? else {
            continue;
        };
        let snap = t.snapshot()?;
        let rows: i64 = snap
            .log_data()
            .iter()
            .filter_map(|f| f.num_records())
            .map(|n| n as i64)
            .sum();
        let name = rel.replace('/', ".");
        let wm = snap
            .transaction_version(t.log_store().as_ref(), format!("ingest-model/{name}"))
            .await?;
        out.push_str(&format!(
            "{:<44} {:>8} {:>10} {:>10}\n",
            name,
            t.version().map_or("-".into(), |v| v.to_string()),
            rows,
            wm.map_or("-".into(), |v| format!("seq {v}"))
        ));
    }
    Ok(out)
}
