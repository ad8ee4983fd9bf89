//! The lake root (`--lake`): local path, `file://`, `s3://bucket/prefix`, `memory://`, all
//! through `object_store`; and the raw NDJSON writer, whose files appear whole or not at all.
pub mod ledger;
pub mod lease;
pub mod runs;
pub mod schema;
pub mod state;

use crate::error::{Error, Result};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::Digest;
use std::sync::Arc;
use url::Url;

#[derive(Clone)]
pub struct Lake {
    /// Object store whose "/" is the root of the bucket / file system.
    pub store: Arc<dyn ObjectStore>,
    /// Path of the lake root inside `store`, no leading or trailing slash.
    prefix: String,
    /// URL of the lake root, ending in `/`.
    pub url: Url,
    /// The local directory, for a local lake.
    pub local_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.url)
    }
}

impl Lake {
    /// Parse a `--lake` value. A local directory is created if missing.
    pub fn open(spec: &str) -> Result<Lake> {
        if spec.starts_with("memory://") {
            return Ok(Lake {
                store: Arc::new(object_store::memory::InMemory::new()),
                prefix: String::new(),
                url: Url::parse("memory:///").unwrap(),
                local_dir: None,
            });
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Usage(format!("--lake {spec}: no bucket name")));
            }
            // Transient failures are retried a few times (object_store's default waits minutes).
            // Every store retry gives up well inside a lease's lifetime (30 s): a run never
            // retries a commit past the point where another may have taken its source over.
            let retry = object_store::RetryConfig { max_retries: 5, retry_timeout: std::time::Duration::from_secs(15), ..Default::default() };
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
            if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.with_endpoint(ep.clone()).with_allow_http(ep.starts_with("http://"));
            }
            let store = b.build().map_err(|e| Error::Usage(format!("--lake {spec}: {e}")))?;
            register_s3_log_store();
            let prefix = prefix.trim_matches('/').to_string();
            let url = Url::parse(&format!(
                "s3://{bucket}/{}",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                }
            ))
            .map_err(|e| Error::Usage(format!("--lake {spec}: {e}")))?;
            return Ok(Lake {
                store: Arc::new(store),
                prefix,
                url,
                local_dir: None,
            });
        }
        let path = match spec.strip_prefix("file://") {
            Some(p) => std::path::PathBuf::from(p),
            None if spec.contains("://") => {
                return Err(Error::Usage(format!(
                    "--lake {spec}: unsupported scheme (path, file://, s3://, memory://)"
                )))
            }
            None => std::path::PathBuf::from(spec),
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::Usage(format!("--lake {spec}: cannot create directory: {e}")))?;
        let abs = std::fs::canonicalize(&path)?;
        let url =
            Url::from_directory_path(&abs).map_err(|_| Error::Usage(format!("--lake {spec}: not an absolute path")))?;
        let prefix = abs.to_string_lossy().trim_matches('/').to_string();
        Ok(Lake {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            prefix,
            url,
            local_dir: Some(abs),
        })
    }

    /// Before a command writes to an S3 lake: the bucket is reachable with these credentials,
    /// and the store honours conditional writes (`If-None-Match: *`), which Delta commits and
    /// the pull lease rely on to never overwrite each other. A store that ignores them is
    /// refused unless `AWS_S3_ALLOW_UNSAFE_RENAME=true` (deltalake's variable) accepts the risk.
    pub async fn ready_for_writes(&self) -> Result<()> {
        if self.url.scheme() != "s3" {
            return Ok(());
        }
        let bucket = self.url.host_str().unwrap_or_default().to_string();
        let probe = self.path(&format!("_ingest/.probe-{}", uuid::Uuid::new_v4()));
        let create = || object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        // A 403 status, not the digits inside a request id or a retry duration ("852.524035ms").
        let status_403 = |t: &str| regex::Regex::new(r"\b403\b").map(|r| r.is_match(t)).unwrap_or(false);
        let explain = |e: object_store::Error| -> Error {
            let full = crate::secret::redact(&e.to_string());
            // The store's XML body adds nothing the hint does not say.
            let text = full.split(": <?xml").next().unwrap_or_default().to_string();
            let lower = full.to_lowercase();
            let hint = if full.contains("NoSuchBucket") {
                format!("bucket `{bucket}` does not exist at {}", endpoint())
            } else if status_403(&text) || text.contains("AccessDenied") || text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") {
                "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, instance credentials)".to_string()
            } else if lower.contains("connect") || lower.contains("error sending request") || lower.contains("dns") || lower.contains("timed out") {
                format!("cannot reach {}: check AWS_ENDPOINT_URL and AWS_REGION", endpoint())
            } else {
                "cannot write".to_string()
            };
            Error::Usage(format!("--lake {}: {hint} ({text})", self.url))
        };
        self.store.put_opts(&probe, "1".into(), create()).await.map_err(explain)?;
        let second = self.store.put_opts(&probe, "2".into(), create()).await;
        let _ = self.store.delete(&probe).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(explain(e)),
            Ok(_) if std::env::var("AWS_S3_ALLOW_UNSAFE_RENAME").is_ok_and(|v| v.eq_ignore_ascii_case("true")) => {
                tracing::warn!(lake = %self.url, "the store ignores conditional writes; AWS_S3_ALLOW_UNSAFE_RENAME=true: run one writer at a time");
                Ok(())
            }
            Ok(_) => Err(Error::Usage(format!(
                "--lake {}: the store at {} ignores conditional writes (If-None-Match), so two writers could overwrite each other's Delta commits; \
                 use a store that supports them (AWS S3 does), or set AWS_S3_ALLOW_UNSAFE_RENAME=true to accept the risk with one writer at a time",
                self.url,
                endpoint()
            ))),
        }
    }

    /// Object path of `rel` (a path relative to the lake root).
    pub fn path(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{}", self.prefix, rel.trim_start_matches('/')))
        }
    }

    /// URL of a table folder relative to the lake root.
    pub fn table_url(&self, rel: &str) -> Url {
        self.url
            .join(&format!("{}/", rel.trim_matches('/')))
            .expect("valid table url")
    }

    /// Raw files of `source` on storage (paths relative to the lake) that the catalogue does
    /// not list as current: a crashed run's unrecorded files, superseded files not yet removed,
    /// and local staging leftovers (`…#n`). Only paths the `template` can produce are
    /// considered, under its fixed prefix (never the whole lake).
    pub async fn orphans(
        &self,
        template: &str,
        source: &str,
        current: &std::collections::HashSet<String>,
        only: Option<&[String]>,
    ) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let t = template.replace("{source}", source);
        let Some(prefix) = fixed_dir(&t) else {
            return Ok(Vec::new());
        };
        if prefix.is_empty() || prefix.starts_with('_') {
            return Ok(Vec::new());
        }
        let mut re = String::from("^");
        let mut rest = t.as_str();
        while let Some(a) = rest.find('{') {
            re.push_str(&regex::escape(&rest[..a]));
            let b = rest[a..].find('}').map_or(rest.len(), |b| a + b + 1);
            re.push_str(match &rest[a..b] {
                "{date}" => "[^/]*",
                "{partition}" => "(?P<partition>[^/]+)",
                _ => "[^/]+",
            });
            rest = &rest[b.min(rest.len())..];
        }
        re.push_str(&regex::escape(rest));
        re.push_str("(#[0-9]+)?$");
        let re = regex::Regex::new(&re).map_err(|e| Error::Lake(e.to_string()))?;
        let root = self.path(prefix);
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let listed: Vec<object_store::ObjectMeta> = match self.store.list(Some(&root)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut names: Vec<String> = listed.into_iter().map(|m| m.location.as_ref()[strip..].to_string()).collect();
        // Local multipart staging parts (`…#n`) are not listed by the store: walk for them.
        if let Some(d) = &self.local_dir {
            let mut stack = vec![d.join(prefix)];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(rel) = p.strip_prefix(d) {
                        let rel = rel.to_string_lossy().to_string();
                        if rel.contains('#') {
                            names.push(rel);
                        }
                    }
                }
            }
        }
        // Delta tables under the same folders (a model whose schema is a source's name, or a
        // template without a fixed file prefix) are never raw files: everything under a folder
        // holding a `_delta_log` is left alone, whatever the template matches.
        let tables: std::collections::BTreeSet<String> =
            names.iter().filter_map(|n| n.find("/_delta_log/").map(|i| format!("{}/", &n[..i]))).collect();
        let in_table = |rel: &str| rel.starts_with("_delta_log/") || tables.iter().any(|t| rel.starts_with(t.as_str()));
        let mut out: Vec<String> = names
            .into_iter()
            .filter(|rel| !current.contains(rel) && !in_table(rel))
            .filter(|rel| match re.captures(rel) {
                None => false,
                // A sharded pull sweeps only its own partitions' files.
                Some(c) => only.is_none_or(|o| c.name("partition").is_some_and(|p| o.iter().any(|x| x == p.as_str()))),
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Remove staging leftovers of a killed run under `rel` (local lakes only: object stores
    /// with multipart uploads never show an unfinished object).
    pub fn sweep_staging(&self, rel: &str) {
        let Some(dir) = &self.local_dir else { return };
        let root = dir.join(rel);
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains('#')) {
                    tracing::info!(file = %p.display(), "removing an unfinished file left by an earlier run");
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }

    /// Remove staging parts a killed commit left in a local Delta table — `<version>.json#n` in
    /// its log, `part-….parquet#n` beside it — once older than `min_age` (a live writer's part
    /// lives for milliseconds). No Delta reader lists them.
    pub fn sweep_log_staging(&self, table_rel: &str, min_age: std::time::Duration) {
        let Some(dir) = &self.local_dir else { return };
        let table = dir.join(table_rel);
        let log = table.join("_delta_log");
        // Commit parts in the log, and data-file parts (`part-….parquet#n`) beside it.
        let entries = std::fs::read_dir(&log).into_iter().chain(std::fs::read_dir(&table)).flatten().flatten();
        for e in entries {
            let p = e.path();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a >= min_age);
            if old && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains('#')) {
                tracing::info!(file = %p.display(), "removing a commit part left by a killed run");
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    /// Delete `orphans` (see [`Lake::orphans`]); returns how many went.
    pub async fn remove_all(&self, orphans: &[String]) -> Result<usize> {
        let mut n = 0;
        for rel in orphans {
            if let (Some(d), true) = (&self.local_dir, rel.contains('#')) {
                if std::fs::remove_file(d.join(rel)).is_ok() {
                    n += 1;
                }
                continue;
            }
            match self.store.delete(&self.path(rel)).await {
                Ok(()) => n += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(file = %rel, "removed a raw file the catalogue does not list (crashed or superseded landing)");
        }
        Ok(n)
    }
}

/// Bytes a raw file holds in memory before it turns into a multipart upload (also the part size).
const PART: usize = 5 * 1024 * 1024;

/// A raw NDJSON file being written; it becomes visible whole on `finish`, or never. Up to
/// [`PART`] bytes it is one buffered `put` (one request on S3, a staged write + rename on disk);
/// past that, a multipart upload whose memory is bounded by its buffered parts.
pub struct RawFile {
    lake: Lake,
    /// What is written before a multipart upload starts (all of `bytes` until then): the
    /// appended buffers as they came (a put, and the upload's parts, take them as they are:
    /// no copy).
    pending: Vec<bytes::Bytes>,
    writer: Option<WriteMultipart>,
    pub rel: String,
    pub records: u64,
    pub bytes: u64,
    hash: sha2::Sha256,
    shape: schema::Shape,
}

impl RawFile {
    pub async fn create(lake: &Lake, rel: &str) -> Result<Self> {
        Ok(RawFile {
            lake: lake.clone(),
            pending: Vec::new(),
            writer: None,
            rel: rel.to_string(),
            records: 0,
            bytes: 0,
            hash: sha2::Sha256::new(),
            shape: schema::Shape::Null,
        })
    }

    /// Append records, one JSON document per line.
    pub async fn write(&mut self, records: &[serde_json::Value]) -> Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 256);
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Lake(e.to_string()))?;
            buf.push(b'\n');
        }
        for r in records {
            self.shape.add(r);
        }
        self.append(buf, records.len()).await
    }

    /// Append `records` lines already serialised (each a JSON document ending in `\n`, as
    /// the API sent it). Only the lines at the byte ranges `fold` are read for the file's
    /// shape: the caller found the others [`schema::Shape::within`] [`Self::shape`], as it
    /// stood before `lines` (so `fold` holds every line after the first one that was not).
    pub async fn write_lines(&mut self, lines: String, records: usize, fold: &[std::ops::Range<usize>]) -> Result<()> {
        for r in fold {
            self.shape.add_raw(&lines[r.clone()]).map_err(|e| Error::Lake(format!("{}: {e}", self.rel)))?;
        }
        self.append(lines.into_bytes(), records).await
    }

    /// The shape of the records written so far.
    pub fn shape(&self) -> &schema::Shape {
        &self.shape
    }

    async fn append(&mut self, buf: Vec<u8>, records: usize) -> Result<()> {
        if self.records + records as u64 > state::LINES_PER_FILE as u64 {
            return Err(Error::Lake(format!(
                "{}: more than {} records in one raw file (each record's _ingest_order must be unique): pull this stream in windows",
                self.rel,
                state::LINES_PER_FILE
            )));
        }
        self.hash.update(&buf);
        self.records += records as u64;
        self.bytes += buf.len() as u64;
        match self.writer.as_mut() {
            Some(w) => {
                w.wait_for_capacity(4).await?;
                w.put(buf.into());
            }
            None => {
                self.pending.push(buf.into());
                if self.bytes >= PART as u64 {
                    let upload = self.lake.store.put_multipart(&self.lake.path(&self.rel)).await?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                    std::mem::take(&mut self.pending).into_iter().for_each(|b| w.put(b));
                    self.writer = Some(w);
                }
            }
        }
        Ok(())
    }

    /// Complete the file; returns the content's sha256 and its schema (see [`schema`]).
    pub async fn finish(mut self) -> Result<(String, String)> {
        match self.writer.take() {
            Some(w) => {
                w.finish().await?;
            }
            None => {
                let body: object_store::PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
                self.lake.store.put(&self.lake.path(&self.rel), body).await?;
            }
        }
        Ok((hex::encode(self.hash.clone().finalize()), schema::to_json(&self.shape.schema())))
    }

    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.abort().await;
        }
    }
}

/// The folder of an output path template that no placeholder touches: `pancake/1001` of
/// `pancake/1001/{stream}/file_{date}.json` (None when the first placeholder is in the first
/// segment).
pub fn fixed_dir(template: &str) -> Option<&str> {
    let fixed = &template[..template.find('{').unwrap_or(template.len())];
    fixed.rfind('/').map(|cut| &fixed[..cut])
}

/// The S3 endpoint in use, for messages.
fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS S3".into())
}

/// deltalake's log store for `s3://` tables: its default one, which commits each version with
/// a put-if-absent (object_store sends `If-None-Match: *`), so two writers can never both
/// write version N — the loser retries on top of the winner. (deltalake's own `s3` feature
/// would bring the AWS SDK and a DynamoDB lock for stores without conditional writes; every
/// store this tool accepts has them, see `Lake::ready_for_writes`.)
fn register_s3_log_store() {
    use deltalake::logstore::{default_logstore, logstore_factories, LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig};
    struct S3;
    impl LogStoreFactory for S3 {
        fn with_options(
            &self,
            prefixed: ObjectStoreRef,
            root: ObjectStoreRef,
            location: &Url,
            options: &StorageConfig,
        ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
            Ok(default_logstore(prefixed, root, location, options))
        }
    }
    let key = Url::parse("s3://").expect("scheme url");
    let registry = logstore_factories();
    if !registry.contains_key(&key) {
        registry.insert(key, Arc::new(S3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_urls_parse() {
        let s3 = Lake::open("s3://bucket/some/prefix/").unwrap();
        assert_eq!(s3.url.as_str(), "s3://bucket/some/prefix/");
        assert_eq!(
            s3.path("pancake/1001/tags/file_2023-09-01.json").as_ref(),
            "some/prefix/pancake/1001/tags/file_2023-09-01.json"
        );
        assert_eq!(
            s3.table_url("silver/c2s_leads").as_str(),
            "s3://bucket/some/prefix/silver/c2s_leads/"
        );
        let mem = Lake::open("memory://").unwrap();
        assert_eq!(mem.path("a/b").as_ref(), "a/b");
        let dir = tempfile::tempdir().unwrap();
        let local = Lake::open(&format!("file://{}/lake", dir.path().display())).unwrap();
        assert!(local.local_dir.as_ref().unwrap().ends_with("lake"));
        assert!(Lake::open("ftp://x").is_err());
        assert!(Lake::open("s3://").is_err());
    }

    /// A file may hold at most LINES_PER_FILE records: past that two records would share an
    /// `_ingest_order` with the next file's (issue 26 item 6).
    #[tokio::test]
    async fn a_raw_file_refuses_more_lines_than_ingest_order_can_number() {
        let lake = Lake::open("memory://").unwrap();
        let mut f = RawFile::create(&lake, "s/_/x/file_1.json").await.unwrap();
        f.write_lines("{}\n".into(), state::LINES_PER_FILE as usize - 1, &[]).await.unwrap();
        f.write_lines("{}\n".into(), 1, &[]).await.unwrap();
        let e = f.write_lines("{}\n".into(), 1, &[]).await.unwrap_err();
        assert!(e.to_string().contains("pull this stream in windows"), "{e}");
        assert!(state::ingest_order(1, state::LINES_PER_FILE - 1) < state::ingest_order(2, 0));
    }

    /// Appended buffers are handed to the store as they are (a put of several, or multipart
    /// parts past [`PART`]): the file holds them in order, whole, with their sha256.
    #[tokio::test]
    async fn a_raw_file_is_its_appended_lines_in_order_across_parts() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&format!("file://{}/lake", dir.path().display())).unwrap();
        for (rel, lines) in [("small.json", 3usize), ("big.json", 2 * PART / 1000 + 7)] {
            let mut f = RawFile::create(&lake, rel).await.unwrap();
            let mut want = String::new();
            for i in 0..lines {
                // About 1 kB a line, one line an append (every 300th read for the shape).
                let line = format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(990));
                want.push_str(&line);
                let whole = 0..line.len() - 1;
                let fold = if i % 300 == 0 { std::slice::from_ref(&whole) } else { &[] };
                f.write_lines(line, 1, fold).await.unwrap();
            }
            assert_eq!(f.records, lines as u64);
            let (sha, _) = f.finish().await.unwrap();
            let got = std::fs::read_to_string(dir.path().join("lake").join(rel)).unwrap();
            assert_eq!(got.len(), want.len(), "{rel}");
            assert!(got == want, "{rel}: content differs");
            assert_eq!(sha, hex::encode(sha2::Sha256::digest(want.as_bytes())), "{rel}");
        }
    }
}
