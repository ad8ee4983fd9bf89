//! `ingest import extractor <config.json>`: seed 004's existing extractor configs become a
//! pipeline file and SQL models (see `extractor.rs` for what maps to what).
//!
//! All or nothing: the files are generated in memory, validated as `ingest` would run them —
//! the pipeline loaded (with placeholder secrets: they live on the machine that pulls), each
//! model parsed and planned against the pipeline's declared schemas (`transform --check`) —
//! and only then written, each to a temporary name and renamed into place. A file that
//! exists is replaced only with `--force`. An error names the config's file, line and JSON
//! path, and nothing is written.
mod cx;
pub mod extractor;
mod json_at;
mod model;
mod refs;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What an import wrote.
pub struct Imported {
    pub source: String,
    pub files: Vec<PathBuf>,
    /// `${secret:…}` names the pipeline reads.
    pub secrets: Vec<String>,
    /// `${env:…}` names that point it elsewhere.
    pub env: Vec<String>,
}

pub async fn extractor(config: &Path, name: Option<&str>, pipelines: &Path, sql: &Path, force: bool) -> Result<Imported> {
    let file = config.display().to_string();
    let text = std::fs::read_to_string(config).map_err(|e| Error::Usage(format!("cannot read {file}: {e}")))?;
    let plan = extractor::plan(&file, &text, name)?;
    let mut targets = vec![(pipelines.join(format!("{}.toml", plan.source)), plan.pipeline.clone())];
    targets.extend(plan.models.iter().map(|(rel, t)| (sql.join(rel), t.clone())));
    if !force {
        if let Some((p, _)) = targets.iter().find(|(p, _)| p.exists()) {
            return Err(Error::Usage(format!("{} exists: pass --force to replace it (nothing was written)", p.display())));
        }
    }
    check(&plan, pipelines, sql).await?;
    write_all(&targets)?;
    let names = |prefix: &str| {
        let mut v: Vec<String> = Vec::new();
        for t in targets.iter().map(|(_, t)| t) {
            let _ = crate::config::interp::replace_refs(t, prefix, |body| {
                let n = body.split(":-").next().unwrap_or(body).to_string();
                if !v.contains(&n) {
                    v.push(n);
                }
                Ok(String::new())
            });
        }
        v
    };
    let (secrets, env) = (names("secret"), names("env"));
    Ok(Imported { source: plan.source.clone(), files: targets.into_iter().map(|(p, _)| p).collect(), secrets, env })
}

/// A generated file's error, naming where it is going to be written.
fn rename_at(e: Error, scratch: &Path, real: &Path) -> Error {
    let fix = |s: &str| s.replace(&scratch.display().to_string(), &real.display().to_string());
    match e {
        Error::Config { mut at, msg } => {
            at.file = fix(&at.file);
            Error::Config { at, msg: format!("the generated file does not validate: {}", fix(&msg)) }
        }
        other => Error::Usage(format!("the generated files do not validate: {}", fix(&other.to_string()))),
    }
}

/// Validate a plan as it will run (see the module doc); errors name `pipelines`/`sql` paths.
pub async fn check(plan: &extractor::Plan, pipelines: &Path, sql: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (pdir, sdir) = (dir.path().join("pipelines"), dir.path().join("sql"));
    std::fs::create_dir_all(&pdir)?;
    std::fs::write(pdir.join(format!("{}.toml", plan.source)), &plan.pipeline)?;
    crate::config::interp::with_placeholder_secrets(|| crate::config::load(&pdir, &plan.source)).map_err(|e| rename_at(e, &pdir, pipelines))?;
    for (rel, text) in &plan.models {
        let f = sdir.join(rel);
        std::fs::create_dir_all(f.parent().expect("a model is in a folder"))?;
        std::fs::write(&f, text)?;
    }
    let lake = crate::lake::Lake::open("memory://")?;
    let opts = crate::transform::TransformOptions {
        models: Vec::new(),
        full_refresh: false,
        memory_limit: None,
        temp_dir: None,
        pipelines: Some(pdir.clone()),
        check: true,
    };
    let reports = crate::transform::transform(&lake, &sdir, &opts).await.map_err(|e| rename_at(rename_at(e, &sdir, sql), &pdir, pipelines))?;
    // A model without a data_schema reads an undeclared stream: "not checked" until data lands.
    if let Some(r) = reports.iter().find(|r| r.failed.is_some()) {
        return Err(Error::Usage(format!("the generated model {} does not plan: {}", r.target, r.failed.clone().unwrap_or_default())));
    }
    Ok(())
}

/// Every file under a temporary name first, then renamed: a failure leaves none of them.
fn write_all(targets: &[(PathBuf, String)]) -> Result<()> {
    let tmp = |p: &Path| p.with_extension("import-tmp");
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| -> std::io::Result<()> {
        for (p, text) in targets {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(tmp(p), text)?;
            written.push(tmp(p));
        }
        for (p, _) in targets {
            std::fs::rename(tmp(p), p)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for t in written {
            let _ = std::fs::remove_file(t);
        }
        return Err(e.into());
    }
    Ok(())
}
