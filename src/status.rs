//! `ingest status`: what the catalogue says per source, partition and stream — watermark,
//! files, records, last run. Reads only.
use crate::error::Result;
use crate::lake::state::{self, LandedFile};
use crate::lake::{runs, Lake};
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

/// Raw files of each source that no current catalogue row lists (a crashed landing, or a
/// superseded file not yet removed); `templates` gives each source's path template.
pub async fn orphans(
    lake: &Lake,
    rows: &[LandedFile],
    template: &(dyn Fn(&str) -> String + Sync),
) -> Result<BTreeMap<String, Vec<String>>> {
    let current: std::collections::HashSet<String> =
        state::current_files(rows).into_iter().filter_map(|r| r.path).collect();
    let sources: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let mut out = BTreeMap::new();
    for s in sources {
        let o = lake.orphans(&template(s), s, &current, None).await?;
        if !o.is_empty() {
            out.insert(s.to_string(), o);
        }
    }
    Ok(out)
}

pub async fn render(lake: &Lake, source: Option<&str>, template: &(dyn Fn(&str) -> String + Sync)) -> Result<String> {
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
    // The current landing of each slot (a re-landed window supersedes its file).
    let latest = state::current_files(&rows);
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
    for r in &latest {
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
    let sources: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    for s in sources {
        let mut running: Vec<(String, crate::lake::lease::Holder)> =
            crate::lake::lease::holder(lake, s).await?.map(|h| (String::new(), h)).into_iter().collect();
        running.extend(crate::lake::lease::partition_holders(lake, s).await?.into_iter().map(|(p, h)| (format!(" (partition {p})"), h)));
        for (part, h) in running {
            out.push_str(&format!(
                "\n{s}{part}: a pull is running since {} ({}, pid {})\n",
                h.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                h.host,
                h.pid
            ));
        }
    }
    let orphans = orphans(lake, &rows, template).await?;
    for (s, files) in &orphans {
        out.push_str(&format!(
            "\n{s}: {} raw file(s) no catalogue row lists (a crashed or superseded landing; the next pull of {s} or `ingest vacuum` removes them):\n",
            files.len()
        ));
        for f in files {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out.push_str(&pushes(lake, source).await?);
    out.push_str(&tables(lake).await?);
    Ok(out)
}

/// The push ledger per sink: records by state; `uncertain` ones listed (a crash left them
/// pending and the sink cannot look them up: `ingest push … --resend-uncertain`).
async fn pushes(lake: &Lake, source: Option<&str>) -> Result<String> {
    if !state::table_exists(lake, crate::lake::ledger::SENT).await? {
        return Ok(String::new());
    }
    let mut sinks: BTreeMap<(String, String), BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for e in crate::lake::ledger::current(lake, source).await? {
        sinks.entry((e.source, e.sink)).or_default().entry(e.state).or_default().push(e.key);
    }
    if sinks.is_empty() {
        return Ok(String::new());
    }
    let mut last_push = BTreeMap::new();
    if state::table_exists(lake, runs::RUNS).await? {
        for r in runs::read(lake, source, false).await? {
            if r.partition == runs::PUSH {
                last_push.insert((r.source.clone(), r.stream.clone()), r);
            }
        }
    }
    let mut out = format!("\n{:<30} {:>8} {:>8} {:>8} {:>9}\n", "push sink", "sent", "failed", "pending", "uncertain");
    for ((src, sink), by) in &sinks {
        let n = |s: &str| by.get(s).map_or(0, Vec::len);
        out.push_str(&format!(
            "{:<30} {:>8} {:>8} {:>8} {:>9}\n",
            format!("{src}.{sink}"),
            n("sent"),
            n("failed"),
            n("pending"),
            n("uncertain")
        ));
        if let Some(r) = last_push.get(&(src.clone(), sink.clone())) {
            out.push_str(&format!(
                "  last push {}: {} sent in {} request(s){}\n",
                r.ended.chars().take(19).collect::<String>(),
                r.records,
                r.pages,
                r.last.as_ref().map(|l| format!("; destination's latest integration: {l}")).unwrap_or_default()
            ));
        }
        if let Some(keys) = by.get("uncertain") {
            out.push_str(&format!(
                "  uncertain (check the destination, then `ingest push {src}.{sink} --resend-uncertain`): {}\n",
                keys.join(", ")
            ));
        }
    }
    Ok(out)
}

/// Each modelled table: Delta version, rows, and the catalogue position its model consumed.
async fn tables(lake: &Lake) -> Result<String> {
    let rels = state::delta_tables(lake).await?;
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
        let wm = state::Txns::of(lake, &rel, &t).await?.get(&state::model_txn_app(&name)).await?;
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

/// A source's raw path template: its pipeline's, else the default.
pub fn template_of(dir: &std::path::Path, source: &str) -> String {
    crate::config::load(dir, source)
        .map(|p| p.path_template)
        .unwrap_or_else(|_| crate::config::default_path_template())
}

/// `ingest vacuum [TARGET]`: remove raw files no catalogue row lists (under each source's
/// lease) and data files of Delta tables that no commit references any more (older than the
/// tables' 7-day retention). TARGET: a table (`schema.table`) or a source; default: all.
/// Returns (raw files, table files) removed.
pub async fn vacuum(lake: &Lake, pipelines: &std::path::Path, target: Option<&str>) -> Result<(usize, usize)> {
    let table = target.filter(|t| t.contains('.'));
    let source = target.filter(|t| !t.contains('.'));
    let mut raw = 0;
    if table.is_none() {
        let rows = state::read_catalogue(lake, source).await?;
        let sources: std::collections::BTreeSet<String> = rows.iter().map(|r| r.source.clone()).collect();
        if let Some(s) = source.filter(|s| !sources.contains(*s)) {
            return Err(crate::Error::Usage(format!("vacuum: no source `{s}` has landed anything in {}", lake.url)));
        }
        for s in sources {
            let lease = crate::lake::lease::acquire_scope(lake, &s, crate::lake::lease::Scope::Source, true).await?;
            let res = async {
                // Read again under the lease: a pull may have committed since.
                let rows = state::read_catalogue(lake, Some(&s)).await?;
                let o = orphans(lake, &rows, &|src| template_of(pipelines, src)).await?;
                let n = lake.remove_all(o.get(&s).map(Vec::as_slice).unwrap_or(&[])).await?;
                // A full scan: the next pull need not scan again for earlier unfinished runs.
                state::Unfinished::read(lake, &s).await?.scanned(lake, &s, None).await?;
                Ok::<_, crate::Error>(n)
            }
            .await;
            lease.release().await;
            raw += res?;
        }
    }
    let mut files = 0;
    if source.is_none() {
        for rel in tables_named(lake, table, "vacuum").await? {
            lake.sweep_log_staging(&rel, std::time::Duration::from_secs(60));
            let Some(t) = state::open_table(lake, &rel).await? else { continue };
            let (_, metrics) = t.vacuum().await?;
            if !metrics.files_deleted.is_empty() {
                tracing::info!(table = %rel, files = metrics.files_deleted.len(), "removed data files no commit references");
            }
            files += metrics.files_deleted.len();
        }
    }
    Ok((raw, files))
}

/// `ingest optimize [TABLE]`: each Delta table's small files compacted (deltalake's
/// bin-packing, target size its default) and a checkpoint written; a table whose model under
/// `sql` declares `cluster_by` is rewritten in that column's order instead. Returns (table,
/// files compacted, files written) per table, (0, 0) for one already compact. A conflicting
/// concurrent commit (a transform's MERGE rewriting the same files) fails that table's
/// optimize; the next run retries it.
pub async fn optimize(lake: &Lake, table: Option<&str>, sql: &std::path::Path) -> Result<Vec<(String, u64, u64)>> {
    let clustered: std::collections::BTreeMap<String, String> = match sql.is_dir() {
        true => crate::transform::model::load_dir(sql)?
            .into_iter()
            .filter_map(|m| m.cluster_by.clone().map(|c| (m.table_rel(), c)))
            .collect(),
        false => Default::default(),
    };
    let mut out = Vec::new();
    for rel in tables_named(lake, table, "optimize").await? {
        let (removed, added) = state::compact(lake, &rel, clustered.get(&rel).map(String::as_str)).await?;
        out.push((rel.replace('/', "."), removed, added));
    }
    Ok(out)
}

/// The Delta tables a maintenance command works on: `table` (`schema.table`; an unknown one is
/// a usage error naming `verb`) or every table of the lake.
async fn tables_named(lake: &Lake, table: Option<&str>, verb: &str) -> Result<Vec<String>> {
    let rels = state::delta_tables(lake).await?;
    match table {
        Some(t) => {
            let rel = t.replace('.', "/");
            if !rels.contains(&rel) {
                return Err(crate::Error::Usage(format!("{verb}: no table `{t}` in {}", lake.url)));
            }
            Ok(vec![rel])
        }
        None => Ok(rels),
    }
}
