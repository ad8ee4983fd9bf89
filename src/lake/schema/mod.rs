//! The schema of a raw stream, kept at pull time: each landed file's inferred Arrow schema is
//! stored with its catalogue row (JSON), and a stream's schema is the union of its current
//! files' schemas, widened where they disagree (null → anything, int → float → string, struct
//! fields merged, lists by item). So a model plans the same whatever batch of files it reads.
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema};
use std::sync::Arc;

mod walk;

/// The shape of JSON values seen so far, merged record by record while a raw file is written
/// (cheaper than Arrow's inference: no intermediate schema per batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Shape {
    #[default]
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<Shape>),
    Obj(Vec<(String, Shape)>),
}

impl Shape {
    pub fn add(&mut self, v: &serde_json::Value) {
        use serde_json::Value as V;
        match (&mut *self, v) {
            (_, V::Null) => {}
            (Shape::Obj(fields), V::Object(m)) => {
                for (k, x) in m {
                    match fields.iter_mut().find(|(n, _)| n == k) {
                        Some((_, s)) => s.add(x),
                        None => {
                            let mut s = Shape::Null;
                            s.add(x);
                            fields.push((k.clone(), s));
                        }
                    }
                }
            }
            (Shape::List(item), V::Array(a)) => a.iter().for_each(|x| item.add(x)),
            (Shape::Null, x) => {
                *self = match x {
                    V::Bool(_) => Shape::Bool,
                    V::Number(n) if n.is_i64() || n.is_u64() => Shape::Int,
                    V::Number(_) => Shape::Float,
                    V::String(_) => Shape::Str,
                    V::Array(_) => Shape::List(Box::new(Shape::Null)),
                    V::Object(_) => Shape::Obj(Vec::new()),
                    V::Null => Shape::Null,
                };
                if matches!(x, V::Array(_) | V::Object(_)) {
                    self.add(x);
                }
            }
            (Shape::Int, V::Number(n)) if !(n.is_i64() || n.is_u64()) => *self = Shape::Float,
            (Shape::Int | Shape::Float, V::Number(_)) | (Shape::Bool, V::Bool(_)) | (Shape::Str, V::String(_)) => {}
            (Shape::Bool, V::Number(n)) if n.is_i64() => *self = Shape::Int,
            (Shape::Int, V::Bool(_)) => {}
            _ => *self = Shape::Str,
        }
    }

    /// Whether [`Self::add`] of `v` would leave this shape as it is.
    pub fn within(&self, v: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (self, v) {
            (_, V::Null) | (Shape::Str, _) | (Shape::Bool | Shape::Int, V::Bool(_)) | (Shape::Float, V::Number(_)) => true,
            (Shape::Int, V::Number(n)) => n.is_i64() || n.is_u64(),
            (Shape::Obj(fs), V::Object(m)) => {
                m.iter().all(|(k, x)| fs.iter().find(|(n, _)| n == k).is_some_and(|(_, s)| s.within(x)))
            }
            (Shape::List(item), V::Array(a)) => a.iter().all(|x| item.within(x)),
            _ => false,
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Shape::Null => DataType::Null,
            Shape::Bool => DataType::Boolean,
            Shape::Int => DataType::Int64,
            Shape::Float => DataType::Float64,
            Shape::Str => DataType::Utf8,
            Shape::List(i) => DataType::List(Arc::new(Field::new("item", i.data_type(), true))),
            Shape::Obj(fs) => DataType::Struct(Fields::from(
                fs.iter().map(|(n, s)| Field::new(n, s.data_type(), true)).collect::<Vec<_>>(),
            )),
        }
    }

    /// The schema of records of this shape (an object; anything else has no columns).
    pub fn schema(&self) -> Schema {
        match self.data_type() {
            DataType::Struct(fs) => Schema::new(fs),
            _ => Schema::empty(),
        }
    }
}

/// The narrowest type holding values of both `a` and `b`.
pub fn widen(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    match (a, b) {
        (x, y) if x == y => x.clone(),
        (Null, x) | (x, Null) => x.clone(),
        (Int64, Float64) | (Float64, Int64) => Float64,
        (Boolean, Int64) | (Int64, Boolean) => Int64,
        (Struct(fa), Struct(fb)) => Struct(merge_fields(fa, fb)),
        (List(ia), List(ib)) => List(Arc::new(Field::new(
            ia.name(),
            widen(ia.data_type(), ib.data_type()),
            true,
        ))),
        _ => Utf8,
    }
}

fn merge_fields(a: &Fields, b: &Fields) -> Fields {
    let mut out: Vec<Field> = a.iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    for f in b {
        match out.iter_mut().find(|o| o.name() == f.name()) {
            Some(o) => *o = Field::new(o.name(), widen(o.data_type(), f.data_type()), true),
            None => out.push(f.as_ref().clone().with_nullable(true)),
        }
    }
    Fields::from(out)
}

/// Union of two schemas, widened.
pub fn union(a: &Schema, b: &Schema) -> Schema {
    Schema::new(merge_fields(a.fields(), b.fields()))
}

/// Whether a JSON scalar/array/object fits a declared type without widening it: a string
/// column takes any scalar, a float any number, an int integers (and booleans), a struct an
/// object whose members fit, a list an array whose items fit. NULL fits anything.
fn fits(t: &DataType, v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (t, v) {
        (_, V::Null) => true,
        (DataType::Utf8, V::String(_) | V::Number(_) | V::Bool(_)) => true,
        (DataType::Float64, V::Number(_)) => true,
        (DataType::Int64, V::Number(n)) => n.is_i64() || n.is_u64(),
        (DataType::Int64 | DataType::Boolean, V::Bool(_)) => true,
        (DataType::Struct(_), V::Object(_)) | (DataType::List(_), V::Array(_)) => true,
        _ => false,
    }
}

/// The non-NULL members of `record` its declaration (`fields`) lacks, or whose value does not fit the
/// declared type, as dotted paths (`customers[].id`), at any depth; with `drop`, each such
/// value is removed from the record (a list item that is not an object nor fits is removed
/// from its list). Used by a stream's `contract` (`freeze` reports, `discard_value` drops).
pub fn outside(fields: &Fields, record: &mut serde_json::Value, drop: bool) -> Vec<String> {
    fn members(fields: &Fields, m: &mut serde_json::Map<String, serde_json::Value>, path: &str, drop: bool, out: &mut Vec<String>) {
        let mut bad: Vec<String> = Vec::new();
        for (k, v) in m.iter_mut() {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            match fields.iter().find(|f| f.name() == k) {
                // A NULL adds neither a value nor a type: not outside the declaration.
                None if v.is_null() => {}
                None => bad.push(k.clone()),
                Some(f) if !fits(f.data_type(), v) => bad.push(k.clone()),
                Some(f) => value(f.data_type(), v, &p, drop, out),
            }
        }
        for k in bad {
            out.push(if path.is_empty() { k.clone() } else { format!("{path}.{k}") });
            if drop {
                m.remove(&k);
            }
        }
    }
    fn value(t: &DataType, v: &mut serde_json::Value, path: &str, drop: bool, out: &mut Vec<String>) {
        match (t, v) {
            (DataType::Struct(fs), serde_json::Value::Object(m)) => members(fs, m, path, drop, out),
            (DataType::List(item), serde_json::Value::Array(a)) => {
                let p = format!("{path}[]");
                let before = out.len();
                a.retain_mut(|x| {
                    if fits(item.data_type(), x) {
                        value(item.data_type(), x, &p, drop, out);
                        true
                    } else {
                        out.push(p.clone());
                        !drop
                    }
                });
                // One report per list, not per item.
                let mut seen = std::collections::BTreeSet::new();
                let mut i = before;
                while i < out.len() {
                    if seen.insert(out[i].clone()) {
                        i += 1;
                    } else {
                        out.remove(i);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let serde_json::Value::Object(m) = record {
        members(fields, m, "", drop, &mut out);
    }
    out
}

/// A compact JSON form of the types JSON inference produces: `"null"`, `"bool"`, `"int"`,
/// `"float"`, `"string"`, `{"list": T}`, `{"struct": [[name, T], …]}` (others as `"string"`).
fn type_json(t: &DataType) -> serde_json::Value {
    use serde_json::json;
    match t {
        DataType::Null => json!("null"),
        DataType::Boolean => json!("bool"),
        DataType::Int64 => json!("int"),
        DataType::Float64 => json!("float"),
        DataType::List(f) => json!({"list": type_json(f.data_type())}),
        DataType::Struct(fs) => json!({"struct": fs.iter().map(|f| json!([f.name(), type_json(f.data_type())])).collect::<Vec<_>>()}),
        _ => json!("string"),
    }
}

fn json_type(v: &serde_json::Value) -> Option<DataType> {
    Some(match v {
        serde_json::Value::String(s) => match s.as_str() {
            "null" => DataType::Null,
            "bool" => DataType::Boolean,
            "int" => DataType::Int64,
            "float" => DataType::Float64,
            _ => DataType::Utf8,
        },
        serde_json::Value::Object(m) => {
            if let Some(item) = m.get("list") {
                DataType::List(Arc::new(Field::new("item", json_type(item)?, true)))
            } else {
                DataType::Struct(fields_json(m.get("struct")?)?)
            }
        }
        _ => return None,
    })
}

fn fields_json(v: &serde_json::Value) -> Option<Fields> {
    let mut out = Vec::new();
    for f in v.as_array()? {
        let pair = f.as_array()?;
        out.push(Field::new(pair.first()?.as_str()?, json_type(pair.get(1)?)?, true));
    }
    Some(Fields::from(out))
}

pub fn to_json(s: &Schema) -> String {
    type_json(&DataType::Struct(s.fields().clone()))["struct"].to_string()
}

pub fn from_json(s: &str) -> Option<Schema> {
    Some(Schema::new(fields_json(&serde_json::from_str(s).ok()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening() {
        use DataType::*;
        assert_eq!(widen(&Int64, &Float64), Float64);
        assert_eq!(widen(&Float64, &Utf8), Utf8);
        assert_eq!(widen(&Null, &Int64), Int64);
        let a = Schema::new(vec![Field::new("a", Int64, true)]);
        let b = Schema::new(vec![Field::new("a", Float64, true), Field::new("b", Utf8, true)]);
        let u = union(&a, &b);
        assert_eq!(u.fields().len(), 2);
        assert_eq!(u.field(0).data_type(), &Float64);
        assert_eq!(from_json(&to_json(&u)).unwrap(), u);
    }

    #[test]
    fn outside_the_declaration_at_any_depth() {
        use DataType::*;
        let item = Fields::from(vec![Field::new("id", Utf8, true), Field::new("name", Utf8, true)]);
        let fields = Fields::from(vec![
            Field::new("id", Int64, true),
            Field::new("customers", List(Arc::new(Field::new("item", Struct(item), true))), true),
        ]);
        let mut r = serde_json::json!({"id": 1, "customers": [{"id": "a", "fb": 1}, {"name": "b", "fb": 2}], "extra": true});
        let mut kept = r.clone();
        assert_eq!(outside(&fields, &mut kept, false), vec!["customers[].fb", "extra"]);
        assert_eq!(kept, r);
        assert_eq!(outside(&fields, &mut r, true).len(), 2);
        assert_eq!(r, serde_json::json!({"id": 1, "customers": [{"id": "a"}, {"name": "b"}]}));
        let mut drift = serde_json::json!({"id": "12"});
        assert_eq!(outside(&fields, &mut drift, true), vec!["id"]);
        assert_eq!(drift, serde_json::json!({}));
        let mut fine = serde_json::json!({"id": null, "customers": null});
        assert!(outside(&fields, &mut fine, false).is_empty());
    }

    #[test]
    fn shapes_agree_with_arrow_inference() {
        let recs = [
            serde_json::json!({"a": 1, "b": {"c": "x"}, "l": [1, 2]}),
            serde_json::json!({"a": 1.5, "b": {"d": true}, "l": [], "n": null}),
        ];
        let mut s = Shape::Null;
        recs.iter().for_each(|r| s.add(r));
        let arrow =
            deltalake::arrow::json::reader::infer_json_schema_from_iterator(recs.iter().map(Ok)).unwrap();
        assert_eq!(s.schema(), arrow);
    }
}
