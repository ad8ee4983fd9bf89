//! `ingest serve` against the simulator: runs started over HTTP land what a CLI run lands,
//! keys and their rights, validated configuration changes with a history, metrics equal to
//! the run log, schedules that fire their chain without overlapping, catch-up at start-up,
//! SIGTERM, and the status page in a real headless browser.
use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = "root-key-for-tests-0123456789";

/// A running `ingest serve` (killed when dropped), with every answer body it gave.
struct Server {
    child: Child,
    url: String,
    bodies: std::cell::RefCell<Vec<String>>,
}

impl Server {
    fn start(sim: &Sim, lake: &Path, pipelines: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with_grace(sim, lake, pipelines, env, "30")
    }

    fn start_with_grace(sim: &Sim, lake: &Path, pipelines: &Path, env: &[(&str, &str)], grace: &str) -> Server {
        Server::start_with_sql(sim, lake, pipelines, &shipped_sql(), env, grace)
    }

    fn start_with_sql(sim: &Sim, lake: &Path, pipelines: &Path, sql: &Path, env: &[(&str, &str)], grace: &str) -> Server {
        let mut c = ingest_cmd(Some(sim), lake, pipelines, &["--sql", sql.to_str().unwrap(), "serve", "--addr", "127.0.0.1:0", "--grace", grace]);
        c.env("INGEST_ROOT_KEY", ROOT).envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        // The server prints its address once it listens: the event every call waits for.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("no address: {line:?}")).to_string();
        Server { child, url, bodies: Default::default() }
    }

    /// One request: (status, body).
    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, String) {
        let host = self.url.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let body = body.unwrap_or("");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(rest) } else { rest.to_string() };
        self.bodies.borrow_mut().push(body.clone());
        (status, body)
    }

    fn json(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let (st, b) = self.call(method, path, key, body.map(|v| v.to_string()).as_deref());
        (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    /// The run once it is no longer queued, running or cancelling (asked every 100 ms).
    fn wait_run(&self, id: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let (st, r) = self.json("GET", &format!("/api/runs/{id}"), Some(ROOT), None);
            assert_eq!(st, 200, "{r}");
            if !["queued", "running", "cancelling"].contains(&r["state"].as_str().unwrap()) {
                return r;
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "run {id} never ended: {r}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((n, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(n.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn secrets(sim: &Sim) -> Vec<String> {
    sim.env
        .iter()
        .filter(|(k, _)| k.ends_with("TOKEN") || k.contains("TOKEN_") || k.ends_with("KEY") || k.ends_with("SECRET"))
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn runs_keys_and_changes_over_http_hold_to_the_cli_and_keep_secrets_out() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipelines = dir.path().join("pipelines");
    copy_dir(&pipelines_dir(), &pipelines);
    // Every answer 300 ms late: a pull takes seconds, so it is seen running. The CLI's runs
    // go to a second simulator serving the same data at once.
    let sim = Sim::start(&["--days", "3", "--seed", "31", "--rate-window", "1", "--reply-delay-ms", "300"]);
    let fast = Sim::start(&["--days", "3", "--seed", "31", "--rate-window", "1"]);
    let srv = Server::start(&sim, &lake, &pipelines, &[]);

    assert_eq!(srv.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(srv.call("GET", "/api/runs", None, None), (401, "unauthorized\n".into()));
    assert_eq!(srv.call("GET", "/api/runs", Some("not-a-key"), None).0, 401);

    // Keys: the root creates one; that key cannot create keys; the list shows no key.
    let (st, k) = srv.json("POST", "/api/keys", Some(ROOT), Some(json!({"name": "ana"})));
    assert_eq!(st, 201, "{k}");
    let ana = k["key"].as_str().unwrap().to_string();
    assert_eq!(srv.json("POST", "/api/keys", Some(&ana), Some(json!({"name": "bob"}))).0, 403);
    assert_eq!(srv.json("POST", "/api/keys", Some(ROOT), Some(json!({"name": "ana"}))).0, 409);
    let (_, listed) = srv.call("GET", "/api/keys", Some(&ana), None);
    assert!(listed.contains("\"ana\"") && !listed.contains(&ana) && !listed.contains(&ingest_sha(&ana)), "{listed}");

    // A pull started over HTTP: 202 at once, seen running, a second one refused.
    let (st, r) = srv.json("POST", "/api/runs", Some(&ana), Some(json!({"command": "pull", "source": "c2s", "from": "2023-09-01"})));
    assert_eq!(st, 202, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();
    let (_, now) = srv.json("GET", &format!("/api/runs/{id}"), Some(&ana), None);
    assert_eq!(now["state"], "running", "{now}");
    let (st, again) = srv.json("POST", "/api/runs", Some(&ana), Some(json!({"command": "pull", "source": "c2s"})));
    assert_eq!(st, 409, "{again}");
    for bad in [json!({"command": "pull", "source": "nope"}), json!({"command": "drop"}), json!({"command": "pull", "source": "c2s", "from": "--full-refresh"}), json!({"command": "pull", "source": "c2s", "x": 1})] {
        assert_eq!(srv.json("POST", "/api/runs", Some(&ana), Some(bad.clone())).0, 400, "{bad}");
    }
    let done = srv.wait_run(&id);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["key_name"], "ana");
    assert_eq!(done["trigger"], "api");
    let ex = done["extractions"].as_array().unwrap();
    assert_eq!(ex.len(), 1, "{done}");
    for f in ["extraction_name", "extraction_id", "config_name", "config_id", "success", "error", "data_inserted_len", "destiny", "last", "created_at"] {
        assert!(ex[0].get(f).is_some(), "{f} in {}", ex[0]);
    }
    let landed: usize = raw_files(&lake).values().map(Vec::len).sum();
    assert!(landed > 0);
    assert_eq!(done["records"].as_u64().unwrap() as usize, landed);
    assert_eq!(ex[0]["data_inserted_len"].as_u64().unwrap() as usize, landed);
    // The same pull from the CLI lands the same records.
    let cli_lake = dir.path().join("cli");
    ok(&ingest_cmd(Some(&fast), &cli_lake, &pipelines, &["pull", "c2s", "--from", "2023-09-01"]).output().unwrap());
    let ids = |l: &Path| -> Vec<String> {
        let mut v: Vec<String> = raw_files(l).values().flatten().map(|r| format!("{}@{}", r["id"], r["updated_at"])).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&lake), ids(&cli_lake));

    // A CLI pull of pancake holds its lease: the server's pull of pancake is recorded `skipped`,
    // naming the holder, and never runs beside it.
    let mut cli = spawn_quiet(ingest_cmd(Some(&sim), &lake, &pipelines, &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03"]));
    let lease = lake.join("_ingest/leases/pancake.json");
    let t0 = Instant::now();
    while !lease.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60) && cli.try_wait().unwrap().is_none(), "the CLI pull took no lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, r) = srv.json("POST", "/api/runs", Some(&ana), Some(json!({"command": "pull", "source": "pancake", "to": "2023-09-03"})));
    let skipped = srv.wait_run(r["run_id"].as_str().unwrap());
    assert!(cli.try_wait().unwrap().is_none(), "the CLI pull ended before the server's run: nothing was tested");
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert!(skipped["error"].as_str().unwrap().contains("a pull of pancake is running since"), "{skipped}");
    assert!(cli.wait().unwrap().success());

    // A cancelled pull: the child gets SIGTERM; the CLI then pulls the source to the end.
    let (_, r) = srv.json("POST", "/api/runs", Some(ROOT), Some(json!({"command": "pull", "source": "pancake", "from": "2023-09-01", "to": "2023-09-03"})));
    let pid = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(srv.json("POST", &format!("/api/runs/{pid}/cancel"), Some(ROOT), None).0, 202);
    assert_eq!(srv.wait_run(&pid)["state"], "cancelled");
    ok(&ingest_cmd(Some(&fast), &lake, &pipelines, &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03"]).output().unwrap());
    let clean = dir.path().join("clean");
    ok(&ingest_cmd(Some(&fast), &clean, &pipelines, &["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03"]).output().unwrap());
    let pancake = |l: &Path| -> Vec<String> {
        let mut v: Vec<String> = raw_files(l).into_iter().filter(|(p, _)| p.starts_with("pancake/")).flat_map(|(p, rs)| rs.into_iter().map(move |r| format!("{p} {r}"))).collect();
        v.sort();
        v
    };
    assert_eq!(pancake(&lake), pancake(&clean), "after the cancelled run, the CLI's pull lands what a clean pull lands");

    // Configuration: a bad field is refused naming line and field, the file untouched.
    let file = pipelines.join("c2s.toml");
    let before = std::fs::read_to_string(&file).unwrap();
    let broken = before.replacen("[source]", "[source]\ntimeout_secs = 0", 1);
    let (st, body) = srv.call("PUT", "/api/pipelines/c2s", Some(&ana), Some(&broken));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("pipelines/c2s.toml:") && body.contains("timeout_secs"), "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let (st, shown) = srv.call("GET", "/api/pipelines/c2s", Some(&ana), None);
    assert_eq!((st, shown.as_str()), (200, before.as_str()), "served as written: references, not values");
    let changed = format!("{before}\n# reviewed by ana\n");
    let (st, body) = srv.call("PUT", "/api/pipelines/c2s", Some(&ana), Some(&changed));
    assert_eq!(st, 200, "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), changed);
    let (st, body) = srv.call("PUT", "/api/models/silver/c2s_leads", Some(&ana), Some("SELECT 1"));
    assert_eq!(st, 400, "a model without a target header: {body}");
    let (_, h) = srv.json("GET", "/api/history", Some(ROOT), None);
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{h}");
    assert_eq!(changes[0]["key_name"], "ana");
    assert_eq!(changes[0]["file"], "pipelines/c2s.toml");
    assert!(changes[0]["diff"].as_str().unwrap().contains("+# reviewed by ana"), "{h}");

    // Metrics, read by Prometheus's own parser, equal the run log.
    let (st, metrics) = srv.call("GET", "/metrics", Some(ROOT), None);
    assert_eq!(st, 200);
    let parsed = python(&format!(
        "from prometheus_client.parser import text_string_to_metric_families\nimport json,sys\nout={{}}\nfor f in text_string_to_metric_families(sys.stdin.read()):\n  for s in f.samples: out[s.name+json.dumps(s.labels,sort_keys=True)]=s.value\nprint(json.dumps(out))"
    ), &metrics.replace("# EOF\n", ""));
    let m: Value = serde_json::from_str(&parsed).unwrap();
    assert_eq!(m[r#"ingest_runs_total{"command": "pull", "state": "success"}"#], 1.0, "{m}");
    assert_eq!(m[r#"ingest_runs_total{"command": "pull", "state": "cancelled"}"#], 1.0, "{m}");
    let log = query(&lake, "SELECT sum(records) AS n FROM _ingest.runs WHERE source = 'c2s' AND success");
    assert_eq!(m[r#"ingest_records_total{"source": "c2s", "stream": "leads"}"#].as_f64().unwrap() as i64, log[0]["n"].as_i64().unwrap(), "{m}");
    let log = query(&lake, "SELECT sum(throttled) AS t, sum(pages) AS p FROM _ingest.runs WHERE source = 'c2s' AND partition <> 'push'");
    assert_eq!(m[r#"ingest_throttled_total{"source": "c2s"}"#].as_f64().unwrap() as i64, log[0]["t"].as_i64().unwrap(), "{m}");
    assert_eq!(m[r#"ingest_requests_total{"source": "c2s"}"#].as_f64().unwrap() as i64, log[0]["p"].as_i64().unwrap(), "{m}");

    let bodies = srv.bodies.borrow().clone();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let mut all = secrets(&sim);
    all.push(ROOT.to_string());
    assert_no_secrets(&all, &refs, &lake);
    let status = srv.stop();
    assert!(status.success(), "{status:?}");
}

fn pipelines_dir() -> PathBuf {
    pipelines()
}

fn ingest_sha(key: &str) -> String {
    use std::fmt::Write as _;
    let out = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().unwrap().write_all(key.as_bytes())?;
        c.wait_with_output()
    });
    let mut s = String::new();
    let _ = write!(s, "{}", String::from_utf8_lossy(&out.unwrap().stdout).split_whitespace().next().unwrap_or_default());
    s
}

/// Run Python code (the test venv's) with `stdin`; its stdout.
fn python(code: &str, stdin: &str) -> String {
    let py = std::env::var("INGEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut c = Command::new(py).arg("-c").arg(code).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The server's runs, oldest first.
fn runs(srv: &Server) -> Vec<Value> {
    srv.json("GET", "/api/runs?limit=1000", Some(ROOT), None).1["runs"].as_array().unwrap().clone()
}

#[test]
fn a_schedule_fires_its_pull_then_its_steps_without_overlapping_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sim = Sim::start(&["--days", "3", "--rate-window", "1", "--seed", "32"]);
    // Every 2 seconds (a test-only pace; the seed's is daily): a pull, then one model.
    let pipelines = edited_pipelines(dir.path(), "c2s.toml", "[source]", "[schedule]\ncron = \"*/2 * * * * *\"\nthen = [\"transform silver.c2s_leads\"]\n\n[source]");
    let srv = Server::start(&sim, &lake, &pipelines, &[]);
    let t0 = Instant::now();
    let chains = loop {
        let rs = runs(&srv);
        let done: Vec<&Value> = rs.iter().filter(|r| r["command"] == "transform" && r["state"] != "running").collect();
        if done.len() >= 2 {
            break rs;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "{rs:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let scheduled: Vec<&Value> = chains.iter().filter(|r| r["trigger"] == "schedule" && r["ended"].is_string()).collect();
    assert!(scheduled.iter().all(|r| r["key_name"] == "schedule" && r["state"] == "success"), "{scheduled:#?}");
    // Never two at once: each run starts after the previous one ended.
    for w in scheduled.windows(2) {
        assert!(w[1]["started"].as_str().unwrap() >= w[0]["ended"].as_str().unwrap(), "{:#?}", w);
    }
    let first_pull = scheduled.iter().position(|r| r["command"] == "pull").unwrap();
    assert_eq!(scheduled[first_pull + 1]["command"], "transform", "the step follows its pull");
    assert!(scheduled[first_pull]["records"].as_i64().unwrap() > 0);
    let n = query(&lake, "SELECT count(*) AS n FROM silver.c2s_leads")[0]["n"].as_i64().unwrap();
    assert!(n > 0);
    let status = srv.stop();
    assert!(status.success(), "{status:?}");
    let leases: Vec<PathBuf> = walk(&lake.join("_ingest/leases"));
    assert!(leases.is_empty(), "leases left: {leases:?}");
    // The run-log rows of the scheduled pulls carry the server's run ids.
    let ids = query(&lake, "SELECT DISTINCT run_id FROM _ingest.runs");
    let served = query(&lake, "SELECT run_id FROM _ingest.serve_runs WHERE command = 'pull'");
    assert!(ids.iter().all(|r| served.contains(r)), "{ids:?} {served:?}");
}

#[test]
fn a_missed_schedule_runs_once_at_start_up_unless_told_to_skip_and_a_bad_cron_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(&["--days", "2", "--rate-window", "1", "--seed", "33"]);
    for (catch_up, runs_at_start) in [("once", true), ("skip", false)] {
        let lake = dir.path().join(format!("lake-{catch_up}"));
        // Yearly; the last time it fired is two years ago: one run is missed.
        let sched = format!("[schedule]\ncron = \"0 0 1 1 ? *\"\ncatch_up = \"{catch_up}\"\n\n[source]");
        let pipelines = edited_pipelines(&dir.path().join(catch_up), "c2s.toml", "[source]", &sched);
        std::fs::create_dir_all(lake.join("_ingest/serve/schedules")).unwrap();
        std::fs::write(lake.join("_ingest/serve/schedules/c2s.json"), json!({"last": "2024-01-01T00:00:00Z"}).to_string()).unwrap();
        let srv = Server::start(&sim, &lake, &pipelines, &[]);
        if runs_at_start {
            let t0 = Instant::now();
            let id = loop {
                if let Some(r) = runs(&srv).first() {
                    break r["run_id"].as_str().unwrap().to_string();
                }
                assert!(t0.elapsed() < Duration::from_secs(60));
                std::thread::sleep(Duration::from_millis(100));
            };
            assert_eq!(srv.wait_run(&id)["state"], "success");
            assert_eq!(runs(&srv).len(), 1);
        } else {
            // The server is up (it answered); the schedule loaded with nothing due.
            assert!(runs(&srv).is_empty());
        }
        assert!(srv.stop().success());
    }
    let bad = edited_pipelines(&dir.path().join("bad"), "c2s.toml", "[source]", "[schedule]\ncron = \"0 25 * * *\"\n\n[source]");
    let o = ingest_cmd(Some(&sim), &dir.path().join("lake-bad"), &bad, &["serve", "--addr", "127.0.0.1:0"]).env("INGEST_ROOT_KEY", ROOT).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = std::fs::read_to_string(bad.join("c2s.toml")).unwrap().lines().position(|l| l.starts_with("cron = ")).unwrap() + 1;
    assert!(err.contains(&format!("c2s.toml:{line}: field `schedule.cron`")), "{err}");
    let o = ingest_cmd(Some(&sim), &dir.path().join("lake-bad"), &pipelines(), &["serve", "--addr", "127.0.0.1:0"]).env("INGEST_ROOT_KEY", "short").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn the_status_page_in_a_headless_browser_shows_sources_a_failed_run_and_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sim = Sim::start(&["--days", "3", "--rate-window", "1", "--seed", "34"]);
    ok(&ingest_cmd(Some(&sim), &lake, &pipelines(), &["pull", "c2s", "--from", "2023-09-01"]).output().unwrap());
    // A pull that fails: the Milvus token is wrong.
    let srv = Server::start(&sim, &lake, &pipelines(), &[("MILVUS_TOKEN", "wrong-token")]);
    let (_, r) = srv.json("POST", "/api/runs", Some(ROOT), Some(json!({"command": "pull", "source": "milvus"})));
    let failed = srv.wait_run(r["run_id"].as_str().unwrap());
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap().to_string();
    let shot = dir.path().join("status.png");
    let code = format!(
        r##"
import sys
from selenium import webdriver
from selenium.webdriver.common.by import By
o = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400"]: o.add_argument(a)
o.binary_location = "/usr/bin/chromium"
d = webdriver.Chrome(options=o, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
d.get("{url}/")
d.find_element(By.NAME, "key").send_keys("{ROOT}")
d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
d.find_element(By.ID, "streams")
print("SOURCES", ",".join(e.text for e in d.find_elements(By.CSS_SELECTOR, "#streams tr td:first-child")))
print("SERIES", ",".join(e.get_attribute("data-source") for e in d.find_elements(By.CSS_SELECTOR, "svg polyline.series")))
print("RUNS", d.find_element(By.ID, "runs").text.replace("\n", " | "))
d.save_screenshot("{shot}")
d.quit()
"##,
        url = srv.url,
        shot = shot.display()
    );
    let out = python(&code, "");
    for s in ["c2s", "milvus", "pancake", "ploomes", "retail_portal", "zoho_crm", "zoho_desk"] {
        assert!(out.lines().any(|l| l.starts_with("SOURCES") && l.split(',').any(|x| x.ends_with(s))), "{s}: {out}");
    }
    assert!(out.contains("SERIES c2s"), "one series per source that landed: {out}");
    let first_words: String = error.chars().take(40).collect();
    assert!(out.contains(&first_words), "the failed run's error `{error}`: {out}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    assert!(!out.contains("wrong-token"));
    assert!(srv.stop().success());
}


/// SIGTERM while a pull started over HTTP runs: the server exits 0 once the grace is over;
/// the pull, sent SIGTERM then, ends at its next page boundary and releases its lease (a CLI
/// pull stopped by a signal), and the next CLI pull — no `--wait` — ends with the lake a clean
/// pull makes.
#[test]
fn sigterm_mid_pull_exits_0_and_a_cli_pull_then_ends_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let slow = Sim::start(&["--days", "3", "--seed", "35", "--rate-window", "1", "--reply-delay-ms", "300"]);
    let fast = Sim::start(&["--days", "3", "--seed", "35", "--rate-window", "1"]);
    let srv = Server::start_with_grace(&slow, &lake, &pipelines(), &[], "1");
    let args = ["pull", "pancake", "--from", "2023-09-01", "--to", "2023-09-03"];
    let (st, r) = srv.json("POST", "/api/runs", Some(ROOT), Some(json!({"command": "pull", "source": "pancake", "from": "2023-09-01", "to": "2023-09-03"})));
    assert_eq!(st, 202, "{r}");
    // Mid-pull: its first raw file has landed.
    let t0 = Instant::now();
    while !walk(&lake.join("pancake")).iter().any(|p| p.extension().is_some_and(|x| x == "json")) {
        assert!(t0.elapsed() < Duration::from_secs(60), "nothing landed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, now) = srv.json("GET", &format!("/api/runs/{}", r["run_id"].as_str().unwrap()), Some(ROOT), None);
    assert_eq!(now["state"], "running", "the pull ended before the SIGTERM: nothing was tested");
    let status = srv.stop();
    assert!(status.success(), "{status:?}");
    assert!(walk(&lake.join("_ingest/leases")).is_empty(), "the stopped pull left its lease");
    ok(&ingest_cmd(Some(&fast), &lake, &pipelines(), &args).output().unwrap());
    let clean = dir.path().join("clean");
    ok(&ingest_cmd(Some(&fast), &clean, &pipelines(), &args).output().unwrap());
    let records = |l: &Path| -> Vec<String> {
        let mut v: Vec<String> = raw_files(l).into_iter().flat_map(|(p, rs)| rs.into_iter().map(move |r| format!("{p} {r}"))).collect();
        v.sort();
        v
    };
    assert_eq!(records(&lake), records(&clean));
    assert!(walk(&lake.join("_ingest/leases")).is_empty(), "the CLI pull released the lease it took over");
}

/// Seed 004's users send their JSON configs to the API: `PUT /api/extractor-configs/zoho`
/// imports the seed's deals config (its pipeline, its model and the JSON itself, each a
/// history row under the key's name); a run started over HTTP pulls it and a transform writes
/// its output; a broken config is refused naming the JSON path, nothing changed; the same
/// config again changes nothing.
#[test]
fn seed_004_json_configs_are_imported_over_the_api_and_run() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--scale", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let (lake, pipelines, sql, out) = (dir.path().join("lake"), dir.path().join("pipelines"), dir.path().join("sql"), dir.path().join("out"));
    std::fs::create_dir_all(&pipelines).unwrap();
    let (crm, accounts, out_s) = (sim.var("ZOHO_CRM_BASE_URL"), sim.var("ZOHO_ACCOUNTS_URL"), out.display().to_string());
    let env = [("ZOHO_BASE_URL", crm.as_str()), ("ZOHO_AUTH_URL", accounts.as_str()), ("ZOHO_OUTPUT_URL", out_s.as_str())];
    let srv = Server::start_with_sql(&sim, &lake, &pipelines, &sql, &env, "30");
    let cfg = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seed004/zoho_deals.json")).unwrap();
    let (st, body) = srv.call("PUT", "/api/extractor-configs/zoho", Some(ROOT), Some(&cfg));
    assert_eq!(st, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["changed"], json!(["pipelines/zoho.toml", "sql/silver/zoho_deals.sql", "pipelines/zoho.extractor.json"]));
    assert_eq!(srv.call("GET", "/api/extractor-configs/zoho", Some(ROOT), None), (200, cfg.clone()));
    let pipeline = std::fs::read_to_string(pipelines.join("zoho.toml")).unwrap();
    // Broken: refused with the JSON path, nothing changed.
    let broken = cfg.replacen("\"format\": \"csv\"", "\"format\": \"xml\"", 1);
    assert_ne!(broken, cfg);
    let (st, body) = srv.call("PUT", "/api/extractor-configs/zoho", Some(ROOT), Some(&broken));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("extractions[0].format"), "{body}");
    assert_eq!(std::fs::read_to_string(pipelines.join("zoho.toml")).unwrap(), pipeline);
    assert_eq!(srv.call("GET", "/api/extractor-configs/zoho", Some(ROOT), None).1, cfg);
    // The same again: nothing to change.
    let (st, body) = srv.call("PUT", "/api/extractor-configs/zoho", Some(ROOT), Some(&cfg));
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["changed"].clone()), (200, json!([])), "{body}");
    let (_, h) = srv.json("GET", "/api/history", Some(ROOT), None);
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{h}");
    assert!(changes.iter().all(|c| c["key_name"] == "root"), "{h}");
    // It runs: a pull and a transform over HTTP, and the output lands.
    for cmd in [json!({"command": "pull", "source": "zoho"}), json!({"command": "transform"})] {
        let (st, r) = srv.json("POST", "/api/runs", Some(ROOT), Some(cmd.clone()));
        assert_eq!(st, 202, "{r}");
        let done = srv.wait_run(r["run_id"].as_str().unwrap());
        assert_eq!(done["state"], "success", "{cmd}: {done}");
    }
    let csv: Vec<PathBuf> = walk(&out.join("zoho/deals")).into_iter().filter(|p| p.extension().is_some_and(|x| x == "csv")).collect();
    assert_eq!(csv.len(), 1, "{:?}", walk(&out));
    let rows = std::fs::read_to_string(&csv[0]).unwrap().lines().count() - 1;
    let model = query(&lake, "SELECT count(*) AS n FROM silver.zoho_deals")[0]["n"].as_u64().unwrap() as usize;
    assert!(rows > 0 && rows == model, "{rows} rows in the output, {model} in the model");
}
