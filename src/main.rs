//! Thin entry point: parse the command line, run it, map the outcome to an exit code
//! (0 done, 1 the run failed, 2 bad input found before any work).
use clap::Parser;
use ingest::cli::{Cli, Command, DdlCommand, FixturesCommand, QueryFormat};
use ingest::{config, demo, error::Error, lake::Lake, pull, query, secret, sim, status, transform};
use std::io::Write;

/// mimalloc instead of glibc's malloc: a pull builds and frees millions of small JSON values
/// across threads, and glibc's arenas spent about as long on that as on the rest of the pull
/// (tests/bench/pull.sh, SOURCE=c2s: 3.6 s of user CPU against 1.9 s).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    // Before the logs, so that loading the pipeline here warns nothing (the command's own load
    // warns once).
    let rt = runtime(&cli);
    init_logs(&cli);
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", secret::redact(&e.to_string()));
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// A pull of a source that sends one request at a time (`concurrency = 1`) runs on one thread:
/// its work is a sequence anyway, and a multi-thread runtime only adds wake-ups between
/// threads. Everything else runs on all cores. (A pipeline that does not load gets the
/// default here; the command reports why.)
fn runtime(cli: &Cli) -> tokio::runtime::Runtime {
    let sequential = match &cli.command {
        Command::Pull(a) => config::load(&cli.pipelines, &a.source).is_ok_and(|p| p.concurrency == 1),
        _ => false,
    };
    let mut b = match sequential {
        true => tokio::runtime::Builder::new_current_thread(),
        false => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build().expect("tokio runtime")
}

fn init_logs(cli: &Cli) {
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("INGEST_LOG")
        // deltalake's MERGE warns on every run that it derives its skipped-files metric (we
        // report merges ourselves); --quiet means errors only, from every crate.
        .unwrap_or_else(|_| {
            let others = if cli.quiet { "error" } else { "warn" };
            tracing_subscriber::EnvFilter::new(format!("{others},ingest={level},deltalake_core::operations::merge=error"))
        });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| secret::RedactingStderr)
        .with_target(false);
    if cli.log_format == ingest::cli::LogFormat::Json {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
}

fn parse_day(flag: &str, v: &Option<String>) -> Result<Option<chrono::NaiveDate>, Error> {
    v.as_deref()
        .map(|s| config::parse_date(s).map_err(|m| Error::Usage(format!("{flag}: {m}"))))
        .transpose()
}

/// `<source>.<stream>` of a command's argument (`what` names the command in the error).
fn source_stream<'a>(name: &'a str, what: &str) -> Result<(&'a str, &'a str), Error> {
    name.split_once('.').ok_or_else(|| Error::Usage(format!("{what} {name}: expected <source>.<stream>")))
}

async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Pull(a) => {
            let from = parse_day("--from", &a.from)?;
            let to = parse_day("--to", &a.to)?.unwrap_or_else(|| chrono::Utc::now().date_naive());
            if let Some(f) = from {
                if f > to {
                    return Err(Error::Usage(format!("--from {f} is after --to {to}")));
                }
            }
            config::aws_secrets::prefetch(&cli.pipelines, &a.source).await?;
            let mut p = config::load(&cli.pipelines, &a.source)?;
            ingest::stop::listen();
            pull::check_streams(&p, &a.streams)?;
            let partitions = pull::select_partitions(&mut p, a.partitions.as_deref(), a.shard.as_deref())?;
            if partitions.as_ref().is_some_and(Vec::is_empty) {
                println!("{}: no partition in shard {}", a.source, a.shard.as_deref().unwrap_or_default());
                return Ok(0);
            }
            let lake = Lake::open(&cli.lake)?;
            lake.ready_for_writes().await?;
            let opts = pull::PullOptions {
                from,
                to,
                streams: a.streams,
                full_refresh: a.full_refresh,
                progress: !cli.quiet,
                wait: a.wait,
                partitions,
            };
            let report = pull::pull(&p, &lake, &opts).await?;
            print!("{}", report.table());
            if report.failed() {
                eprintln!("error: some streams failed (see above); what landed is committed, rerun to resume");
                return Ok(1);
            }
            Ok(0)
        }
        Command::Transform { models, full_refresh, memory_limit, temp_dir, check } => {
            let memory_limit = match memory_limit {
                Some(ingest::cli::Limit::Bytes(n)) => Some(n),
                Some(ingest::cli::Limit::None) => None,
                None => transform::session::default_memory_limit(),
            };
            if let Some(d) = &temp_dir {
                transform::session::check_temp_dir(d)?;
            }
            // `--check` writes nothing, not even the folder of a lake that does not exist yet.
            let missing = !cli.lake.contains("://") && !std::path::Path::new(&cli.lake).exists();
            let lake = Lake::open(if check && missing { "memory://" } else { &cli.lake })?;
            if !check {
                lake.ready_for_writes().await?;
            }
            let pipelines = Some(cli.pipelines.clone());
            // Models declaring an output (`-- output:`): positioned before, written after.
            let with_output: Vec<_> = if check {
                Vec::new()
            } else {
                transform::model::load_dir(&cli.sql).unwrap_or_default().into_iter().filter(|m| m.output.is_some()).collect()
            };
            ingest::export::outputs::prepare_outputs(&lake, &with_output).await?;
            let opts = transform::TransformOptions { models, full_refresh, memory_limit, temp_dir, pipelines, check };
            let reports = transform::transform(&lake, &cli.sql, &opts).await?;
            print!("{}", transform::render(&reports));
            match ingest::export::outputs::write_outputs(&lake, &with_output).await {
                Ok(done) => {
                    for (model, e) in done {
                        println!("output of {model}: {} ({} rows, {} bytes)", e.location, e.rows, e.bytes);
                    }
                }
                Err(e) => {
                    eprintln!("error: outputs: {}", secret::redact(&e.to_string()));
                    eprintln!("error: the tables committed; the next transform writes the missing outputs");
                    return Ok(1);
                }
            }
            if check && transform::any_failed(&reports) {
                for r in reports.iter().filter(|r| r.failed.is_some()) {
                    eprintln!("error: {}", r.failed.as_deref().unwrap_or_default());
                }
                eprintln!("error: some models do not plan against the declared schemas (above)");
                return Ok(2);
            }
            if transform::any_failed(&reports) {
                for r in reports.iter().filter(|r| r.failed.is_some()) {
                    eprintln!("error: {}", r.failed.as_deref().unwrap_or_default());
                }
                eprintln!("error: some models failed (above); the others committed, rerun after fixing");
                return Ok(1);
            }
            Ok(0)
        }
        Command::Query { statement, format } => {
            let lake = Lake::open(&cli.lake)?;
            let f = match format {
                QueryFormat::Table => "table",
                QueryFormat::Csv => "csv",
                QueryFormat::Json => "json",
            };
            print!("{}", query::query(&lake, &statement, f).await?);
            Ok(0)
        }
        Command::Ddl {
            command: DdlCommand::Athena { database },
        } => {
            let lake = Lake::open(&cli.lake)?;
            print!("{}", query::athena_ddl(&lake, &database).await?);
            Ok(0)
        }
        Command::Status { source } => {
            let lake = Lake::open(&cli.lake)?;
            let dir = cli.pipelines.clone();
            let template = move |s: &str| status::template_of(&dir, s);
            print!("{}", status::render(&lake, source.as_deref(), &template).await?);
            Ok(0)
        }
        Command::Push { target, dry_run, limit, retry_failed, resend_uncertain, wait } => {
            let (source, sink) = match target.split_once('.') {
                Some((s, k)) => (s.to_string(), Some(k.to_string())),
                None => (target.clone(), None),
            };
            config::aws_secrets::prefetch(&cli.pipelines, &source).await?;
            let p = config::load(&cli.pipelines, &source)?;
            let lake = Lake::open(&cli.lake)?;
            if !dry_run {
                lake.ready_for_writes().await?;
            }
            let opts = ingest::push::PushOptions { sink, dry_run, limit, retry_failed, resend_uncertain, wait };
            ingest::stop::listen();
            let reports = ingest::push::push(&p, &lake, &opts).await?;
            print!("{}", ingest::push::render(&reports, dry_run));
            if reports.iter().any(|r| !r.ok()) {
                eprintln!("error: some records failed or are uncertain (see `ingest query \"SELECT * FROM _ingest.sent WHERE state IN ('failed', 'uncertain')\"`)");
                return Ok(1);
            }
            Ok(0)
        }
        Command::Model {
            command: ingest::cli::ModelCommand::New { name },
        } => {
            let (source, stream) = source_stream(&name, "model new")?;
            let lake = Lake::open(&cli.lake)?;
            let path = transform::scaffold::new_model(&lake, &cli.sql, source, stream).await?;
            println!("{}", path.display());
            eprintln!(
                "declare the stream's fields in pipelines/{source}.toml so the model builds on any data:\n{}",
                transform::scaffold::declaration(&lake, source, stream).await?
            );
            Ok(0)
        }
        Command::Pipeline {
            command: ingest::cli::PipelineCommand::Schema { name },
        } => {
            let (source, stream) = source_stream(&name, "pipeline schema")?;
            let lake = Lake::open(&cli.lake)?;
            print!("{}", transform::scaffold::declaration(&lake, source, stream).await?);
            Ok(0)
        }
        Command::Import {
            command: ingest::cli::ImportCommand::Extractor { config, name, force },
        } => {
            let done = ingest::import::extractor(&config, name.as_deref(), &cli.pipelines, &cli.sql, force).await?;
            println!("imported {} as source `{}`:", config.display(), done.source);
            for f in &done.files {
                println!("  wrote {}", f.display());
            }
            if !done.secrets.is_empty() {
                println!("secrets it reads (environment, files in $INGEST_SECRETS_DIR, or [source.secrets]): {}", done.secrets.join(", "));
            }
            println!("environment that points it elsewhere: {}", done.env.join(", "));
            println!("next: ingest pull {0} && ingest transform", done.source);
            Ok(0)
        }
        Command::Export { target, format, sep, to } => {
            let sep = match sep.as_bytes() {
                [b] => *b,
                b"\\t" => b'\t',
                _ => return Err(Error::Usage(format!("--sep {sep:?}: one character expected"))),
            };
            let fmt = match format {
                ingest::cli::ExportFormat::Csv => ingest::export::Format::Csv,
                ingest::cli::ExportFormat::Json => ingest::export::Format::Json,
                ingest::cli::ExportFormat::Parquet => ingest::export::Format::Parquet,
            };
            let lake = Lake::open(&cli.lake)?;
            let e = ingest::export::export(&lake, &target, fmt, sep, to.as_deref()).await?;
            println!("{}", e.location);
            eprintln!("{} rows, {} bytes", e.rows, e.bytes);
            Ok(0)
        }
        Command::Runs { source, failed } => {
            let lake = Lake::open(&cli.lake)?;
            let rows = ingest::lake::runs::read(&lake, source.as_deref(), failed).await?;
            print!("{}", ingest::lake::runs::render(&rows));
            Ok(0)
        }
        Command::Optimize { table } => {
            let lake = Lake::open(&cli.lake)?;
            lake.ready_for_writes().await?;
            let done = status::optimize(&lake, table.as_deref(), &cli.sql).await?;
            println!("{:<40} {:>13} {:>11}", "table", "small files", "into");
            for (t, removed, added) in &done {
                if *removed > 0 {
                    println!("{t:<40} {removed:>13} {added:>11}");
                }
            }
            let untouched = done.iter().filter(|d| d.1 == 0).count();
            println!("{} table(s) compacted, {untouched} already compact", done.len() - untouched);
            Ok(0)
        }
        Command::Vacuum { target } => {
            let lake = Lake::open(&cli.lake)?;
            lake.ready_for_writes().await?;
            let (raw, files) = status::vacuum(&lake, &cli.pipelines, target.as_deref()).await?;
            println!("removed {raw} raw file(s) that no catalogue row lists and {files} table data file(s) no commit references");
            Ok(0)
        }
        Command::Fixtures {
            command: FixturesCommand::Serve(a),
        } => {
            let (base, sim, task) = sim::serve(a.sim_config(), &a.addr).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{base}")?;
            for (k, v) in sim::exports(&sim, &base) {
                writeln!(out, "export {k}={v}")?;
            }
            writeln!(out)?;
            out.flush()?;
            drop(out);
            tokio::select! {
                _ = task => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(0)
        }
        Command::Demo => demo::run(&cli.lake).await,
        Command::Serve { addr, grace } => {
            let opts = ingest::serve::ServeOptions {
                addr,
                lake: cli.lake.clone(),
                pipelines: cli.pipelines.clone(),
                sql: cli.sql.clone(),
                grace: std::time::Duration::from_secs(grace),
            };
            ingest::serve::serve(opts).await?;
            Ok(0)
        }
    }
}
