//! `ingest push` (seed 002, retail portal): the ERP's products pulled, modelled and pushed in
//! batches of 500, three at a time, each job polled; the ledger records every item once;
//! a second push sends nothing; a kill mid-push and a rerun create no duplicate; bad input
//! exits 2 before anything is sent.
use crate::common::*;
use std::path::Path;
use std::time::Duration;

fn run(sim: &Sim, pipes: &Path, sql: &Path, lake: &Path, args: &[&str]) -> std::process::Output {
    ingest_cmd(Some(sim), lake, pipes, args).arg("--sql").arg(sql).output().unwrap()
}

fn truth(sim: &Sim) -> serde_json::Value {
    http_get_json(&format!("{}/_sim/truth/retail", sim.base))
}

fn prepared(sim: &Sim, lake: &Path) {
    ok(&run(sim, &pipelines(), &shipped_sql(), lake, &["pull", "retail_portal"]));
    ok(&run(sim, &pipelines(), &shipped_sql(), lake, &["transform", "push.retail_products"]));
}

#[test]
fn products_are_upserted_once_and_a_second_push_sends_nothing() {
    let sim = Sim::start(&["--rate-window", "1", "--products", "5000", "--job-items-per-sec", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    prepared(&sim, &lake);
    let dry = ok(&run(&sim, &pipelines(), &shipped_sql(), &lake, &["push", "retail_portal", "--dry-run"]));
    assert!(dry.contains("5000") && dry.contains("sample payload: {\"erpId\":"), "{dry}");
    assert_eq!(retail_batches(&sim), 0, "--dry-run sent something");
    let o = run(&sim, &pipelines(), &shipped_sql(), &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(1), "items the job rejected make the push fail: {}", text(&o));
    let t = truth(&sim);
    // One product in 97 has a negative price: rejected item by item, the rest held once.
    let rejected = (0..5000).filter(|i| i % 97 == 13).count() as u64;
    assert_eq!(t["items"].as_u64().unwrap(), 5000 - rejected);
    assert_eq!(t["creates"].as_u64().unwrap(), 5000 - rejected);
    assert_eq!(t["updates"], 0);
    assert_eq!(retail_batches(&sim), 10, "5000 items in batches of 500");
    let states = query(
        &lake,
        "SELECT state, count(*) AS n, min(error) AS e FROM (SELECT key, last_value(state ORDER BY at) AS state, last_value(error ORDER BY at) AS error FROM _ingest.sent GROUP BY key) GROUP BY state ORDER BY state",
    );
    assert_eq!(states[0]["state"], "failed");
    assert_eq!(states[0]["n"].as_u64().unwrap(), rejected);
    assert_eq!(states[0]["e"], "price must not be negative");
    assert_eq!(states[1]["state"], "sent");
    assert_eq!(states[1]["n"].as_u64().unwrap(), 5000 - rejected);
    assert_eq!(sim.stats()["throttled"], 0, "the 100/min budget was exceeded");
    // The portal's get-latest-integration, read after the push, is in the summary and status.
    assert!(text(&o).contains("destination's latest integration: {\"lastDateTime\":\"20"), "{}", text(&o));
    // Its integration history (seed 002): one summary per batch and one entry per refused item.
    assert!(
        text(&o).contains(&format!("destination's integration history: {} entries, {} errors (e.g. price must not be negative", 10 + rejected, rejected + 10)),
        "{}",
        text(&o)
    );
    assert_eq!(sim.stats()["by_route"]["retail/history"]["requests"], 1);
    let status = ok(&run(&sim, &pipelines(), &shipped_sql(), &lake, &["status"]));
    assert!(status.contains("retail_portal.products") && status.contains("last push") && status.contains("lastDateTime"), "{status}");
    // Nothing changed, even after the ERP is pulled again (new `_ingest_order`s, same
    // payloads): nothing is sent again (failed items only with --retry-failed).
    prepared(&sim, &lake);
    ok(&run(&sim, &pipelines(), &shipped_sql(), &lake, &["push", "retail_portal"]));
    assert_eq!(retail_batches(&sim), 10);
    let key = sim.var("RETAIL_PORTAL_API_KEY");
    assert_no_secrets(&[key], &[&text(&o), &dry], &lake);
}

#[test]
fn a_kill_mid_push_then_a_rerun_creates_no_duplicate() {
    let sim = Sim::start(&["--rate-window", "1", "--products", "3000", "--job-items-per-sec", "1500"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    prepared(&sim, &lake);
    let mut child = spawn_quiet(ingest_cmd(Some(&sim), &lake, &pipelines(), &["-q", "push", "retail_portal"]));
    // Killed once three batches are in and the portal has applied items of one (jobs in
    // flight, some outcomes recorded, some not): an event, not a clock.
    kill_when(&mut child, "the push", Duration::from_millis(10), Duration::from_secs(30), || {
        retail_batches(&sim) >= 3 && truth(&sim)["items"].as_u64().unwrap_or(0) > 0
    });
    let _ = run(&sim, &pipelines(), &shipped_sql(), &lake, &["push", "retail_portal"]);
    let t = truth(&sim);
    let rejected = (0..3000).filter(|i| i % 97 == 13).count() as u64;
    assert_eq!(t["items"].as_u64().unwrap(), 3000 - rejected);
    assert_eq!(t["creates"].as_u64().unwrap(), 3000 - rejected, "a resend created a duplicate");
    // The ledger agrees with the destination: every held item is `sent`.
    let sent = query(&lake, "SELECT count(*) AS n FROM (SELECT key, last_value(state ORDER BY at) AS s FROM _ingest.sent GROUP BY key) WHERE s = 'sent'");
    assert_eq!(sent[0]["n"].as_u64().unwrap(), 3000 - rejected);
}

/// A batch whose answer times out was still accepted by the portal: resent, it updates the
/// same items (the portal counts creates and updates) and creates no duplicate.
#[test]
fn a_batch_resent_after_a_timeout_creates_no_duplicate() {
    let sim = Sim::start(&["--rate-window", "1", "--products", "2000", "--job-items-per-sec", "20000", "--slow-every", "5", "--slow-ms", "2500"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    prepared(&sim, &lake);
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "timeout_secs = 30\n", "timeout_secs = 1\n");
    let o = run(&sim, &p, &shipped_sql(), &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(1), "rejected items fail the push: {}", text(&o));
    let t = truth(&sim);
    let rejected = (0..2000).filter(|i| i % 97 == 13).count() as u64;
    assert_eq!(t["items"].as_u64().unwrap(), 2000 - rejected, "{t}");
    assert_eq!(t["creates"].as_u64().unwrap(), 2000 - rejected, "{t}");
    assert!(t["updates"].as_u64().unwrap() > 0, "no batch timed out after it was accepted: {t}\n{}", text(&o));
}

#[test]
fn bad_push_input_exits_2_and_sends_nothing() {
    let sim = Sim::start(&["--rate-window", "1", "--products", "50"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    prepared(&sim, &lake);
    // A batch larger than the API takes.
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "size = 500, max = 1000", "size = 1500, max = 1000");
    let o = run(&sim, &p, &shipped_sql(), &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("retail_portal.toml:") && text(&o).contains("batch"), "{}", text(&o));
    // Duplicate keys in what would be sent.
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(sql.join("push")).unwrap();
    std::fs::write(
        sql.join("push/dups.sql"),
        "-- target: push.dups\n-- mode: append\nSELECT \"erpId\", name, \"updatedAt\" FROM raw.retail_portal_erp_products UNION ALL SELECT \"erpId\", name, \"updatedAt\" FROM raw.retail_portal_erp_products WHERE \"erpId\" = 100007\n",
    )
    .unwrap();
    ok(&run(&sim, &pipelines(), &sql, &lake, &["transform"]));
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "table = \"push.retail_products\"", "table = \"push.dups\"");
    let o = run(&sim, &p, &sql, &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("100007") && text(&o).contains("twice"), "{}", text(&o));
    // A missing or non-integer erpId, a time that is not UTC ISO-8601: rows named, exit 2.
    std::fs::write(
        sql.join("push/bad.sql"),
        "-- target: push.bad\n-- mode: replace\nSELECT CASE WHEN \"erpId\" = 100003 THEN NULL ELSE \"erpId\" END AS \"erpId\", name, \
         CASE WHEN \"erpId\" = 100004 THEN '2023-09-01 10:00:00' ELSE \"updatedAt\" END AS \"updatedAt\" FROM raw.retail_portal_erp_products\n",
    )
    .unwrap();
    std::fs::write(
        sql.join("push/textual.sql"),
        "-- target: push.textual\n-- mode: replace\nSELECT CAST(\"erpId\" AS VARCHAR) AS \"erpId\", name, \"updatedAt\" FROM raw.retail_portal_erp_products\n",
    )
    .unwrap();
    ok(&run(&sim, &pipelines(), &sql, &lake, &["transform", "push.bad", "push.textual"]));
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "table = \"push.retail_products\"", "table = \"push.bad\"");
    let o = run(&sim, &p, &sql, &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`erpId` is missing"), "{}", text(&o));
    assert!(text(&o).contains("(`erpId` = 100004): `updatedAt` is not an ISO-8601 UTC time"), "{}", text(&o));
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "table = \"push.retail_products\"", "table = \"push.textual\"");
    let o = run(&sim, &p, &sql, &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`erpId` is not an integer (got \"100000\")") && text(&o).contains("50 problem(s)"), "{}", text(&o));
    // A sink naming a missing key column.
    let p = edited_pipelines(dir.path(), "retail_portal.toml", "key = \"erpId\"", "key = \"erp_id\"");
    let o = run(&sim, &p, &shipped_sql(), &lake, &["push", "retail_portal"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(retail_batches(&sim), 0);
    assert!(!lake.join("_ingest/sent").exists(), "bad input wrote to the ledger");
}

#[test]
fn create_once_clients_survive_a_kill_through_lookup_reconciliation() {
    // Each write takes effect at once but its reply comes 150 ms later: the kill lands there.
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--reply-delay-ms", "150"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(sql.join("push")).unwrap();
    std::fs::write(
        sql.join("push/milvus_new_clients.sql"),
        "-- target: push.milvus_new_clients\n-- unique_key: cliente_documento\n-- mode: merge\n\
         SELECT substr(regexp_replace(attributes['customer']['phone'], '[^0-9]', '', 'g'), 3, 11) AS cliente_documento,\n\
         attributes['customer']['name'] AS razao_social, _ingest_order\nFROM raw.c2s_leads\n",
    )
    .unwrap();
    ok(&run(&sim, &pipelines(), &sql, &lake, &["pull", "c2s"]));
    ok(&run(&sim, &pipelines(), &sql, &lake, &["transform"]));
    let docs = query(&lake, "SELECT count(DISTINCT cliente_documento) AS n FROM push.milvus_new_clients")[0]["n"].as_u64().unwrap();
    assert!(docs > 30);
    let clients = || http_get_json(&format!("{}/_sim/truth/milvus", sim.base));
    let mut child = spawn_quiet(ingest_cmd(Some(&sim), &lake, &pipelines(), &["-q", "push", "milvus.clients"]));
    kill_when(&mut child, "the push", Duration::from_millis(10), Duration::from_secs(30), || clients()["clients"].as_u64().unwrap() >= 10);
    let out = ok(&run(&sim, &pipelines(), &sql, &lake, &["push", "milvus.clients"]));
    eprintln!("rerun after the kill:\n{out}");
    let t = clients();
    assert_eq!(t["clients"].as_u64().unwrap(), docs, "{out}");
    let col = out.lines().next().unwrap().split_whitespace().position(|h| h == "reconciled").unwrap();
    let reconciled: u64 = out.lines().nth(1).unwrap().split_whitespace().nth(col).unwrap().parse().unwrap();
    assert_eq!(reconciled, 1, "the client created before the kill was not reconciled:\n{out}");
    for (doc, n) in t["by_document"].as_object().unwrap() {
        assert_eq!(n, 1, "client {doc} created {n} times");
    }
    // The ledger agrees with the destination, and a second push creates nothing.
    let sent = query(&lake, "SELECT count(*) AS n FROM (SELECT key, last_value(state ORDER BY at) AS s FROM _ingest.sent WHERE sink = 'clients' GROUP BY key) WHERE s = 'sent'");
    assert_eq!(sent[0]["n"].as_u64().unwrap(), docs);
    ok(&run(&sim, &pipelines(), &sql, &lake, &["push", "milvus.clients"]));
    assert_eq!(clients()["clients"].as_u64().unwrap(), docs);
    assert_no_secrets(&[sim.var("MILVUS_TOKEN")], &[&out], &lake);
}

/// Seed 001, clients: Ploomes contacts whose CNPJ/CPF is not yet a Milvus client become Milvus
/// clients, each exactly once; after Milvus is pulled again nothing is left to send.
#[test]
fn seed_001_ploomes_contacts_missing_in_milvus_become_clients_once() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = shipped_sql();
    let o = ok(&run(&sim, &pipelines(), &sql, &lake, &["pull", "ploomes"]));
    assert!(o.contains("contacts"), "{o}");
    ok(&run(&sim, &pipelines(), &sql, &lake, &["pull", "milvus"]));
    ok(&run(&sim, &pipelines(), &sql, &lake, &["transform", "push.milvus_new_clients"]));
    let contacts: std::collections::BTreeSet<String> = raw_files(&lake)
        .into_iter()
        .filter(|(k, _)| k.starts_with("ploomes/_/contacts/"))
        .flat_map(|(_, v)| v)
        .filter(since_bound)
        .filter_map(|c| c["CNPJ"].as_str().or(c["CPF"].as_str()).map(|d| d.chars().filter(char::is_ascii_digit).collect()))
        .collect();
    assert!(contacts.len() >= 15, "{}", contacts.len());
    let out = ok(&run(&sim, &pipelines(), &sql, &lake, &["push", "milvus"]));
    let truth = http_get_json(&format!("{}/_sim/truth/milvus", sim.base));
    let held: std::collections::BTreeSet<String> = truth["by_document"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(held, contacts, "{out}");
    assert!(truth["by_document"].as_object().unwrap().values().all(|n| n == 1));
    // Milvus pulled again: every contact is a client now; the model is empty, nothing is sent.
    let pulled = ok(&run(&sim, &pipelines(), &sql, &lake, &["pull", "milvus"]));
    assert!(!pulled.contains("CAPPED"), "{pulled}");
    // (`cliente/busca` stops at 1000 rows: a pipeline declaring a cap flags a full answer.)
    let capped_dir = edited_pipelines(&dir.path().join("capped"), "milvus.toml", "cap = 1000", "cap = 5");
    let o = run(&sim, &capped_dir, &sql, &dir.path().join("other"), &["pull", "milvus"]);
    assert!(ok(&o).contains("CAPPED") && text(&o).contains("cap was reached"), "{}", text(&o));
    ok(&run(&sim, &pipelines(), &sql, &lake, &["transform", "push.milvus_new_clients"]));
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM push.milvus_new_clients")[0]["n"], 0);
    let before = sim.stats()["by_route"]["milvus/cliente/criar"]["requests"].clone();
    ok(&run(&sim, &pipelines(), &sql, &lake, &["push", "milvus"]));
    assert_eq!(sim.stats()["by_route"]["milvus/cliente/criar"]["requests"], before);
    assert_no_secrets(&[sim.var("MILVUS_TOKEN"), sim.var("PLOOMES_USER_KEY")], &[&out], &lake);
}

/// Without a lookup, a record a crash left pending is `uncertain`: listed by `status`, not
/// resent unless asked.
#[test]
fn without_a_lookup_a_crash_leaves_uncertain_records_that_status_lists() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "1", "--reply-delay-ms", "150"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let toml = std::fs::read_to_string(pipelines().join("milvus.toml")).unwrap();
    let lookup = toml.lines().find(|l| l.starts_with("lookup = ")).unwrap().to_string();
    let p = edited_pipelines(dir.path(), "milvus.toml", &lookup, "");
    let sql = shipped_sql();
    ok(&run(&sim, &p, &sql, &lake, &["pull", "ploomes"]));
    ok(&run(&sim, &p, &sql, &lake, &["pull", "milvus"]));
    ok(&run(&sim, &p, &sql, &lake, &["transform", "push.milvus_new_clients"]));
    let clients = || http_get_json(&format!("{}/_sim/truth/milvus", sim.base))["clients"].as_u64().unwrap();
    let mut child = spawn_quiet(ingest_cmd(Some(&sim), &lake, &p, &["-q", "push", "milvus"]));
    kill_when(&mut child, "the push", Duration::from_millis(10), Duration::from_secs(30), || clients() >= 3);
    // Uncertain records: the push says so (exit 1) and its run-log row is not a success.
    let o = run(&sim, &p, &sql, &lake, &["push", "milvus"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    let status = ok(&run(&sim, &p, &sql, &lake, &["status"]));
    assert!(status.contains("uncertain (check the destination"), "{out}\n{status}");
    let failed_runs = ok(&run(&sim, &p, &sql, &lake, &["runs", "milvus", "--failed"]));
    assert!(failed_runs.contains("uncertain"), "{failed_runs}");
    let created = clients();
    // Not resent by a plain push; resent (here: a duplicate, the documented risk) on request.
    assert_eq!(run(&sim, &p, &sql, &lake, &["push", "milvus"]).status.code(), Some(1));
    assert_eq!(clients(), created);
    ok(&run(&sim, &p, &sql, &lake, &["push", "milvus", "--resend-uncertain"]));
    assert_eq!(clients(), created + 1);
    let status = ok(&run(&sim, &p, &sql, &lake, &["status"]));
    assert!(!status.contains("uncertain (check"), "{status}");
}

/// Seed 001 up to the tickets: Ploomes and Milvus pulled, the new clients pushed, Milvus pulled
/// again (their ids) and the tickets' model built; the number of tickets to create.
fn tickets_ready(go: &dyn Fn(&[&str]) -> String, lake: &Path) -> u64 {
    go(&["pull", "ploomes"]);
    go(&["pull", "milvus"]);
    go(&["transform", "push.milvus_new_clients"]);
    go(&["push", "milvus.clients"]);
    go(&["pull", "milvus"]);
    go(&["transform", "push.milvus_new_tickets"]);
    query(lake, "SELECT count(*) AS n FROM push.milvus_new_tickets")[0]["n"].as_u64().unwrap()
}

/// Seed 001, tickets: tagged Ploomes tasks/interactions of contacts who are Milvus clients become
/// one Milvus ticket each, even with `kill -9` right after ticket creations mid-push (Milvus would make a
/// second ticket if asked twice: the rerun reconciles through `chamado/listagem`).
#[test]
fn seed_001_tickets_exist_once_after_kills_mid_creation() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5", "--reply-delay-ms", "80"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = shipped_sql();
    // The lookup reads one ticket a page here: the pending ticket is a client's newest, on its
    // last page, so a lookup that stopped at page 1 would resend it (a duplicate, caught below).
    let pipes = edited_pipelines(
        dir.path(),
        "milvus.toml",
        "size_param = \"total_registros\", size = 50 }",
        "size_param = \"total_registros\", size = 1 }",
    );
    let pipelines = || pipes.clone();
    let go = |args: &[&str]| ok(&run(&sim, &pipelines(), &sql, &lake, args));
    let want = tickets_ready(&go, &lake);
    assert!(want > 20, "{want} qualifying tickets");
    let tickets = || http_get_json(&format!("{}/_sim/truth/milvus", sim.base));
    let no_duplicates = |point: usize| {
        for (d, n) in tickets()["tickets_by_description"].as_object().unwrap() {
            assert_eq!(n, 1, "point {point}: ticket `{d}` exists {n} times");
        }
    };
    // Pushes killed one after the other, each as soon as the portal has created a ticket
    // (its reply is still on the way: `--reply-delay-ms`), so the kill lands between a
    // creation and its ledger row; each run resumes from the ledger, reconciling what the
    // previous one left pending. (An event, not a clock: a fixed delay let a fast machine
    // finish every ticket before any kill.)
    let count = || tickets()["tickets"].as_u64().unwrap();
    for point in 0..20 {
        let before = count();
        if before + 3 >= want {
            break;
        }
        let mut child = spawn_quiet(ingest_cmd(Some(&sim), &lake, &pipelines(), &["-q", "push", "milvus.tickets"]));
        kill_when(&mut child, "the push", Duration::from_millis(2), Duration::from_secs(60), || count() > before);
        no_duplicates(point);
    }
    let done_before = tickets()["tickets"].as_u64().unwrap();
    assert!(done_before > 3 && done_before < want, "{done_before} of {want} tickets before the final run");
    // The final rerun finishes the job: every qualifying ticket exactly once.
    let out = go(&["push", "milvus.tickets"]);
    assert_eq!(tickets()["tickets"].as_u64().unwrap(), want, "{out}");
    no_duplicates(20);
    // Rows settled by the lookup (no response kept) show the reconciliation happened.
    let reconciled = query(&lake, "SELECT count(*) AS n FROM _ingest.sent WHERE sink = 'tickets' AND state = 'sent' AND response IS NULL")[0]["n"]
        .as_u64()
        .unwrap();
    eprintln!("reconciled through the lookup across kill points: {reconciled}");
    assert!(reconciled >= 3, "kills rarely landed between a ticket's creation and its ledger row: {reconciled}");
    let sent = query(&lake, "SELECT count(*) AS n FROM (SELECT key, last_value(state ORDER BY at) AS s FROM _ingest.sent WHERE sink = 'tickets' GROUP BY key) WHERE s = 'sent'");
    assert_eq!(sent[0]["n"].as_u64().unwrap(), want);
}

/// Seed 001 sends what was created on/after 2024-02-24 (Brazilian time).
fn since_bound(r: &serde_json::Value) -> bool {
    let bound = chrono::DateTime::parse_from_rfc3339("2024-02-24T00:00:00-03:00").unwrap();
    r["CreateDate"].as_str().and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok()).is_some_and(|d| d >= bound)
}

/// Whether a Ploomes task/interaction carries INSTALAÇÃO (1) or ENTREGA (2) anywhere in its tags.
fn tagged_1_or_2(r: &serde_json::Value) -> bool {
    r["Tags"].as_array().is_some_and(|a| a.iter().any(|t| matches!(t["TagId"].as_i64(), Some(1 | 2))))
}

fn post_requests(sim: &Sim) -> u64 {
    let s = sim.stats();
    ["milvus/cliente/criar", "milvus/chamado/criar", "ploomes/Contacts/create"]
        .iter()
        .map(|r| s["by_route"][r]["requests"].as_u64().unwrap_or(0))
        .sum()
}

fn digits(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(|d| d.chars().filter(char::is_ascii_digit).collect())
}

/// Seed 001 both ways on the simulators: Ploomes contacts missing in Milvus become Milvus
/// clients, Milvus clients missing in Ploomes become Ploomes contacts (one killed push
/// reconciled through `$filter`), qualifying tasks/interactions become one ticket each; a
/// second round sends nothing; a task retagged INSTALAÇÃO after a pull makes exactly its ticket.
#[test]
fn seed_001_end_to_end_both_directions_and_a_retagged_task() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "4", "--milvus-clients", "30", "--reply-delay-ms", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = shipped_sql();
    let go = |args: &[&str]| ok(&run(&sim, &pipelines(), &sql, &lake, args));
    go(&["pull", "ploomes"]);
    go(&["pull", "milvus"]);
    let raw = raw_files(&lake);
    let records = |prefix: &str| -> Vec<serde_json::Value> {
        raw.iter().filter(|(k, _)| k.starts_with(prefix)).flat_map(|(_, v)| v.clone()).collect()
    };
    let contacts = records("ploomes/_/contacts/");
    let all_docs: std::collections::BTreeSet<String> = contacts.iter().filter_map(|c| digits(&c["CNPJ"]).or_else(|| digits(&c["CPF"]))).collect();
    // Only contacts created on/after the seed's date become clients.
    let ploomes_docs: std::collections::BTreeSet<String> =
        contacts.iter().filter(|c| since_bound(c)).filter_map(|c| digits(&c["CNPJ"]).or_else(|| digits(&c["CPF"]))).collect();
    assert!(ploomes_docs.len() > 5 && ploomes_docs.len() < all_docs.len(), "the data must span the seed's date");
    let milvus_before: std::collections::BTreeSet<String> =
        records("milvus/_/clients/").iter().filter_map(|c| digits(&c["cnpj_cpf"])).collect();
    assert_eq!(milvus_before.len(), 30);
    let milvus_only: std::collections::BTreeSet<String> = milvus_before.difference(&all_docs).cloned().collect();
    assert_eq!(milvus_only.len(), 15, "half of the pre-existing clients are Milvus-only");
    go(&["transform", "push.milvus_new_clients", "push.ploomes_new_contacts"]);
    // Milvus → Ploomes, with one push killed mid-way: each missing client exactly once.
    let created = || http_get_json(&format!("{}/_sim/truth/ploomes", sim.base));
    let mut child = spawn_quiet(ingest_cmd(Some(&sim), &lake, &pipelines(), &["-q", "push", "ploomes.contacts"]));
    kill_when(&mut child, "the push", Duration::from_millis(5), Duration::from_secs(30), || created()["created"].as_u64().unwrap() >= 4);
    let out = go(&["push", "ploomes"]);
    let t = created();
    let by: std::collections::BTreeMap<String, u64> = serde_json::from_value(t["created_by_document"].clone()).unwrap();
    assert_eq!(by.keys().cloned().collect::<std::collections::BTreeSet<_>>(), milvus_only, "{out}");
    assert!(by.values().all(|n| *n == 1), "a Ploomes contact was created twice: {by:?}");
    // Ploomes → Milvus: every Ploomes document not yet a client, once.
    go(&["push", "milvus.clients"]);
    let truth = http_get_json(&format!("{}/_sim/truth/milvus", sim.base));
    let held: std::collections::BTreeSet<String> = truth["by_document"].as_object().unwrap().keys().cloned().collect();
    let want: std::collections::BTreeSet<String> = ploomes_docs.union(&milvus_before).cloned().collect();
    assert_eq!(held, want);
    assert!(truth["by_document"].as_object().unwrap().values().all(|n| n == 1));
    // Tickets: both sides pulled again (the new clients' tokens), one ticket per qualifying record.
    go(&["pull", "milvus"]);
    go(&["pull", "ploomes"]);
    go(&["transform", "push.milvus_new_tickets", "push.milvus_new_clients", "push.ploomes_new_contacts"]);
    let tagged = |rows: Vec<serde_json::Value>| rows.into_iter().filter(tagged_1_or_2).count() as u64;
    let raw = raw_files(&lake);
    let latest_ids = |prefix: &str| -> std::collections::BTreeMap<i64, serde_json::Value> {
        raw.iter().filter(|(k, _)| k.starts_with(prefix)).flat_map(|(_, v)| v.clone()).map(|r| (r["Id"].as_i64().unwrap(), r)).collect()
    };
    // A record qualifies when created on/after the seed's date and its contact is a Milvus
    // client (by the document's digits, however either side typed it).
    let contact_doc: std::collections::BTreeMap<i64, String> = latest_ids("ploomes/_/contacts/")
        .into_iter()
        .filter_map(|(id, c)| Some((id, digits(&c["CNPJ"]).or_else(|| digits(&c["CPF"]))?)))
        .collect();
    let tasks = latest_ids("ploomes/_/tasks/");
    let interactions = latest_ids("ploomes/_/interaction_records/");
    let with_client = |m: &std::collections::BTreeMap<i64, serde_json::Value>| {
        m.values()
            .filter(|r| since_bound(r) && contact_doc.get(&r["ContactId"].as_i64().unwrap()).is_some_and(|d| held.contains(d)))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Some qualifying records carry their seed tag after another one.
    assert!(with_client(&tasks).iter().chain(with_client(&interactions).iter()).any(|r| tagged_1_or_2(r) && !matches!(r["Tags"][0]["TagId"].as_i64(), Some(1 | 2))));
    let want_tickets = tagged(with_client(&tasks)) + tagged(with_client(&interactions));
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM push.milvus_new_tickets")[0]["n"].as_u64().unwrap(), want_tickets);
    assert!(want_tickets > 10, "{want_tickets}");
    go(&["push", "milvus.tickets"]);
    let tickets = || http_get_json(&format!("{}/_sim/truth/milvus", sim.base))["tickets"].as_u64().unwrap();
    assert_eq!(tickets(), want_tickets);
    // Both models are empty now; a second round sends no request at all.
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM push.milvus_new_clients")[0]["n"], 0);
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM push.ploomes_new_contacts")[0]["n"], 0);
    let posts = post_requests(&sim);
    go(&["push", "milvus"]);
    go(&["push", "ploomes"]);
    assert_eq!(post_requests(&sim), posts, "a second push sent something");
    // A task retagged INSTALAÇÃO (it was "other") after a pull: exactly its ticket.
    let retagged = with_client(&tasks).into_iter().find(|t| !tagged_1_or_2(t)).expect("a task without the seed's tags").clone();
    let id = retagged["Id"].as_i64().unwrap();
    http_get_json(&format!("{}/_sim/ploomes/retag?task={id}&tag=1", sim.base));
    go(&["pull", "ploomes"]);
    go(&["transform", "push.milvus_new_tickets"]);
    let out = go(&["push", "milvus"]);
    assert_eq!(tickets(), want_tickets + 1, "{out}");
    let by = http_get_json(&format!("{}/_sim/truth/milvus", sim.base))["tickets_by_description"].clone();
    let mine: Vec<_> = by.as_object().unwrap().iter().filter(|(d, _)| d.contains(&format!("[ploomes task:{id}]"))).collect();
    assert_eq!(mine.len(), 1, "{by}");
    assert_eq!(post_requests(&sim), posts + 1);
    assert_no_secrets(&[sim.var("MILVUS_TOKEN"), sim.var("PLOOMES_USER_KEY")], &[&out], &lake);
}

/// SIGTERM mid-push (a pod ending, `ingest serve` cancelling): the push ends after the ticket
/// in flight — its outcome in the ledger — exits 1, leaves no record pending or uncertain and
/// no lease; the rerun creates the rest: every ticket exactly once.
#[test]
fn sigterm_ends_a_push_after_its_batch_in_flight_leaving_nothing_pending() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5", "--reply-delay-ms", "80"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = shipped_sql();
    let go = |args: &[&str]| ok(&run(&sim, &pipelines(), &sql, &lake, args));
    let want = tickets_ready(&go, &lake);
    assert!(want > 5, "{want} qualifying tickets");
    let count = || http_get_json(&format!("{}/_sim/truth/milvus", sim.base))["tickets"].as_u64().unwrap();
    let mut child = ingest_cmd(Some(&sim), &lake, &pipelines(), &["push", "milvus.tickets"])
        .arg("--sql")
        .arg(&sql)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-push: the portal has created a ticket (its reply is still on the way).
    let t0 = std::time::Instant::now();
    while count() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no ticket was created");
        assert!(child.try_wait().unwrap().is_none(), "the push ended before the signal");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("stop requested"), "{log}");
    let before = count();
    assert!(before >= 1 && before < want, "{before} of {want} tickets before the rerun");
    let open = query(&lake, "SELECT count(*) AS n FROM (SELECT key, last_value(state ORDER BY at) AS s FROM _ingest.sent WHERE sink = 'tickets' GROUP BY key) WHERE s IN ('pending', 'uncertain')");
    assert_eq!(open[0]["n"].as_u64().unwrap(), 0, "the stopped push left records pending or uncertain");
    assert!(walk(&lake.join("_ingest/leases")).is_empty(), "the stopped push left its lease");
    let sent = query(&lake, "SELECT count(DISTINCT key) AS n FROM _ingest.sent WHERE sink = 'tickets' AND state = 'sent'")[0]["n"].as_u64().unwrap();
    assert_eq!(sent, before, "the ledger holds exactly the tickets created");
    go(&["push", "milvus.tickets"]);
    assert_eq!(count(), want);
    for (d, n) in http_get_json(&format!("{}/_sim/truth/milvus", sim.base))["tickets_by_description"].as_object().unwrap() {
        assert_eq!(n, 1, "ticket `{d}` exists {n} times");
    }
}
