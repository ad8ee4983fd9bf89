//! Hostile answers (issue 26): a small server of our own answers what real servers sometimes
//! do — `Retry-After: inf`, a day's `Retry-After`, a login page with 200, an empty 200, bytes
//! that are not UTF-8, JSON nested 10,000 deep, duplicate keys. Each run exits 0, 1 or 2 (never
//! a panic's 101 or a signal), within a bound, naming the stream and no secret; a rerun against
//! a sane server leaves the lake as a clean run does. Plus a record dated 2204 that must not
//! silence its stream.
use crate::common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server answers: status line, extra headers, body.
#[derive(Clone)]
struct Answer {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const SANE: &str = r#"{"items":[{"id":1,"v":"a"},{"id":2,"v":"b"}]}"#;

fn json(body: &[u8]) -> Answer {
    Answer { status: "200 OK", headers: vec![("Content-Type".into(), "application/json".into())], body: body.to_vec() }
}

/// A server on loopback answering every request with the current answer (until dropped).
struct Server {
    base: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(json(SANE.as_bytes())));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let (a, r) = (a.clone(), r.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(c.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    let mut head = first.clone();
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&h);
                    }
                    let mut body = vec![0u8; length];
                    let _ = std::io::Read::read_exact(&mut reader, &mut body);
                    head.push_str(&String::from_utf8_lossy(&body));
                    r.lock().unwrap().push(head);
                    // The token endpoint (OAuth tests) answers a token, whatever else is set.
                    let ans = if first.contains(" /token") {
                        json(br#"{"access_token":"hostile-access-0123456789","expires_in":3600}"#)
                    } else {
                        a.lock().unwrap().clone()
                    };
                    let mut head = format!("HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n", ans.status, ans.body.len());
                    for (k, v) in &ans.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = c.write_all(head.as_bytes());
                    let _ = c.write_all(&ans.body);
                });
            }
        });
        Server { base, answer, requests }
    }

    fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }
}

const TOKEN: &str = "hostile-secret-token-0123456789";

fn pipelines_for(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("hostile.toml"),
        "[source]\nname = \"hostile\"\nbase_url = \"${env:HOSTILE_BASE_URL}\"\nconcurrency = 1\ntimeout_secs = 5\n\n\
         [source.retry]\nmax_attempts = 3\nbase_delay_ms = 10\nmax_delay_ms = 50\n\n\
         [source.auth]\ntype = \"query\"\nparam = \"token\"\ntoken = \"${secret:HOSTILE_TOKEN}\"\n\n\
         [streams.items]\npath = \"/items\"\nrecords = \"items\"\nprimary_key = \"id\"\n",
    )
    .unwrap();
    p
}

fn pull(server: &Server, pipes: &Path, lake: &Path) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let o = ingest_cmd(None, lake, pipes, &["pull", "hostile"])
        .env("HOSTILE_BASE_URL", &server.base)
        .env("HOSTILE_TOKEN", TOKEN)
        .output()
        .unwrap();
    (o.status.code(), text(&o), t0.elapsed())
}

/// The records every current raw file holds, sorted.
fn landed(lake: &Path) -> Vec<String> {
    let mut v: Vec<String> = raw_files(lake).into_values().flatten().map(|r| r.to_string()).collect();
    v.sort();
    v
}

#[test]
fn hostile_answers_end_in_a_stated_outcome_and_a_rerun_heals_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let pipes = pipelines_for(dir.path());
    let server = Server::start();
    let clean = dir.path().join("clean");
    let (code, out, _) = pull(&server, &pipes, &clean);
    assert_eq!(code, Some(0), "{out}");
    let want = landed(&clean);
    assert_eq!(want.len(), 2);

    let retry_after = |v: &str| Answer {
        status: "429 Too Many Requests",
        headers: vec![("Retry-After".into(), v.into()), ("Content-Type".into(), "application/json".into())],
        body: b"{}".to_vec(),
    };
    let mut deep = "[".repeat(10_000).into_bytes();
    deep.extend("]".repeat(10_000).bytes());
    let cases: Vec<(&str, Answer, i32, &str)> = vec![
        ("Retry-After: inf", retry_after("inf"), 1, "max_retry_after_secs"),
        ("Retry-After: 1e20", retry_after("1e20"), 1, "max_retry_after_secs"),
        ("Retry-After: a day", retry_after("86400"), 1, "max_retry_after_secs"),
        (
            "a login page with 200",
            Answer { status: "200 OK", headers: vec![("Content-Type".into(), "text/html".into())], body: b"<html><body>Login</body></html>".to_vec() },
            1,
            "not JSON",
        ),
        ("bytes that are not UTF-8", json(b"{\"items\":[{\"id\":1,\"v\":\"\xff\xfe\"}]}"), 1, "invalid or truncated JSON"),
        ("JSON nested 10,000 deep", json(&deep), 1, "recursion limit"),
        ("an empty 200", json(b""), 0, ""),
        ("duplicate keys", json(br#"{"items":[{"id":1,"v":"x","v":"a"},{"id":2,"v":"b"}]}"#), 0, ""),
    ];
    let mut tried = 0;
    for (what, answer, code_want, needle) in cases {
        let lake = dir.path().join(format!("case{tried}"));
        tried += 1;
        server.answer(answer);
        let (code, out, took) = pull(&server, &pipes, &lake);
        assert_eq!(code, Some(code_want), "{what}: {out}");
        assert!(out.contains(needle), "{what}: {out}");
        if code_want == 1 {
            assert!(out.contains("hostile/_/items") || out.contains("items"), "{what}: the stream is not named: {out}");
        }
        assert!(took < Duration::from_secs(30), "{what}: took {took:?}");
        assert!(!out.contains(TOKEN), "{what}: the token leaked: {out}");
        // Healed by a rerun against a sane server: the lake a clean run leaves.
        server.answer(json(SANE.as_bytes()));
        let (code, out, _) = pull(&server, &pipes, &lake);
        assert_eq!(code, Some(0), "{what}: rerun: {out}");
        if what != "duplicate keys" {
            assert_eq!(landed(&lake), want, "{what}: the lake differs from a clean run's");
        }
        assert_no_secrets(&[TOKEN.to_string()], &[&out], &lake);
    }
    assert!(server.requests.lock().unwrap().iter().all(|r| r.starts_with("GET /items")));
    eprintln!("hostile cases tried: {tried}, panics: 0, hangs: 0, inconsistent lakes: 0");
}

#[test]
fn a_record_dated_2204_lands_but_does_not_silence_its_stream() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--future-cursor"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let o = ingest(Some(&sim), &lake, &["pull", "c2s"]);
    let out = ok(&o);
    let recs: Vec<serde_json::Value> = raw_files(&lake).into_values().flatten().collect();
    assert!(recs.iter().any(|r| r["attributes"]["updated_at"].as_str().is_some_and(|u| u.starts_with("2204"))), "{out}");
    assert_eq!(recs.len(), 40);
    assert!(text(&o).contains("cursor is in the future"), "{}", text(&o));
    let now = chrono::Utc::now();
    for r in catalogue(&lake) {
        let wm = r.watermark.as_deref().and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok()).expect("a watermark");
        assert!(wm.to_utc() <= now, "the watermark went past now: {wm}");
    }
}

/// Issue 26, item 1: the stream-schema cache is shared by every transform, and one running on a
/// newer catalogue snapshot may have written it with a higher position. A transform must
/// consume only positions its own snapshot holds, or the rows committed in between are
/// skipped for good. The interleaving is made deterministic by writing such a cache by hand.
#[test]
fn a_cache_from_a_newer_snapshot_never_makes_a_transform_skip_rows() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let day = |d: &str| ok(&ingest(Some(&sim), &lake, &["pull", "pancake", "--from", d, "--to", d, "--streams", "conversations"]));
    let convs = || query(&lake, "SELECT count(DISTINCT id) AS n FROM silver.pancake_conversations")[0]["n"].as_u64().unwrap();
    day("2023-09-01");
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.pancake_conversations"]));
    day("2023-09-02");
    // The cache as a transform on a snapshot ten commits ahead would leave it.
    let cache = lake.join("_ingest/cache/stream_schemas.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    c["seq"] = serde_json::json!(c["seq"].as_i64().unwrap() + 10 * 100_000);
    std::fs::write(&cache, c.to_string()).unwrap();
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.pancake_conversations"]));
    day("2023-09-03");
    ok(&ingest_sql(&lake, &shipped_sql(), &["transform", "silver.pancake_conversations"]));
    let ids: std::collections::BTreeSet<String> = raw_files(&lake)
        .into_iter()
        .filter(|(k, _)| k.contains("/conversations/"))
        .flat_map(|(_, v)| v)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(convs() as usize, ids.len(), "rows landed after the cached position were skipped");
}

/// Issue 26, item 11: `${secret:…}` is resolved wherever a value reaches the wire (here a
/// stream header), never sent as its literal text; an unset one exits 2 naming the field; the
/// OAuth refresh sends its credentials in a POST body, never in the URL.
#[test]
fn secrets_reach_the_wire_resolved_and_the_url_never_carries_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("hostile.toml"),
        "[source]\nname = \"hostile\"\nbase_url = \"${env:HOSTILE_BASE_URL}\"\nconcurrency = 1\n\n\
         [source.auth]\ntype = \"oauth2_refresh\"\ntoken_url = \"${env:HOSTILE_BASE_URL}/token\"\n\
         client_id = \"${secret:HOSTILE_CLIENT}\"\nclient_secret = \"${secret:HOSTILE_TOKEN}\"\nrefresh_token = \"${secret:HOSTILE_REFRESH}\"\n\n\
         [streams.items]\npath = \"/items\"\nrecords = \"items\"\nheaders = { X-Extra = \"${secret:HOSTILE_EXTRA}\" }\n",
    )
    .unwrap();
    let server = Server::start();
    let lake = dir.path().join("lake");
    let secrets = ["hostile-client-0123456789", TOKEN, "hostile-refresh-0123456789", "hostile-extra-0123456789"];
    let run = |extra: Option<&str>| {
        let mut c = ingest_cmd(None, &lake, &p, &["pull", "hostile"]);
        c.env("HOSTILE_BASE_URL", &server.base).env("HOSTILE_CLIENT", secrets[0]).env("HOSTILE_TOKEN", secrets[1]).env("HOSTILE_REFRESH", secrets[2]);
        if let Some(e) = extra {
            c.env("HOSTILE_EXTRA", e);
        }
        c.output().unwrap()
    };
    // Unset: exit 2 naming the field, nothing sent.
    let o = run(None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("streams.items.headers") && text(&o).contains("HOSTILE_EXTRA"), "{}", text(&o));
    assert!(server.requests.lock().unwrap().is_empty());
    let o = run(Some(secrets[3]));
    let out = ok(&o);
    let reqs = server.requests.lock().unwrap().clone();
    let token = reqs.iter().find(|r| r.starts_with("POST /token")).expect("a token request");
    let first_line = token.lines().next().unwrap();
    for s in &secrets[..3] {
        assert!(!first_line.contains(s), "a credential is in the token URL: {first_line}");
    }
    assert!(token.contains(&format!("refresh_token={}", secrets[2])), "the refresh token is not in the body: {token}");
    let items = reqs.iter().find(|r| r.starts_with("GET /items")).expect("an items request");
    assert!(items.to_ascii_lowercase().contains(&format!("x-extra: {}", secrets[3])), "{items}");
    assert!(!items.contains("${secret:"), "{items}");
    assert_no_secrets(&secrets.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[&out, &text(&o)], &lake);
}

/// Issue 26, item 4: raw files and model tables never share a folder's sweep. A model whose
/// schema is a source's name is refused (exit 2); and even when a table sits under a source's
/// folder (built with other pipelines) and the template has no fixed file prefix, `vacuum`
/// and the orphan sweep leave the table alone.
#[test]
fn the_orphan_sweep_never_deletes_a_delta_table_under_a_source_folder() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipes = edited_pipelines(dir.path(), "c2s.toml", "name = \"c2s\"\n", "name = \"c2s\"\npath_template = \"{source}/{partition}/{stream}/{date}.json\"\n");
    ok(&ingest_cmd(Some(&sim), &lake, &pipes, &["pull", "c2s"]).output().unwrap());
    let sql = write_models(dir.path(), &[("c2s/copy.sql", "-- target: c2s.copy\n-- mode: replace\nSELECT id FROM raw.c2s_leads\n")]);
    // Refused while the source is known...
    let o = ingest_cmd(None, &lake, &pipes, &["transform"]).arg("--sql").arg(&sql).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("c2s/copy.sql:1") && text(&o).contains("name of a source"), "{}", text(&o));
    // ...built with a pipelines folder that does not know it.
    let none = dir.path().join("no_pipelines");
    std::fs::create_dir_all(&none).unwrap();
    ok(&ingest_cmd(None, &lake, &none, &["transform"]).arg("--sql").arg(&sql).output().unwrap());
    let log = lake.join("c2s/copy/_delta_log");
    let before: Vec<_> = walk(&lake.join("c2s/copy"));
    assert!(log.exists() && !before.is_empty());
    let v = ok(&ingest_cmd(Some(&sim), &lake, &pipes, &["vacuum"]).output().unwrap());
    assert_eq!(walk(&lake.join("c2s/copy")), before, "vacuum deleted a table's files: {v}");
    let n = ingest_cmd(None, &lake, &none, &["query", "--format", "json", "SELECT count(*) AS n FROM c2s.copy"]).arg("--sql").arg(&sql).output().unwrap();
    assert!(ok(&n).contains("\"n\":40"), "{}", text(&n));
    // A pull leaves it too (and its raw files are where they were).
    ok(&ingest_cmd(Some(&sim), &lake, &pipes, &["pull", "c2s"]).output().unwrap());
    assert_eq!(walk(&lake.join("c2s/copy")), before);
}

/// Issue 26, item 8: a lookback asks again for what the last pull landed (C2S: the last minute;
/// Zoho: If-Modified-Since less a minute). A record with the same key and cursor is not landed
/// a second time; the summary counts it.
#[test]
fn a_lookback_lands_no_unchanged_record_twice() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    let count = || raw_files(&lake).into_values().map(|v| v.len()).sum::<usize>();
    let first = count();
    assert_eq!(first, 60);
    let out = ok(&ingest(Some(&sim), &lake, &["pull", "c2s"]));
    assert_eq!(count(), first, "the lookback landed records again: {out}");
    assert!(out.contains("already landed, not again"), "{out}");
    let mut keys = std::collections::BTreeSet::new();
    for r in raw_files(&lake).into_values().flatten() {
        assert!(keys.insert((r["id"].to_string(), r["attributes"]["updated_at"].to_string())), "landed twice: {r}");
    }
}

/// Secrets from mounted files (Kubernetes, Docker): `${secret:C2S_TOKEN}` with no such
/// environment variable is read from `$INGEST_SECRETS_DIR/C2S_TOKEN` (or `c2s_token`); it
/// reaches the API and nothing else.
#[test]
fn a_secret_is_read_from_a_mounted_file_when_the_environment_lacks_it() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let token = sim.var("C2S_TOKEN");
    std::fs::write(secrets.join("c2s_token"), format!("{token}\n")).unwrap();
    let lake = dir.path().join("lake");
    let o = ingest_cmd(Some(&sim), &lake, &pipelines(), &["pull", "c2s"]).env_remove("C2S_TOKEN").env("INGEST_SECRETS_DIR", &secrets).output().unwrap();
    let out = ok(&o);
    assert_eq!(raw_files(&lake).into_values().flatten().count(), 20, "{out}");
    assert_no_secrets(&[token], &[&text(&o)], &lake);
    // Neither set: exit 2 naming both places.
    let o = ingest_cmd(Some(&sim), &dir.path().join("other"), &pipelines(), &["pull", "c2s"]).env_remove("C2S_TOKEN").env("INGEST_SECRETS_DIR", dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("C2S_TOKEN") && text(&o).contains("in the file"), "{}", text(&o));
}
