//! SQL model files (`sql/**/*.sql`): a `-- key: value` header declaring what SQL cannot
//! (target, unique key, ordering, mode, partition columns) and the SELECT itself, with
//! `${env:NAME:-default}` substituted as in pipeline files. Parsing and header validation
//! only; errors name file and line.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Upsert the new input by `unique_key`, a newer `order_by` wins.
    Merge,
    /// Append the new input.
    Append,
    /// Rebuild the whole table from all input on every run.
    Replace,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub file: String,
    /// `schema.table`
    pub target: String,
    pub unique_key: Vec<String>,
    pub order_by: Option<String>,
    pub mode: Mode,
    pub partition_by: Vec<String>,
    /// `-- cluster_by: col`: the table's files are written ordered by `col`, each at most
    /// `target_file_size`, and a MERGE joins on `col` as well as on the key, so delta-rs skips
    /// every file whose `col` range (Parquet statistics) misses the new rows and rewrites only
    /// files holding their keys. `col` must be set on every row and never change for a key
    /// (a creation time, say): a NULL fails the model; a changed value would insert a second row.
    pub cluster_by: Option<String>,
    /// `-- target_file_size: 4MiB` (default 2 MiB with `cluster_by`, else delta-rs's 100 MiB).
    pub target_file_size: Option<u64>,
    /// `-- reads: all`: raw streams are read whole (every current file), not only the files
    /// the model has not consumed — for joins between raw streams.
    pub reads_all: bool,
    /// `-- output: csv sep=; to=s3://bucket/folder/ name=deals`: every transform that changes
    /// the table writes the rows it merged to a file (see `export::outputs`).
    pub output: Option<OutputSpec>,
    pub sql: String,
    /// 1-based line where the SQL body starts in the file.
    pub sql_line: usize,
}

impl Model {
    /// Folder of the target table, relative to the lake root.
    pub fn table_rel(&self) -> String {
        self.target.replace('.', "/")
    }
    pub fn err_at(&self, line: Option<usize>, msg: impl Into<String>) -> Error {
        Error::config(&self.file, line, None, msg)
    }
    /// Best guess of the line where `needle` appears in the SQL body.
    pub fn line_of(&self, needle: &str) -> Option<usize> {
        let n = needle
            .trim_matches(|c| c == '\'' || c == '"' || c == '`')
            .to_lowercase();
        if n.is_empty() {
            return None;
        }
        self.sql
            .lines()
            .position(|l| l.to_lowercase().contains(&n))
            .map(|i| i + self.sql_line)
    }
}

/// A model's declared output (seed 004's per-run CSV/JSON file in `s3_destiny`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    /// `csv`, `json` or `parquet`.
    pub format: String,
    pub sep: u8,
    /// A folder: a path or `s3://bucket/folder/` (default: seed 004's bucket
    /// `s3://api-extractor-output-prod/<table>/`).
    pub to: String,
    /// Files are `<name>_<UTC time of the commit>.<ext>` (default: the table's name).
    pub name: String,
}

/// Seed 004's default output bucket.
pub const DEFAULT_OUTPUT_BUCKET: &str = "api-extractor-output-prod";

fn output_spec(v: &str, target: Option<&str>) -> std::result::Result<OutputSpec, String> {
    let mut words = v.split_whitespace();
    let format = words.next().unwrap_or_default().to_lowercase();
    if !["csv", "json", "parquet"].contains(&format.as_str()) {
        return Err(format!("`{format}`: expected csv, json or parquet, then sep=<char> to=<folder> name=<name>"));
    }
    let table = target.and_then(|t| t.split('.').nth(1)).unwrap_or("output").to_string();
    let mut spec = OutputSpec { format, sep: b',', to: format!("s3://{DEFAULT_OUTPUT_BUCKET}/{table}/"), name: table };
    for w in words {
        match w.split_once('=') {
            Some(("sep", x)) => {
                let x = if x == "\\t" || x == "tab" { "\t" } else { x };
                match x.as_bytes() {
                    [b] if *b != b'"' && *b != b'\n' && *b != b'\r' => spec.sep = *b,
                    _ => return Err(format!("sep=`{x}`: one character (not a quote or line break; `tab` for a tab)")),
                }
            }
            Some(("to", x)) if !x.is_empty() => spec.to = if x.ends_with('/') { x.to_string() } else { format!("{x}/") },
            Some(("name", x)) if column_ok(x) => spec.name = x.to_string(),
            _ => return Err(format!("`{w}`: expected sep=<char>, to=<folder> or name=<letters, digits, _>")),
        }
    }
    Ok(spec)
}

/// A column name as a model may output it (mixed case allowed: `erpId`).
fn column_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Files of a clustered table: small enough that a day's MERGE rewrites a small share of the
/// table, large enough for readers (tests/bench/transform.sh measures both).
pub const DEFAULT_CLUSTERED_FILE_SIZE: u64 = 2 * 1024 * 1024;

pub fn parse(file: &str, text: &str) -> Result<Model> {
    let mut target = None;
    let mut unique_key = Vec::new();
    let mut order_by = None;
    let mut mode = None;
    let mut partition_by = Vec::new();
    let mut reads_all = false;
    let mut output_text: Option<(String, usize)> = None;
    let mut cluster_by = None;
    let mut target_file_size = None;
    let mut body_start = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let Some(c) = t.strip_prefix("--") else {
            body_start = Some(i);
            break;
        };
        let Some((k, v)) = c.split_once(':') else { continue };
        let (k, v) = (k.trim(), v.trim());
        let err = |m: String| Error::config(file, Some(i + 1), Some(k), m);
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        match k {
            "target" => {
                let parts: Vec<&str> = v.split('.').collect();
                if parts.len() != 2
                    || !parts.iter().all(|p| ident_ok(p))
                    || parts[0] == "raw"
                    || parts[0].starts_with('_')
                {
                    return Err(err(format!(
                        "`{v}`: expected <schema>.<table> in lower_snake_case (not raw.*)"
                    )));
                }
                target = Some(v.to_string());
            }
            "unique_key" => {
                unique_key = list(v);
                if let Some(bad) = unique_key.iter().find(|c| !column_ok(c)) {
                    return Err(err(format!("`{bad}` is not a column name")));
                }
            }
            "order_by" => order_by = Some(v.to_string()).filter(|s| !s.is_empty()),
            "mode" => {
                mode = Some(match v {
                    "merge" => Mode::Merge,
                    "append" => Mode::Append,
                    "replace" => Mode::Replace,
                    o => return Err(err(format!("`{o}`: expected merge, append or replace"))),
                })
            }
            "partition_by" => {
                partition_by = list(v);
                if let Some(bad) = partition_by.iter().find(|c| !ident_ok(c)) {
                    return Err(err(format!("`{bad}` is not a column name")));
                }
            }
            "cluster_by" => {
                if !column_ok(v) {
                    return Err(err(format!("`{v}`: expected one column name")));
                }
                cluster_by = Some(v.to_string());
            }
            "target_file_size" => {
                let n = crate::config::parse_size(v).map_err(|e| err(format!("`{v}`: {e}")))?;
                if n < 1024 {
                    return Err(err(format!("`{v}`: at least 1KiB")));
                }
                target_file_size = Some(n as u64);
            }
            "reads" => {
                reads_all = match v {
                    "all" => true,
                    "new" => false,
                    o => return Err(err(format!("`{o}`: expected all or new"))),
                }
            }
            "output" => output_text = Some((v.to_string(), i + 1)),
            "description" | "owner" | "note" => {}
            other => {
                return Err(err(format!(
                    "unknown header key `{other}` (target, unique_key, order_by, mode, partition_by, cluster_by, target_file_size, reads, output, description, note)"
                )))
            }
        }
    }
    let Some(start) = body_start else {
        return Err(Error::config(file, None, None, "no SQL after the header"));
    };
    let target = target.ok_or_else(|| {
        Error::config(
            file,
            Some(1),
            Some("target"),
            "the header has no `-- target: schema.table`",
        )
    })?;
    let mode = mode.unwrap_or(Mode::Merge);
    if mode == Mode::Merge && unique_key.is_empty() {
        return Err(Error::config(
            file,
            Some(1),
            Some("unique_key"),
            "mode merge needs `-- unique_key: col[, col]`",
        ));
    }
    let output = match output_text {
        Some((v, line)) => Some(output_spec(&v, Some(&target)).map_err(|m| Error::config(file, Some(line), Some("output"), m))?),
        None => None,
    };
    let sql: String = text.lines().skip(start).collect::<Vec<_>>().join("\n");
    let sql = sql.trim().trim_end_matches(';').to_string();
    Ok(Model {
        file: file.to_string(),
        target,
        unique_key,
        order_by,
        mode,
        partition_by,
        target_file_size: target_file_size.or(cluster_by.as_ref().map(|_| DEFAULT_CLUSTERED_FILE_SIZE)),
        cluster_by,
        reads_all,
        output,
        sql,
        sql_line: start + 1,
    })
}

/// Every model under `dir` (recursively), sorted by path.
pub fn load_dir(dir: &Path) -> Result<Vec<Model>> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "no SQL model folder at {} (set --sql)",
            dir.display()
        )));
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sql") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut models: Vec<Model> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let file = f.display().to_string();
        // `${env:NAME:-default}` in a model (seed 001's send-from date): substituted before
        // parsing, lines kept, an unset variable without a default named with its line.
        let text = crate::config::interp::substitute_env(&file, &text)?;
        let m = parse(&file, &text)?;
        if let Some(other) = models.iter().find(|o| o.target == m.target) {
            return Err(m.err_at(Some(1), format!("target {} is also built by {}", m.target, other.file)));
        }
        models.push(m);
    }
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_body() {
        let m = parse(
            "x.sql",
            "-- target: silver.t\n-- unique_key: id, page_id\n-- order_by: updated_at\n\nSELECT 1 AS id\nFROM raw.a;\n",
        )
        .unwrap();
        assert_eq!(m.unique_key, vec!["id", "page_id"]);
        assert_eq!(m.sql_line, 5);
        assert_eq!(m.sql, "SELECT 1 AS id\nFROM raw.a");
        let e = parse("x.sql", "-- target: silver.t\n-- unique_kye: id\nSELECT 1").unwrap_err();
        assert!(e.to_string().starts_with("x.sql:2"), "{e}");
        assert!(
            parse("x.sql", "-- target: silver.t\nSELECT 1").is_err(),
            "merge needs a key"
        );
    }
}
