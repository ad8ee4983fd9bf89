//! OAuth2 refresh-token grant: one access token per grant (token URL + client), shared by every
//! stream of a source. Getting a token takes the grant's lock, so when it has expired exactly
//! one refresh runs and the other streams wait for its result (single flight). A 401 with a
//! token invalidates that token only (a stream holding an older one does not throw away a
//! fresh one). Tokens are registered as secrets: they never reach logs or errors, and the
//! token endpoint is named by host and path only (its query carries the refresh token).
use super::HttpError;
use crate::config::{Grant as GrantConfig, OAuth2};
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct Token {
    pub value: Secret,
    expires: Instant,
    generation: u64,
}

#[derive(Default)]
struct Grant {
    current: Option<Token>,
    generation: u64,
    /// A refresh token the provider sent back (rotation), used from then on.
    rotated: Option<Secret>,
}

#[derive(Clone)]
pub struct Tokens {
    /// Built on the first refresh (most sources have no OAuth2: no second TLS client).
    http: Arc<std::sync::OnceLock<reqwest::Client>>,
    timeout: Duration,
    grants: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<Grant>>>>>,
}

fn key(o: &OAuth2) -> String {
    o.identity()
}

/// The token endpoint as errors may show it: scheme, host, port and path, no query.
fn endpoint(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "the configured token_url".into(),
    }
}

impl Tokens {
    pub fn new(timeout: Duration) -> Self {
        Tokens {
            http: Arc::default(),
            timeout,
            grants: Arc::default(),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.timeout)
                .user_agent(concat!("ingest/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default()
        })
    }

    fn grant(&self, o: &OAuth2) -> Arc<Mutex<Grant>> {
        self.grants.lock().unwrap().entry(key(o)).or_default().clone()
    }

    /// A valid access token, refreshed first when missing or about to expire.
    pub async fn token(&self, o: &OAuth2) -> Result<Token, HttpError> {
        let g = self.grant(o);
        let mut g = g.lock().await;
        if let Some(t) = &g.current {
            if Instant::now() < t.expires {
                return Ok(t.clone());
            }
        }
        let t = self.refresh(o, &mut g).await?;
        Ok(t)
    }

    /// Drop `t` if it is still the current token (a 401 said it is no good).
    pub async fn invalidate(&self, o: &OAuth2, t: &Token) {
        let g = self.grant(o);
        let mut g = g.lock().await;
        if g.current.as_ref().is_some_and(|c| c.generation == t.generation) {
            g.current = None;
        }
    }

    async fn refresh(&self, o: &OAuth2, g: &mut Grant) -> Result<Token, HttpError> {
        // What the request carries: (query, form body, headers, JSON body).
        let (query, form, headers, json, refresh_token) = match &o.grant {
            GrantConfig::RefreshToken { client_id, client_secret, refresh_token, params, refresh_token_file } => {
                let refresh_token = match (&g.rotated, refresh_token_file) {
                    (Some(r), _) => r.clone(),
                    (None, Some(f)) => match std::fs::read_to_string(f) {
                        Ok(s) if !s.trim().is_empty() => Secret::new(s.trim().to_string()),
                        _ => refresh_token.clone(),
                    },
                    (None, None) => refresh_token.clone(),
                };
                let mut pairs: Vec<(String, String)> = vec![
                    ("grant_type".into(), "refresh_token".into()),
                    ("refresh_token".into(), refresh_token.expose().into()),
                    ("client_id".into(), client_id.expose().into()),
                    ("client_secret".into(), client_secret.expose().into()),
                ];
                pairs.extend(params.iter().cloned());
                // POST carries the credentials in a form body (URLs end up in proxy logs); GET
                // can only put them in the query.
                if o.method == "POST" {
                    (Vec::new(), Some(pairs), Vec::new(), None, Some(refresh_token))
                } else {
                    (pairs, None, Vec::new(), None, Some(refresh_token))
                }
            }
            GrantConfig::Endpoint { query, headers, body } => (
                query.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
                None,
                headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect::<Vec<_>>(),
                body.as_ref().map(|b| b.expose().to_string()),
                None,
            ),
        };
        let at = endpoint(&o.token_url);
        let method = if o.method == "GET" { reqwest::Method::GET } else { reqwest::Method::POST };
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            let mut req = self.http().request(method.clone(), &o.token_url);
            if !query.is_empty() {
                req = req.query(&query);
            }
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(pairs) = &form {
                let form = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.iter()).finish();
                req = req.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(form);
            } else if let Some(j) = &json {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(j.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = crate::secret::redact(&e.without_url().to_string());
                    continue;
                }
            };
            let status = resp.status();
            if status.is_server_error() || status.as_u16() == 429 {
                last = format!("answered {status}");
                continue;
            }
            // A body cut short or not JSON is a fault of the wire, retried like a 5xx (a valid
            // answer without the token is the provider's "no", which is not).
            let body: serde_json::Value = match resp.bytes().await.map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(v)) => v,
                Ok(Err(_)) | Err(_) => {
                    last = format!("answered {status} with a body that is not whole JSON");
                    continue;
                }
            };
            let token = crate::json::at_str(&body, &o.token_key).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
            let Some(token) = token else {
                let why = body
                    .get("error")
                    .map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string()))
                    .unwrap_or_else(|| format!("status {status}"));
                return Err(HttpError::Auth(crate::secret::redact(&format!(
                    "the token endpoint {at} gave no access token ({why}): check the refresh token and client credentials"
                ))));
            };
            let value = Secret::new(token.to_string());
            let lifetime = crate::json::at_str(&body, &o.expires_key)
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
                .filter(|l| l.is_finite())
                .unwrap_or(3600.0)
                // (a day at most: `expires_in` = 1e20 must not overflow an Instant)
                .clamp(1.0, 86_400.0);
            // Refresh a little before the provider's expiry (a tenth of the lifetime, ≤ 60 s).
            let margin = (lifetime / 10.0).min(60.0);
            if let (Some(new), Some(refresh_token)) = (body.get("refresh_token").and_then(|v| v.as_str()), &refresh_token) {
                if new != refresh_token.expose() {
                    let new = Secret::new(new.to_string());
                    self.keep_rotated(o, &new);
                    g.rotated = Some(new);
                }
            }
            g.generation += 1;
            let t = Token {
                value,
                expires: Instant::now() + Duration::from_secs_f64(lifetime - margin),
                generation: g.generation,
            };
            g.current = Some(t.clone());
            tracing::info!(endpoint = %at, expires_in_s = lifetime, "OAuth2 access token refreshed");
            return Ok(t);
        }
        Err(HttpError::Auth(format!(
            "the token endpoint {at} gave no usable answer in 4 attempts: {last}"
        )))
    }

    /// Write a rotated refresh token where the pipeline says (mode 0600, replaced atomically).
    fn keep_rotated(&self, o: &OAuth2, new: &Secret) {
        let GrantConfig::RefreshToken { refresh_token_file, .. } = &o.grant else { return };
        let Some(path) = refresh_token_file else {
            tracing::warn!("the provider rotated the refresh token but the pipeline sets no `refresh_token_file`: a later run will present the old one");
            return;
        };
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(new.expose().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        match write() {
            Ok(()) => tracing::info!(file = %path.display(), "kept the rotated refresh token"),
            Err(e) => tracing::error!(file = %path.display(), "cannot keep the rotated refresh token: {e}"),
        }
    }
}
