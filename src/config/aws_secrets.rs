//! `${secret:NAME}` from AWS Secrets Manager (seed 004's `api-extractor-config/prod/extractor-secrets`):
//! a pipeline names one JSON secret holding many keys,
//!
//! ```toml
//! [source.secrets]
//! aws_secret_id = "api-extractor-config/prod/extractor-secrets"
//! ```
//!
//! and a `${secret:NAME}` that is neither an environment variable nor a secrets file is that
//! JSON's key `NAME` (or `name`, lower-cased: the seed's keys are `zoho_refresh_token`).
//! The secret is fetched once per run, before the pipeline is loaded ([`prefetch`]), and kept
//! in this process only; each value is registered as a secret (never logged). Region,
//! endpoint and credentials come from the standard variables (`AWS_REGION` or
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). Requests are signed by
//! `aws-sigv4` (AWS's own signing crate: about 20 small crates, where the Secrets Manager SDK
//! brings the whole smithy runtime and a second HTTP stack).
use crate::error::{Error, Result};
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Keys of the fetched secrets, by secret id.
fn cache() -> &'static Mutex<HashMap<String, HashMap<String, Secret>>> {
    static C: OnceLock<Mutex<HashMap<String, HashMap<String, Secret>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// The secret id the pipeline `<dir>/<source>.toml` names, if any (read from the file alone).
fn declared(dir: &std::path::Path, source: &str) -> Result<Option<String>> {
    let file = dir.join(format!("{source}.toml"));
    let Ok(raw) = std::fs::read_to_string(&file) else { return Ok(None) };
    let shown = file.display().to_string();
    let (_, v) = super::interp::offline(&shown, &raw)?;
    Ok(v.get("source").and_then(|s| s.get("secrets")).and_then(|s| s.get("aws_secret_id")).and_then(|s| s.as_str()).map(str::to_string))
}

/// Fetch the AWS secret the pipeline names (once per process), before the pipeline is loaded.
/// A secret that does not exist, is not a JSON object, or cannot be read is an error naming
/// the secret id (exit 2), never a value.
pub async fn prefetch(dir: &std::path::Path, source: &str) -> Result<()> {
    let Some(id) = declared(dir, source)? else { return Ok(()) };
    if cache().lock().unwrap().contains_key(&id) {
        return Ok(());
    }
    let keys = fetch(&id).await?;
    cache().lock().unwrap().insert(id, keys);
    Ok(())
}

/// The value of `name` in a fetched secret (exact key, then lower-cased); with the secret ids
/// looked in when there is none.
pub fn lookup(name: &str) -> std::result::Result<Secret, Vec<String>> {
    let c = cache().lock().unwrap();
    for keys in c.values() {
        if let Some(v) = keys.get(name).or_else(|| keys.get(&name.to_lowercase())) {
            return Ok(v.clone());
        }
    }
    Err(c.keys().cloned().collect())
}

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

async fn fetch(id: &str) -> Result<HashMap<String, Secret>> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let usage = |m: String| Error::Usage(format!("AWS secret `{id}`: {m}"));
    let region = env(&["AWS_REGION", "AWS_DEFAULT_REGION"]).ok_or_else(|| usage("set AWS_REGION to the secret's region".into()))?;
    let endpoint = env(&["AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL"]).unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
    let (Some(key_id), Some(secret_key)) = (env(&["AWS_ACCESS_KEY_ID"]), env(&["AWS_SECRET_ACCESS_KEY"])) else {
        return Err(usage("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)".into()));
    };
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let body = serde_json::json!({"SecretId": id}).to_string();
    let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "secretsmanager.GetSecretValue")];
    let identity = aws_credential_types::Credentials::new(key_id, secret_key, env(&["AWS_SESSION_TOKEN"]), None, "ingest").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("secretsmanager")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| usage(e.to_string()))?
        .into();
    let signable = SignableRequest::new("POST", &url, headers.iter().copied(), SignableBody::Bytes(body.as_bytes())).map_err(|e| usage(e.to_string()))?;
    let (signed, _) = sign(signable, &params).map_err(|e| usage(e.to_string()))?.into_parts();
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| usage(e.to_string()))?;
    let mut req = client.post(&url).body(body.clone());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    for (k, v) in signed.headers() {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| Error::Other(format!("AWS secret `{id}`: Secrets Manager at {url} could not be reached: {}", e.without_url())))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        // AWS names the error in `__type` (`…#ResourceNotFoundException`) and `message`.
        let kind = answer["__type"].as_str().unwrap_or_default().rsplit('#').next().unwrap_or_default().to_string();
        let msg = answer["message"].as_str().or(answer["Message"].as_str()).unwrap_or_default();
        return Err(usage(format!("Secrets Manager answered {status} {kind} {msg}").trim().to_string()));
    }
    let text = answer["SecretString"].as_str().ok_or_else(|| usage("it has no SecretString (a binary secret?): store the keys as a JSON object".into()))?;
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).map_err(|_| usage("its value is not a JSON object of keys".into()))?;
    Ok(obj
        .into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some((k, Secret::new(v)))
        })
        .collect())
}
