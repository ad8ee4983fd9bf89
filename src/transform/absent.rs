//! Fields a model names that no landed record of an undeclared stream has: found in the
//! planner's error (top-level: DataFusion's typed "field not found"; nested: the struct
//! accessor's message plus the SQL text), and the schema that makes them plannable (read as
//! NULL). Declared streams never take this path (see `transform`).
use deltalake::arrow::datatypes::Schema;

/// A field a model names that its raw input lacks: (raw table, field path). Top-level
/// columns come as DataFusion's typed "field not found"; nested ones (`a['b']['c']`) as the
/// struct accessor's error.
pub(super) fn missing_field(
    e: &deltalake::datafusion::error::DataFusionError,
    raw_refs: &[&String],
    sql: &str,
    schemas: &[(String, deltalake::arrow::datatypes::SchemaRef)],
) -> Option<(String, Vec<String>)> {
    use deltalake::datafusion::common::SchemaError;
    use deltalake::datafusion::error::DataFusionError;
    let root = e.find_root();
    let only = || (raw_refs.len() == 1).then(|| raw_refs[0].clone());
    // Several raw inputs and an unqualified name: the one raw stream still empty (no data
    // column yet) is the one lacking it.
    let empty_one = || {
        let empty: Vec<&String> = schemas
            .iter()
            .filter(|(_, s)| s.fields().iter().all(|f| f.name().starts_with('_')))
            .map(|(t, _)| t)
            .collect();
        (empty.len() == 1).then(|| empty[0].clone())
    };
    if let DataFusionError::SchemaError(err, _) = root {
        if let SchemaError::FieldNotFound { field, valid_fields } = err.as_ref() {
            // A name that exists in another case is a typo (unquoted mixed-case names are
            // lower-cased by SQL), not an absent field: let it fail planning.
            if valid_fields.iter().any(|v| v.name.eq_ignore_ascii_case(&field.name)) {
                return None;
            }
            let table = match &field.relation {
                Some(r) => {
                    let r = r.to_string().to_lowercase();
                    raw_refs.iter().find(|t| ***t == r).map(|t| (*t).clone()).or_else(only)
                }
                None => only().or_else(empty_one),
            }?;
            return Some((table, shape_of(sql, &field.name)));
        }
    }
    None
}

/// The shape a missing top-level field must have for `sql` to plan: `f['a']['b']` → nested
/// structs, `f[1]` → a list of text, else text.
fn shape_of(sql: &str, name: &str) -> Vec<String> {
    let esc = regex::escape(name);
    let chain = regex::Regex::new(&format!(r"\b{esc}((?:\s*\[\s*'[^']*'\s*\])+)")).expect("valid regex");
    let seg = regex::Regex::new(r"'([^']*)'").expect("valid regex");
    let mut path = vec![name.to_string()];
    if let Some(c) = chain.captures(sql) {
        path.extend(seg.captures_iter(&c[1]).map(|c| c[1].to_string()));
    } else if regex::Regex::new(&format!(r"\b{esc}\s*\[\s*[0-9]")).expect("valid regex").is_match(sql) {
        path.push(LIST_MARK.to_string());
    }
    path
}

/// A path segment meaning "a list of".
const LIST_MARK: &str = "[]";

/// A nested field a model reads (`root['a']['b']`) that the raw stream's struct lacks. The
/// struct accessor reports only the missing name, so the path is taken from the SQL text: the
/// first bracket chain naming it whose path the stream's schema does not have.
pub(super) fn missing_nested(
    e: &deltalake::datafusion::error::DataFusionError,
    sql: &str,
    schemas: &[(String, deltalake::arrow::datatypes::SchemaRef)],
) -> Option<(String, Vec<String>)> {
    use deltalake::arrow::datatypes::{DataType, Fields};
    let msg = e.find_root().to_string();
    let name = msg.split("Field ").nth(1)?.split(" not found in struct").next()?.to_string();
    let chain = regex::Regex::new(r"([A-Za-z_][A-Za-z0-9_]*)((?:\s*\[\s*'[^']*'\s*\])+)").ok()?;
    let seg = regex::Regex::new(r"'([^']*)'").ok()?;
    fn has(fields: &Fields, path: &[String]) -> bool {
        let Some(f) = fields.iter().find(|f| f.name() == &path[0]) else {
            return false;
        };
        match (f.data_type(), path.len()) {
            (_, 1) => true,
            (DataType::Struct(inner), _) => has(inner, &path[1..]),
            _ => false,
        }
    }
    for cap in chain.captures_iter(sql) {
        let mut path = vec![cap[1].to_string()];
        path.extend(seg.captures_iter(&cap[2]).map(|c| c[1].to_string()));
        let Some(at) = path.iter().skip(1).position(|p| *p == name) else {
            continue;
        };
        for (table, schema) in schemas {
            if schema.field_with_name(&path[0]).is_ok() && !has(schema.fields(), &path[..at + 2]) {
                return Some((table.clone(), path));
            }
        }
    }
    None
}

/// A schema holding just `path` (nested structs down to a text leaf; `[]` = a list of it).
pub(super) fn schema_with_path(path: &[String]) -> Schema {
    use deltalake::arrow::datatypes::{DataType, Field};
    let mut t = DataType::Utf8;
    for seg in path[1..].iter().rev() {
        t = if seg == LIST_MARK {
            DataType::List(std::sync::Arc::new(Field::new("item", t, true)))
        } else {
            DataType::Struct(vec![Field::new(seg, t, true)].into())
        };
    }
    Schema::new(vec![Field::new(&path[0], t, true)])
}
