//! Declared stream schemas and contracts: what a pipeline file says a raw stream's records
//! hold, whatever the API sends on a given day.
//!
//! A declaration is a TOML table of field → type, where a type is `"string"`, `"int"`,
//! `"float"`, `"bool"`, a table (an object: its own fields), or a one-item array (a list of
//! that type): `customers = [{ id = "string", fb_id = "string", name = "string" }]`. It is
//! written on a stream (`[streams.<name>.schema]`, for the stream's own records) or for any
//! raw stream the file lands, outputs and detail streams included (`[schemas.<raw stream>]`).
//!
//! The transform plans a raw stream with the declared schema widened by what landed (see
//! `lake::schema::union`): a declared field no record has is a typed NULL column at any depth,
//! and a stream that landed nothing still has its declared columns. The `contract` of a stream
//! (`evolve`, `freeze`, `discard_value`) says what a pull does with a field or a type the
//! declaration lacks; it applies to every raw stream the stream lands.
use super::interp::line_of;
use crate::error::{Error, Result};
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What a pull does with a record holding a field, or a type, its declaration lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Contract {
    /// Land it; the raw table widens (int → float → string, new fields added).
    #[default]
    Evolve,
    /// Fail the stream naming the record and the field; nothing of that page is committed.
    Freeze,
    /// Land the record without the value (counted, with a warning).
    DiscardValue,
}

impl Contract {
    pub fn parse(s: &str) -> std::result::Result<Contract, String> {
        match s {
            "evolve" => Ok(Contract::Evolve),
            "freeze" => Ok(Contract::Freeze),
            "discard_value" => Ok(Contract::DiscardValue),
            other => Err(format!("`{other}`: expected evolve, freeze or discard_value")),
        }
    }
}

/// A raw stream's declaration.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The source (pipeline) that lands the stream.
    pub source: String,
    pub schema: Schema,
    pub contract: Contract,
}

/// A declared type: `(field path, message)` on error.
fn parse_type(v: &toml::Value, path: &str) -> std::result::Result<DataType, (String, String)> {
    Ok(match v {
        toml::Value::String(s) => match s.as_str() {
            "string" | "text" => DataType::Utf8,
            "int" | "integer" => DataType::Int64,
            "float" | "number" | "double" => DataType::Float64,
            "bool" | "boolean" => DataType::Boolean,
            other => {
                return Err((
                    path.to_string(),
                    format!("unknown type `{other}` (string, int, float, bool; {{ … }} for an object, [T] for a list)"),
                ))
            }
        },
        toml::Value::Table(t) => DataType::Struct(parse_fields(t, path)?),
        toml::Value::Array(a) if a.len() == 1 => {
            DataType::List(Arc::new(Field::new("item", parse_type(&a[0], &format!("{path}[]"))?, true)))
        }
        toml::Value::Array(_) => {
            return Err((path.to_string(), "a list type is a one-item array: [\"string\"] or [{ … }]".into()))
        }
        _ => return Err((path.to_string(), "a type is a string (\"string\", \"int\"…), a table or a one-item array".into())),
    })
}

fn parse_fields(t: &toml::map::Map<String, toml::Value>, path: &str) -> std::result::Result<Fields, (String, String)> {
    let mut out = Vec::with_capacity(t.len());
    for (k, v) in t {
        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        out.push(Field::new(k, parse_type(v, &p)?, true));
    }
    Ok(Fields::from(out))
}

/// A declaration table as an Arrow schema (fields in the file's order).
pub fn parse_schema(v: &toml::Value) -> std::result::Result<Schema, (String, String)> {
    match v {
        toml::Value::Table(t) => Ok(Schema::new(parse_fields(t, "")?)),
        _ => Err((String::new(), "a schema is a table of field = type".into())),
    }
}

/// A schema as a declaration (`ingest pipeline schema`): the TOML lines of a
/// `[schemas.<stream>]` table. Types nothing landed for (all NULL) are left as `"string"`.
pub fn to_toml(s: &Schema) -> String {
    fn key(k: &str) -> String {
        if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            k.to_string()
        } else {
            serde_json::to_string(k).unwrap_or_default()
        }
    }
    fn ty(t: &DataType) -> String {
        match t {
            DataType::Boolean => "\"bool\"".into(),
            DataType::Int64 => "\"int\"".into(),
            DataType::Float64 => "\"float\"".into(),
            DataType::List(f) => format!("[{}]", ty(f.data_type())),
            DataType::Struct(fs) => {
                let inner: Vec<String> = fs.iter().map(|f| format!("{} = {}", key(f.name()), ty(f.data_type()))).collect();
                format!("{{ {} }}", inner.join(", "))
            }
            _ => "\"string\"".into(),
        }
    }
    s.fields().iter().map(|f| format!("{} = {}\n", key(f.name()), ty(f.data_type()))).collect()
}

/// The declarations of one parsed pipeline file, per raw stream name (`<stream>`, as the file
/// lands it). `text` is the file's text after substitution (for line numbers).
pub fn of_file(file: &str, text: &str, doc: &toml::Value) -> Result<BTreeMap<String, Declared>> {
    let source = doc.get("source").and_then(|s| s.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
    let err = |path: &[&str], msg: String| {
        Error::config(file, line_of(text, path), Some(&path.join(".")), msg)
    };
    // A declaration's schema, an error naming the table it sits in and its first field.
    let declared_at = |v: &toml::Value, at: &[&str]| {
        parse_schema(v).map_err(|(p, m)| {
            let mut path = at.to_vec();
            path.extend(p.split('.').filter(|x| !x.is_empty()).take(1));
            err(&path, if p.is_empty() { m } else { format!("`{p}`: {m}") })
        })
    };
    let mut out: BTreeMap<String, Declared> = BTreeMap::new();
    // Raw streams each stream lands, and its contract.
    let mut lands: BTreeMap<String, Contract> = BTreeMap::new();
    let empty = toml::map::Map::new();
    let streams = doc.get("streams").and_then(|s| s.as_table()).unwrap_or(&empty);
    for (name, s) in streams {
        let contract = match s.get("contract") {
            None => Contract::Evolve,
            Some(toml::Value::String(c)) => Contract::parse(c).map_err(|m| err(&["streams", name, "contract"], m))?,
            Some(_) => return Err(err(&["streams", name, "contract"], "expected evolve, freeze or discard_value".into())),
        };
        let outs: Vec<String> = match s.get("outputs").and_then(|o| o.as_array()) {
            Some(a) if !a.is_empty() => {
                a.iter().filter_map(|o| o.get("stream").and_then(|x| x.as_str()).map(str::to_string)).collect()
            }
            _ => vec![name.clone()],
        };
        for o in outs {
            lands.insert(o, contract);
        }
        if let Some(d) = s.get("details").and_then(|d| d.get("stream")).and_then(|x| x.as_str()) {
            lands.insert(d.to_string(), contract);
        }
        if let Some(v) = s.get("schema") {
            if s.get("outputs").and_then(|o| o.as_array()).is_some_and(|a| !a.is_empty()) {
                return Err(err(
                    &["streams", name, "schema"],
                    "a stream with `outputs` declares each output as [schemas.<output stream>]".into(),
                ));
            }
            let schema = declared_at(v, &["streams", name.as_str(), "schema"])?;
            out.insert(name.clone(), Declared { source: source.clone(), schema, contract });
        }
    }
    if let Some(t) = doc.get("schemas") {
        let Some(t) = t.as_table() else {
            return Err(err(&["schemas"], "expected tables [schemas.<raw stream>]".into()));
        };
        for (raw, v) in t {
            let Some(contract) = lands.get(raw) else {
                return Err(err(
                    &["schemas", raw],
                    format!("no stream of this file lands `{raw}` (raw streams: {})", lands.keys().cloned().collect::<Vec<_>>().join(", ")),
                ));
            };
            if out.contains_key(raw) {
                return Err(err(&["schemas", raw], format!("`{raw}` is declared twice (here and on its stream)")));
            }
            let schema = declared_at(v, &["schemas", raw.as_str()])?;
            out.insert(raw.clone(), Declared { source: source.clone(), schema, contract: *contract });
        }
    }
    Ok(out)
}

/// Every pipeline file's declarations under `dir`, per raw table (`raw.<source>_<stream>`),
/// without resolving secrets or requiring the environment a pull needs (an unset `${env:…}`
/// reads as `0` here): a transform reads declarations on a machine that holds no API token.
pub fn declarations(dir: &Path) -> Result<BTreeMap<String, Declared>> {
    let mut out = BTreeMap::new();
    for source in super::list_sources(dir) {
        let path = dir.join(format!("{source}.toml"));
        let file = path.display().to_string();
        let raw = std::fs::read_to_string(&path).map_err(|e| Error::Usage(format!("cannot read {file}: {e}")))?;
        if !raw.contains("schema") && !raw.contains("contract") {
            continue;
        }
        let (text, doc) = super::interp::offline(&file, &raw)?;
        for (stream, mut d) in of_file(&file, &text, &doc)? {
            if d.source.is_empty() {
                d.source = source.clone();
            }
            out.insert(format!("raw.{}_{stream}", d.source), d);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_parse_nested_types_in_order() {
        let text = "[source]\nname = \"p\"\n[streams.c]\npath = \"/c\"\ncontract = \"freeze\"\n[streams.c.schema]\nid = \"string\"\nn = \"int\"\ncustomers = [{ id = \"string\", fb_id = \"string\" }]\nr = { like = \"int\" }\n";
        let doc: toml::Value = toml::from_str(text).unwrap();
        let d = of_file("p.toml", text, &doc).unwrap();
        let c = &d["c"];
        assert_eq!(c.contract, Contract::Freeze);
        let names: Vec<&str> = c.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "n", "customers", "r"]);
        let DataType::List(item) = c.schema.field(2).data_type() else { panic!() };
        let DataType::Struct(fs) = item.data_type() else { panic!() };
        assert_eq!(fs[1].name(), "fb_id");
        let back = to_toml(&c.schema);
        assert!(back.contains("customers = [{ id = \"string\", fb_id = \"string\" }]"), "{back}");
    }

    #[test]
    fn a_bad_type_names_file_line_and_field() {
        let text = "[source]\nname = \"p\"\n[streams.c]\npath = \"/c\"\n[streams.c.schema]\nid = \"string\"\nn = \"integr\"\n";
        let doc: toml::Value = toml::from_str(text).unwrap();
        let e = of_file("p.toml", text, &doc).unwrap_err().to_string();
        assert!(e.contains("p.toml:7") && e.contains("integr") && e.contains("streams.c.schema.n"), "{e}");
        let text = "[source]\nname = \"p\"\n[streams.c]\npath = \"/c\"\n[schemas.nope]\nid = \"string\"\n";
        let doc: toml::Value = toml::from_str(text).unwrap();
        let e = of_file("p.toml", text, &doc).unwrap_err().to_string();
        assert!(e.contains("p.toml:5") && e.contains("no stream of this file lands `nope`"), "{e}");
    }
}
