//! The HTTP engine: one pooled client per source, a shared request budget, retries with
//! jittered exponential backoff that honour `Retry-After`, and auth placement. It never logs
//! or returns a URL that carries a secret.
//!
//! Retries and side effects: every request says what repeating it does ([`Effect`]). A
//! `Safe` or `IdempotentByKey` request is retried after any transient failure. An `Unsafe`
//! one (a create: Milvus `cliente/criar`, Ploomes `POST /Contacts`) is retried only when the
//! server provably did not act on it — the connection was never made, or it answered 429
//! (not processed). Once it may have reached the server (a timeout, a 5xx or 408, a reset or
//! a body cut short) the client returns [`HttpError::Uncertain`] instead of sending it again:
//! the caller reconciles (asks the destination) before anything is resent.
mod budget;
mod oauth;
pub use budget::RateBudget;

use crate::config::{Auth, Pipeline, RetryConfig};
use backon::BackoffBuilder;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server said no for good (4xx other than 408/429).
    #[error("{what} answered {status}: {body}")]
    Rejected { what: String, status: u16, body: String },
    /// Transient failures outlasted the retry budget.
    #[error("{what} failed after {attempts} attempts: {last}")]
    GaveUp {
        what: String,
        attempts: usize,
        last: String,
    },
    #[error("{0}")]
    Build(String),
    /// The token endpoint would not give an access token (exit 1; names the endpoint only).
    #[error("{0}")]
    Auth(String),
    /// An `Unsafe` request may have been acted on (no answer, or one that does not say it
    /// was not): not sent again. The caller must find out whether it took effect.
    #[error("{what}: no reliable answer ({why}); it may have taken effect, so it was not sent again")]
    Uncertain { what: String, why: String },
}

/// What sending a request again does at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effect {
    /// Nothing (reads, lookups, job polls; a POST that lists).
    #[default]
    Safe,
    /// The same change again (an upsert keyed by an immutable id: the portal's `erpId`).
    IdempotentByKey,
    /// A second record (a create with no idempotency key).
    Unsafe,
}

/// One request: method, URL, query, extra headers and an optional JSON body.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub body: Option<&'a Value>,
    /// Keep the records at this path of the response as bytes ([`crate::json::raw::split`]).
    pub split: Option<&'a [String]>,
    /// What sending it twice does (decides which failures are retried).
    pub effect: Effect,
}

/// One successful response, and what it cost to get it.
#[derive(Debug)]
pub struct Fetched {
    /// 200-299, or 304 (nothing changed since the bound sent).
    pub status: u16,
    pub body: Value,
    /// With [`Request::split`], when the path led to an array: the body and the byte ranges of
    /// its records (`body` then holds an empty array in their place).
    pub raw: Option<(String, Vec<std::ops::Range<usize>>)>,
    pub headers: HeaderMap,
    pub retries: u64,
    pub throttled: u64,
}

/// The largest answer read (a page is parsed whole): 256 MiB.
const MAX_PAGE: usize = 256 << 20;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    budget: Option<Arc<RateBudget>>,
    retry: RetryConfig,
    headers: Vec<(String, String)>,
    tokens: oauth::Tokens,
}

enum Attempt {
    Done(Fetched),
    Retry {
        why: String,
        after: Option<Duration>,
        throttled: bool,
        /// The server may have acted on the request (it reached it and did not say no).
        reached: bool,
    },
    Fail(HttpError),
}

impl Client {
    pub fn new(p: &Pipeline) -> Result<Self, HttpError> {
        let http = reqwest::Client::builder()
            .timeout(p.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(p.concurrency.max(4))
            .gzip(true)
            .user_agent(concat!("ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Build(e.without_url().to_string()))?;
        Ok(Client {
            http,
            budget: p
                .rate
                .as_ref()
                .map(|r| Arc::new(RateBudget::new(r.requests, r.per_seconds))),
            retry: p.retry.clone(),
            headers: p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            tokens: oauth::Tokens::new(p.timeout),
        })
    }

    /// GET `url` with `query` (plus the auth parameter), retrying transient failures.
    /// `what` names the request in errors and logs; it must not hold secrets.
    pub async fn get(
        &self,
        url: &str,
        query: &[(String, String)],
        auth: &Auth,
        what: &str,
    ) -> Result<Fetched, HttpError> {
        let req = Request {
            method: "GET",
            url,
            query,
            headers: &[],
            body: None,
            split: None,
            effect: Effect::Safe,
        };
        self.send(&req, auth, what).await
    }

    /// Send `req`, retrying transient failures; an OAuth2 token is refreshed once on a 401.
    pub async fn send(&self, req: &Request<'_>, auth: &Auth, what: &str) -> Result<Fetched, HttpError> {
        let url = req.url;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.retry.base_delay_ms))
            .with_max_delay(Duration::from_millis(self.retry.max_delay_ms))
            .with_jitter()
            .with_max_times(self.retry.max_attempts.saturating_sub(1))
            .build();
        let (mut retries, mut throttled) = (0u64, 0u64);
        let mut attempt = 0usize;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let token = match auth {
                Auth::OAuth2(o) => Some(self.tokens.token(o).await?),
                _ => None,
            };
            if let Some(b) = &self.budget {
                b.acquire().await;
            }
            match self.once(req, auth, token.as_ref(), what).await {
                Attempt::Done(mut f) => {
                    f.retries = retries;
                    f.throttled = throttled;
                    return Ok(f);
                }
                Attempt::Fail(HttpError::Rejected { status: 401, .. }) if token.is_some() && !reauthed => {
                    // The access token expired early or was revoked: refresh once, then retry.
                    reauthed = true;
                    retries += 1;
                    if let (Auth::OAuth2(o), Some(t)) = (auth, &token) {
                        self.tokens.invalidate(o, t).await;
                    }
                    tracing::info!(request = what, "401 with an OAuth2 token: refreshing it and retrying once");
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { why, reached: true, .. } if req.effect == Effect::Unsafe => {
                    tracing::warn!(request = what, attempt, "not retrying a write the server may have acted on: {why}");
                    return Err(HttpError::Uncertain { what: describe(url, what), why });
                }
                Attempt::Retry {
                    why,
                    after,
                    throttled: t,
                    ..
                } => {
                    if t {
                        throttled += 1;
                    }
                    let Some(backoff) = delays.next() else {
                        return Err(HttpError::GaveUp {
                            what: describe(url, what),
                            attempts: attempt,
                            last: why,
                        });
                    };
                    retries += 1;
                    let cap = Duration::from_secs(self.retry.max_retry_after_secs);
                    if let Some(a) = after.filter(|a| *a > cap) {
                        return Err(HttpError::GaveUp {
                            what: describe(url, what),
                            attempts: attempt,
                            last: format!(
                                "{why}: the server asks to wait {} s (Retry-After), more than [source.retry] max_retry_after_secs = {}",
                                a.as_secs(),
                                cap.as_secs()
                            ),
                        });
                    }
                    let wait = after.map_or(backoff, |a| a.max(backoff.min(Duration::from_millis(250))));
                    tracing::warn!(
                        request = what,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying: {why}"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn once(&self, r: &Request<'_>, auth: &Auth, token: Option<&oauth::Token>, what: &str) -> Attempt {
        let method = match reqwest::Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return Attempt::Fail(HttpError::Build(format!("`{}` is not an HTTP method", r.method))),
        };
        let mut req = self.http.request(method, r.url).query(r.query);
        for (k, v) in self.headers.iter().chain(r.headers.iter()) {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(b) = r.body {
            req = req.json(b);
        }
        req = match auth {
            Auth::None => req,
            Auth::OAuth2(o) => {
                let Some(t) = token else {
                    return Attempt::Fail(HttpError::Build("no OAuth2 token".into()));
                };
                if let Some(p) = &o.param {
                    req.query(&[(p.as_str(), t.value.expose())])
                } else {
                match (
                    HeaderName::try_from(o.header.as_str()),
                    HeaderValue::from_str(&format!("{}{}", o.prefix, t.value.expose())),
                ) {
                    (Ok(n), Ok(mut v)) => {
                        v.set_sensitive(true);
                        req.header(n, v)
                    }
                    _ => {
                        return Attempt::Fail(HttpError::Build(format!(
                            "auth header `{}` or its value is not a valid header",
                            o.header
                        )))
                    }
                }
                }
            }
            Auth::Header { name, value } => match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value.expose()),
            ) {
                (Ok(n), Ok(mut v)) => {
                    v.set_sensitive(true);
                    req.header(n, v)
                }
                _ => {
                    return Attempt::Fail(HttpError::Build(format!(
                        "auth header `{name}` or its value is not a valid header"
                    )))
                }
            },
            Auth::Query { param, value } => req.query(&[(param.as_str(), value.expose())]),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let transient = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
                let connect = e.is_connect();
                let msg = crate::secret::redact(&e.without_url().to_string());
                return if transient {
                    Attempt::Retry {
                        why: msg,
                        after: None,
                        throttled: false,
                        // Only a connection never made is proof the request was not sent.
                        reached: !connect,
                    }
                } else {
                    Attempt::Fail(HttpError::GaveUp {
                        what: describe(r.url, what),
                        attempts: 1,
                        last: msg,
                    })
                };
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        // Seconds (a number; `inf`, NaN or a huge value never panics: it is capped below and
        // then refused by `send`); an HTTP date is not honoured (the backoff applies).
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| if s.is_nan() { 0.0 } else { s.clamp(0.0, 1e9) })
            .map(Duration::from_secs_f64);
        let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        // A page is read whole (it is parsed whole), up to MAX_PAGE: a larger one fails the
        // request, naming it, instead of exhausting memory.
        let mut resp = resp;
        let mut buf: Vec<u8> = Vec::new();
        let mut too_big = false;
        let read: Result<(), reqwest::Error> = async {
            while let Some(chunk) = resp.chunk().await? {
                if buf.len() + chunk.len() > MAX_PAGE {
                    too_big = true;
                    break;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(())
        }
        .await;
        if too_big {
            return Attempt::Fail(HttpError::GaveUp {
                what: describe(r.url, what),
                attempts: 1,
                last: format!("the answer is larger than {} MiB (a page this size is not read)", MAX_PAGE >> 20),
            });
        }
        let bytes = match read.map(|_| bytes::Bytes::from(buf)) {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    why: format!(
                        "body read failed: {}",
                        crate::secret::redact(&e.without_url().to_string())
                    ),
                    after: None,
                    throttled: false,
                    reached: true,
                }
            }
        };
        if status.as_u16() == 429 {
            return Attempt::Retry {
                why: "429 Too Many Requests".into(),
                after: retry_after.or(Some(Duration::from_millis(self.retry.throttle_wait_ms))),
                throttled: true,
                // A 429 is the server saying it did not process the request.
                reached: false,
            };
        }
        if status.is_server_error() || status.as_u16() == 408 {
            return Attempt::Retry {
                why: format!("server answered {status}"),
                after: retry_after,
                throttled: false,
                reached: true,
            };
        }
        if status.as_u16() == 304 {
            return Attempt::Done(Fetched {
                status: 304,
                body: Value::Null,
                raw: None,
                headers,
                retries: 0,
                throttled: 0,
            });
        }
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
            return Attempt::Fail(HttpError::Rejected {
                what: what.into(),
                status: status.as_u16(),
                body: crate::secret::redact(&body),
            });
        }
        if status.as_u16() == 204 || bytes.is_empty() {
            return Attempt::Done(Fetched {
                status: status.as_u16(),
                body: Value::Null,
                raw: None,
                headers,
                retries: 0,
                throttled: 0,
            });
        }
        let len = bytes.len();
        let parsed = match r.split {
            // Checked as UTF-8 once here: the records are then read as `&str`, which serde_json
            // does not check again string by string (reading them as bytes did, on every pass).
            Some(path) => match String::from_utf8(bytes.into()) {
                Ok(text) => crate::json::raw::split(&text, path)
                    .map(|s| (s.envelope, s.records.map(|r| (text, r))))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => serde_json::from_slice::<Value>(&bytes).map(|b| (b, None)).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok((body, raw)) => Attempt::Done(Fetched {
                status: status.as_u16(),
                body,
                raw,
                headers,
                retries: 0,
                throttled: 0,
            }),
            // A 2xx that is not JSON at all (a login or maintenance page): no retry helps.
            Err(e) if !content_type.is_empty() && !content_type.contains("json") => Attempt::Fail(HttpError::GaveUp {
                what: describe(r.url, what),
                attempts: 1,
                last: format!("answered {status} with Content-Type {content_type} ({len} bytes), not JSON: {e}"),
            }),
            Err(e) => Attempt::Retry {
                why: format!("invalid or truncated JSON body ({len} bytes): {e}"),
                after: None,
                throttled: false,
                reached: true,
            },
        }
    }
}

/// `what` plus the host it went to (never the query, which may hold a token).
pub(crate) fn describe(url: &str, what: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{what} ({}{})",
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => what.to_string(),
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .contains("rel=\"next\"")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}
