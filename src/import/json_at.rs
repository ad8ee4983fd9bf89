//! A seed-004 config read as JSON with every value's place: the JSON path a reader would write
//! (`extractions[0].pagination.parameters.step`) and the line it starts on, so an import error
//! names both. serde_json checks the syntax; this scanner only walks text it accepted.
use std::collections::HashMap;

/// JSON path → 1-based line of the value (of its key, for an object member).
pub fn lines(text: &str) -> HashMap<String, usize> {
    let mut s = Scan { b: text.as_bytes(), i: 0, line: 1, out: HashMap::new() };
    s.value(String::new(), None);
    s.out
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    out: HashMap<String, usize>,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.i += 1;
        }
    }

    /// A string starting at `self.i` (a quote); returns its raw text between the quotes,
    /// unescaped enough for keys (`\"` and `\\`).
    fn string(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.b.get(self.i) {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(&n) = self.b.get(self.i) {
                        out.push(n);
                        self.i += 1;
                    }
                }
                b'\n' => {
                    self.line += 1;
                    out.push(c)
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn value(&mut self, path: String, key_line: Option<usize>) {
        self.ws();
        self.out.insert(path.clone(), key_line.unwrap_or(self.line));
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b'}') | None => {
                            self.i += 1;
                            return;
                        }
                        Some(b',') => self.i += 1,
                        Some(b'"') => {
                            let line = self.line;
                            let k = self.string();
                            self.ws();
                            self.i += 1; // ':'
                            let p = if path.is_empty() { k } else { format!("{path}.{k}") };
                            self.value(p, Some(line));
                        }
                        Some(_) => self.i += 1,
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut n = 0;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b']') | None => {
                            self.i += 1;
                            return;
                        }
                        Some(b',') => self.i += 1,
                        Some(_) => {
                            self.value(format!("{path}[{n}]"), None);
                            n += 1;
                        }
                    }
                }
            }
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while let Some(&c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace() {
                        break;
                    }
                    self.i += 1;
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_value_has_its_path_and_line() {
        let t = "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": [\n      \"x\",\n      {\"d\": \"}\\\"\"}\n    ]\n  },\n  \"$e\": null\n}";
        let l = super::lines(t);
        assert_eq!(l["a"], 2);
        assert_eq!(l["b"], 3);
        assert_eq!(l["b.c"], 4);
        assert_eq!(l["b.c[0]"], 5);
        assert_eq!(l["b.c[1].d"], 6);
        assert_eq!(l["$e"], 9);
    }
}
