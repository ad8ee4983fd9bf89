//! `[source.auth]` checked into the [`Auth`] a request carries (secrets resolved here, once).
use super::*;
use crate::config::interp::resolve_secret;
use crate::error::Result;
use crate::secret::Secret;

impl Checker<'_> {
    pub(super) fn auth(&self, a: &AuthConfig, partition: &str) -> Result<Auth> {
        let secret = |field: &str, v: &str| -> Result<Secret> {
            resolve_secret(&v.replace("{partition}", partition)).map_err(|m| self.err(&["source", "auth", field], m))
        };
        Ok(match a {
            AuthConfig::None => Auth::None,
            AuthConfig::Bearer { header, prefix, token } => {
                let t = secret("token", token)?;
                Auth::Header {
                    name: header.clone(),
                    value: Secret::new(format!("{prefix}{}", t.expose())),
                }
            }
            AuthConfig::ApiKey { header, key } => Auth::Header {
                name: header.clone(),
                value: secret("key", key)?,
            },
            AuthConfig::Query { param, token } => Auth::Query {
                param: param.clone(),
                value: secret("token", token)?,
            },
            AuthConfig::Basic { username, password } => Auth::Basic {
                username: username.clone(),
                password: secret("password", password)?,
            },
            AuthConfig::Oauth2Refresh {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                header,
                prefix,
                method,
                token_key,
                expires_key,
                params,
                refresh_token_file,
            } => {
                let method = method.to_uppercase();
                if method != "GET" && method != "POST" {
                    return Err(self.err(&["source", "auth", "method"], format!("`{method}`: expected GET or POST")));
                }
                if !token_url.starts_with("http://") && !token_url.starts_with("https://") {
                    return Err(self.err(&["source", "auth", "token_url"], format!("`{token_url}` is not an http(s) URL")));
                }
                Auth::OAuth2(Box::new(OAuth2 {
                    token_url: token_url.replace("{partition}", partition),
                    method,
                    header: header.clone(),
                    prefix: prefix.clone(),
                    param: None,
                    token_key: token_key.clone(),
                    expires_key: expires_key.clone(),
                    grant: Grant::RefreshToken {
                        client_id: secret("client_id", client_id)?,
                        client_secret: secret("client_secret", client_secret)?,
                        refresh_token: secret("refresh_token", refresh_token)?,
                        params: params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        refresh_token_file: refresh_token_file
                            .as_ref()
                            .map(|f| std::path::PathBuf::from(f.replace("{partition}", partition))),
                    },
                }))
            }
            AuthConfig::Refresh { url, method, query_params, headers, body, response_token_key, expires_key, header, prefix, param } => {
                let method = method.to_uppercase();
                if method != "GET" && method != "POST" {
                    return Err(self.err(&["source", "auth", "method"], format!("`{method}`: expected GET or POST")));
                }
                let url = url.replace("{partition}", partition);
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(self.err(&["source", "auth", "url"], format!("`{url}` is not an http(s) URL")));
                }
                if response_token_key.is_empty() {
                    return Err(self.err(&["source", "auth", "response_token_key"], "must name the answer's token field (a JSON path, e.g. access_token)"));
                }
                let pairs = |field: &'static str, m: &BTreeMap<String, String>| -> Result<Vec<(String, Secret)>> {
                    m.iter()
                        .map(|(k, v)| resolve_secret(&v.replace("{partition}", partition)).map(|s| (k.clone(), s)).map_err(|e| self.err(&["source", "auth", field, k], e)))
                        .collect()
                };
                let body = match body {
                    None => None,
                    Some(b) => {
                        // Each string resolved on its own, then the JSON written (a secret
                        // holding a quote stays one string).
                        fn walk(v: &toml::Value, f: &dyn Fn(&str) -> std::result::Result<String, String>) -> std::result::Result<serde_json::Value, String> {
                            Ok(match v {
                                toml::Value::String(s) => serde_json::Value::String(f(s)?),
                                toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(|x| walk(x, f)).collect::<std::result::Result<_, _>>()?),
                                toml::Value::Table(t) => serde_json::Value::Object(t.iter().map(|(k, x)| Ok((k.clone(), walk(x, f)?))).collect::<std::result::Result<_, String>>()?),
                                other => serde_json::to_value(other).map_err(|e| e.to_string())?,
                            })
                        }
                        let json = walk(b, &|s| resolve_secret(&s.replace("{partition}", partition)).map(|x| x.expose().to_string()))
                            .map_err(|e| self.err(&["source", "auth", "body"], e))?;
                        Some(Secret::new(json.to_string()))
                    }
                };
                Auth::OAuth2(Box::new(OAuth2 {
                    token_url: url,
                    method,
                    header: header.clone(),
                    prefix: prefix.clone(),
                    param: param.clone().filter(|p| !p.is_empty()),
                    token_key: response_token_key.clone(),
                    expires_key: expires_key.clone(),
                    grant: Grant::Endpoint { query: pairs("query_params", query_params)?, headers: pairs("headers", headers)?, body },
                }))
            }
        })
    }
}
