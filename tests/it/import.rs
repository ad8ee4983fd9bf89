//! `ingest import extractor`: seed 004's own configs (`fixtures/seed004/`, copied verbatim from
//! the seed) imported, pulled from the simulator, transformed, and their per-run outputs read
//! back by DuckDB; broken configs refused naming the JSON path, with nothing written.
use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seed004").join(name)
}

/// `ingest` on `<dir>/{lake,pipelines,sql}` with the simulator's environment plus `extra`.
fn run(sim: Option<&Sim>, dir: &Path, extra: &[(String, String)], args: &[&str]) -> Output {
    let mut c: Command = ingest_cmd(sim, &dir.join("lake"), &dir.join("pipelines"), &[]);
    c.arg("--sql").arg(dir.join("sql")).args(args);
    c.envs(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    c.output().unwrap()
}

/// The column names of a seed `data_schema`, in its order.
fn columns(schema: &Value, out: &mut Vec<String>) {
    for v in schema.as_object().unwrap().values() {
        match v {
            Value::String(c) => out.push(c.clone()),
            other => columns(other, out),
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "csv")).collect();
    v.sort();
    v
}

/// Every row of a CSV output as DuckDB reads it (all text), sorted.
fn csv_rows(f: &Path) -> Vec<Vec<String>> {
    let out = duckdb(&format!(
        "import json\nfor r in con.execute(\"SELECT * FROM read_csv('{}', delim=';', header=true, all_varchar=true, quote='\\\"')\").fetchall(): print(json.dumps([x if x is not None else '' for x in r]))",
        f.display()
    ));
    let mut rows: Vec<Vec<String>> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    rows.sort();
    rows
}

/// The model's rows (`cond` on it) as text in `cols`' order, sorted.
fn model_rows(dir: &Path, table: &str, cols: &[String], cond: &str) -> Vec<Vec<String>> {
    let sel: Vec<String> = cols.iter().map(|c| format!("CAST(\"{c}\" AS VARCHAR) AS \"{c}\"")).collect();
    let o = run(None, dir, &[], &["query", "--format", "json", &format!("SELECT {} FROM {table} WHERE {cond}", sel.join(", "))]);
    let mut rows: Vec<Vec<String>> = ok(&o)
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            cols.iter().map(|c| r[c].as_str().map(str::to_string).unwrap_or_default()).collect()
        })
        .collect();
    rows.sort();
    rows
}

fn header(f: &Path) -> Vec<String> {
    std::fs::read_to_string(f).unwrap().lines().next().unwrap().split(';').map(str::to_string).collect()
}

/// The seed's two Zoho configs import unedited; pulled (tokens dying mid-run) and
/// transformed, each model's output is a `;` CSV whose header is the seed's data_schema
/// columns in order, `;` in descriptions replaced by `.`, equal to the model as DuckDB reads
/// it. Three deals changed → one more file with exactly those three; nothing new → no file;
/// an output that could not be written after its commit is written by the next run, once.
#[test]
fn the_seeds_zoho_configs_import_pull_and_write_their_outputs_once() {
    let sim = Sim::start(&["--rate-window", "1", "--days", "3", "--scale", "12", "--token-ttl", "1", "--slow-every", "1", "--slow-ms", "300"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["zoho_deals.json", "zoho_tickets.json"] {
        let o = run(None, d, &[], &["import", "extractor", fixture(f).to_str().unwrap()]);
        let out = ok(&o);
        assert!(out.contains("wrote"), "{out}");
    }
    let pipeline = std::fs::read_to_string(d.join("pipelines/zoho.toml")).unwrap();
    for want in ["${env:ZOHO_BASE_URL:-https://www.zohoapis.com}", "${env:ZOHO_AUTH_URL:-https://accounts.zoho.com}/oauth/v2/token", "${secret:ZOHO_REFRESH_TOKEN}", "path = \"/crm/v2/deals\"", "header = \"If-Modified-Since\""] {
        assert!(pipeline.contains(want), "{want} not in\n{pipeline}");
    }
    assert!(std::fs::read_to_string(d.join("pipelines/zoho_tickets.toml")).unwrap().contains("${secret:ZOHO_TICKETS_CLIENT_ID}"));
    // Importing again without --force changes nothing and says why.
    let o = run(None, d, &[], &["import", "extractor", fixture("zoho_deals.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));

    let out = d.join("out");
    let env = zoho_env(&sim, &out);
    let mut logs = Vec::new();
    for src in ["zoho", "zoho_tickets"] {
        logs.push(ok(&run(Some(&sim), d, &env, &["pull", src])));
    }
    let refreshes = sim.stats()["by_route"]["zoho/token"]["requests"].as_u64().unwrap_or(0);
    assert!(refreshes >= 3, "tokens refreshed {refreshes} time(s)");
    let seen = http_get_json(&format!("{}/_sim/last_query/zoho/crm/Deals", sim.base));
    assert_eq!((seen["sort_by"].as_str(), seen["sort_order"].as_str()), (Some("Modified_Time"), Some("asc")));
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));

    let deals_cols = {
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(fixture("zoho_deals.json")).unwrap()).unwrap();
        let mut c = Vec::new();
        columns(&cfg["extractions"][0]["data_schema"], &mut c);
        c
    };
    let tickets_cols = {
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(fixture("zoho_tickets.json")).unwrap()).unwrap();
        let mut c = Vec::new();
        columns(&cfg["extractions"][0]["data_schema"], &mut c);
        c
    };
    let deals_dir = out.join("zoho/deals");
    let tickets_dir = out.join("zoho/tickets");
    assert_eq!(files(&deals_dir).len(), 1, "{:?}", files(&out));
    assert_eq!(files(&tickets_dir).len(), 1, "{:?}", files(&out));
    let f = &files(&deals_dir)[0];
    assert!(f.file_name().unwrap().to_str().unwrap().starts_with("deals_"), "{}", f.display());
    assert_eq!(header(f), deals_cols);
    let t = &files(&tickets_dir)[0];
    assert!(t.file_name().unwrap().to_str().unwrap().starts_with("ticketsdata_"), "{}", t.display());
    assert_eq!(header(t), tickets_cols);
    let deals = csv_rows(f);
    assert!(deals.len() > 10, "{} deals", deals.len());
    assert_eq!(deals, model_rows(d, "silver.zoho_deals", &deals_cols, "true"));
    assert_eq!(csv_rows(t), model_rows(d, "silver.zoho_tickets_tickets", &tickets_cols, "true"));
    assert_eq!(csv_rows(t).len(), raw_files(&d.join("lake")).iter().filter(|(k, _)| k.contains("/tickets/")).map(|(_, v)| v.len()).sum::<usize>());
    // `;` in Description became `.`; the rest of the text is the API's.
    let di = deals_cols.iter().position(|c| c == "description").unwrap();
    let raw: Vec<String> = raw_files(&d.join("lake")).iter().filter(|(k, _)| k.contains("/deals/")).flat_map(|(_, v)| v.iter().map(|r| r["Description"].as_str().unwrap().to_string())).collect();
    assert!(raw.iter().any(|x| x.contains(';')));
    let mut want: Vec<String> = raw.iter().map(|x| x.replace(';', ".")).collect();
    let mut got: Vec<String> = deals.iter().map(|r| r[di].clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // A field the simulator never sends is an empty column, not a missing one.
    let oi = deals_cols.iter().position(|c| c == "owner_name").unwrap();
    assert!(deals.iter().all(|r| r[oi].is_empty()));

    // Three deals change: one more file, exactly those three.
    let touched: Vec<String> = http_get_json(&format!("{}/_sim/zoho/touch?n=3", sim.base))["touched"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(touched.len(), 3);
    logs.push(ok(&run(Some(&sim), d, &env, &["pull", "zoho"])));
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));
    assert_eq!(files(&deals_dir).len(), 2);
    assert_eq!(files(&tickets_dir).len(), 1, "the tickets model did not change");
    let second = csv_rows(&files(&deals_dir)[1]);
    let ii = deals_cols.iter().position(|c| c == "id").unwrap();
    let mut ids: Vec<String> = second.iter().map(|r| r[ii].clone()).collect();
    ids.sort();
    let mut want_ids = touched.clone();
    want_ids.sort();
    assert_eq!(ids, want_ids);
    let si = deals_cols.iter().position(|c| c == "stage").unwrap();
    assert!(second.iter().all(|r| r[si] == "Closed Won"));

    // Nothing new (the API answers 304): no file.
    logs.push(ok(&run(Some(&sim), d, &env, &["pull", "zoho"])));
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));
    assert_eq!(files(&deals_dir).len(), 2);

    // The run commits but its output cannot be written (as if killed after the commit): the
    // next run writes it, once.
    let touched: Vec<Value> = http_get_json(&format!("{}/_sim/zoho/touch?n=2", sim.base))["touched"].as_array().unwrap().clone();
    logs.push(ok(&run(Some(&sim), d, &env, &["pull", "zoho"])));
    std::fs::rename(&deals_dir, d.join("aside")).unwrap();
    std::fs::write(&deals_dir, "not a folder").unwrap();
    let o = run(Some(&sim), d, &env, &["transform"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    std::fs::remove_file(&deals_dir).unwrap();
    std::fs::rename(d.join("aside"), &deals_dir).unwrap();
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));
    assert_eq!(files(&deals_dir).len(), 3, "written once");
    assert_eq!(csv_rows(&files(&deals_dir)[2]).len(), touched.len());

    // A transform killed (-9) as soon as it reports its commit (here that lands before its
    // output is written; wherever it lands after the commit, the end is the same) then a
    // rerun: the change's file exists once, with exactly the changed deal.
    let touched = http_get_json(&format!("{}/_sim/zoho/touch?n=1", sim.base))["touched"][0].as_str().unwrap().to_string();
    logs.push(ok(&run(Some(&sim), d, &env, &["pull", "zoho"])));
    let mut c: Command = ingest_cmd(Some(&sim), &d.join("lake"), &d.join("pipelines"), &[]);
    c.arg("--sql").arg(d.join("sql")).arg("transform").envs(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let reported = lines.by_ref().map_while(Result::ok).any(|l| l.contains("silver.zoho_deals"));
    assert!(reported, "the transform never reported the model");
    let _ = child.kill();
    child.wait().unwrap();
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));
    logs.push(ok(&run(Some(&sim), d, &env, &["transform"])));
    assert_eq!(files(&deals_dir).len(), 4, "written once: {:?}", files(&deals_dir));
    let last = csv_rows(&files(&deals_dir)[3]);
    assert_eq!(last.iter().map(|r| r[ii].clone()).collect::<Vec<_>>(), vec![touched]);

    let mut secrets = sim.secrets();
    secrets.extend([sim.var("ZOHO_CLIENT_SECRET"), sim.var("ZOHO_REFRESH_TOKEN")]);
    let texts: Vec<&str> = logs.iter().map(String::as_str).collect();
    assert_no_secrets(&secrets, &texts, &d.join("lake"));
    assert_no_secrets(&secrets, &[], &out);
    assert_no_secrets(&secrets, &[], &d.join("pipelines"));
}

/// What points the imported `zoho` and `zoho_tickets` at the simulator (the shipped Zoho
/// credentials serve both) and their outputs at `out`.
fn zoho_env(sim: &Sim, out: &Path) -> Vec<(String, String)> {
    let out = out.display().to_string();
    let mut env = Vec::new();
    for name in ["ZOHO", "ZOHO_TICKETS"] {
        env.push((format!("{name}_AUTH_URL"), sim.var("ZOHO_ACCOUNTS_URL")));
        env.push((format!("{name}_OUTPUT_URL"), out.clone()));
    }
    env.push(("ZOHO_BASE_URL".into(), sim.var("ZOHO_CRM_BASE_URL")));
    env.push(("ZOHO_TICKETS_BASE_URL".into(), sim.var("ZOHO_DESK_BASE_URL")));
    for k in ["REFRESH_TOKEN", "CLIENT_ID", "CLIENT_SECRET"] {
        env.push((format!("ZOHO_TICKETS_{k}"), sim.var(&format!("ZOHO_{k}"))));
    }
    env
}

/// Import both seed configs into `d`, pull both sources from `sim` and transform: the
/// environment used and the logs.
fn import_pull_transform(sim: &Sim, d: &Path) -> (Vec<(String, String)>, Vec<String>) {
    for f in ["zoho_deals.json", "zoho_tickets.json"] {
        ok(&run(None, d, &[], &["import", "extractor", fixture(f).to_str().unwrap()]));
    }
    let env = zoho_env(sim, &d.join("out"));
    let mut logs = Vec::new();
    for args in [&["pull", "zoho"][..], &["pull", "zoho_tickets"], &["transform"]] {
        logs.push(ok(&run(Some(sim), d, &env, args)));
    }
    (env, logs)
}

/// The imported seed configs against hostile APIs: 503s and bodies cut short change nothing
/// (the outputs equal a clean API's); sparse records still give
/// the seed's header with empty cells, equal to the model; an account with no deal and no
/// ticket builds and writes no file.
#[test]
fn the_imported_seed_configs_survive_hostile_sparse_and_empty_apis() {
    let base = ["--rate-window", "1", "--days", "3", "--scale", "6", "--seed", "65"];
    let with = |extra: &[&str]| Sim::start(&[&base[..], extra].concat());
    let outputs = |d: &Path| -> Vec<(String, Vec<Vec<String>>)> {
        files(&d.join("out")).iter().map(|f| (f.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned(), csv_rows(f))).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let clean_sim = with(&[]);
    let clean = dir.path().join("clean");
    import_pull_transform(&clean_sim, &clean);
    let hostile_sim = with(&["--fail-every", "4", "--truncate-every", "5"]);
    let hostile = dir.path().join("hostile");
    import_pull_transform(&hostile_sim, &hostile);
    let requests = |s: &Sim| s.stats()["requests"].as_u64().unwrap();
    assert!(requests(&hostile_sim) >= requests(&clean_sim) + 3, "faults were not answered and retried");
    let (a, b) = (outputs(&clean), outputs(&hostile));
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a.iter().all(|(_, rows)| !rows.is_empty()));
    assert_eq!(a, b, "a hostile API changed the outputs");

    let sparse = dir.path().join("sparse");
    import_pull_transform(&with(&["--sparse", "0.5"]), &sparse);
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(fixture("zoho_deals.json")).unwrap()).unwrap();
    let mut cols = Vec::new();
    columns(&cfg["extractions"][0]["data_schema"], &mut cols);
    let f = files(&sparse.join("out/zoho/deals"));
    assert_eq!(header(&f[0]), cols);
    let rows = csv_rows(&f[0]);
    assert_eq!(rows, model_rows(&sparse, "silver.zoho_deals", &cols, "true"));
    let stage = cols.iter().position(|c| c == "stage").unwrap();
    assert!(rows.iter().any(|r| r[stage].is_empty()) && rows.iter().any(|r| !r[stage].is_empty()), "sparse data was not sparse");

    let empty = dir.path().join("empty");
    import_pull_transform(&with(&["--empty", "zoho_crm,zoho_desk"]), &empty);
    assert!(files(&empty.join("out")).is_empty(), "{:?}", files(&empty.join("out")));
}

/// Seed 004's own refresh example (`auth.endpoint` + `response_token_key: "mytoken"`) and a
/// `mapping_fetch` on another host: each deal's detail, asked from a second simulator with
/// its own token header, sits beside the deal's fields under the prefix.
#[test]
fn the_seeds_refresh_example_and_a_mapping_fetch_on_another_host() {
    let a = Sim::start(&["--rate-window", "1", "--days", "2", "--scale", "5", "--seed", "64"]);
    let b = Sim::start(&["--rate-window", "1", "--days", "2", "--scale", "5", "--seed", "64", "--token-ttl", "3600"]);
    let token = http_get_json(&format!(
        "{}/oauth/v2/token?grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
        b.var("ZOHO_ACCOUNTS_URL"),
        b.var("ZOHO_REFRESH_TOKEN"),
        b.var("ZOHO_CLIENT_ID"),
        b.var("ZOHO_CLIENT_SECRET")
    ))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let config = serde_json::json!({
        "name": "Seed example",
        "auth": {
            "endpoint": {"url": "https://accounts.com/oauth/v2/", "query_params": {"refresh_token": "${secret::refresh_token}"}},
            "response_token_key": "mytoken"
        },
        "extractions": [{
            "name": "Deals",
            "endpoint": {"url": "https://www.api.com/crm/v2/Deals", "headers": {"Authorization": "Zoho-oauthtoken ${self::auth.access_token}"}},
            "data_key": "data",
            "data_schema": {"id": "id", "Deal_Name": "deal_name", "Stage": "stage"},
            "pagination": {"type": "sequential", "parameters": {"param_name": "page", "start_from": 1, "there_are_more_pages": "info.more_records"}},
            "mapping_fetch": {
                "endpoint": {"url": "https://other.api.com/crm/v2/Deals/{record.id}", "headers": {"Authorization": "Zoho-oauthtoken ${secret::other_token}"}},
                "prefix": "detail_",
                "data_key": "data",
                "data_schema": {"Description": "description", "Contact_Name": {"name": "contact"}}
            },
            "s3_destiny": {"bucket": "my-bucket", "folder": "deals"}
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = d.join("example.json");
    std::fs::write(&cfg, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    ok(&run(None, d, &[], &["import", "extractor", cfg.to_str().unwrap()]));
    let model = std::fs::read_to_string(d.join("sql/silver/seed_example_deals.sql")).unwrap();
    assert!(model.contains("${env:SEED_EXAMPLE_OUTPUT_URL:-s3://my-bucket}/deals/"), "{model}");
    let pipeline = std::fs::read_to_string(d.join("pipelines/seed_example.toml")).unwrap();
    assert!(pipeline.contains("${env:SEED_EXAMPLE_DEALS_DETAILS_URL:-https://other.api.com}/crm/v2/Deals/{record.id}"), "{pipeline}");
    let out = d.join("out");
    let env: Vec<(String, String)> = vec![
        ("SEED_EXAMPLE_BASE_URL".into(), a.var("ZOHO_CRM_BASE_URL")),
        ("SEED_EXAMPLE_AUTH_URL".into(), a.var("ZOHO_ACCOUNTS_URL")),
        ("SEED_EXAMPLE_OUTPUT_URL".into(), out.display().to_string()),
        ("REFRESH_TOKEN".into(), a.var("ZOHO_REFRESH_TOKEN")),
        ("OTHER_TOKEN".into(), token.clone()),
        ("SEED_EXAMPLE_DEALS_DETAILS_URL".into(), b.var("ZOHO_CRM_BASE_URL")),
    ];
    let o = run(Some(&a), d, &env, &["pull", "seed_example"]);
    let log = ok(&o);
    assert!(a.stats()["by_route"]["zoho/token/seed-example"]["requests"].as_u64().unwrap_or(0) >= 1);
    let deals = a.stats()["by_route"]["zoho/crm/Deals"]["records"].as_u64().unwrap_or(0);
    assert!(deals > 0);
    assert!(a.stats()["by_route"]["zoho/crm/Deals/detail"].is_null(), "details went to the list's host");
    let hits = http_get_json(&format!("{}/_sim/truth/zoho_details", b.base));
    let hits = hits.as_object().unwrap();
    assert_eq!(hits.len() as u64, deals, "one detail request per deal, on the other host: {hits:?}");
    assert!(hits.values().all(|n| n == 1), "{hits:?}");
    ok(&run(Some(&a), d, &env, &["transform"]));
    let f = files(&out.join("deals"));
    assert_eq!(f.len(), 1, "{:?}", walk(&out));
    assert_eq!(std::fs::read_to_string(&f[0]).unwrap().lines().next().unwrap(), "id,deal_name,stage,detail_description,detail_contact");
    let rows = query(&d.join("lake"), "SELECT id, deal_name, detail_description, detail_contact FROM silver.seed_example_deals");
    assert_eq!(rows.len() as u64, deals);
    // Deals the detail answers 404 for have no detail fields; every other one has them.
    let with: Vec<&Value> = rows.iter().filter(|r| r["detail_description"].is_string()).collect();
    assert!(with.len() * 10 >= rows.len() * 8, "{} of {} deals have details", with.len(), rows.len());
    assert!(with.iter().all(|r| r["detail_contact"].is_string() && !r["detail_description"].as_str().unwrap().is_empty()), "{with:?}");
    assert_no_secrets(&[token, a.var("ZOHO_REFRESH_TOKEN")], &[&log], &d.join("lake"));
}

/// Configs (thirteen), each with one broken or unsupported field, exit 2 naming the file, line and
/// JSON path; nothing is written.
#[test]
fn a_config_that_cannot_be_mapped_exits_2_naming_the_json_path_and_writes_nothing() {
    let base: Value = serde_json::from_str(&std::fs::read_to_string(fixture("zoho_deals.json")).unwrap()).unwrap();
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit)> = vec![
        ("extractions[0].pagination.type", |v| v["extractions"][0]["pagination"]["type"] = "cursor".into()),
        ("extractions[0].transformations[0].action", |v| v["extractions"][0]["transformations"][0]["action"] = "reverse".into()),
        ("extractions[0].data_schema.Owner.name", |v| v["extractions"][0]["data_schema"]["Owner"]["name"] = 5.into()),
        ("extractions[0].pagination.parameters.stop_when_response_body_is_empty", |v| {
            let p = &mut v["extractions"][0]["pagination"]["parameters"];
            p["continue_while_status_code_is"] = 200.into();
            p["stop_when_response_body_is_empty"] = true.into();
        }),
        ("extractions[0].format", |v| v["extractions"][0]["format"] = "xml".into()),
        ("extractions[0].output_params.csv_separator", |v| v["extractions"][0]["output_params"]["csv_separator"] = ";;".into()),
        ("extractions[0].endpoint.timeout", |v| v["extractions"][0]["endpoint"]["timeout"] = 30.into()),
        ("auth.refresh_token.response_token_key", |v| {
            v["auth"]["refresh_token"].as_object_mut().unwrap().remove("response_token_key");
        }),
        ("extractions[0].transformations[0].on[0]", |v| v["extractions"][0]["transformations"][0]["on"][0] = "nope".into()),
        ("extractions[0].endpoint.headers.Authorization", |v| v["extractions"][0]["endpoint"]["headers"]["Authorization"] = "Bearer ${env::TOKEN}".into()),
        ("extractions[0].endpoint.url", |v| v["extractions"][0]["endpoint"]["url"] = "www.zohoapis.com/crm".into()),
        ("extractions[0].data_schema.Stage", |v| v["extractions"][0]["data_schema"]["Stage"] = "deal_name".into()),
        // The token in a query parameter and in the Authorization header: one place only.
        ("extractions[0].endpoint.headers.Authorization", |v| v["extractions"][0]["endpoint"]["query_params"]["token"] = "${self::auth.access_token}".into()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, (path, edit)) in cases.iter().enumerate() {
        let mut v = base.clone();
        edit(&mut v);
        let f = d.join(format!("broken_{i}.json"));
        std::fs::write(&f, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        let o = run(None, d, &[], &["import", "extractor", f.to_str().unwrap(), "--name", "broken"]);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", text(&o));
        let msg = text(&o);
        assert!(msg.contains(&format!("field `{path}`")), "{path}: {msg}");
        assert!(msg.contains(&format!("broken_{i}.json:")), "{path}: no file:line in {msg}");
        assert!(!d.join("pipelines").exists() && !d.join("sql").exists(), "{path}: something was written");
    }
    // The line is the field's: the pretty-printed `format` sits where the error says.
    let mut v = base.clone();
    v["extractions"][0]["format"] = "xml".into();
    let pretty = serde_json::to_string_pretty(&v).unwrap();
    let line = pretty.lines().position(|l| l.trim_start().starts_with("\"format\"")).unwrap() + 1;
    std::fs::write(d.join("f.json"), &pretty).unwrap();
    let o = run(None, d, &[], &["import", "extractor", d.join("f.json").to_str().unwrap()]);
    assert!(text(&o).contains(&format!("f.json:{line}: field `extractions[0].format`")), "{}", text(&o));
    // Not JSON: the line of the syntax error.
    std::fs::write(d.join("bad.json"), "{\n  \"name\": \"x\",\n  \"extractions\": [\n}").unwrap();
    let o = run(None, d, &[], &["import", "extractor", d.join("bad.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bad.json:4"), "{}", text(&o));
}
