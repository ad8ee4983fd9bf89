//! The lake on S3: moto's S3 server (PyPI, installed by `tests/run.sh`) on loopback, reached
//! exactly as AWS is — `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`. moto honours `If-None-Match: *` (a second
//! conditional put answers 412), which Delta commits and the pull lease rely on.
use crate::common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct S3 {
    child: Child,
    endpoint: String,
    secret: String,
}

impl S3 {
    fn start() -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let py = std::env::var("INGEST_PYTHON").expect("INGEST_PYTHON is not set: run the tests through tests/run.sh");
        let child = Command::new(py)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        S3 { child, endpoint: format!("http://127.0.0.1:{port}"), secret: format!("s3secret{nanos:x}") }
    }

    /// Create a bucket (moto takes an unsigned request).
    fn bucket(&self, name: &str) {
        let host = self.endpoint.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "AKIAINGESTTEST".into()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    fn cmd(&self, sim: Option<&Sim>, lake: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--lake", lake, "--pipelines"]).arg(pipelines()).arg("--sql").arg(shipped_sql()).args(args);
        c.env_remove("INGEST_LAKE");
        if let Some(s) = sim {
            c.envs(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        c.envs(self.env());
        c
    }

    fn run(&self, sim: Option<&Sim>, lake: &str, args: &[&str]) -> Output {
        self.cmd(sim, lake, args).output().unwrap()
    }

    /// Every object's bytes under `s3://bucket/` (through Python's boto3, which moto brings).
    fn objects(&self, bucket: &str) -> Vec<(String, Vec<u8>)> {
        let code = format!(
            "import boto3, base64, json\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='x', aws_secret_access_key='y', region_name='us-east-1')\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}'):\n    for o in page.get('Contents', []):\n        \
             print(json.dumps([o['Key'], base64.b64encode(s3.get_object(Bucket='{bucket}', Key=o['Key'])['Body'].read()).decode()]))\n",
            self.endpoint
        );
        let out = python(&code);
        out.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v[0].as_str().unwrap().to_string(), b64(v[1].as_str().unwrap()))
            })
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(s: &str) -> Vec<u8> {
    let table = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (table(*c) as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn python(code: &str) -> String {
    let py = std::env::var("INGEST_PYTHON").unwrap();
    let o = Command::new(py).arg("-c").arg(code).output().unwrap();
    assert!(o.status.success(), "python failed:\n{}\n{code}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

const TABLES: &[&str] = &[
    "silver.c2s_leads",
    "gold.c2s_leads_per_day",
    "silver.pancake_conversations",
    "silver.pancake_conversation_tags",
    "silver.pancake_users",
    "gold.pancake_conversations_per_day",
];

/// A table's rows without the bookkeeping columns (`_…`: files, landing times), sorted.
fn rows(o: Output) -> Vec<String> {
    let out = ok(&o);
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            let mut r: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            r.retain(|k, _| !k.starts_with('_'));
            Value::Object(r).to_string()
        })
        .collect();
    v.sort();
    v
}

fn local_rows(lake: &Path, table: &str) -> Vec<String> {
    rows(ingest_sql(lake, &shipped_sql(), &["query", "--format", "json", &format!("SELECT * FROM {table}")]))
}

/// Pull Pancake (killed once mid-pull) and C2S, transform (killed once mid-run), rerun both:
/// every table equals the same work done cleanly on local disk; DuckDB (httpfs + delta),
/// Python's deltalake and polars read each table from S3 with the same counts; `ddl athena` points at
/// S3; no credential anywhere.
#[test]
fn the_loop_on_s3_with_kills_equals_a_clean_run_on_disk() {
    // Every request slow: the Pancake pull takes seconds (140 requests, 4 at a time), so the
    // kill below lands mid-pull however fast the machine is (every 7th at 60 ms did not).
    let sim = Sim::start(&["--rate-window", "1", "--days", "7", "--slow-every", "1", "--slow-ms", "80"]);
    let s3 = S3::start();
    s3.bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    for args in [&["pull", "c2s"][..], &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-07"], &["transform"]] {
        ok(&ingest_cmd(Some(&sim), &local, &pipelines(), args).arg("--sql").arg(shipped_sql()).output().unwrap());
    }
    let lake = "s3://lake/prod";
    let mut outputs = vec![text(&s3.run(Some(&sim), lake, &["pull", "c2s"]))];
    // kill -9 mid-pull, then the rerun.
    let served = sim.stats()["requests"].as_u64().unwrap();
    let mut child = s3.cmd(Some(&sim), lake, &["-q", "pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-07"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Killed once a fifth of its ~140 requests were answered (files landed, not all committed).
    kill_when(&mut child, "the pull", Duration::from_millis(10), Duration::from_secs(60), || {
        sim.stats()["requests"].as_u64().unwrap() >= served + 30
    });
    outputs.push(ok(&s3.run(Some(&sim), lake, &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-07"])));
    // kill -9 mid-transform, right after its first model's commit (read off its log, so the
    // kill lands mid-run however fast the machine is), then the rerun.
    let mut child = s3.cmd(None, lake, &["transform"]).env("INGEST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let log = std::io::BufReader::new(child.stderr.take().unwrap());
    let first = std::io::BufRead::lines(log).map_while(Result::ok).find(|l| l.contains("model written"));
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.is_some() && killed, "the transform ended before the kill: {first:?}");
    outputs.push(ok(&s3.run(None, lake, &["transform"])));
    outputs.push(ok(&s3.run(None, lake, &["status"])));
    let mut counts = Vec::new();
    for t in TABLES {
        let remote = rows(s3.run(None, lake, &["query", "--format", "json", &format!("SELECT * FROM {t}")]));
        let here = local_rows(&local, t);
        assert!(!here.is_empty(), "{t} is empty");
        assert_eq!(remote.len(), here.len(), "{t}: rows on S3 vs on disk");
        assert!(remote == here, "{t}: S3 and local disk differ");
        counts.push(here.len());
    }
    // DuckDB 1.4.4 (httpfs + delta) and Python's deltalake read every table straight from S3.
    let httpfs = std::env::var("INGEST_DUCKDB_HTTPFS").expect("INGEST_DUCKDB_HTTPFS: run tests/run.sh");
    let delta = std::env::var("INGEST_DUCKDB_DELTA").unwrap();
    let host = s3.endpoint.strip_prefix("http://").unwrap();
    let paths: Vec<String> = TABLES.iter().map(|t| format!("s3://lake/prod/{}", t.replace('.', "/"))).collect();
    let code = format!(
        "import duckdb, json\ncon = duckdb.connect(config={{'allow_unsigned_extensions': 'true'}})\n\
         con.execute(\"LOAD '{httpfs}'\")\ncon.execute(\"LOAD '{delta}'\")\n\
         con.execute(\"CREATE SECRET s (TYPE s3, KEY_ID 'AKIAINGESTTEST', SECRET '{secret}', REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)\")\n\
         from deltalake import DeltaTable, QueryBuilder\nimport polars\n\
         opts = {{'AWS_ENDPOINT_URL': '{ep}', 'AWS_ACCESS_KEY_ID': 'AKIAINGESTTEST', 'AWS_SECRET_ACCESS_KEY': '{secret}', 'AWS_REGION': 'us-east-1', 'AWS_ALLOW_HTTP': 'true'}}\n\
         for p in {paths:?}:\n    d = con.execute(f\"SELECT count(*) FROM delta_scan('{{p}}')\").fetchone()[0]\n    \
         py = QueryBuilder().register('t', DeltaTable(p, storage_options=opts)).execute('SELECT count(*) AS n FROM t').read_all()['n'][0].as_py()\n    \
         pl = polars.read_delta(p, storage_options=opts).height\n    print(json.dumps([d, py, pl]))\n",
        secret = s3.secret,
        ep = s3.endpoint,
    );
    let read: Vec<(usize, usize, usize)> = python(&code).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(read.len(), TABLES.len());
    for ((t, want), (duck, py, pl)) in TABLES.iter().zip(&counts).zip(&read) {
        assert_eq!((duck, py, pl), (want, want, want), "{t}: DuckDB / Python deltalake / polars counts");
    }
    // export and vacuum work on S3 too.
    let o = s3.run(None, lake, &["export", "silver.c2s_leads", "--format", "csv", "--to", "s3://lake/exports/"]);
    ok(&o);
    let exported = text(&o);
    assert!(exported.contains("s3://lake/exports/silver_c2s_leads_") && exported.contains(&format!("{} rows", counts[0])), "{exported}");
    outputs.push(exported);
    outputs.push(ok(&s3.run(Some(&sim), lake, &["vacuum"])));
    let ddl = ok(&s3.run(None, lake, &["ddl", "athena", "--database", "lake"]));
    assert!(ddl.contains("LOCATION 's3://lake/prod/silver/c2s_leads'"), "{ddl}");
    outputs.push(ddl);
    // No credential in any output nor in any object of the bucket.
    let secrets = [s3.secret.clone(), sim.var("C2S_TOKEN"), sim.var("PANCAKE_TOKEN_1001")];
    for o in &outputs {
        for s in &secrets {
            assert!(!o.contains(s.as_str()), "a secret reached an output");
        }
    }
    let objects = s3.objects("lake");
    assert!(objects.iter().any(|(k, _)| k.starts_with("prod/pancake/1001/conversations/file_")), "raw layout on S3");
    assert!(objects.iter().all(|(k, _)| !k.contains(".probe-")), "a write probe was left behind");
    let csv = objects.iter().find(|(k, _)| k.starts_with("exports/silver_c2s_leads_")).expect("the export on S3");
    assert!(String::from_utf8_lossy(&csv.1).lines().count() > counts[0], "export: a header and every lead");
    // Athena engine v3's rules, from every Delta log on S3: reader protocol 1 (no reader
    // features), column types Glue maps, partition columns that exist.
    let mut logs = 0;
    for (k, bytes) in objects.iter().filter(|(k, _)| k.contains("/_delta_log/") && k.ends_with(".json")) {
        for line in String::from_utf8_lossy(bytes).lines() {
            let a: Value = serde_json::from_str(line).unwrap();
            if let Some(p) = a.get("protocol") {
                logs += 1;
                assert!(p["minReaderVersion"].as_i64().unwrap() <= 3, "{k}: {p}");
                assert!(p.get("readerFeatures").is_none_or(|f| f.as_array().unwrap().is_empty()), "{k}: reader features {p}");
            }
            if let Some(m) = a.get("metaData") {
                let schema: Value = serde_json::from_str(m["schemaString"].as_str().unwrap()).unwrap();
                for f in schema["fields"].as_array().unwrap() {
                    assert!(glue_type(&f["type"]), "{k}: column {} has type {} that Glue cannot map", f["name"], f["type"]);
                }
                for pc in m["partitionColumns"].as_array().unwrap() {
                    assert!(schema["fields"].as_array().unwrap().iter().any(|f| f["name"] == *pc), "{k}: partition column {pc}");
                }
            }
        }
    }
    assert!(logs >= TABLES.len(), "{logs} tables' protocols read");
    for (k, bytes) in &objects {
        let body = String::from_utf8_lossy(bytes);
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "a secret is stored in {k}");
        }
    }
}

/// Concurrent writers on S3: two pulls of different sources at once, then two transforms of
/// one table at once — no lost commit, no duplicate row, the log still reads.
#[test]
fn concurrent_writers_on_s3_lose_nothing() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3"]);
    let s3 = S3::start();
    s3.bucket("lake");
    let lake = "s3://lake/conc";
    let a = s3.cmd(Some(&sim), lake, &["-q", "pull", "c2s"]).output();
    let b = s3.cmd(Some(&sim), lake, &["-q", "pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03"]).output();
    let (a, b) = (a.unwrap(), b.unwrap());
    ok(&a);
    ok(&b);
    let pa = s3.cmd(Some(&sim), lake, &["-q", "pull", "c2s"]).spawn().unwrap();
    let pb = s3.cmd(Some(&sim), lake, &["-q", "pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03", "--full-refresh"]).spawn().unwrap();
    for mut p in [pa, pb] {
        assert!(p.wait().unwrap().success(), "a concurrent pull failed");
    }
    let status = ok(&s3.run(None, lake, &["status"]));
    assert!(status.contains("c2s ") && status.contains("pancake "), "{status}");
    let spawn = || s3.cmd(None, lake, &["-q", "transform", "silver.c2s_leads"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (t1, t2) = (spawn(), spawn());
    let (o1, o2) = (t1.wait_with_output().unwrap(), t2.wait_with_output().unwrap());
    eprintln!("transform 1: {:?}\n{}\ntransform 2: {:?}\n{}", o1.status.code(), text(&o1), o2.status.code(), text(&o2));
    assert!(o1.status.success() || o2.status.success(), "neither concurrent transform committed");
    for o in [&o1, &o2] {
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(o));
    }
    ok(&s3.run(None, lake, &["transform", "silver.c2s_leads"]));
    let q = |sql: &str| -> Vec<Value> {
        ok(&s3.run(None, lake, &["query", "--format", "json", sql])).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let r = &q("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM silver.c2s_leads")[0];
    assert_eq!(r["n"], r["ids"], "duplicate rows after concurrent transforms");
    let landed = &q("SELECT count(DISTINCT id) AS n FROM raw.c2s_leads")[0];
    assert_eq!(r["n"], landed["n"]);
}

/// Bad S3 settings fail before anything is written, naming the problem and the variable.
#[test]
fn a_missing_bucket_or_endpoint_is_named_before_any_write() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "1"]);
    let s3 = S3::start();
    let o = s3.run(Some(&sim), "s3://nosuchbucket/x", &["pull", "c2s"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bucket `nosuchbucket` does not exist"), "{}", text(&o));
    assert!(!text(&o).contains(&s3.secret));
    assert_eq!(sim.stats()["requests"], 0, "the API was called before the lake was checked");
    let mut c = s3.cmd(Some(&sim), "s3://lake/x", &["pull", "c2s"]);
    c.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("AWS_ENDPOINT_URL"), "{}", text(&o));
}

/// Whether a Delta column type maps to a Glue/Athena type.
fn glue_type(t: &Value) -> bool {
    match t {
        Value::String(s) => {
            matches!(s.as_str(), "string" | "long" | "integer" | "short" | "byte" | "double" | "float" | "boolean" | "timestamp" | "date" | "binary")
                || s.starts_with("decimal(")
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("struct") => o["fields"].as_array().unwrap().iter().all(|f| glue_type(&f["type"])),
            Some("array") => glue_type(&o["elementType"]),
            Some("map") => glue_type(&o["keyType"]) && glue_type(&o["valueType"]),
            _ => false,
        },
        _ => false,
    }
}

/// Four shards of one Pancake pull run at once against one S3 lake (per-partition leases);
/// their union equals an unsharded pull on disk, and a transform afterwards is exact.
#[test]
fn four_concurrent_shards_equal_one_unsharded_pull() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3", "--pages", "8"]);
    let s3 = S3::start();
    s3.bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let range = ["--from", "2023-09-01", "--to", "2023-09-03"];
    let pull: Vec<&str> = [&["pull", "pancake"][..], &range].concat();
    ok(&ingest_cmd(Some(&sim), &local, &pipelines(), &pull).output().unwrap());
    ok(&ingest_cmd(Some(&sim), &local, &pipelines(), &["transform"]).arg("--sql").arg(shipped_sql()).output().unwrap());
    let lake = "s3://lake/sharded";
    let bad = s3.run(Some(&sim), lake, &["pull", "pancake", "--partitions", "999"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("no partition `999`"), "{}", text(&bad));
    let shards: Vec<Child> = (0..4)
        .map(|k| {
            let spec = format!("{k}/4");
            let args: Vec<&str> = [&["-q", "pull", "pancake", "--shard", spec.as_str()][..], &range].concat();
            s3.cmd(Some(&sim), lake, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let outs: Vec<Output> = shards.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outs {
        ok(o);
    }
    let parts: Vec<Value> = ok(&s3.run(None, lake, &["query", "--format", "json", "SELECT count(DISTINCT partition) AS n FROM _ingest.catalogue"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parts[0]["n"], 8, "the shards together pulled every page");
    ok(&s3.run(None, lake, &["transform"]));
    for t in TABLES.iter().filter(|t| t.contains("pancake")) {
        let remote = rows(s3.run(None, lake, &["query", "--format", "json", &format!("SELECT * FROM {t}")]));
        let here = local_rows(&local, t);
        assert!(!here.is_empty(), "{t} is empty");
        assert!(remote == here, "{t}: the shards' union differs from one pull ({} vs {} rows)", remote.len(), here.len());
    }
}

/// The lease levels exclude each other: while a shard runs, a whole-source pull of that source
/// is refused (naming the partition) and a shard of other partitions runs alongside.
#[test]
fn a_running_shard_blocks_a_whole_source_pull_but_not_another_shard() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "4", "--pages", "2", "--slow-every", "1", "--slow-ms", "300"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let ids: Vec<String> = sim.var("PANCAKE_PAGE_IDS").split(',').map(str::to_string).collect();
    let range = ["--from", "2023-09-01", "--to", "2023-09-04"];
    let first: Vec<&str> = [&["-q", "pull", "pancake", "--partitions", ids[0].as_str()][..], &range].concat();
    let mut running = spawn_quiet(ingest_cmd(Some(&sim), &lake, &pipelines(), &first));
    let lease = lake.join(format!("_ingest/leases/pancake/{}.json", ids[0]));
    let t0 = Instant::now();
    while !lease.exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lease.exists(), "the shard took no partition lease");
    let whole: Vec<&str> = [&["pull", "pancake"][..], &range].concat();
    let o = ingest_cmd(Some(&sim), &lake, &pipelines(), &whole).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&format!("a pull of pancake (partition {}) is running since", ids[0])), "{}", text(&o));
    let other: Vec<&str> = [&["pull", "pancake", "--partitions", ids[1].as_str()][..], &range].concat();
    assert!(running.try_wait().unwrap().is_none(), "the first shard ended before the second started alongside it");
    ok(&ingest_cmd(Some(&sim), &lake, &pipelines(), &other).output().unwrap());
    assert!(running.wait().unwrap().success());
    assert!(!lease.exists(), "the shard left its lease behind");
    let parts = query(&lake, "SELECT count(DISTINCT partition) AS n FROM _ingest.catalogue");
    assert_eq!(parts[0]["n"], 2);
}

/// A store that ignores conditional writes (here: moto behind a proxy that drops
/// `If-None-Match`) is refused before anything is written, naming the opt-out variable;
/// with `AWS_S3_ALLOW_UNSAFE_RENAME=true` the user accepts the risk and the pull runs.
#[test]
fn a_store_without_conditional_writes_is_refused_unless_the_user_opts_in() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "1"]);
    let s3 = S3::start();
    s3.bucket("lake");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = format!(
        "import http.server, http.client\n\
         class P(http.server.BaseHTTPRequestHandler):\n    protocol_version = 'HTTP/1.1'\n    def log_message(self, *a): pass\n    def go(self):\n        \
         n = int(self.headers.get('Content-Length') or 0)\n        body = self.rfile.read(n) if n else None\n        \
         h = {{k: v for k, v in self.headers.items() if k.lower() not in ('if-none-match', 'host')}}\n        \
         c = http.client.HTTPConnection('{up}')\n        c.request(self.command, self.path, body=body, headers=h)\n        r = c.getresponse()\n        data = r.read()\n        \
         self.send_response(r.status)\n        for k, v in r.getheaders():\n            if k.lower() not in ('transfer-encoding', 'content-length', 'connection'): self.send_header(k, v)\n        \
         self.send_header('Content-Length', str(len(data)))\n        self.end_headers()\n        self.wfile.write(data)\n    \
         do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = go\n\
         http.server.ThreadingHTTPServer(('127.0.0.1', {port}), P).serve_forever()\n",
        up = s3.endpoint.strip_prefix("http://").unwrap()
    );
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _proxy = Kill(Command::new(std::env::var("INGEST_PYTHON").unwrap()).arg("-c").arg(&proxy).stderr(Stdio::null()).spawn().unwrap());
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let via = |c: &mut Command| {
        c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    };
    let mut c = s3.cmd(Some(&sim), "s3://lake/unsafe", &["pull", "c2s"]);
    via(&mut c);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("ignores conditional writes") && text(&o).contains("AWS_S3_ALLOW_UNSAFE_RENAME=true"), "{}", text(&o));
    assert_eq!(sim.stats()["requests"], 0, "the API was called before the lake was checked");
    assert!(s3.objects("lake").is_empty(), "something was written: {:?}", s3.objects("lake").iter().map(|o| &o.0).collect::<Vec<_>>());
    let mut c = s3.cmd(Some(&sim), "s3://lake/unsafe", &["pull", "c2s"]);
    via(&mut c);
    c.env("AWS_S3_ALLOW_UNSAFE_RENAME", "true");
    ok(&c.output().unwrap());
    assert!(s3.objects("lake").iter().any(|(k, _)| k.starts_with("unsafe/c2s/")));
}

/// `${secret:…}` from an AWS Secrets Manager JSON secret (moto's, on loopback): a pipeline
/// naming the seed's secret pulls with its token from there; the value reaches no output, lake
/// file or run-log row; a missing key or secret exits 2 naming the reference, not a value.
#[test]
fn secrets_from_aws_secrets_manager_pull_and_never_show() {
    let s3 = S3::start();
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--seed", "41"]);
    let token = sim.var("C2S_TOKEN");
    let id = "api-extractor-config/prod/extractor-secrets";
    python(&format!(
        "import boto3, json\nsm = boto3.client('secretsmanager', endpoint_url='{}', aws_access_key_id='x', aws_secret_access_key='y', region_name='us-east-1')\n\
         sm.create_secret(Name='{id}', SecretString=json.dumps({{'c2s_token': '{token}', 'other': 'x'}}))\n\
         sm.create_secret(Name='not-json', SecretString='plain')\n",
        s3.endpoint
    ));
    let dir = tempfile::tempdir().unwrap();
    let named = |dir: &Path, secret: &str| edited_pipelines(dir, "c2s.toml", "[source.auth]", &format!("[source.secrets]\naws_secret_id = \"{secret}\"\n\n[source.auth]"));
    let run = |pipelines: &Path, lake: &Path| {
        let mut c = Command::new(BIN);
        c.arg("--lake").arg(lake).arg("--pipelines").arg(pipelines).args(["pull", "c2s", "--from", "2023-09-01", "--to", "2023-09-02"]);
        c.env_remove("INGEST_LAKE").env("INGEST_SECRETS_DIR", dir.path().join("no-secret-files"));
        c.envs(sim.env.iter().filter(|(k, _)| k != "C2S_TOKEN").map(|(k, v)| (k.clone(), v.clone())));
        c.envs(s3.env());
        c.output().unwrap()
    };
    let lake = dir.path().join("lake");
    let o = run(&named(&dir.path().join("ok"), id), &lake);
    let out = ok(&o);
    assert!(out.contains("leads"), "{out}");
    let landed: usize = raw_files(&lake).values().map(Vec::len).sum();
    assert!(landed > 0);
    assert_no_secrets(&[token.clone()], &[&text(&o)], &lake);

    // A secret without the key, a secret that does not exist, one that is not JSON: exit 2,
    // nothing landed, the reference named.
    let cases = [("nokey", "other-secret", "C2S_TOKEN"), ("missing", "no/such/secret", "no/such/secret"), ("plain", "not-json", "not a JSON object")];
    python(&format!(
        "import boto3, json\nsm = boto3.client('secretsmanager', endpoint_url='{}', aws_access_key_id='x', aws_secret_access_key='y', region_name='us-east-1')\n\
         sm.create_secret(Name='other-secret', SecretString=json.dumps({{'unrelated': 'v'}}))\n",
        s3.endpoint
    ));
    for (name, secret, named_in_error) in cases {
        let l = dir.path().join(format!("lake-{name}"));
        let o = run(&named(&dir.path().join(name), secret), &l);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(text(&o).contains(named_in_error), "{name}: {}", text(&o));
        assert!(raw_files(&l).is_empty(), "{name}: something landed");
        assert_no_secrets(&[token.clone()], &[&text(&o)], &l);
    }
}
