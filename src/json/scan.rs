//! A cursor over JSON text that is already known to be valid (serde_json checked it: the
//! records [`super::raw::split`] cut out of a page) and holds no backslash, so a string ends
//! at the next quote and nothing needs unescaping. Reading such text again needs no checks,
//! only steps; where the text is not what valid JSON would be, every step answers `None` and
//! the caller falls back to serde_json (which then says what is wrong).
use memchr::memchr;

/// What kind of value starts at the cursor (a number's integer-ness: [`is_int`] of its text).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Obj,
    Arr,
    Str,
    Num,
    Bool,
    Null,
}

/// Whether serde_json builds the number `text` as an integer: one that fits `i64` or `u64`
/// (`-0`, fractions, exponents and larger integers are floats).
pub fn is_int(text: &str) -> bool {
    if text.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
        return false;
    }
    match text.starts_with('-') {
        true => text.parse::<i64>().is_ok_and(|v| v != 0),
        false => text.parse::<u64>().is_ok(),
    }
}

pub struct Scan<'a> {
    doc: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    /// A cursor at the start of `doc`; `None` when `doc` holds a backslash.
    pub fn new(doc: &'a str) -> Option<Self> {
        if memchr(b'\\', doc.as_bytes()).is_some() {
            return None;
        }
        Some(Scan { doc, b: doc.as_bytes(), i: 0 })
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// The kind of the value that starts here (after whitespace), not consumed.
    pub fn kind(&mut self) -> Option<Kind> {
        self.ws();
        Some(match *self.b.get(self.i)? {
            b'{' => Kind::Obj,
            b'[' => Kind::Arr,
            b'"' => Kind::Str,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            b'-' | b'0'..=b'9' => Kind::Num,
            _ => return None,
        })
    }

    /// The contents of the string that starts here; the cursor moves past it.
    pub fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        // Most strings are short: a plain loop beats memchr's set-up.
        let len = self.b[self.i..].iter().position(|&c| c == b'"')?;
        let s = &self.doc[self.i..self.i + len];
        self.i += len + 1;
        Some(s)
    }

    /// Move past the value that starts here; its text.
    pub fn skip(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        let mut depth = 0usize;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.i += 1;
                }
                b',' | b':' if depth > 0 => self.i += 1,
                c if c.is_ascii_whitespace() && depth > 0 => self.i += 1,
                _ => {
                    // A scalar: up to the next delimiter.
                    let n = self.b[self.i..].iter().position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t' | b':'));
                    self.i = match n {
                        Some(0) => return None,
                        n => n.map_or(self.b.len(), |n| self.i + n),
                    };
                }
            }
            if depth == 0 {
                return Some(&self.doc[start..self.i]);
            }
        }
    }

    /// Enter the object or array that starts here.
    pub fn enter(&mut self) -> Option<()> {
        self.ws();
        matches!(self.b.get(self.i), Some(b'{' | b'[')).then(|| self.i += 1)
    }

    /// Inside an object: the next member's key, the cursor at its value; `None` inside the
    /// `Some` at the closing brace (consumed).
    pub fn key(&mut self) -> Option<Option<&'a str>> {
        if !self.another(b'}')? {
            return Some(None);
        }
        let k = self.string()?;
        self.eat(b':')?;
        Some(Some(k))
    }

    /// Inside an array: whether another item follows (the cursor at it); the closing bracket
    /// is consumed.
    pub fn item(&mut self) -> Option<bool> {
        self.another(b']')
    }

    /// Past the separator before the next member or item: whether there is one (`false` at
    /// `close`, consumed).
    fn another(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match *self.b.get(self.i)? {
            c if c == close => {
                self.i += 1;
                return Some(false);
            }
            b',' => self.i += 1,
            _ => {}
        }
        self.ws();
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walk a document building a `Value` from the scan alone (numbers parsed from the skipped
    /// text), to check the steps against serde_json.
    fn build(s: &mut Scan) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match s.kind()? {
            Kind::Obj => {
                s.enter()?;
                let mut m = serde_json::Map::new();
                while let Some(k) = s.key()? {
                    m.insert(k.to_string(), build(s)?);
                }
                Value::Object(m)
            }
            Kind::Arr => {
                s.enter()?;
                let mut a = Vec::new();
                while s.item()? {
                    a.push(build(s)?);
                }
                Value::Array(a)
            }
            Kind::Str => Value::String(s.string()?.to_string()),
            k => {
                let text = s.skip()?;
                let v: Value = serde_json::from_str(text).ok()?;
                let kind = match &v {
                    Value::Number(n) => {
                        assert_eq!(is_int(text), n.is_i64() || n.is_u64(), "{text}");
                        Kind::Num
                    }
                    Value::Bool(_) => Kind::Bool,
                    _ => Kind::Null,
                };
                (kind == k).then_some(v)?
            }
        })
    }

    #[test]
    fn a_scan_reads_valid_json_as_serde_json_does() {
        let docs = [
            r#"{"a": 1, "b": {"c": "x y", "d": [1, 2.5, -3, true, null, {"e": []}]}, "f": {}}"#,
            " [ 0 , -0 , 1e3 , -9223372036854775808 , -9223372036854775809 , 18446744073709551615 , 18446744073709551616 ] ",
            r#"{"s":"{[,:]}","t":false,"n":null,"é":"ü"}"#,
            "\"just a string\"",
            "-12",
        ];
        for d in docs {
            let mut s = Scan::new(d).unwrap();
            assert_eq!(build(&mut s), Some(serde_json::from_str(d).unwrap()), "{d}");
            assert!(s.at_end(), "{d}");
            let mut s = Scan::new(d).unwrap();
            assert_eq!(s.skip().map(str::trim), Some(d.trim()), "{d}");
            assert!(s.at_end());
        }
        assert!(Scan::new(r#"{"a\"b": 1}"#).is_none());
        // Not JSON: no panic, no answer.
        for bad in ["{\"a\": ", "{\"a\" 1}", "[1, ", "{", "\"open", "}", "x"] {
            let mut s = Scan::new(bad).unwrap();
            assert!(build(&mut s).is_none() || !s.at_end(), "{bad}");
        }
    }
}
