//! Pipeline files under mutation (issue 26): every value of every shipped pipeline file replaced
//! in turn by hostile numbers (0, negative, inf, nan, huge) and strings (empty, unicode,
//! templates naming themselves, unterminated references): loading it either gives a valid
//! pipeline or an error naming the file — never a panic. (A deterministic sweep of every leaf
//! rather than random cases: each run tries the same few thousand files.)
use crate::common::*;

const NUMBERS: &[&str] = &["0", "-1", "inf", "-inf", "nan", "1e300", "9223372036854775807", "-9223372036854775808", "0.0000001"];
const STRINGS: &[&str] = &[
    "\"\"",
    "\"ünïcödé ✓\"",
    "\"${self:source.name}\"",
    "\"${env:INGEST_FUZZ_UNSET}\"",
    "\"${secret:\"",
    "\"{partition}{window_start}{cursor}\"",
    "\"9999999999999d\"",
    "\"-5m\"",
    "\"%Q%\"",
    "\"a.b.c.d.e.f\"",
];

/// (line, start, end) of every value on a `key = value` line of `text`: numbers and quoted
/// strings, inline tables' members included.
fn leaves(text: &str) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let value = regex::Regex::new(r#"=\s*("(?:[^"\\]|\\.)*"|\$\{[^}]*\}|-?[0-9][0-9_.eE+-]*|true|false)"#).unwrap();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') || line.trim_start().starts_with('[') && !line.contains('=') {
            continue;
        }
        for c in value.captures_iter(line) {
            let m = c.get(1).unwrap();
            out.push((i, m.start(), m.end()));
        }
    }
    out
}

#[test]
fn every_value_of_every_shipped_pipeline_mutated_loads_or_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    // Every variable the shipped files name without a default, set (a sane base).
    for (k, v) in [
        ("PANCAKE_PAGE_IDS", "1001"),
        ("PANCAKE_TOKEN_1001", "token-fuzz-1001"),
        ("C2S_TOKEN", "token-fuzz"),
        ("ZOHO_CLIENT_ID", "id"),
        ("ZOHO_CLIENT_SECRET", "secret-fuzz"),
        ("ZOHO_REFRESH_TOKEN", "refresh-fuzz"),
        ("ZOHO_DESK_ORG_ID", "1"),
        ("RETAIL_PORTAL_API_KEY", "key-fuzz"),
        ("MILVUS_TOKEN", "token-fuzz"),
        ("PLOOMES_USER_KEY", "key-fuzz"),
    ] {
        std::env::set_var(k, v);
    }
    let (mut tried, mut ok_count, mut err_count) = (0, 0, 0);
    for f in walk(&pipelines()) {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(ingest::config::load(&pipelines(), &name).is_ok(), "{name} does not load as shipped");
        let lines: Vec<&str> = text.lines().collect();
        for (i, a, b) in leaves(&text) {
            let is_string = lines[i][a..b].starts_with('"') || lines[i][a..b].starts_with('$');
            for v in if is_string { STRINGS } else { NUMBERS }.iter().chain(if is_string { NUMBERS } else { STRINGS }.iter().take(2)) {
                let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                mutated[i] = format!("{}{}{}", &lines[i][..a], v, &lines[i][b..]);
                let case = dir.path().join(format!("c{tried}"));
                std::fs::create_dir_all(&case).unwrap();
                std::fs::write(case.join(format!("{name}.toml")), mutated.join("\n")).unwrap();
                tried += 1;
                let loaded = std::panic::catch_unwind(|| ingest::config::load(&case, &name));
                match loaded {
                    Err(_) => panic!("{name}.toml line {} = {v}: load panicked", i + 1),
                    Ok(Ok(_)) => ok_count += 1,
                    Ok(Err(e)) => {
                        err_count += 1;
                        let msg = e.to_string();
                        assert!(msg.contains(&format!("{name}.toml")), "{name}.toml line {} = {v}: the error does not name the file: {msg}", i + 1);
                        let code = e.exit_code();
                        assert_eq!(code, 2, "{name}.toml line {} = {v}: exit {code}: {msg}", i + 1);
                    }
                }
                let _ = std::fs::remove_dir_all(&case);
            }
        }
    }
    eprintln!("pipeline mutations tried: {tried} ({ok_count} valid, {err_count} refused), panics: 0");
    assert!(tried > 500, "{tried}");
}
