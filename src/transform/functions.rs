//! SQL functions that seed 004's `transformations` need and DataFusion lacks: `title` (each
//! word capitalised), `capitalize` (first letter upper, the rest lower, like Python's) and
//! `slice(text, start, stop)` (Python slicing: 0-based, stop exclusive, negatives from the
//! end). Every other action maps to a built-in (see the README's table).
use deltalake::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::error::Result;
use deltalake::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use deltalake::datafusion::prelude::SessionContext;
use std::sync::Arc;

fn text_fn(name: &str, f: fn(&str) -> String) -> deltalake::datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let a = deltalake::arrow::array::cast::as_string_array(&arrays[0]);
            let out: StringArray = a.iter().map(|v| v.map(f)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    )
}

pub fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphabetic() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

pub fn capitalize(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(f) => f.to_uppercase().chain(cs.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}

/// Python's `s[start:stop]` on characters.
pub fn slice(s: &str, start: i64, stop: i64) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as i64;
    let norm = |i: i64| if i < 0 { (n + i).max(0) } else { i.min(n) };
    let (a, b) = (norm(start), norm(stop));
    if a >= b {
        return String::new();
    }
    chars[a as usize..b as usize].iter().collect()
}

/// Register the functions on a session (transform and query use the same set).
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(text_fn("title", title));
    ctx.register_udf(text_fn("capitalize", capitalize));
    ctx.register_udf(create_udf(
        "slice",
        vec![DataType::Utf8, DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let s = deltalake::arrow::array::cast::as_string_array(&arrays[0]);
            let a = arrays[1].as_any().downcast_ref::<Int64Array>().expect("Int64 start");
            let b = arrays[2].as_any().downcast_ref::<Int64Array>().expect("Int64 stop");
            let out: StringArray = (0..s.len())
                .map(|i| {
                    (s.is_valid(i) && a.is_valid(i) && b.is_valid(i)).then(|| slice(s.value(i), a.value(i), b.value(i)))
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_semantics() {
        assert_eq!(title("hELLO wORLD-foo"), "Hello World-Foo");
        assert_eq!(capitalize("hELLO wORLD"), "Hello world");
        assert_eq!(slice("abcdef", 1, 3), "bc");
        assert_eq!(slice("abcdef", -2, 100), "ef");
        assert_eq!(slice("abc", 2, 1), "");
    }
}
