//! `pgdbm`: the command line for migrations.
//!
//! ```text
//! pgdbm migrate apply|status|pending|dry-run|history|verify [options]
//! pgdbm migrate mark-unapplied FILE [options]
//! pgdbm migrate create NAME [--dir DIR]
//!
//! options: --dir DIR (default ./migrations)  --module NAME (default: the schema, else "default")
//!          --schema NAME (default DB_SCHEMA)  --table NAME (default schema_migrations)
//!          --lock-timeout SECONDS  --allow-missing  --limit N (history)
//! ```
//! The database comes from `DATABASE_URL` (or `DB_HOST`, …, and a `.env` file).

use std::process::ExitCode;
use std::time::Duration;

use pgdbm::{Database, DatabaseConfig, FileState, Migrator, ReportStatus};

const USAGE: &str = "usage: pgdbm migrate <apply|status|pending|dry-run|history|verify|mark-unapplied FILE|create NAME> \
[--dir DIR] [--module NAME] [--schema NAME] [--table NAME] [--lock-timeout SECONDS] [--allow-missing] [--limit N]";

struct Args {
    command: String,
    operand: Option<String>,
    dir: String,
    module: Option<String>,
    schema: Option<String>,
    table: Option<String>,
    lock_timeout: Option<Duration>,
    allow_missing: bool,
    limit: i64,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    match argv.next().as_deref() {
        Some("migrate") => {}
        Some(other) => return Err(format!("unknown command `{other}`\n{USAGE}")),
        None => return Err(USAGE.into()),
    }
    let command = argv.next().ok_or(USAGE)?;
    let mut args = Args {
        command,
        operand: None,
        dir: "./migrations".into(),
        module: None,
        schema: None,
        table: None,
        lock_timeout: None,
        allow_missing: false,
        limit: 20,
    };
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--dir" => args.dir = value("--dir")?,
            "--module" => args.module = Some(value("--module")?),
            "--schema" => args.schema = Some(value("--schema")?),
            "--table" => args.table = Some(value("--table")?),
            "--lock-timeout" => {
                let v = value("--lock-timeout")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--lock-timeout takes seconds, not `{v}`"))?;
                args.lock_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--limit" => {
                let v = value("--limit")?;
                args.limit = v
                    .parse()
                    .map_err(|_| format!("--limit takes a number, not `{v}`"))?;
            }
            "--allow-missing" => args.allow_missing = true,
            s if s.starts_with("--") => return Err(format!("unknown option `{s}`\n{USAGE}")),
            s if args.operand.is_none() => args.operand = Some(s.to_string()),
            s => return Err(format!("unexpected argument `{s}`\n{USAGE}")),
        }
    }
    Ok(args)
}

async fn run(args: Args) -> pgdbm::Result<()> {
    if args.command == "create" {
        let name = args.operand.as_deref().unwrap_or_default();
        let path = pgdbm::migrations::create_migration_file(&args.dir, name).map_err(|e| {
            pgdbm::Error::Config {
                field: "name".into(),
                message: e.to_string(),
            }
        })?;
        println!("created {}", path.display());
        return Ok(());
    }
    let mut config = DatabaseConfig::from_env()?
        .min_connections(1)
        .max_connections(2);
    if let Some(s) = &args.schema {
        config = config.schema(s);
    }
    let db = Database::connect(config).await?;
    let module = args
        .module
        .clone()
        .or_else(|| db.schema().map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let mut m = Migrator::new(&db, &args.dir, &module).allow_missing(args.allow_missing);
    if let Some(t) = &args.table {
        m = m.table(t);
    }
    if let Some(t) = args.lock_timeout {
        m = m.lock_timeout(t);
    }
    let result = match args.command.as_str() {
        "apply" | "dry-run" => {
            let report = if args.command == "apply" {
                m.apply_pending().await?
            } else {
                m.dry_run().await?
            };
            match report.status {
                ReportStatus::UpToDate => println!("up to date ({} applied)", report.skipped.len()),
                ReportStatus::DryRun => {
                    for f in &report.pending {
                        println!("would apply {f}");
                    }
                }
                _ => {
                    for a in &report.applied {
                        println!(
                            "applied {} ({} ms)",
                            a.filename,
                            a.execution_time.as_millis()
                        );
                    }
                }
            }
            Ok(())
        }
        "pending" => {
            for f in m.pending().await? {
                println!("{f}");
            }
            Ok(())
        }
        "status" => {
            for s in m.status().await? {
                let state = match &s.state {
                    FileState::Applied { applied_at } => format!("applied {applied_at}"),
                    FileState::Pending => "pending".into(),
                    FileState::Modified { recorded, current } => {
                        format!("MODIFIED (recorded {recorded}, file {current})")
                    }
                    FileState::Missing { applied_at } => format!("MISSING (applied {applied_at})"),
                    other => format!("{other:?}"),
                };
                println!("{:<40} {state}", s.filename);
            }
            Ok(())
        }
        "history" => {
            for h in m.history(args.limit).await? {
                println!(
                    "{}  {:<40} {:>6} ms  by {}",
                    h.applied_at,
                    h.filename,
                    h.execution_time_ms.unwrap_or(0),
                    h.applied_by.unwrap_or_default()
                );
            }
            Ok(())
        }
        "verify" => m.verify().await.map(|()| println!("checksums match")),
        "mark-unapplied" => {
            let file = args.operand.as_deref().unwrap_or_default();
            let removed = m.mark_unapplied(file).await?;
            println!(
                "{}",
                if removed {
                    "forgotten"
                } else {
                    "was not recorded"
                }
            );
            Ok(())
        }
        other => Err(pgdbm::Error::Config {
            field: "command".into(),
            message: format!("unknown migrate command `{other}`; {USAGE}"),
        }),
    };
    db.close().await;
    result
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
