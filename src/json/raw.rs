//! Records kept as the bytes the API sent. A page is parsed once: the envelope (paging
//! tokens, totals) becomes a `Value`, the records array does not — each record stays a byte
//! range of the body, and the few fields a pull needs (cursor, key) are picked from those
//! bytes. Building every record into a `Value` and serialising it again cost most of a pull's
//! CPU (tests/bench/pull.sh).
use serde::de::value::SeqAccessDeserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde::Deserializer;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// A body parsed with the records at one path left as bytes.
#[derive(Debug)]
pub struct Split {
    /// The body, with an empty array where the records were (when they were found).
    pub envelope: Value,
    /// Byte ranges of the records in the body; `None` when the path does not lead to an array
    /// (then `envelope` is the whole body).
    pub records: Option<Vec<Range<usize>>>,
}

/// Parse `body`, keeping the array at `path` (a non-empty path of object keys) as ranges.
/// Fails like `serde_json::from_slice` on invalid or truncated JSON.
pub fn split(body: &str, path: &[String]) -> serde_json::Result<Split> {
    let mut records = None;
    let mut de = serde_json::Deserializer::from_str(body);
    let envelope = Level { path, base: body.as_ptr() as usize, out: &mut records }.deserialize(&mut de)?;
    de.end()?;
    Ok(Split { envelope, records })
}

/// One level of [`split`]: builds a `Value`, except under the keys of `path`.
struct Level<'a> {
    path: &'a [String],
    base: usize,
    out: &'a mut Option<Vec<Range<usize>>>,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.path.is_empty() {
            let mut ranges = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(r) = seq.next_element::<&'de RawValue>()? {
                let start = r.get().as_ptr() as usize - self.base;
                ranges.push(start..start + r.get().len());
            }
            *self.out = Some(ranges);
            return Ok(Value::Array(Vec::new()));
        }
        Value::deserialize(SeqAccessDeserializer::new(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        let (first, rest) = match self.path.split_first() {
            Some((f, r)) => (Some(f.as_str()), r),
            None => (None, self.path),
        };
        while let Some(k) = map.next_key_seed(Key)? {
            let v = if Some(k.as_ref()) == first && self.out.is_none() {
                map.next_value_seed(Level { path: rest, base: self.base, out: &mut *self.out })?
            } else {
                map.next_value::<Value>()?
            };
            m.insert(k.into_owned(), v);
        }
        Ok(Value::Object(m))
    }
}

/// An object key, borrowed from the input unless it holds escapes.
pub struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The values at `paths` in the JSON document `doc` (`None` where a path is absent; a present
/// `null` is `Some(Null)`; an empty path picks nothing), reading past everything else
/// without building it.
pub fn pick(doc: &str, paths: &[&[String]]) -> serde_json::Result<Vec<Option<Value>>> {
    let mut out = vec![None; paths.len()];
    let wanted = wanted(paths);
    let mut de = serde_json::Deserializer::from_str(doc);
    Pick { wanted: &wanted, out: &mut out }.deserialize(&mut de)?;
    Ok(out)
}

/// The non-empty `paths` with their output slots, as [`Pick`] wants them.
pub fn wanted<'a>(paths: &[&'a [String]]) -> Vec<(usize, &'a [String])> {
    paths.iter().copied().enumerate().filter(|(_, p)| !p.is_empty()).collect()
}

/// The paths of `wanted` that go through the key `k`: the slots of those ending there
/// (`ends`) and the rest of the others (`below`). Both are cleared first.
pub fn through<'a>(wanted: &[(usize, &'a [String])], k: &str, ends: &mut Vec<usize>, below: &mut Vec<(usize, &'a [String])>) {
    ends.clear();
    below.clear();
    for (slot, path) in wanted {
        if path[0] == k {
            match path.len() {
                1 => ends.push(*slot),
                _ => below.push((*slot, &path[1..])),
            }
        }
    }
}

/// The values at `path`s of `v` (a value built where a path ends or passes through an
/// array) into their slots.
pub fn read_built(v: &Value, wanted: &[(usize, &[String])], ends: &[usize], out: &mut [Option<Value>]) {
    for (slot, path) in wanted {
        out[*slot] = super::at(v, path).cloned();
    }
    for slot in ends {
        out[*slot] = Some(v.clone());
    }
}

/// One level of [`pick`]: `wanted` holds (output slot, path left from here), none empty.
pub struct Pick<'a> {
    pub wanted: &'a [(usize, &'a [String])],
    pub out: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.wanted.is_empty() {
            IgnoredAny::deserialize(d)?;
            return Ok(());
        }
        // Only objects are walked without building; anything else (an array indexed by a
        // path segment, say) is built and read with `json::at`.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        read_built(&Value::deserialize(SeqAccessDeserializer::new(seq))?, self.wanted, &[], self.out);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut ends, mut below) = (Vec::new(), Vec::new());
        while let Some(k) = map.next_key_seed(Key)? {
            through(self.wanted, &k, &mut ends, &mut below);
            if ends.is_empty() {
                map.next_value_seed(Pick { wanted: &below, out: &mut *self.out })?;
            } else {
                read_built(&map.next_value()?, &below, &ends, self.out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        super::super::split_path(s)
    }

    #[test]
    fn split_keeps_records_as_the_bytes_sent() {
        let body = r#"{"meta": {"total": 2}, "data": {"items": [ {"id": 1, "s": "a\"b"},
 {"id": 2} ], "next": "x"}, "after": [1]}"#;
        let s = split(body, &p("data.items")).unwrap();
        assert_eq!(s.envelope, json!({"meta": {"total": 2}, "data": {"items": [], "next": "x"}, "after": [1]}));
        let recs: Vec<&str> = s.records.unwrap().into_iter().map(|r| &body[r]).collect();
        assert_eq!(recs, vec![r#"{"id": 1, "s": "a\"b"}"#, r#"{"id": 2}"#]);
        // Not an array there: the whole body, no ranges.
        let s = split(r#"{"data": {"items": {"a": 1}}}"#, &p("data.items")).unwrap();
        assert_eq!((s.envelope, s.records), (json!({"data": {"items": {"a": 1}}}), None));
        let s = split(r#"{"other": 1}"#, &p("data")).unwrap();
        assert_eq!((s.envelope, s.records), (json!({"other": 1}), None));
        // Truncated or trailing garbage: an error, as from_slice gives.
        assert!(split(r#"{"data": [{"id": 1}, {"id"#, &p("data")).is_err());
        assert!(split(r#"{"data": []} x"#, &p("data")).is_err());
    }

    #[test]
    fn pick_reads_paths_without_building_the_rest() {
        let doc = r#"{"id": 7, "a": {"b": null, "c": [10, 20], "d": {"e": "x"}}, "k\u0065y": true}"#;
        let (id, b, c1, e, missing, key) = (p("id"), p("a.b"), p("a.c.1"), p("a.d.e"), p("a.z"), p("key"));
        let got = pick(doc, &[&id, &b, &c1, &e, &missing, &key]).unwrap();
        assert_eq!(got, vec![Some(json!(7)), Some(Value::Null), Some(json!(20)), Some(json!("x")), None, Some(json!(true))]);
        let whole = p("a.d");
        assert_eq!(pick(doc, &[&whole, &e]).unwrap(), vec![Some(json!({"e": "x"})), Some(json!("x"))]);
        assert!(pick(r#"{"id": "#, &[&id]).is_err());
        assert_eq!(pick(doc, &[&[], &id]).unwrap(), vec![None, Some(json!(7))]);
    }
}
