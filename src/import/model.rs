//! The SQL model of one extraction: its `data_schema` as declared fields and as a SELECT in
//! the seed's column order, its `transformations` as SQL functions (highest `priority` first),
//! a `mapping_fetch` joined under its prefix, and its `-- output:` from `format`,
//! `output_params` and `s3_destiny`.
use super::cx::*;
use crate::error::Result;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Seed 004's default output bucket (`s3_destiny.bucket`).
const DEFAULT_BUCKET: &str = crate::transform::model::DEFAULT_OUTPUT_BUCKET;

/// One `data_schema` leaf: the field's path in the item and its column.
#[derive(Debug, Clone)]
pub(super) struct Leaf {
    pub(super) path: Vec<String>,
    pub(super) column: String,
    pub(super) json_path: String,
}

/// `data_schema` read in the seed's order.
pub(super) fn schema(cx: &Cx, v: &Value, path: &str, prefix: &[String], out: &mut Vec<Leaf>) -> Result<()> {
    let m = v.as_object().ok_or_else(|| cx.err(path, "a data_schema is an object: field → column name, or field → { nested fields }"))?;
    for (k, x) in m {
        let at = join(path, k);
        let mut p = prefix.to_vec();
        p.push(k.clone());
        match x {
            Value::String(col) => {
                if col.is_empty() || col.starts_with('_') || col.contains(['"', '\n']) {
                    return Err(cx.err(&at, format!("`{col}`: a column name that is not empty, has no quote and does not start with `_` (ingest's own columns)")));
                }
                if let Some(prev) = out.iter().find(|l| l.column == *col) {
                    return Err(cx.err(&at, format!("column `{col}` is already the name of {}", prev.json_path)));
                }
                out.push(Leaf { path: p, column: col.clone(), json_path: at });
            }
            Value::Object(_) => schema(cx, x, &at, &p, out)?,
            _ => return Err(cx.err(&at, "expected a column name (string) or an object of nested fields")),
        }
    }
    if m.is_empty() {
        return Err(cx.err(path, "an empty data_schema selects nothing; leave it out to keep every field"));
    }
    Ok(())
}

/// `[streams.x.schema]` lines: every field declared a string (the seed's CSV is text; the raw
/// table widens when the API sends more), objects as inline tables.
pub(super) fn declaration(leaves: &[Leaf]) -> Vec<String> {
    pub(super) fn render(leaves: &[&Leaf], depth: usize) -> Vec<(String, String)> {
        let mut out: Vec<(String, Vec<&Leaf>)> = Vec::new();
        for l in leaves {
            let k = l.path[depth].clone();
            match out.iter_mut().find(|(x, _)| *x == k) {
                Some((_, v)) => v.push(*l),
                None => out.push((k, vec![*l])),
            }
        }
        out.into_iter()
            .map(|(k, ls)| {
                if ls.len() == 1 && ls[0].path.len() == depth + 1 {
                    (key(&k), q("string"))
                } else {
                    let inner: Vec<&Leaf> = ls.into_iter().filter(|l| l.path.len() > depth + 1).collect();
                    let fields = render(&inner, depth + 1).into_iter().map(|(a, b)| format!("{a} = {b}")).collect::<Vec<_>>();
                    (key(&k), format!("{{ {} }}", fields.join(", ")))
                }
            })
            .collect()
    }
    render(&leaves.iter().collect::<Vec<_>>(), 0).into_iter().map(|(k, v)| format!("{k} = {v}")).collect()
}

/// A leaf as a SQL expression on table alias `t`.
pub(super) fn column_expr(t: &str, l: &Leaf) -> String {
    let mut e = format!("{t}.{}", ident(&l.path[0]));
    for s in &l.path[1..] {
        write!(e, "[{}]", lit(s)).unwrap();
    }
    e
}

pub(super) struct Column {
    pub(super) name: String,
    pub(super) expr: String,
    pub(super) from: String,
}

/// Apply `transformations` (highest priority first; ties in the config's order).
pub(super) fn transformations(cx: &Cx, v: Option<&Value>, path: &str, cols: &mut Vec<Column>) -> Result<()> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(()) };
    let a = v.as_array().ok_or_else(|| cx.err(path, "expected a list of transformations"))?;
    let mut ts = Vec::new();
    for (i, t) in a.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let m = cx.obj(t, &at, &["action", "priority", "on", "new_column_prefix", "params"])?;
        let priority = match m.get("priority") {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| cx.err(&join(&at, "priority"), "expected a number"))?,
            Some(_) => return Err(cx.err(&join(&at, "priority"), "expected a number")),
        };
        ts.push((priority, i, at, m));
    }
    // Highest first; a stable sort keeps the config's order among equals.
    ts.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for (_, _, at, m) in ts {
        let action = cx.req_str(m, &at, "action")?;
        let params = match m.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(p) => p.as_object().cloned().ok_or_else(|| cx.err(&join(&at, "params"), "expected an object"))?,
        };
        let pat = join(&at, "params");
        let only = |allowed: &[&str]| -> Result<()> {
            match params.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(cx.err(&join(&pat, k), format!("`{action}` takes {}", if allowed.is_empty() { "no params".to_string() } else { allowed.join(", ") }))),
                None => Ok(()),
            }
        };
        let s = |k: &str, required: bool| -> Result<Option<String>> {
            match params.get(k) {
                Some(Value::String(x)) => Ok(Some(x.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(cx.err(&join(&pat, k), format!("`{action}` needs params.{k}"))),
                Some(_) => Err(cx.err(&join(&pat, k), "expected a string")),
            }
        };
        let f: Box<dyn Fn(&str) -> String> = match action {
            "replace" => {
                only(&["to_replace", "value"])?;
                let (from, to) = (s("to_replace", true)?.unwrap_or_default(), s("value", false)?.unwrap_or_default());
                Box::new(move |e| format!("replace({e}, {}, {})", lit(&from), lit(&to)))
            }
            "trim" | "ltrim" | "rtrim" | "lower" | "upper" | "title" | "capitalize" => {
                only(&[])?;
                let func = if action == "trim" { "btrim" } else { action };
                Box::new(move |e| format!("{func}({e})"))
            }
            "split" => {
                only(&["char"])?;
                let c = s("char", true)?.unwrap_or_default();
                Box::new(move |e| format!("string_to_array({e}, {})", lit(&c)))
            }
            "join" => {
                only(&["sep"])?;
                let sep = s("sep", false)?.unwrap_or_default();
                Box::new(move |e| format!("array_to_string({e}, {})", lit(&sep)))
            }
            "slice" => {
                only(&["start", "stop"])?;
                let n = |k: &str| -> Result<Option<i64>> { cx.opt_int(&params, &pat, k) };
                let (a, b) = (n("start")?.unwrap_or(0), n("stop")?.unwrap_or(i64::MAX));
                Box::new(move |e| format!("slice({e}, {a}, {b})"))
            }
            other => {
                return Err(cx.err(
                    &join(&at, "action"),
                    format!("`{other}`: seed 004's actions are replace, trim, ltrim, rtrim, lower, upper, title, capitalize, split, join, slice"),
                ))
            }
        };
        let on = m.get("on").and_then(Value::as_array).ok_or_else(|| cx.err(&join(&at, "on"), "a list of column names"))?;
        let prefix = cx.opt_str(m, &at, "new_column_prefix")?;
        for (j, c) in on.iter().enumerate() {
            let cat = format!("{}[{j}]", join(&at, "on"));
            let c = c.as_str().ok_or_else(|| cx.err(&cat, "a column name"))?;
            let Some(idx) = cols.iter().position(|x| x.name == c) else {
                let names: Vec<&str> = cols.iter().map(|x| x.name.as_str()).collect();
                return Err(cx.err(&cat, format!("no column `{c}` (columns: {})", names.join(", "))));
            };
            let expr = f(&cols[idx].expr);
            match prefix {
                Some(p) if !p.is_empty() => {
                    let name = format!("{p}{c}");
                    if cols.iter().any(|x| x.name == name) {
                        return Err(cx.err(&join(&at, "new_column_prefix"), format!("column `{name}` exists already")));
                    }
                    cols.push(Column { name, expr, from: format!("{at} ({action} of {c})") });
                }
                _ => {
                    cols[idx].expr = expr;
                    write!(cols[idx].from, ", {action} ({at})").unwrap();
                }
            }
        }
    }
    Ok(())
}

/// `format`, `output_params` and `s3_destiny` as the value of a model's `-- output:`.
pub(super) fn output(cx: &Cx, m: &Map<String, Value>, at: &str, stream: &str) -> Result<String> {
    let format = cx.opt_str(m, at, "format")?.unwrap_or("csv");
    if !["csv", "json"].contains(&format) {
        return Err(cx.err(&join(at, "format"), format!("`{format}`: csv or json")));
    }
    let mut sep = ",".to_string();
    if let Some(op) = m.get("output_params").filter(|x| !x.is_null()) {
        let opp = join(at, "output_params");
        let o = cx.obj(op, &opp, &["csv_separator"])?;
        if let Some(s) = cx.opt_str(o, &opp, "csv_separator")? {
            if s.chars().count() != 1 || s == "\"" || s == "\n" || s == "\r" {
                return Err(cx.err(&join(&opp, "csv_separator"), format!("`{s}`: one character, not a quote or a line break")));
            }
            sep = if s == "\t" { "tab".into() } else { s.to_string() };
        }
    }
    let (mut bucket, mut folder, mut name) = (DEFAULT_BUCKET.to_string(), String::new(), stream.to_string());
    if let Some(d) = m.get("s3_destiny").filter(|x| !x.is_null()) {
        let dp = join(at, "s3_destiny");
        // `filename` is not in the seed's structure, but its tickets config writes it.
        let o = cx.obj(d, &dp, &["bucket", "folder", "filename"])?;
        if let Some(b) = cx.opt_str(o, &dp, "bucket")?.filter(|b| !b.is_empty()) {
            if !b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
                return Err(cx.err(&join(&dp, "bucket"), format!("`{b}` is not an S3 bucket name")));
            }
            bucket = b.to_string();
        }
        if let Some(f) = cx.opt_str(o, &dp, "folder")? {
            if f.contains(char::is_whitespace) || f.contains("..") {
                return Err(cx.err(&join(&dp, "folder"), format!("`{f}`: a folder without spaces or `..`")));
            }
            folder = f.trim_matches('/').to_string();
        }
        if let Some(f) = cx.opt_str(o, &dp, "filename")? {
            name = slug(f);
            if name.is_empty() {
                return Err(cx.err(&join(&dp, "filename"), format!("`{f}` has no letter or digit")));
            }
        }
    }
    let folder = if folder.is_empty() { String::new() } else { format!("{folder}/") };
    Ok(format!("{format} sep={sep} to=${{env:{}_OUTPUT_URL:-s3://{bucket}}}/{folder} name={name}", cx.env))
}

/// A `mapping_fetch` as the model sees it: its raw stream, prefix and fields.
pub(super) struct Detail {
    pub(super) stream: String,
    pub(super) prefix: String,
    pub(super) leaves: Vec<Leaf>,
}

/// What one extraction's model is made of.
pub(super) struct Spec<'a> {
    pub(super) source: &'a str,
    pub(super) stream: &'a str,
    /// `extractions[i]`
    pub(super) at: &'a str,
    pub(super) raw_name: &'a str,
    pub(super) file_name: &'a str,
    pub(super) leaves: &'a [Leaf],
    pub(super) key: Option<&'a Leaf>,
    /// The incremental cursor's field (the model's `order_by` when data_schema maps it).
    pub(super) cursor: Option<&'a str>,
    pub(super) detail: Option<&'a Detail>,
    pub(super) output: String,
}

/// The model file: (path under the SQL folder, text).
pub(super) fn model(cx: &Cx, m: &Map<String, Value>, sp: &Spec) -> Result<(String, String)> {
    let target = format!("{}_{}", sp.source, sp.stream);
    let lt = if sp.detail.is_some() { "l" } else { "t" };
    let mut cols: Vec<Column> = sp
        .leaves
        .iter()
        .map(|l| Column { name: l.column.clone(), expr: column_expr(lt, l), from: l.json_path.clone() })
        .collect();
    if let Some(d) = sp.detail {
        cols.extend(d.leaves.iter().map(|l| Column { name: format!("{}{}", d.prefix, l.column), expr: column_expr("d", l), from: l.json_path.clone() }));
    }
    transformations(cx, m.get("transformations"), &join(sp.at, "transformations"), &mut cols)?;
    let mut s = String::new();
    writeln!(s, "-- target: silver.{target}").unwrap();
    match sp.key {
        Some(k) => writeln!(s, "-- unique_key: {}", k.column).unwrap(),
        None => writeln!(s, "-- mode: append").unwrap(),
    }
    if let Some(l) = sp.cursor.and_then(|f| sp.leaves.iter().find(|l| l.path == [f])) {
        writeln!(s, "-- order_by: {}", l.column).unwrap();
    }
    if sp.detail.is_some() {
        writeln!(s, "-- reads: all").unwrap();
    }
    writeln!(s, "-- output: {}", sp.output).unwrap();
    writeln!(
        s,
        "-- description: seed 004 extraction \"{}\" ({}) of {}: data_schema columns in the config's order, transformations by priority{}.",
        sp.raw_name.replace('\n', " "),
        sp.at,
        sp.file_name,
        if sp.detail.is_some() { ", mapping_fetch fields under their prefix" } else { "" }
    )
    .unwrap();
    if sp.leaves.is_empty() {
        writeln!(s, "-- No data_schema: every field as it comes (the seed keeps the item as the API sends it).").unwrap();
        writeln!(s, "SELECT *\nFROM raw.{target} t").unwrap();
        return Ok((format!("silver/{target}.sql"), s));
    }
    writeln!(s, "SELECT").unwrap();
    for c in &cols {
        writeln!(s, "  {} AS {}, -- {}", c.expr, ident(&c.name), c.from).unwrap();
    }
    writeln!(s, "  {lt}._ingest_order").unwrap();
    writeln!(s, "FROM raw.{target} {lt}").unwrap();
    if let (Some(d), Some(k)) = (sp.detail, sp.key) {
        // The latest detail landed for each item (one per item version).
        writeln!(s, "LEFT JOIN (").unwrap();
        writeln!(
            s,
            "  SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY _parent_key ORDER BY _ingest_order DESC) AS _rank FROM raw.{}_{})",
            sp.source, d.stream
        )
        .unwrap();
        writeln!(s, "  WHERE _rank = 1").unwrap();
        writeln!(s, ") d ON CAST({} AS VARCHAR) = d._parent_key", column_expr("l", k)).unwrap();
    }
    Ok((format!("silver/{target}.sql"), s))
}
