//! `pgdbm`: the command line for migrations.
//!
//! ```text
//! pgdbm migrate apply|status|pending|dry-run|history|verify [options]
//! pgdbm migrate mark-unapplied FILE [options]
//! pgdbm migrate repair FILE [--dry-run] [options]
//! pgdbm migrate baseline [--to VERSION] [--dry-run] [options]
//! pgdbm migrate revert [--steps N | --to VERSION] [--dry-run] [options]
//! pgdbm migrate create NAME [--dir DIR]
//!
//! options: --module NAME | --all      one module of pgdbm.toml, or all of them in depends_on order
//!          --dir DIR  --schema NAME   without pgdbm.toml (or to override it)
//!          --table NAME  --lock-timeout SECONDS  --allow-missing  --limit N (history)
//!          --transaction-pooler | --direct   the lock mode (default: detected from the host)
//!          --config FILE (default: pgdbm.toml here or above)  --env NAME ([environments.NAME])
//! ```
//! The database comes from `DATABASE_URL` (or `DB_HOST`, …, and a `.env` file), else from the
//! project file's environment (`--env`, else `[project] default_env` when it is declared).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pgdbm::project::{ModuleConfig, Project};
use pgdbm::{Database, DatabaseConfig, FileState, Migrator, ReportStatus, RevertTarget};

const USAGE: &str = "usage: pgdbm migrate <apply|status|pending|dry-run|history|verify|mark-unapplied FILE|repair FILE|baseline|revert|create NAME> \
[--module NAME | --all] [--dir DIR] [--schema NAME] [--table NAME] [--lock-timeout SECONDS] [--allow-missing] [--limit N] \
[--dry-run] [--to VERSION] [--steps N] [--transaction-pooler | --direct] [--config FILE] [--env NAME]";

#[derive(Clone, Default)]
struct Args {
    command: String,
    operand: Option<String>,
    dir: Option<String>,
    module: Option<String>,
    all: bool,
    schema: Option<String>,
    table: Option<String>,
    lock_timeout: Option<Duration>,
    allow_missing: bool,
    limit: Option<i64>,
    dry_run: bool,
    to: Option<u128>,
    steps: Option<usize>,
    pooler: Option<bool>,
    config: Option<PathBuf>,
    env: Option<String>,
    /// Set by `--all` revert: check every module before any module's revert runs.
    preflight: bool,
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} takes a whole number, not `{v}`"))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    match argv.next().as_deref() {
        Some("migrate") => {}
        Some(other) => return Err(format!("unknown command `{other}`\n{USAGE}")),
        None => return Err(USAGE.into()),
    }
    let mut args = Args {
        command: argv.next().ok_or(USAGE)?,
        ..Args::default()
    };
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--dir" => args.dir = Some(value("--dir")?),
            "--module" => args.module = Some(value("--module")?),
            "--all" => args.all = true,
            "--schema" => args.schema = Some(value("--schema")?),
            "--table" => args.table = Some(value("--table")?),
            "--config" => args.config = Some(value("--config")?.into()),
            "--env" => args.env = Some(value("--env")?),
            "--lock-timeout" => {
                let v = value("--lock-timeout")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--lock-timeout takes seconds, not `{v}`"))?;
                args.lock_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--limit" => args.limit = Some(number("--limit", &value("--limit")?)?),
            "--to" => {
                // `--to 003` and `--to 3` name the same version.
                args.to = Some(number("--to", &value("--to")?)?);
            }
            "--steps" => args.steps = Some(number("--steps", &value("--steps")?)?),
            "--dry-run" => args.dry_run = true,
            "--allow-missing" => args.allow_missing = true,
            "--transaction-pooler" => args.pooler = Some(true),
            "--direct" => args.pooler = Some(false),
            s if s.starts_with("--") => return Err(format!("unknown option `{s}`\n{USAGE}")),
            s if args.operand.is_none() => args.operand = Some(s.to_string()),
            s => return Err(format!("unexpected argument `{s}`\n{USAGE}")),
        }
    }
    if args.all && (args.module.is_some() || args.dir.is_some() || args.schema.is_some()) {
        return Err("--all runs every module of pgdbm.toml; it does not combine with --module, --dir or --schema".into());
    }
    if args.to.is_some() && args.steps.is_some() {
        return Err("revert takes --to VERSION or --steps N, not both".into());
    }
    Ok(args)
}

fn config_error(field: &str, message: impl Into<String>) -> pgdbm::Error {
    pgdbm::Error::Config {
        field: field.into(),
        message: message.into(),
    }
}

/// What one module run needs: its name, directory and schema.
struct Target {
    module: String,
    dir: PathBuf,
    schema: Option<String>,
}

fn target_of(m: &ModuleConfig, project: &Project) -> pgdbm::Result<Target> {
    let dir = m
        .migrations
        .as_ref()
        .map(|d| d.path.clone())
        .ok_or_else(|| {
            config_error(
                "migrations_path",
                format!(
                    "module `{}` in `{}` has no migrations_path; add one",
                    m.name,
                    project.path.display()
                ),
            )
        })?;
    Ok(Target {
        module: m.name.clone(),
        dir,
        schema: m.schema.clone(),
    })
}

/// The modules this invocation acts on, in the order it acts on them.
fn targets(args: &Args, project: Option<&Project>) -> pgdbm::Result<Vec<Target>> {
    if args.all {
        let project = project.ok_or_else(|| {
            config_error(
                "--all",
                "--all needs a pgdbm.toml (here or above, or --config FILE) declaring [modules.NAME] sections",
            )
        })?;
        let ordered = project
            .module_order()
            .map_err(|e| config_error("depends_on", e.to_string()))?;
        let mut out: Vec<Target> = Vec::new();
        if ordered.is_empty() {
            out.push(target_of(&project.default_module, project)?);
        }
        for m in ordered {
            out.push(target_of(m, project)?);
        }
        return Ok(out);
    }
    let from_file = project.and_then(|p| {
        let m = match &args.module {
            Some(name) => p
                .module(name)
                .or_else(|| (p.default_module.name == *name).then_some(&p.default_module)),
            // An explicit --dir without --module is outside the file's modules.
            None if args.dir.is_none() => Some(&p.default_module),
            None => None,
        };
        m.filter(|m| m.migrations.is_some() || args.dir.is_some())
            .map(|m| (m, p))
    });
    if let (Some(name), Some(p), None, None) = (&args.module, project, &from_file, &args.dir) {
        let mut declared: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
        if p.default_module.migrations.is_some()
            && !declared.contains(&p.default_module.name.as_str())
        {
            declared.push(&p.default_module.name);
        }
        return Err(config_error(
            "--module",
            format!(
                "`{}` declares no module `{name}` (it declares: {}); pick one of those, or give --dir",
                p.path.display(),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
        ));
    }
    let mut t = match from_file {
        Some((m, p)) => Target {
            module: m.name.clone(),
            dir: match &m.migrations {
                Some(d) => d.path.clone(),
                None => target_of(m, p)?.dir,
            },
            schema: m.schema.clone(),
        },
        None => Target {
            module: args.module.clone().unwrap_or_default(),
            dir: "./migrations".into(),
            schema: None,
        },
    };
    if let Some(d) = &args.dir {
        t.dir = d.into();
    }
    if args.schema.is_some() {
        t.schema = args.schema.clone();
    }
    Ok(vec![t])
}

fn database_config(args: &Args, project: Option<&Project>) -> pgdbm::Result<DatabaseConfig> {
    // Reads `.env` into the environment (as the library does) before DATABASE_URL is looked at.
    let _ = DatabaseConfig::from_env();
    let url_set = std::env::var("DATABASE_URL").is_ok_and(|v| !v.trim().is_empty());
    let env_url = match (project, &args.env) {
        (Some(p), Some(name)) => Some(
            p.environment(name)
                .and_then(|e| e.resolve_url())
                .map_err(|e| config_error("--env", e.to_string()))?,
        ),
        (None, Some(_)) => {
            return Err(config_error(
                "--env",
                "--env names an [environments.NAME] section of pgdbm.toml, and none was found (here or above, or --config FILE)",
            ));
        }
        (Some(p), None) if !url_set => match p.environment(p.default_env()) {
            Ok(e) => Some(
                e.resolve_url()
                    .map_err(|e| config_error("environments", e.to_string()))?,
            ),
            Err(_) => None,
        },
        _ => None,
    };
    let config = match env_url {
        Some(url) => DatabaseConfig::from_lookup(|k| {
            if k == "DATABASE_URL" {
                Some(url.clone())
            } else {
                std::env::var(k).ok()
            }
        })?,
        None => DatabaseConfig::from_env()?,
    };
    Ok(config.min_connections(1).max_connections(2))
}

async fn run(args: Args) -> pgdbm::Result<()> {
    let project_path = match &args.config {
        Some(p) if !p.is_file() => {
            return Err(config_error(
                "--config",
                format!("`{}` does not exist", p.display()),
            ));
        }
        Some(p) => Some(p.clone()),
        None => std::env::current_dir().ok().and_then(|d| Project::find(&d)),
    };
    let project = match &project_path {
        Some(p) => Some(Project::load(p).map_err(|e| config_error("pgdbm.toml", e.to_string()))?),
        None => None,
    };
    if args.command == "create" {
        let name = args.operand.as_deref().unwrap_or_default();
        let dir = targets(&args, project.as_ref())?.remove(0).dir;
        let path = pgdbm::migrations::create_migration_file(&dir, name)
            .map_err(|e| config_error("name", e.to_string()))?;
        println!("created {}", path.display());
        return Ok(());
    }
    let mut targets = targets(&args, project.as_ref())?;
    if args.command == "revert" {
        // Dependents go back before what they depend on.
        targets.reverse();
    }
    let base = database_config(&args, project.as_ref())?;
    let many = targets.len() > 1;
    if many && args.command == "revert" && !args.dry_run {
        // Every module's revert is checked (down files, drift) before any module's runs.
        let check = Args {
            preflight: true,
            ..args.clone()
        };
        for t in &targets {
            on_module(&check, project.as_ref(), &base, t, false).await?;
        }
    }
    for t in &targets {
        on_module(&args, project.as_ref(), &base, t, many).await?;
    }
    Ok(())
}

async fn on_module(
    args: &Args,
    project: Option<&Project>,
    base: &DatabaseConfig,
    t: &Target,
    announce: bool,
) -> pgdbm::Result<()> {
    {
        let mut config = base.clone();
        if let Some(s) = &t.schema {
            config = config.schema(s);
        }
        let db = Database::connect(config).await?;
        let module = if t.module.is_empty() {
            db.schema().unwrap_or("default").to_string()
        } else {
            t.module.clone()
        };
        if announce {
            println!(
                "== module {module} (schema {}) ==",
                db.schema().unwrap_or("public")
            );
        }
        let mut m = Migrator::new(&db, &t.dir, &module).allow_missing(args.allow_missing);
        let table = args
            .table
            .clone()
            .or_else(|| project.map(|p| p.migrations_table.clone()));
        if let Some(table) = &table {
            m = m.table(table);
        }
        if let Some(timeout) = args.lock_timeout {
            m = m.lock_timeout(timeout);
        }
        if let Some(on) = args.pooler {
            m = m.transaction_pooler(on);
        }
        let r = command(args, &m).await;
        db.close().await;
        r
    }
}

async fn command(args: &Args, m: &Migrator) -> pgdbm::Result<()> {
    let operand = || {
        args.operand.as_deref().ok_or_else(|| {
            config_error(
                "FILE",
                format!(
                    "`migrate {}` needs the file name, as `status` lists it",
                    args.command
                ),
            )
        })
    };
    match args.command.as_str() {
        "apply" | "dry-run" => {
            let report = if args.command == "apply" && !args.dry_run {
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
        }
        "pending" => {
            for f in m.pending().await? {
                println!("{f}");
            }
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
        }
        "history" => {
            for h in m.history(args.limit.unwrap_or(20)).await? {
                println!(
                    "{}  {:<40} {:>6} ms  by {}",
                    h.applied_at,
                    h.filename,
                    h.execution_time_ms.unwrap_or(0),
                    h.applied_by.unwrap_or_default()
                );
            }
        }
        "verify" => {
            m.verify().await?;
            println!("checksums match");
        }
        "mark-unapplied" => {
            let removed = m.mark_unapplied(operand()?).await?;
            println!(
                "{}",
                if removed {
                    "forgotten"
                } else {
                    "was not recorded"
                }
            );
        }
        "repair" => {
            let file = operand()?;
            let r = if args.dry_run {
                m.repair_dry_run(file).await?
            } else {
                m.repair(file).await?
            };
            match (r.changed, args.dry_run) {
                (false, _) => println!("{file}: checksum already matches; nothing to repair"),
                (true, true) => println!(
                    "would repair {file}: recorded {} -> file {}",
                    r.recorded, r.current
                ),
                (true, false) => println!(
                    "repaired {file}: recorded {} -> file {}",
                    r.recorded, r.current
                ),
            }
        }
        "baseline" => {
            let r = if args.dry_run {
                m.baseline_dry_run(args.to).await?
            } else {
                m.baseline(args.to).await?
            };
            let verb = if args.dry_run {
                "would record"
            } else {
                "recorded"
            };
            for f in &r.recorded {
                println!("{verb} {f} as applied (not run)");
            }
            println!(
                "{} file(s) {verb}, {} already applied",
                r.recorded.len(),
                r.already_applied.len()
            );
        }
        "revert" => {
            let target = match (args.to, args.steps) {
                (Some(v), _) => RevertTarget::To(v),
                (None, Some(n)) => RevertTarget::Steps(n),
                (None, None) => RevertTarget::Steps(1),
            };
            if args.preflight {
                m.revert_dry_run(target).await?;
            } else if args.dry_run {
                let r = m.revert_dry_run(target).await?;
                for f in &r.would_revert {
                    println!("would revert {f}");
                }
                if r.would_revert.is_empty() {
                    println!("nothing to revert");
                }
            } else {
                let r = m.revert(target).await?;
                for f in &r.reverted {
                    println!(
                        "reverted {} with {} ({} ms)",
                        f.filename,
                        f.down_file,
                        f.execution_time.as_millis()
                    );
                }
                if r.reverted.is_empty() {
                    println!("nothing to revert");
                }
            }
        }
        other => {
            return Err(config_error(
                "command",
                format!("unknown migrate command `{other}`; {USAGE}"),
            ));
        }
    }
    Ok(())
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
