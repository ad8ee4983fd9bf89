//! The one template engine of request templates: `{partition}`, `{stream}`, `{window_start}`,
//! `{window_end}`, `{cursor}` (a stream's requests), `{record.<json path>}` (detail fetches) and
//! `{row.<column>}` (push lookups and payloads). One pass, left to right: a placeholder's value
//! is written as it is and never scanned again (a value holding `{row.x}` is text), and a
//! placeholder the caller does not know is left as written — `${secret:…}` and `${last:…}` are
//! the config layer's, resolved around this.

/// Replace each `{name}` of `tpl` by `lookup(name)`; None leaves it as written.
pub fn render(tpl: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(tpl.len());
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(['}', '{']) {
            Some(close) if after.as_bytes()[close] == b'}' => {
                let name = &after[..close];
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            // No closing brace, or another `{` first: this `{` is text.
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `s` percent-encoded as one URL path segment (RFC 3986: everything but `A-Z a-z 0-9 - . _ ~`;
/// a space is `%20`, never `+`).
pub fn path_segment(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_unknown_left_and_segments_encoded() {
        let look = |k: &str| match k {
            "partition" => Some("{row.x}".to_string()),
            "row.x" => Some("X".into()),
            _ => None,
        };
        assert_eq!(render("/p/{partition}/{row.x}", look), "/p/{row.x}/X");
        assert_eq!(render("${secret:T} {unknown} { {row.x} }{", look), "${secret:T} {unknown} { X }{");
        assert_eq!(render("a{b", look), "a{b");
        assert_eq!(path_segment("a b/c+d~é"), "a%20b%2Fc%2Bd~%C3%A9");
    }
}
