//! Bad input exits 2 naming what is wrong, before anything is written; an unreachable host
//! is a runtime failure (exit 1) that names the host.
use crate::common::*;
use std::path::Path;
use std::process::Command;

fn run(pipelines: &Path, lake: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN)
        .arg("--lake")
        .arg(lake)
        .arg("--pipelines")
        .arg(pipelines)
        .args(args)
        .env_remove("C2S_TOKEN")
        .env_remove("C2S_BASE_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}

fn edited(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let p = dir.join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    let text = std::fs::read_to_string(pipelines().join("c2s.toml")).unwrap();
    assert!(text.contains(from));
    std::fs::write(p.join("c2s.toml"), text.replacen(from, to, 1)).unwrap();
    p
}

#[test]
fn bad_input_exits_2_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let tok = [("C2S_TOKEN", "tok-123456789")];

    // Unknown key: file, line and key named.
    let p = edited(
        dir.path(),
        "primary_key = \"id\"",
        "primary_key = \"id\"\ncolour = \"red\"",
    );
    let line = std::fs::read_to_string(p.join("c2s.toml"))
        .unwrap()
        .lines()
        .position(|l| l.starts_with("colour"))
        .unwrap()
        + 1;
    let (code, msg) = run(&p, &lake, &tok, &["pull", "c2s"]);
    assert_eq!(code, 2, "{msg}");
    assert!(
        msg.contains(&format!("c2s.toml:{line}")) && msg.contains("colour"),
        "{msg}"
    );

    // Missing secret.
    let (code, msg) = run(&pipelines(), &lake, &[], &["pull", "c2s"]);
    assert_eq!(code, 2, "{msg}");
    assert!(
        msg.contains("C2S_TOKEN") && msg.contains("auth.token") && msg.contains("c2s.toml:"),
        "{msg}"
    );

    // Bad dates, bad stream, unknown source.
    let (code, msg) = run(&pipelines(), &lake, &tok, &["pull", "c2s", "--from", "2023-13-01"]);
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("--from") && msg.contains("2023-13-01"), "{msg}");
    let (code, msg) = run(
        &pipelines(),
        &lake,
        &tok,
        &["pull", "c2s", "--from", "2023-09-10", "--to", "2023-09-01"],
    );
    assert_eq!(code, 2, "{msg}");
    let (code, msg) = run(&pipelines(), &lake, &tok, &["pull", "c2s", "--streams", "deals"]);
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("deals"), "{msg}");
    let (code, msg) = run(&pipelines(), &lake, &tok, &["pull", "nope"]);
    assert_eq!(code, 2, "{msg}");
    assert!(
        msg.contains("unknown source `nope`") && msg.contains("c2s") && msg.contains("pancake"),
        "{msg}"
    );

    // A bad value: line and field.
    let p = edited(dir.path(), "lookback = \"1m\"", "lookback = \"soon\"");
    let (code, msg) = run(&p, &lake, &tok, &["pull", "c2s"]);
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("incremental.lookback") && msg.contains("soon"), "{msg}");
    assert!(!lake.exists(), "bad input wrote to the lake");

    // Unreachable host: exit 1, the host is named, no token in the message, no garbage.
    let p = edited(
        dir.path(),
        "max_attempts = 8\nbase_delay_ms = 500",
        "max_attempts = 2\nbase_delay_ms = 10",
    );
    let (code, msg) = run(
        &p,
        &lake,
        &[("C2S_TOKEN", "tok-123456789"), ("C2S_BASE_URL", "http://127.0.0.1:9")],
        &["pull", "c2s"],
    );
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("127.0.0.1:9"), "{msg}");
    assert!(!msg.contains("tok-123456789"), "{msg}");
    assert!(raw_files(&lake).is_empty());
    assert!(!lake.join("_ingest/catalogue").exists(), "a failed first run left state behind");
    // Only the run log says it happened.
    let log = ok(&std::process::Command::new(BIN).arg("--lake").arg(&lake).args(["runs", "--failed"]).output().unwrap());
    assert!(log.contains("FAILED") && log.contains("127.0.0.1:9") && !log.contains("tok-123456789"), "{log}");
}

#[test]
fn seed_pagination_rules_that_exclude_each_other_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let p = dir.path().join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    let text = std::fs::read_to_string(pipelines().join("zoho_crm.toml")).unwrap();
    let from = "continue_if = \"info.more_records\" }";
    assert!(text.contains(from));
    let to = "continue_if = \"info.more_records\", continue_while_status_code_is = 200, stop_when_response_body_is_empty = true }";
    std::fs::write(p.join("zoho_crm.toml"), text.replacen(from, to, 1)).unwrap();
    let env = [("ZOHO_CLIENT_ID", "a-client-id"), ("ZOHO_CLIENT_SECRET", "a-secret-1"), ("ZOHO_REFRESH_TOKEN", "a-refresh-token")];
    let (code, msg) = run(&p, &lake, &env, &["pull", "zoho_crm"]);
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("zoho_crm.toml:") && msg.contains("stop_when_response_body_is_empty"), "{msg}");
    assert!(!msg.contains("a-refresh-token") && !msg.contains("a-secret-1"), "{msg}");
    assert!(!lake.exists());
}
