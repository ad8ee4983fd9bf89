//! Zoho CRM and Desk (seed 004): OAuth2 refresh-token grant against the simulator's token
//! endpoint — a token expiring mid-pull is refreshed once for all streams and the 401'd
//! request retried, a rotated refresh token is kept (0600) and used next run, a bad one exits 1
//! naming the endpoint only; `If-Modified-Since` incrementals (304 = success, watermark
//! unchanged; 204 = empty); Desk's `limit` above 100 refused before any request.
use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

fn zoho(sim: &Sim, pipelines: &Path, lake: &Path, rt_file: &Path, args: &[&str]) -> std::process::Output {
    ingest_cmd(Some(sim), lake, pipelines, args)
        .env("ZOHO_REFRESH_TOKEN_FILE", rt_file)
        .env("INGEST_LOG", "ingest=debug")
        .output()
        .unwrap()
}

fn secrets(sim: &Sim) -> Vec<String> {
    let mut s = sim.secrets();
    s.push(sim.var("ZOHO_CLIENT_SECRET"));
    s
}

fn ids(lake: &Path, stream: &str) -> Vec<String> {
    raw_files(lake)
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("zoho_crm/_/{stream}/")))
        .flat_map(|(_, v)| v)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_token_expiring_mid_pull_is_refreshed_once_for_every_stream() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5", "--scale", "30", "--token-ttl", "1.5", "--slow-every", "1", "--slow-ms", "120"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let rt = dir.path().join("secrets/zoho_rt");
    // Three list streams at once (deal details, one request per deal, are tested below).
    let p = edited_pipelines(
        dir.path(),
        "zoho_crm.toml",
        "details = { path = \"/crm/v2/Deals/{record.id}\", records = \"data\", stream = \"deal_details\", batch = 50 }",
        "",
    );
    // ...and the declaration of the detail stream no stream lands now.
    let toml = std::fs::read_to_string(p.join("zoho_crm.toml")).unwrap();
    let cut = toml.find("[schemas.deal_details]").unwrap();
    std::fs::write(p.join("zoho_crm.toml"), &toml[..cut]).unwrap();
    let t0 = Instant::now();
    let o = zoho(&sim, &p, &lake, &rt, &["pull", "zoho_crm"]);
    let elapsed = t0.elapsed().as_secs_f64();
    ok(&o);
    for (stream, n) in [("leads", 30 * 30 * 5), ("contacts", 10 * 30 * 5), ("deals", 20 * 30 * 5)] {
        let got = ids(&lake, stream);
        let uniq: BTreeSet<&String> = got.iter().collect();
        assert_eq!(got.len(), n, "{stream}: landed {}", got.len());
        assert_eq!(uniq.len(), n, "{stream}: a record landed twice");
    }
    let stats = sim.stats();
    let refreshes = stats["by_route"]["zoho/token"]["requests"].as_u64().unwrap();
    // The simulator's tokens die after 1.5 s although `expires_in` says 2: the client refreshes
    // ahead of 2 s and on each 401; three streams share each refresh.
    let bound = (elapsed / 1.3).ceil() as u64 + 2;
    eprintln!("{refreshes} refreshes in {elapsed:.1}s (bound {bound})");
    assert!(refreshes >= 2, "the token never expired during the pull ({elapsed:.1}s)");
    assert!(text(&o).contains("401 with an OAuth2 token: refreshing it and retrying once"), "no 401 was retried");
    assert!(refreshes <= bound, "{refreshes} refreshes in {elapsed:.1}s: streams did not share them");
    assert_no_secrets(&secrets(&sim), &[&text(&o)], &lake);
    assert!(!rt.exists(), "no rotation happened, nothing to keep");
}

#[test]
fn a_rotated_refresh_token_is_kept_0600_and_a_bad_one_exits_1() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2", "--rotate-refresh"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let rt = dir.path().join("secrets/zoho_rt");
    let o1 = zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_desk"]);
    ok(&o1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&rt).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let kept = std::fs::read_to_string(&rt).unwrap();
    assert_ne!(kept, sim.var("ZOHO_REFRESH_TOKEN"));
    assert!(!lake.join(".ingest").exists() && !kept.is_empty());
    // The original refresh token is dead at the provider now; the kept one works.
    let o2 = zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_crm"]);
    ok(&o2);
    assert_ne!(std::fs::read_to_string(&rt).unwrap(), kept, "the second rotation was not kept");
    // Without the file the stale token is refused: exit 1, the endpoint named, no secret shown.
    std::fs::remove_file(&rt).unwrap();
    let o3 = zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_desk"]);
    assert_eq!(o3.status.code(), Some(1), "{}", text(&o3));
    let err = text(&o3);
    assert!(err.contains(&format!("{}/zoho/oauth/v2/token", sim.base)) && err.contains("invalid_code"), "{err}");
    let mut all = secrets(&sim);
    all.push(kept);
    assert_no_secrets(&all, &[&text(&o1), &text(&o2), &err], &lake);
}

#[test]
fn if_modified_since_ends_an_unchanged_run_with_304_and_desk_limit_is_validated() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let rt = dir.path().join("rt");
    // No lookback, so an unchanged module has nothing after the watermark; plus a module with
    // no record at all (204).
    let p = edited_pipelines(dir.path(), "zoho_crm.toml", "lookback = \"1m\"", "lookback = \"0s\"");
    let text_now = std::fs::read_to_string(p.join("zoho_crm.toml")).unwrap();
    std::fs::write(
        p.join("zoho_crm.toml"),
        format!("{text_now}\n[streams.tasks]\npath = \"/crm/v2/Tasks\"\nrecords = \"data\"\nprimary_key = \"id\"\n"),
    )
    .unwrap();
    ok(&zoho(&sim, &p, &lake, &rt, &["pull", "zoho_crm"]));
    // (`tasks` is a snapshot stream: each run records when it was pulled.)
    let incremental = |lake: &Path| -> Vec<ingest::lake::state::LandedFile> {
        catalogue(lake).into_iter().filter(|r| r.stream != "tasks").collect()
    };
    let cat1 = incremental(&lake);
    let before = sim.stats();
    let o = zoho(&sim, &p, &lake, &rt, &["pull", "zoho_crm"]);
    ok(&o);
    let after = sim.stats();
    for m in ["Leads", "Contacts", "Deals"] {
        let r = |s: &serde_json::Value| s["by_route"][format!("zoho/crm/{m}")]["requests"].as_u64().unwrap();
        assert_eq!(r(&after) - r(&before), 1, "{m}: one request answered 304");
        assert_eq!(after["by_route"][format!("zoho/crm/{m}")]["records"], before["by_route"][format!("zoho/crm/{m}")]["records"]);
    }
    let cat2 = incremental(&lake);
    assert_eq!(cat2.len(), cat1.len(), "an unchanged run added catalogue rows");
    let wm = |c: &[ingest::lake::state::LandedFile]| c.iter().filter_map(|r| r.watermark.clone()).max();
    assert_eq!(wm(&cat1), wm(&cat2));
    assert!(ids(&lake, "tasks").is_empty());

    // Desk: limit 101 is refused before any request (exit 2, file and field named).
    let p = edited_pipelines(dir.path(), "zoho_desk.toml", "page_size = 100, max_page_size", "page_size = 101, max_page_size");
    let requests = sim.stats()["requests"].as_u64().unwrap();
    let o = zoho(&sim, &p, &lake, &rt, &["pull", "zoho_desk"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("zoho_desk.toml:") && err.contains("page_size") && err.contains("1..=100"), "{err}");
    assert_eq!(sim.stats()["requests"].as_u64().unwrap(), requests, "a request was sent");
    // And the shipped Desk pipeline pulls every ticket (orgId header, from/limit).
    ok(&zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_desk"]));
    let tickets: usize = raw_files(&lake).iter().filter(|(k, _)| k.starts_with("zoho_desk/")).map(|(_, v)| v.len()).sum();
    assert_eq!(tickets, 15 * 3);
}

#[test]
fn zoho_silver_models_build_and_an_unquoted_mixed_case_field_is_an_error() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let rt = dir.path().join("rt");
    ok(&zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_crm"]));
    ok(&zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_desk"]));
    let out = ok(&ingest_sql(&lake, &shipped_sql(), &["transform"]));
    assert!(!out.contains("FAILED"), "{out}");
    for (table, n) in [("zoho_crm_leads", 90), ("zoho_crm_contacts", 30), ("zoho_crm_deals", 60), ("zoho_desk_tickets", 45)] {
        let r = query(&lake, &format!("SELECT count(*) AS n, count(DISTINCT id) AS d, count(modified_at) AS m FROM silver.{table}"));
        assert_eq!((r[0]["n"].as_u64(), r[0]["d"].as_u64(), r[0]["m"].as_u64()), (Some(n), Some(n), Some(n)), "{table}");
    }
    // Exports: CSV with `;` into a folder (named by table and date), Parquet of a query to a
    // file; DuckDB reads the same rows.
    let out = dir.path().join("out");
    let o = ingest_sql(&lake, &shipped_sql(), &["export", "silver.zoho_crm_leads", "--format", "csv", "--sep", ";", "--to", &format!("{}/", out.display())]);
    let loc = ok(&o);
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let csv = out.join(format!("silver_zoho_crm_leads_{day}.csv"));
    assert!(loc.trim().ends_with(&format!("silver_zoho_crm_leads_{day}.csv")) && csv.exists(), "{loc}");
    let pq = out.join("deals.parquet");
    ok(&ingest_sql(&lake, &shipped_sql(), &["export", "SELECT id, amount FROM silver.zoho_crm_deals", "--format", "parquet", "--to", pq.to_str().unwrap()]));
    let got = duckdb(&format!(
        "print(*con.execute(\"SELECT count(*), count(DISTINCT id) FROM read_csv('{}', delim=';', all_varchar=true)\").fetchone())\nprint(*con.execute(\"SELECT count(*), CAST(sum(amount) AS BIGINT) FROM '{}'\").fetchone())",
        csv.display(),
        pq.display()
    ));
    let sum = query(&lake, "SELECT CAST(sum(amount) AS BIGINT) AS s FROM silver.zoho_crm_deals")[0]["s"].as_i64().unwrap();
    assert_eq!(got, format!("90 90\n60 {sum}\n"));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2, "partial or extra files");

    // `ingest model new` writes a model from the landed schema that plans and runs.
    let gen = dir.path().join("gen");
    let o = ingest_sql(&lake, &gen, &["model", "new", "zoho_crm.deals"]);
    let path = ok(&o);
    assert!(path.trim().ends_with("silver/zoho_crm_deals.sql"), "{path}");
    let fresh = dir.path().join("fresh");
    copy_dir(&lake, &fresh);
    std::fs::remove_dir_all(fresh.join("silver")).unwrap();
    ok(&ingest_sql(&fresh, &gen, &["transform"]));
    let r = query(&fresh, "SELECT count(*) AS n, count(modified_time) AS m, count(DISTINCT id) AS d FROM silver.zoho_crm_deals");
    assert_eq!((r[0]["n"].as_u64(), r[0]["m"].as_u64(), r[0]["d"].as_u64()), (Some(60), Some(60), Some(60)));
    assert_eq!(ingest_sql(&lake, &gen, &["model", "new", "zoho_crm.deals"]).status.code(), Some(2), "overwrote a model");

    // SQL lower-cases unquoted names: `Modified_Time` unquoted is a mistake, not a missing field.
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    std::fs::write(
        sql.join("m.sql"),
        "-- target: silver.m\n-- unique_key: id\nSELECT id,\n  to_timestamp(Modified_Time) AS t\nFROM raw.zoho_crm_leads\n",
    )
    .unwrap();
    let o = ingest_sql(&lake, &sql, &["transform"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("m.sql:4") && text(&o).contains("Did you mean"), "{}", text(&o));
    assert!(!lake.join("silver/m").exists(), "a model that does not plan wrote its table");
}

/// Seed 004's `transformations`, each as the SQL the README's table gives, on a fixture.
#[test]
fn every_seed_transformation_action_has_a_sql_equivalent() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let row = &query(
        &lake,
        "SELECT replace(x, 'o', '0') AS replace_, btrim(y) AS trim_, ltrim(y) AS ltrim_, rtrim(y) AS rtrim_, \
         lower(x) AS lower_, upper(x) AS upper_, title(x) AS title_, capitalize(x) AS capitalize_, \
         array_to_string(string_to_array(z, ','), '|') AS split_join, slice(x, 1, 5) AS slice_, slice(x, -5, 100) AS slice_neg \
         FROM (VALUES ('hELLO wORLD', '  padded  ', 'a,b,c')) AS t(x, y, z)",
    )[0];
    let want = serde_json::json!({
        "replace_": "hELLO wORLD".replace('o', "0"), "trim_": "padded", "ltrim_": "padded  ", "rtrim_": "  padded",
        "lower_": "hello world", "upper_": "HELLO WORLD", "title_": "Hello World", "capitalize_": "Hello world",
        "split_join": "a|b|c", "slice_": "ELLO", "slice_neg": "wORLD",
    });
    assert_eq!(row, &want);
}

#[test]
fn detail_fetches_within_budget_resume_after_a_kill_without_refetching() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "5", "--scale", "5", "--slow-every", "1", "--slow-ms", "15"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let rt = dir.path().join("rt");
    let landed_keys = |lake: &Path| -> Vec<String> {
        ingest::lake::state::current_files(&catalogue(lake))
            .into_iter()
            .filter(|r| r.stream == "deal_details")
            .filter_map(|r| r.path)
            .flat_map(|p| raw_files(lake).remove(&p).unwrap_or_default())
            .map(|d| d["_parent_key"].as_str().unwrap().to_string())
            .collect()
    };
    let mut cmd = ingest_cmd(Some(&sim), &lake, &pipelines(), &["-q", "pull", "zoho_crm", "--streams", "deals"]);
    cmd.env("ZOHO_REFRESH_TOKEN_FILE", &rt);
    let mut child = spawn_quiet(cmd);
    let (poll, limit) = (std::time::Duration::from_millis(100), std::time::Duration::from_secs(60));
    kill_when(&mut child, "the pull", poll, limit, || landed_keys(&lake).len() >= 150);
    let before: BTreeSet<String> = landed_keys(&lake).into_iter().collect();
    assert!(before.len() >= 150 && before.len() < 500, "{} details landed before the kill", before.len());
    let o = zoho(&sim, &pipelines(), &lake, &rt, &["pull", "zoho_crm", "--streams", "deals"]);
    ok(&o);
    let after = landed_keys(&lake);
    let uniq: BTreeSet<&String> = after.iter().collect();
    assert_eq!(after.len(), 500, "one detail per deal");
    assert_eq!(uniq.len(), 500);
    let hits = http_get_json(&format!("{}/_sim/truth/zoho_details", sim.base));
    for k in &before {
        assert_eq!(hits[k.as_str()], 1, "detail of {k} fetched again although it had landed");
    }
    let stats = sim.stats();
    assert_eq!(stats["throttled"], 0, "the budget was exceeded: {stats}");
    // A 404 detail is landed as such and not asked again.
    let r = query(&lake, "SELECT count(*) AS n FROM raw.zoho_crm_deal_details WHERE _detail_status = 404");
    assert_eq!(r[0]["n"], 20);
}

#[test]
fn a_stream_can_post_a_templated_json_body() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = edited_pipelines(
        dir.path(),
        "zoho_desk.toml",
        "headers = { orgId = \"${env:ZOHO_DESK_ORG_ID}\" }",
        "headers = { orgId = \"${env:ZOHO_DESK_ORG_ID}\", X-Part = \"{partition}\" }\nmethod = \"POST\"\nbody = { filtro = { desde = \"{cursor}\", parte = \"{partition}\", fixo = 3 } }",
    );
    ok(&zoho(&sim, &p, &lake, &dir.path().join("rt"), &["pull", "zoho_desk"]));
    let seen = http_get_json(&format!("{}/_sim/last_query/zoho/desk/tickets", sim.base));
    assert_eq!(seen["_method"], "POST");
    let body: serde_json::Value = serde_json::from_str(seen["_body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"filtro": {"desde": "", "parte": "_", "fixo": 3}}));
    let tickets: usize = raw_files(&lake).values().map(Vec::len).sum();
    assert_eq!(tickets, 30);
}

/// Seed 004's own refresh form: `GET …/oauth/v2/?refresh_token=…` answering `{"mytoken": …}`,
/// read with `response_token_key = "mytoken"`; tokens die mid-pull and are refreshed through
/// the same endpoint. The records equal the OAuth2 grant's pull.
#[test]
fn the_seeds_refresh_endpoint_form_pulls_what_the_oauth2_grant_pulls() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3", "--scale", "30", "--token-ttl", "1", "--slow-every", "1", "--slow-ms", "150"]);
    let dir = tempfile::tempdir().unwrap();
    let grant = "type = \"oauth2_refresh\"\ntoken_url = \"${env:ZOHO_ACCOUNTS_URL:-https://accounts.zoho.com}/oauth/v2/token\"\nclient_id = \"${secret:ZOHO_CLIENT_ID}\"\nclient_secret = \"${secret:ZOHO_CLIENT_SECRET}\"\nrefresh_token = \"${secret:ZOHO_REFRESH_TOKEN}\"\nheader = \"Authorization\"\nprefix = \"Zoho-oauthtoken \"\nrefresh_token_file = \"${env:ZOHO_REFRESH_TOKEN_FILE:-.ingest/zoho_refresh_token}\"";
    let form = "type = \"refresh\"\nurl = \"${env:ZOHO_ACCOUNTS_URL}/oauth/v2/\"\nmethod = \"GET\"\nquery_params = { refresh_token = \"${secret:ZOHO_REFRESH_TOKEN}\" }\nresponse_token_key = \"mytoken\"\nheader = \"Authorization\"\nprefix = \"Zoho-oauthtoken \"";
    let p = edited_pipelines(dir.path(), "zoho_crm.toml", grant, form);
    let lake = dir.path().join("lake");
    let o = zoho(&sim, &p, &lake, &dir.path().join("rt"), &["pull", "zoho_crm", "--streams", "leads,contacts"]);
    ok(&o);
    let stats = sim.stats();
    let refreshes = stats["by_route"]["zoho/token/seed-example"]["requests"].as_u64().unwrap_or(0);
    assert!(refreshes >= 2, "the token was asked {refreshes} time(s) from the seed's endpoint: {}", text(&o));
    assert!(stats["by_route"]["zoho/token"].is_null(), "the OAuth2 endpoint was used");
    let reference = dir.path().join("reference");
    ok(&zoho(&sim, &pipelines(), &reference, &dir.path().join("rt2"), &["pull", "zoho_crm", "--streams", "leads,contacts"]));
    for s in ["leads", "contacts"] {
        let (mut a, mut b) = (ids(&lake, s), ids(&reference, s));
        a.sort();
        b.sort();
        assert!(!a.is_empty());
        assert_eq!(a, b, "{s}");
    }
    assert_no_secrets(&secrets(&sim), &[&text(&o)], &lake);
    // A token field the answer lacks is a clear failure naming the endpoint, not the token.
    let bad = edited_pipelines(&dir.path().join("bad"), "zoho_crm.toml", grant, &form.replace("\"mytoken\"", "\"access_token\""));
    let o = zoho(&sim, &bad, &dir.path().join("lake-bad"), &dir.path().join("rt3"), &["pull", "zoho_crm", "--streams", "leads"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("gave no access token"), "{}", text(&o));
    assert_no_secrets(&secrets(&sim), &[&text(&o)], &dir.path().join("lake-bad"));
}

/// Seed 004's `mapping_fetch` on another host: each Ploomes contact's Milvus client, asked from
/// a second simulator's `cliente/busca` with its own `Authorization` header (a secret), lands as
/// a detail stream; the detail fields sit beside the contact's in a model joining the two
/// under a prefix. The source's own credentials are not sent there.
#[test]
fn details_on_another_host_carry_their_own_headers_and_join_under_a_prefix() {
    let a = Sim::start(&["--rate-window", "1", "--days", "3", "--seed", "61"]);
    let b = Sim::start(&["--rate-window", "1", "--days", "3", "--seed", "61", "--milvus-clients", "40"]);
    let dir = tempfile::tempdir().unwrap();
    let details = "[streams.contacts]\ndetails = { path = \"${env:OTHER_MILVUS_URL}/api/cliente/busca?documento={record.CNPJ}\", records = \"lista\", stream = \"contact_clients\", headers = { Authorization = \"${secret:OTHER_MILVUS_TOKEN}\" } }\npath = \"/Contacts\"";
    let p = edited_pipelines(dir.path(), "ploomes.toml", "[streams.contacts]\npath = \"/Contacts\"", details);
    let lake = dir.path().join("lake");
    let o = ingest_cmd(Some(&a), &lake, &p, &["pull", "ploomes", "--streams", "contacts"])
        .env("OTHER_MILVUS_URL", b.var("MILVUS_BASE_URL"))
        .env("OTHER_MILVUS_TOKEN", b.var("MILVUS_TOKEN"))
        .output()
        .unwrap();
    ok(&o);
    let contacts: usize = raw_files(&lake).iter().filter(|(k, _)| k.contains("/contacts/")).map(|(_, v)| v.len()).sum();
    let fetched = b.stats()["by_route"]["milvus/cliente/busca"]["requests"].as_u64().unwrap_or(0) as usize;
    assert!(contacts > 0);
    assert_eq!(fetched, contacts, "one detail request per contact, to the other host");
    assert!(a.stats()["by_route"]["milvus/cliente/busca"].is_null());
    let joined = query(
        &lake,
        "SELECT c.\"Id\" AS id, c.\"CNPJ\" AS cnpj, d.cnpj_cpf AS client_cnpj_cpf, d.nome_fantasia AS client_nome_fantasia \
         FROM raw.ploomes_contacts c JOIN raw.ploomes_contact_clients d ON CAST(c.\"Id\" AS VARCHAR) = d._parent_key WHERE c.\"CNPJ\" IS NOT NULL",
    );
    assert!(!joined.is_empty());
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let matched = joined.iter().filter(|r| r["client_cnpj_cpf"].as_str().is_some_and(|d| digits(d) == digits(r["cnpj"].as_str().unwrap()))).count();
    assert!(matched > 0, "no contact found its Milvus client: {joined:?}");
    assert_no_secrets(&[a.var("PLOOMES_USER_KEY"), b.var("MILVUS_TOKEN")], &[&text(&o)], &lake);
    // A detail URL that is not one is refused before any request.
    let bad = edited_pipelines(&dir.path().join("bad"), "ploomes.toml", "[streams.contacts]\npath = \"/Contacts\"", &details.replace("${env:OTHER_MILVUS_URL}", "http://bad host"));
    let o = ingest_cmd(Some(&a), &dir.path().join("lake-bad"), &bad, &["pull", "ploomes", "--streams", "contacts"]).env("OTHER_MILVUS_TOKEN", "x").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("details.path"), "{}", text(&o));
}
