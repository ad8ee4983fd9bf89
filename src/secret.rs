//! Secret values: resolved from the environment, registered so every log line and error
//! message is scrubbed of them. Nothing here prints a secret.
use std::io::Write;
use std::sync::{OnceLock, RwLock};

fn registry() -> &'static RwLock<Vec<String>> {
    static R: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    R.get_or_init(|| RwLock::new(Vec::new()))
}

/// A value that must never reach logs, the lake or the state.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        if value.len() >= 4 {
            let mut r = registry().write().unwrap();
            if !r.contains(&value) {
                r.push(value.clone());
            }
        }
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replace every registered secret value in `s` by `***`.
pub fn redact(s: &str) -> String {
    let r = registry().read().unwrap();
    let mut out = s.to_string();
    for v in r.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// A stderr writer for `tracing` that scrubs secrets from every line.
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&s).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
