//! Push exactly once against APIs that are not idempotent (issue 25): replies lost after a
//! create took effect, jobs that fail or outlast their poll, two pushes of one sink at once,
//! methods as written.
use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn run(sim: &Sim, pipes: &Path, lake: &Path, args: &[&str]) -> std::process::Output {
    ingest_cmd(Some(sim), lake, pipes, args).arg("--sql").arg(shipped_sql()).output().unwrap()
}

/// `push`, and at most one rerun when the first exits 1 (a record left uncertain by a lookup
/// that failed too); the output of both.
fn push_once_or_twice(sim: &Sim, pipes: &Path, lake: &Path, target: &str) -> String {
    let o = run(sim, pipes, lake, &["push", target]);
    let mut out = text(&o);
    if o.status.code() == Some(1) {
        out.push_str(&ok(&run(sim, pipes, lake, &["push", target])));
    } else {
        assert!(o.status.success(), "{out}");
    }
    out
}

fn truth(sim: &Sim, source: &str) -> Value {
    http_get_json(&format!("{}/_sim/truth/{source}", sim.base))
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The ledger's latest state of each key of a sink, counted.
fn ledger_states(lake: &Path, sink: &str) -> BTreeMap<String, u64> {
    query(
        lake,
        &format!("SELECT state, count(*) AS n FROM (SELECT key, last_value(state ORDER BY at) AS state FROM _ingest.sent WHERE sink = '{sink}' GROUP BY key) GROUP BY state"),
    )
    .into_iter()
    .map(|r| (r["state"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap()))
    .collect()
}

/// The shipped pipelines with Milvus' and Ploomes' timeouts at 1 s.
fn short_timeouts(dir: &Path) -> PathBuf {
    edited_pipelines(dir, "milvus.toml", "timeout_secs = 30\n", "timeout_secs = 1\n");
    edited_pipelines(dir, "ploomes.toml", "timeout_secs = 30\n", "timeout_secs = 1\n")
}

#[test]
fn creates_exist_once_when_replies_are_lost_after_they_took_effect() {
    // Every 3rd request answered after it took effect but after the client's timeout, every
    // 5th answered 503 after it took effect: creates, lookups and pulls alike.
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--milvus-clients", "12", "--slow-every", "3", "--slow-ms", "1300", "--fail-every", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = short_timeouts(dir.path());
    let go = |args: &[&str]| ok(&run(&sim, &p, &lake, args));
    go(&["pull", "ploomes"]);
    go(&["pull", "milvus"]);
    go(&["transform"]);
    let clients = query(&lake, "SELECT count(*) AS n FROM push.milvus_new_clients")[0]["n"].as_u64().unwrap();
    let contacts = query(&lake, "SELECT count(*) AS n FROM push.ploomes_new_contacts")[0]["n"].as_u64().unwrap();
    assert!(clients > 5 && contacts > 2, "{clients} {contacts}");
    let before = truth(&sim, "milvus")["clients"].as_u64().unwrap();
    let mut out = push_once_or_twice(&sim, &p, &lake, "milvus.clients");
    out.push_str(&push_once_or_twice(&sim, &p, &lake, "ploomes.contacts"));
    // Every client and contact exists once.
    let m = truth(&sim, "milvus");
    assert_eq!(m["clients"].as_u64().unwrap(), before + clients, "{out}");
    assert!(counts(&m["by_document"]).values().all(|n| *n == 1), "a Milvus client was created twice: {}\n{out}", m["by_document"]);
    let created = counts(&truth(&sim, "ploomes")["created_by_document"]);
    assert_eq!(created.len() as u64, contacts);
    assert!(created.values().all(|n| *n == 1), "a Ploomes contact was created twice: {created:?}");
    // Tickets, with the new clients' tokens pulled back.
    go(&["pull", "milvus"]);
    go(&["transform"]);
    let tickets = query(&lake, "SELECT count(*) AS n FROM push.milvus_new_tickets")[0]["n"].as_u64().unwrap();
    assert!(tickets > 2, "{tickets}");
    out.push_str(&push_once_or_twice(&sim, &p, &lake, "milvus.tickets"));
    let m = truth(&sim, "milvus");
    assert_eq!(m["tickets"].as_u64().unwrap(), tickets, "{out}");
    assert!(counts(&m["tickets_by_description"]).values().all(|n| *n == 1), "a ticket was created twice");
    // The ledger holds every record `sent`.
    for (sink, n) in [("clients", clients), ("contacts", contacts), ("tickets", tickets)] {
        assert_eq!(ledger_states(&lake, sink), BTreeMap::from([("sent".to_string(), n)]), "{sink}");
    }
    // The faults did hit creates: a reply was lost and the record looked up instead of resent.
    assert!(out.contains("may have acted on"), "no create lost its reply: {out}");
    assert_no_secrets(&[sim.var("MILVUS_TOKEN"), sim.var("PLOOMES_USER_KEY")], &[&out], &lake);
}

fn retail(sim: &Sim, lake: &Path) {
    ok(&run(sim, &pipelines(), lake, &["pull", "retail_portal"]));
    ok(&run(sim, &pipelines(), lake, &["transform", "push.retail_products"]));
}

#[test]
fn a_job_that_fails_as_a_whole_sends_nothing_and_a_rerun_sends_it_again() {
    // 97 products: one batch, no item refused for itself (the 14th product, erpId 100013, has
    // a negative price: it is refused, by name).
    let sim = Sim::start(&["--rate-window", "1", "--products", "97", "--job-items-per-sec", "20000", "--job-fail-first", "1", "--job-states", "title"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    retail(&sim, &lake);
    let o = run(&sim, &pipelines(), &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("failureCount 97"), "{}", text(&o));
    assert_eq!(truth(&sim, "retail")["items"], 0);
    assert_eq!(ledger_states(&lake, "products"), BTreeMap::from([("failed".to_string(), 97)]));
    let runs = ok(&run(&sim, &pipelines(), &lake, &["runs", "retail_portal", "--failed"]));
    assert!(runs.contains("97 failed"), "{runs}");
    // A plain rerun sends the batch again (the job's failure was not the items'), and the
    // `Completed` state (title case) ends the poll.
    let again = run(&sim, &pipelines(), &lake, &["push", "retail_portal"]);
    assert_eq!(again.status.code(), Some(1), "the negative price is refused: {}", text(&again));
    assert_eq!(retail_batches(&sim), 2);
    assert_eq!(truth(&sim, "retail")["items"], 96);
    assert_eq!(ledger_states(&lake, "products"), BTreeMap::from([("failed".to_string(), 1), ("sent".to_string(), 96)]));
    // Nothing more to send.
    let third = run(&sim, &pipelines(), &lake, &["push", "retail_portal"]);
    assert_eq!(retail_batches(&sim), 2, "{}", text(&third));
}

#[test]
fn a_job_outlasting_its_poll_is_uncertain_and_polled_again_not_resent() {
    let sim = Sim::start(&["--rate-window", "1", "--products", "60", "--job-items-per-sec", "20"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    retail(&sim, &lake);
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "timeout_secs = 600", "timeout_secs = 1");
    let o = run(&sim, &p, &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(ledger_states(&lake, "products"), BTreeMap::from([("uncertain".to_string(), 60)]), "{}", text(&o));
    // The portal finishes the job on its own (3 s at 20 items/s): wait for that, not a clock.
    let t0 = std::time::Instant::now();
    while truth(&sim, "retail")["items"].as_u64().unwrap() < 59 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the job never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next run polls the job it left uncertain and sends nothing again.
    let again = run(&sim, &p, &lake, &["push", "retail_portal"]);
    assert_eq!(again.status.code(), Some(1), "the negative price is refused: {}", text(&again));
    assert_eq!(retail_batches(&sim), 1, "a batch was resent: {}", text(&again));
    assert_eq!(ledger_states(&lake, "products"), BTreeMap::from([("failed".to_string(), 1), ("sent".to_string(), 59)]));
    assert_eq!(truth(&sim, "retail")["updates"], 0);
}

#[test]
fn two_pushes_of_one_sink_at_once_one_waits_its_turn_or_exits_naming_the_other() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--reply-delay-ms", "200"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = pipelines();
    ok(&run(&sim, &p, &lake, &["pull", "ploomes"]));
    ok(&run(&sim, &p, &lake, &["pull", "milvus"]));
    ok(&run(&sim, &p, &lake, &["transform"]));
    let clients = query(&lake, "SELECT count(*) AS n FROM push.milvus_new_clients")[0]["n"].as_u64().unwrap();
    let mut first = spawn_quiet(ingest_cmd(Some(&sim), &lake, &p, &["-q", "push", "milvus.clients"]));
    let lease = lake.join("_ingest/leases/push/milvus.clients.json");
    let t0 = std::time::Instant::now();
    while !lease.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the first push never took its lease");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = run(&sim, &p, &lake, &["push", "milvus.clients"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(text(&second).contains("a push of milvus.clients is running"), "{}", text(&second));
    let waited = run(&sim, &p, &lake, &["push", "milvus.clients", "--wait"]);
    assert!(first.wait().unwrap().success());
    ok(&waited);
    let m = truth(&sim, "milvus");
    assert_eq!(m["clients"].as_u64().unwrap(), clients);
    assert!(counts(&m["by_document"]).values().all(|n| *n == 1));
    assert!(!lease.exists(), "the lease was not released");
}

#[test]
fn a_sink_sends_the_method_it_declares_and_bad_methods_or_modes_exit_2() {
    let sim = Sim::start(&["--rate-window", "1", "--products", "20", "--job-items-per-sec", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    retail(&sim, &lake);
    let method = |m: &str| {
        let d = dir.path().join(m);
        std::fs::create_dir_all(&d).unwrap();
        edited_pipelines(&d, "retail_portal.toml", "mode = \"upsert\"\n", &format!("mode = \"upsert\"\nmethod = \"{m}\"\n"))
    };
    let last = || http_get_json(&format!("{}/_sim/last_query/retail/batch", sim.base))["_method"].clone();
    // PUT is sent as PUT (the portal answers 405: it takes POST), nothing recorded sent.
    let o = run(&sim, &method("PUT"), &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(last(), "PUT");
    assert_eq!(ledger_states(&lake, "products").get("sent"), None);
    // A lower-case method is the method (the items refused above: sent again on request).
    let o = run(&sim, &method("post"), &lake, &["push", "retail_portal", "--retry-failed"]);
    assert_eq!(o.status.code(), Some(1), "the negative price (erpId 100013) is refused: {}", text(&o));
    assert_eq!(last(), "POST");
    assert_eq!(truth(&sim, "retail")["items"], 19);
    // Unknown methods and modes: exit 2, file, line and field, nothing sent.
    let sent = retail_batches(&sim);
    for (i, (from, to, field)) in [
        ("mode = \"upsert\"\n", "mode = \"upsert\"\nmethod = \"FETCH\"\n", "sinks.products.method"),
        ("mode = \"upsert\"\n", "mode = \"sometimes\"\n", "sinks.products.mode"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = dir.path().join(format!("bad{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let p = edited_pipelines(&d, "retail_portal.toml", from, to);
        let o = run(&sim, &p, &lake, &["push", "retail_portal"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("retail_portal.toml:") && text(&o).contains(field), "{}", text(&o));
    }
    assert_eq!(retail_batches(&sim), sent);
}

#[test]
fn past_the_cap_of_cliente_busca_no_milvus_client_is_created_twice() {
    // 1500 clients: `cliente/busca` lists the newest 1000, so the oldest (those sharing a
    // Ploomes contact's document, some typed with punctuation) are missing from the pull.
    let sim = Sim::start(&["--rate-window", "1", "--days", "5", "--milvus-clients", "1500"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = pipelines();
    ok(&run(&sim, &p, &lake, &["pull", "ploomes"]));
    let pulled = ok(&run(&sim, &p, &lake, &["pull", "milvus"]));
    assert!(pulled.contains("CAPPED"), "{pulled}");
    ok(&run(&sim, &p, &lake, &["transform", "push.milvus_new_clients"]));
    let milvus_docs: std::collections::BTreeSet<String> = counts(&truth(&sim, "milvus")["by_document"]).into_keys().collect();
    let rows: Vec<String> = query(&lake, "SELECT cliente_documento AS d FROM push.milvus_new_clients").into_iter().map(|r| r["d"].as_str().unwrap().to_string()).collect();
    let hidden = rows.iter().filter(|d| milvus_docs.contains(*d)).count();
    assert!(hidden > 3, "no existing client was hidden by the cap: {hidden}");
    let out = ok(&run(&sim, &p, &lake, &["push", "milvus.clients"]));
    let m = truth(&sim, "milvus");
    assert!(counts(&m["by_document"]).values().all(|n| *n == 1), "a client past the cap was created again: {out}");
    assert_eq!(m["clients"].as_u64().unwrap() as usize, 1500 + rows.len() - hidden, "{out}");
    assert_eq!(ledger_states(&lake, "clients"), BTreeMap::from([("sent".to_string(), rows.len() as u64)]));
}
