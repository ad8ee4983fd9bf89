//! Helpers: start `ingest fixtures serve`, run `ingest`, read raw files and the catalogue.
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ingest");

pub fn pipelines() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
}

/// A running simulator child process; killed on drop.
pub struct Sim {
    child: Child,
    pub base: String,
    pub env: Vec<(String, String)>,
}

impl Sim {
    pub fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(BIN)
            .args(["fixtures", "serve"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start simulator");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut base = String::new();
        out.read_line(&mut base).unwrap();
        let mut env = Vec::new();
        loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap() == 0 || l.trim().is_empty() {
                break;
            }
            let (k, v) = l.trim().strip_prefix("export ").unwrap().split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
        }
        // Keep the pipe drained.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        Sim {
            child,
            base: base.trim().to_string(),
            env,
        }
    }

    pub fn var(&self, k: &str) -> String {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k}"))
    }

    pub fn secrets(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|(k, _)| k.contains("TOKEN"))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn stats(&self) -> Value {
        http_get_json(&format!("{}/_sim/stats", self.base))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get_json(url: &str) -> Value {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let body = buf.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `ingest --lake <lake> --pipelines <pipelines> <args>` with the simulator's environment.
pub fn ingest_cmd(sim: Option<&Sim>, lake: &Path, pipelines: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--lake").arg(lake).arg("--pipelines").arg(pipelines).args(args);
    c.env_remove("INGEST_LAKE");
    if let Some(s) = sim {
        c.envs(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    c
}

/// [`ingest_cmd`] started with its output discarded: a run to kill.
/// A pipelines folder `<dir>/pipelines`: the shipped pipeline files (those not there yet),
/// and `file` as shipped with `from` (which it must hold) replaced by `to`.
pub fn edited_pipelines(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let p = dir.join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    for f in std::fs::read_dir(pipelines()).unwrap() {
        let f = f.unwrap().path();
        let dst = p.join(f.file_name().unwrap());
        if f.extension().is_some_and(|x| x == "toml") && !dst.exists() {
            std::fs::copy(&f, dst).unwrap();
        }
    }
    let text = std::fs::read_to_string(pipelines().join(file)).unwrap();
    assert!(text.contains(from), "{file}: {from}");
    std::fs::write(p.join(file), text.replace(from, to)).unwrap();
    p
}

pub fn spawn_quiet(mut c: Command) -> std::process::Child {
    c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start ingest")
}

/// `kill -9` a running `ingest` once `ready` holds (asked every `poll`, for at most `limit`),
/// asserting it was still running then: the kill lands mid-run.
pub fn kill_when(child: &mut Child, what: &str, poll: std::time::Duration, limit: std::time::Duration, ready: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !ready() && t0.elapsed() < limit {
        std::thread::sleep(poll);
    }
    assert!(child.try_wait().unwrap().is_none(), "{what} ended before the kill");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Run `ingest` with the simulator's environment, a lake, and the shipped pipelines.
pub fn ingest(sim: Option<&Sim>, lake: &Path, args: &[&str]) -> Output {
    ingest_cmd(sim, lake, &pipelines(), args)
        .env("INGEST_LOG", "ingest=debug")
        .output()
        .expect("run ingest")
}

pub fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "ingest failed ({:?})\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Every raw NDJSON file under the lake (relative path → records), `_ingest` excluded.
pub fn raw_files(lake: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for f in walk(lake) {
        let rel = f.strip_prefix(lake).unwrap().to_string_lossy().to_string();
        if rel.starts_with("_ingest") || rel.contains("_delta_log") || !rel.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let recs = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{rel}: {e}: {l}")))
            .collect();
        out.insert(rel, recs);
    }
    out
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn catalogue(lake: &Path) -> Vec<ingest::lake::state::LandedFile> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = ingest::lake::Lake::open(lake.to_str().unwrap()).unwrap();
        ingest::lake::state::read_catalogue(&l, None).await.unwrap()
    })
}

/// Assert no secret value appears in any text or any file of the lake.
pub fn assert_no_secrets(secrets: &[String], texts: &[&str], lake: &Path) {
    for s in secrets {
        assert!(s.len() > 8, "secret too short to grep for: {s}");
        for t in texts {
            assert!(!t.contains(s.as_str()), "a secret leaked into output");
        }
        for f in walk(lake) {
            let bytes = std::fs::read(&f).unwrap();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains(s.as_str()), "a secret leaked into {}", f.display());
        }
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a DuckDB (Python) snippet with `con` connected and the delta extension loaded; returns
/// its stdout. Needs the venv that `tests/run.sh` installs.
pub fn duckdb(code: &str) -> String {
    let py = std::env::var("INGEST_PYTHON").expect("INGEST_PYTHON is not set: run the tests through tests/run.sh");
    let ext = std::env::var("INGEST_DUCKDB_DELTA").expect("INGEST_DUCKDB_DELTA is not set: run tests/run.sh");
    let script = format!(
        "import duckdb\ncon = duckdb.connect(config={{'allow_unsigned_extensions': 'true'}})\ncon.execute(\"LOAD '{ext}'\")\n{code}\n"
    );
    let o = Command::new(py).arg("-c").arg(&script).output().expect("run python");
    assert!(
        o.status.success(),
        "duckdb failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        script
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `ingest --sql <dir> <args>` on a lake (no simulator needed).
pub fn ingest_sql(lake: &Path, sql: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--lake")
        .arg(lake)
        .arg("--sql")
        .arg(sql)
        .args(args)
        .env_remove("INGEST_LAKE")
        .output()
        .expect("run ingest")
}

pub fn shipped_sql() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sql")
}

/// Rows of `ingest query --format json`.
pub fn query(lake: &Path, sql: &str) -> Vec<Value> {
    let o = ingest_sql(lake, &shipped_sql(), &["query", "--format", "json", sql]);
    let out = ok(&o);
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    for f in walk(from) {
        let dst = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dst).unwrap();
    }
}

/// Model files `(relative path, text)` written under `<dir>/sql` (added to what is there).
pub fn write_models(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let sql = dir.join("sql");
    for (name, text) in files {
        let p = sql.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    sql
}

/// Batch requests the simulated retail portal has answered.
pub fn retail_batches(sim: &Sim) -> u64 {
    sim.stats()["by_route"]["retail/batch"]["requests"].as_u64().unwrap_or(0)
}
