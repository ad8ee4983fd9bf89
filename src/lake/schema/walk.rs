//! The shape of JSON read from its text, without building a `Value`: [`Shape::add_raw`]
//! folds a document into a shape; [`Shape::pick_within`] (serde_json) and
//! [`Shape::pick_within_valid`] (a [`crate::json::scan`] of checked text) say whether a
//! document is within a shape and pick the values at some paths, in one read.
use super::Shape;

impl Shape {
    /// [`Self::add`] for the JSON document `doc`, read without building a `Value`.
    pub fn add_raw(&mut self, doc: &str) -> serde_json::Result<()> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(doc);
        Fold(self).deserialize(&mut de)?;
        de.end()
    }

    /// One read of the JSON document `doc` for two answers: the values at `paths` (as
    /// [`crate::json::raw::pick`] gives them) and whether `doc` is [`Self::within`] this
    /// shape (then [`Self::add_raw`] of it may be skipped). A pull reads each record once
    /// for its cursor and key and, in the same walk, for its shape.
    pub fn pick_within(&self, doc: &str, paths: &[&[String]]) -> serde_json::Result<(Vec<Option<serde_json::Value>>, bool)> {
        use serde::de::DeserializeSeed;
        let mut out = vec![None; paths.len()];
        let wanted = crate::json::raw::wanted(paths);
        let mut de = serde_json::Deserializer::from_str(doc);
        let within = Within { shape: self, wanted: &wanted, out: &mut out }.deserialize(&mut de)?;
        de.end()?;
        Ok((out, within))
    }

    /// [`Self::pick_within`] for a document serde_json has already checked (a record
    /// [`crate::json::raw::split`] cut out of a page): read with [`crate::json::scan`], which
    /// checks nothing and builds nothing but the picked values. A document with a backslash
    /// (or, were it not valid after all, one the scan cannot read) is read by serde_json.
    pub fn pick_within_valid(&self, doc: &str, paths: &[&[String]]) -> serde_json::Result<(Vec<Option<serde_json::Value>>, bool)> {
        let mut out = vec![None; paths.len()];
        let wanted = crate::json::raw::wanted(paths);
        let scanned = crate::json::scan::Scan::new(doc).and_then(|mut s| {
            let within = scan_within(&mut s, Some(self), &wanted, &mut out)?;
            s.at_end().then_some(within)
        });
        match scanned {
            Some(within) => Ok((out, within)),
            None => self.pick_within(doc, paths),
        }
    }
}

/// The index of the field named `k`, trying `*next` first: records mostly list their keys in
/// the order the shape first saw them. `*next` moves past the field found.
fn find_field(fields: &[(String, Shape)], k: &str, next: &mut usize) -> Option<usize> {
    let i = match fields.get(*next) {
        Some((n, _)) if n == k => *next,
        _ => fields.iter().position(|(n, _)| n == k)?,
    };
    *next = i + 1;
    Some(i)
}

/// [`Shape::add_raw`]'s walk: scalars go through [`Shape::add`] as allocation-free `Value`s
/// (a string as an empty one), objects and arrays are entered in place.
struct Fold<'a>(&'a mut Shape);

impl<'de> serde::de::DeserializeSeed<'de> for Fold<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Fold<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.add(&serde_json::Value::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.add(&v.into());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.add(&v.into());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.add(&v.into());
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.add(&serde_json::Value::String(String::new()));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if *self.0 == Shape::Null {
            *self.0 = Shape::List(Box::new(Shape::Null));
        }
        match self.0 {
            Shape::List(item) => while seq.next_element_seed(Fold(&mut *item))?.is_some() {},
            other => {
                *other = Shape::Str;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            }
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if *self.0 == Shape::Null {
            *self.0 = Shape::Obj(Vec::new());
        }
        let Shape::Obj(fields) = self.0 else {
            *self.0 = Shape::Str;
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut next = 0;
        while let Some(k) = map.next_key_seed(crate::json::raw::Key)? {
            let i = match find_field(fields, &k, &mut next) {
                Some(i) => i,
                None => {
                    fields.push((k.into_owned(), Shape::Null));
                    fields.len() - 1
                }
            };
            map.next_value_seed(Fold(&mut fields[i].1))?;
        }
        Ok(())
    }
}

/// [`Shape::pick_within_valid`]'s walk, the same answers as [`Within`]'s: whether the value
/// at the cursor is within `shape` (`None` for a shape: only pick), its values at `wanted`
/// picked into `out`. `None` when the text is not what valid JSON would be. It recurses only
/// where `shape` or a wanted path goes on (deeper values are skipped flat), so its depth is
/// bounded by theirs, and shapes come from serde_json's walks (at most 128 levels).
fn scan_within(
    s: &mut crate::json::scan::Scan,
    shape: Option<&Shape>,
    wanted: &[(usize, &[String])],
    out: &mut [Option<serde_json::Value>],
) -> Option<bool> {
    use crate::json::raw::{read_built, through};
    use crate::json::scan::Kind;
    use serde_json::Value;
    let within = |v: &Value| shape.is_some_and(|sh| sh.within(v));
    let kind = s.kind()?;
    if kind == Kind::Arr && !wanted.is_empty() {
        // A path into an array: built, as `pick` does.
        let v: Value = serde_json::from_str(s.skip()?).ok()?;
        read_built(&v, wanted, &[], out);
        return Some(within(&v));
    }
    Some(match kind {
        Kind::Obj => {
            let (fields, mut ok) = match shape {
                Some(Shape::Obj(fs)) => (Some(fs), true),
                _ => (None, shape == Some(&Shape::Str)),
            };
            if wanted.is_empty() && fields.is_none() {
                s.skip()?;
                return Some(ok);
            }
            s.enter()?;
            let (mut ends, mut below, mut next) = (Vec::new(), Vec::new(), 0);
            while let Some(k) = s.key()? {
                if !wanted.is_empty() {
                    through(wanted, k, &mut ends, &mut below);
                }
                let field = match (fields, ok) {
                    (Some(fs), true) => find_field(fs, k, &mut next).map(|i| &fs[i].1),
                    _ => None,
                };
                if fields.is_some() && field.is_none() {
                    ok = false;
                }
                // Under a shape that is not an object, `ok` was settled on entry.
                if !ends.is_empty() {
                    let v: Value = serde_json::from_str(s.skip()?).ok()?;
                    ok &= fields.is_none() || field.is_some_and(|f| f.within(&v));
                    match (ends.as_slice(), below.is_empty()) {
                        ([slot], true) => out[*slot] = Some(v),
                        _ => read_built(&v, &below, &ends, out),
                    }
                } else if field.is_some() || !below.is_empty() {
                    ok &= scan_within(s, field, &below, out)? || fields.is_none();
                } else {
                    s.skip()?;
                }
            }
            ok
        }
        Kind::Arr => match shape {
            Some(Shape::List(item)) => {
                s.enter()?;
                let mut all = true;
                while s.item()? {
                    match all {
                        true => all = scan_within(s, Some(item), &[], out)?,
                        false => _ = s.skip()?,
                    }
                }
                all
            }
            _ => {
                s.skip()?;
                shape == Some(&Shape::Str)
            }
        },
        Kind::Str => {
            s.string()?;
            within(&Value::String(String::new()))
        }
        Kind::Num => match crate::json::scan::is_int(s.skip()?) {
            true => within(&0.into()),
            false => within(&0.5.into()),
        },
        Kind::Bool => {
            s.skip()?;
            within(&Value::Bool(false))
        }
        Kind::Null => {
            s.skip()?;
            true
        }
    })
}

/// [`Shape::pick_within`]'s walk: [`Shape::within`] read from the bytes, picking as
/// [`crate::json::raw::pick`] does. Once the answer is no, the rest is only picked.
struct Within<'a> {
    shape: &'a Shape,
    wanted: &'a [(usize, &'a [String])],
    out: &'a mut [Option<serde_json::Value>],
}

impl<'de> serde::de::DeserializeSeed<'de> for Within<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Within<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    // Scalars go through `Shape::within` as allocation-free values, as `Fold` does for `add`.
    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        Ok(self.shape.within(&serde_json::Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
        Ok(self.shape.within(&v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
        Ok(self.shape.within(&v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<bool, E> {
        Ok(self.shape.within(&v.into()))
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(self.shape.within(&serde_json::Value::String(String::new())))
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        use serde::de::IgnoredAny;
        if !self.wanted.is_empty() {
            // A path into an array: built, as `pick` does.
            let v: serde_json::Value = serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
            crate::json::raw::read_built(&v, self.wanted, &[], self.out);
            return Ok(self.shape.within(&v));
        }
        let within = match self.shape {
            Shape::List(item) => {
                let mut all = true;
                while all {
                    match seq.next_element_seed(Within { shape: item, wanted: &[], out: &mut *self.out })? {
                        Some(w) => all = w,
                        None => return Ok(true),
                    }
                }
                false
            }
            other => *other == Shape::Str,
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(within)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        use crate::json::raw::{read_built, through, Key, Pick};
        let fields = match self.shape {
            Shape::Obj(fs) => fs,
            other => {
                let within = *other == Shape::Str;
                serde::de::Visitor::visit_map(Pick { wanted: self.wanted, out: self.out }, map)?;
                return Ok(within);
            }
        };
        let (mut within, mut ends, mut below, mut next) = (true, Vec::new(), Vec::new(), 0);
        while let Some(k) = map.next_key_seed(Key)? {
            if !self.wanted.is_empty() {
                through(self.wanted, &k, &mut ends, &mut below);
            }
            let field = match within {
                false => None,
                true => find_field(fields, &k, &mut next).map(|i| &fields[i].1),
            };
            if !ends.is_empty() {
                let v: serde_json::Value = map.next_value()?;
                read_built(&v, &below, &ends, self.out);
                within = field.is_some_and(|s| s.within(&v));
            } else if let Some(s) = field {
                within = map.next_value_seed(Within { shape: s, wanted: &below, out: &mut *self.out })?;
            } else {
                within = false;
                map.next_value_seed(Pick { wanted: &below, out: &mut *self.out })?;
            }
        }
        Ok(within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_from_bytes_equal_shapes_of_values() {
        let docs = [
            r#"{"a": 1, "b": {"c": "x"}, "l": [1, 2], "t": true}"#,
            r#"{"a": 1.5, "b": {"d": true, "c": null}, "l": [], "n": null, "t": 3}"#,
            r#"{"a": -2, "b": "flat", "l": [[1], {"x": 1}], "o": {"p": [{"q": 1}, {"r": "s"}]}, "t": false}"#,
            r#"{"b": {"c": 1}, "l": "x", "o": {"p": [{"q": 2.5}]}, "u": 18446744073709551615}"#,
        ];
        let (mut from_values, mut from_bytes) = (Shape::Null, Shape::Null);
        for d in docs {
            from_values.add(&serde_json::from_str(d).unwrap());
            from_bytes.add_raw(d).unwrap();
            assert_eq!(from_bytes, from_values, "after {d}");
        }
        assert!(Shape::Null.add_raw("{\"a\": ").is_err());
    }

    /// Random documents (nested objects and arrays over a few keys, every kind of scalar,
    /// numbers at the edges of i64/u64, compact and pretty): the scan answers as serde_json's
    /// walk does, against shapes grown from the documents before it.
    #[test]
    fn the_scan_agrees_with_serde_json_on_random_documents() {
        use serde_json::{json, Value};
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn gen(rnd: &mut dyn FnMut(u64) -> u64, depth: u32) -> Value {
            let scalars = [
                json!(null), json!(true), json!(false), json!(0), json!(-1), json!(7), json!(1.5), json!(-0.0),
                json!(i64::MIN), json!(u64::MAX), json!(1e300), json!(""), json!("s p"), json!("é{[,:]}"),
            ];
            match (depth, rnd(4)) {
                (0, _) | (_, 0) => scalars[rnd(scalars.len() as u64) as usize].clone(),
                (_, 1) => Value::Array((0..rnd(4)).map(|_| gen(rnd, depth - 1)).collect()),
                _ => Value::Object((0..rnd(5)).map(|_| (["a", "b", "c", "d"][rnd(4) as usize].to_string(), gen(rnd, depth - 1))).collect()),
            }
        }
        let paths: Vec<Vec<String>> = ["a", "b.c", "a.a", "c.0", "d.b.a"].iter().map(|p| crate::json::split_path(p)).collect();
        let refs: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
        let wanted = crate::json::raw::wanted(&refs);
        let (mut shape, mut answers) = (Shape::Null, [0; 2]);
        for i in 0..3000 {
            // Records are objects; a fresh shape every 50, before it widens to strings.
            let v = Value::Object((0..1 + rnd(4)).map(|k| (["a", "b", "c", "d"][k as usize].to_string(), gen(&mut rnd, 3))).collect());
            if i % 50 == 0 {
                shape = Shape::Null;
            }
            let doc = match i % 2 {
                0 => serde_json::to_string(&v).unwrap(),
                _ => serde_json::to_string_pretty(&v).unwrap(),
            };
            let (picked, within) = shape.pick_within(&doc, &refs).unwrap();
            let mut out = vec![None; refs.len()];
            let mut scan = crate::json::scan::Scan::new(&doc).unwrap();
            assert_eq!(scan_within(&mut scan, Some(&shape), &wanted, &mut out), Some(within), "{doc} within {shape:?}");
            assert!(scan.at_end(), "{doc}");
            assert_eq!(out, picked, "{doc}");
            answers[within as usize] += 1;
            // Grow the shape from some documents, so later ones meet every kind of shape.
            if rnd(3) == 0 {
                shape.add_raw(&doc).unwrap();
            }
        }
        assert!(answers.iter().all(|&n| n > 300), "within no/yes: {answers:?}");
    }

    #[test]
    fn pick_within_picks_as_pick_does_and_knows_when_add_changes_nothing() {
        let docs = [
            r#"{"a": 1, "b": {"c": "x"}, "l": [1, 2], "t": true}"#,
            r#"{"a": 2, "b": {"c": "y"}, "l": [3], "t": false}"#,
            r#"{"a": 1.5, "b": {"d": true, "c": null}, "l": [], "n": null, "t": 3}"#,
            r#"{"a": 2, "b": {"c": "z", "d": false}, "l": [4.5], "t": true}"#,
            r#"{"a": -2, "b": "flat", "l": [[1], {"x": 1}], "o": {"p": [{"q": 1}, {"r": "s"}]}, "t": false}"#,
            r#"{"b": {"c": 1}, "l": "x", "o": {"p": [{"q": 2.5}]}, "u": 18446744073709551615}"#,
            r#"{"b": {"c": [1]}, "o": {"p": [{"q": 3}]}, "u": 1}"#,
            r#"{"a": -0, "l": [[1, {"x": 1e3}], []], "o": {"p": "s", "q": [null]}, "t": null, "u": -9223372036854775809}"#,
            r#" { "a" : 3 , "b" : { "c" : "w" } , "l" : [ 1 ] , "zz" : { "y" : [ ] } } "#,
        ];
        let paths: Vec<Vec<String>> = ["a", "b.c", "o.p.0.q", "l", "zz"].iter().map(|p| crate::json::split_path(p)).collect();
        let refs: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
        // Every shape reached by adding a prefix of the documents, against every document.
        let mut shapes = vec![Shape::Null];
        for d in docs {
            let mut s = shapes.last().unwrap().clone();
            s.add_raw(d).unwrap();
            shapes.push(s);
        }
        for s in &shapes {
            for d in docs {
                let (picked, within) = s.pick_within(d, &refs).unwrap();
                assert_eq!(s.pick_within_valid(d, &refs).unwrap(), (picked.clone(), within), "{d} within {s:?}");
                // ... read by the scan, not by its fallback.
                let mut out = vec![None; refs.len()];
                let mut scan = crate::json::scan::Scan::new(d).unwrap();
                assert_eq!(scan_within(&mut scan, Some(s), &crate::json::raw::wanted(&refs), &mut out), Some(within), "{d}");
                assert!(scan.at_end() && out == picked, "{d}");
                assert_eq!(picked, crate::json::raw::pick(d, &refs).unwrap(), "{d}");
                let mut added = s.clone();
                added.add_raw(d).unwrap();
                assert_eq!(within, added == *s, "{d} within {s:?}");
                assert_eq!(within, s.within(&serde_json::from_str(d).unwrap()), "{d} within {s:?}");
            }
        }
        assert!(Shape::Null.pick_within("{\"a\": ", &refs).is_err());
    }
}
