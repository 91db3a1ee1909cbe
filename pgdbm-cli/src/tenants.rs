//! `pgdbm tenants …`: one schema per tenant on one database, through [`Tenants`].

use indicatif::{ProgressBar, ProgressStyle};
use pgdbm_core::migrations::MigrationSet;
use pgdbm_core::{
    DriftReport, Error, FleetOptions, FleetReport, MigrationReport, SharedPool, TenantMigration,
    Tenants,
};
use serde_json::{Value, json};

use crate::cli::{ModuleArgs, TenantArgs, TenantsCommand};
use crate::context::{Context, Failure, Result, Target, fail};
use crate::exit::Code;
use crate::output::{BAD, GOOD, styled};

pub async fn run(ctx: &Context, cmd: TenantsCommand) -> Result<Code> {
    // Refused before anything else: no connection, nothing read.
    if let TenantsCommand::Drop {
        name, yes: false, ..
    } = &cmd
    {
        return fail(format!(
            "dropping tenant `{name}` deletes its schema and all its data; add --yes to drop it"
        ));
    }
    let (args, concurrency) = match &cmd {
        TenantsCommand::Migrate {
            args, concurrency, ..
        } => (args, usize::from(*concurrency)),
        TenantsCommand::List { args, .. }
        | TenantsCommand::Create { args, .. }
        | TenantsCommand::Drop { args, .. } => (args, 2),
    };
    let target = module_of(ctx, args)?;
    if matches!(
        cmd,
        TenantsCommand::Create { .. } | TenantsCommand::Migrate { .. }
    ) {
        // The files are read and checked before any connection is made.
        MigrationSet::from_dir(&target.dir).map_err(|e| Failure(e.to_string()))?;
    }
    let pool = connect(ctx, concurrency).await?;
    let mut tenants = Tenants::new(&pool, &target.module, &target.dir).concurrency(concurrency);
    if let Some(schema) = &target.schema {
        tenants = tenants.compiled_schema(schema);
    }
    // pgdbm.toml's [lint], for the fleet's lint first and each tenant's migrator.
    let tenants = match &ctx.project {
        Some(p) => tenants
            .lint_config(&p.lint)
            .map_err(|e| Failure(format!("{}: [lint]: {e}", p.path.display()))),
        None => Ok(tenants),
    };
    let r = match tenants {
        Ok(tenants) => one(ctx, cmd, &tenants, &target).await,
        Err(e) => Err(e),
    };
    pool.close().await;
    r
}

/// The module whose migrations the tenants get: `--module`, else pgdbm.toml's top-level one;
/// `--dir` instead of the file's directory.
fn module_of(ctx: &Context, args: &TenantArgs) -> Result<Target> {
    let modules = ModuleArgs {
        module: args.module.clone(),
        dir: args.dir.clone(),
        ..ModuleArgs::default()
    };
    let mut targets = ctx.targets(&modules)?;
    if targets.len() != 1 {
        let names: Vec<&str> = targets.iter().map(|t| t.module.as_str()).collect();
        return fail(format!(
            "pgdbm.toml has no top-level module; pick the tenants' module with --module NAME (it declares: {})",
            names.join(", ")
        ));
    }
    let target = targets.remove(0);
    if target.module.is_empty() {
        return fail(if args.dir.is_some() {
            "with --dir, name the tenants' module with --module NAME: their registry rows and migration history are kept under it"
        } else {
            "name the tenants' module with --module NAME (and their migrations with --dir DIR, default ./migrations), or run where a pgdbm.toml declares a top-level module"
        });
    }
    Ok(target)
}

/// A small shared pool: one connection for the registry's transaction, one for migrations, and
/// room for `migrate` to work on `concurrency` tenants at a time while it reads the registry.
async fn connect(ctx: &Context, concurrency: usize) -> Result<SharedPool> {
    let config = ctx
        .database_config()?
        .min_connections(1)
        .max_connections(concurrency + 2)
        .retry_attempts(1)
        .create_schema(false);
    Ok(SharedPool::connect(config).await?)
}

async fn one(
    ctx: &Context,
    cmd: TenantsCommand,
    tenants: &Tenants,
    target: &Target,
) -> Result<Code> {
    match cmd {
        TenantsCommand::List { limit, after, .. } => {
            list(ctx, tenants, target, limit.map(|l| l as usize), after).await
        }
        TenantsCommand::Create { name, .. } => {
            let handle = tenants.create(&name).await?;
            anstream::println!(
                "{} tenant `{name}` (schema {}, module {})",
                styled(GOOD, "created"),
                handle.schema().unwrap_or_default(),
                target.module
            );
            Ok(Code::Ok)
        }
        TenantsCommand::Migrate {
            name: Some(name), ..
        } => {
            let report = tenants.migrate(&name).await?;
            if ctx.json {
                ctx.print_json(json!({"tenants": [tenant_json(&name, Ok(&report))]}), None);
            } else {
                print_report(&name, &report);
            }
            Ok(Code::Ok)
        }
        TenantsCommand::Migrate {
            name: None,
            canary,
            no_resume,
            drift,
            shadow_url,
            ..
        } => {
            let args = FleetArgs {
                canary,
                resume: !no_resume,
                drift: drift.then_some(shadow_url),
            };
            migrate_all(ctx, tenants, target, args).await
        }
        TenantsCommand::Drop { name, .. } => {
            // --yes was checked first; the library wants the name repeated as confirmation.
            let schema = tenants.schema_for(&name)?;
            tenants.drop(&name, &name).await?;
            anstream::println!(
                "{} tenant `{name}` (schema {schema})",
                styled(GOOD, "dropped")
            );
            Ok(Code::Ok)
        }
    }
}

/// How many names `list` reads at a time when it prints them all.
const LIST_PAGE: usize = 1000;

/// `tenants list`: one page with `--limit` (the next page's `--after` on stderr when more
/// follow), else every tenant after `after`, read a page at a time.
async fn list(
    ctx: &Context,
    tenants: &Tenants,
    target: &Target,
    limit: Option<usize>,
    after: Option<String>,
) -> Result<Code> {
    let (names, next) = match limit {
        Some(limit) => {
            let page = tenants.list_page(after.as_deref(), limit).await?;
            (page.names, page.next)
        }
        None => {
            let (mut names, mut cursor) = (Vec::new(), after.clone());
            loop {
                let page = tenants.list_page(cursor.as_deref(), LIST_PAGE).await?;
                names.extend(page.names);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break (names, None),
                }
            }
        }
    };
    let rows: Vec<(String, String)> = names
        .into_iter()
        .map(|n| {
            let schema = tenants.schema_for(&n).unwrap_or_default();
            (n, schema)
        })
        .collect();
    if ctx.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(name, schema)| json!({"name": name, "schema": schema}))
            .collect();
        ctx.print_json(json!({"rows": rows, "next": next}), None);
        return Ok(Code::Ok);
    }
    if rows.is_empty() {
        match &after {
            Some(after) => println!("no tenants after `{after}` (module {})", target.module),
            None => println!("no tenants (module {})", target.module),
        }
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, schema) in &rows {
        println!("{name:<width$}  {schema}");
    }
    if let Some(next) = next {
        eprintln!("more tenants follow: add --after {next} for the next page");
    }
    Ok(Code::Ok)
}

/// What `tenants migrate --all` was asked for beside the tenants.
struct FleetArgs {
    canary: Option<u32>,
    resume: bool,
    /// `--drift`, with `--shadow-url` when given.
    drift: Option<Option<String>>,
}

/// `tenants migrate [--all]`: every tenant through [`Tenants::migrate_fleet_with`], with a
/// progress bar on a terminal; one line per tenant migrated at the end, each failure on stderr
/// with its error, the counts, and a closing error naming the failed tenants.
async fn migrate_all(
    ctx: &Context,
    tenants: &Tenants,
    target: &Target,
    args: FleetArgs,
) -> Result<Code> {
    let bar = (!ctx.json && crate::output::stderr_is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} tenants {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let mut options = FleetOptions::new().resume(args.resume);
    if let Some(n) = args.canary {
        options = options.canary(n as usize);
    }
    let report = tenants
        .migrate_fleet_with(&options, |p| {
            if let Some(bar) = &bar {
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
                let failed = match p.failed {
                    0 => String::new(),
                    n => format!("({n} failed) "),
                };
                bar.set_message(format!("{failed}{}", p.last.tenant));
            }
        })
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    let failed: Vec<&TenantMigration> = report.failed().collect();
    if !ctx.json {
        print_fleet(&report, target);
    }
    // Drift is compared only after a run that left every tenant migrated: otherwise the
    // tenants still behind would show as drifted.
    let drift = match &args.drift {
        Some(shadow_url) if failed.is_empty() => {
            Some(drift_after(tenants, target, shadow_url.as_deref()).await?)
        }
        Some(_) if !ctx.json => {
            eprintln!("drift: not compared, since tenants failed to migrate");
            None
        }
        _ => None,
    };
    if ctx.json {
        print_fleet_json(ctx, &report, &failed, drift.as_deref());
    } else if let Some(reports) = &drift {
        crate::drift::print(ctx, reports);
    }
    if report.canary_failed {
        return fail(format!(
            "the canary failed: {} of {} canary tenants failed to migrate: {}; the other {} tenants were not touched. Fix the errors above and run `pgdbm tenants migrate` again (the canary tenants that succeeded are not migrated again)",
            failed.len(),
            report.canary,
            names_in_brief(&failed),
            report.not_started.len()
        ));
    }
    if !failed.is_empty() {
        return fail(format!(
            "{} of {} tenants failed to migrate: {} (the others were migrated); fix the errors above and run `pgdbm tenants migrate` again",
            failed.len(),
            report.tenants.len(),
            names_in_brief(&failed)
        ));
    }
    let drifted = drift.iter().flatten().any(|r| !r.is_clean());
    Ok(if drifted { Code::Error } else { Code::Ok })
}

/// `--drift`: every tenant compared with a shadow migrated from the same files
/// (`--shadow-url`, else a scratch database on the throwaway server, dropped afterwards), as
/// `pgdbm migrate drift --tenants` compares them.
async fn drift_after(
    tenants: &Tenants,
    target: &Target,
    shadow_url: Option<&str>,
) -> Result<Vec<DriftReport>> {
    crate::drift::with_shadow(shadow_url, "tenants-drift", async |url: String| {
        crate::drift::tenants_against_shadow(tenants, &target.module, &url).await
    })
    .await
}

/// One line per tenant migrated now (stdout), each failure (stderr), then the counts (stderr).
fn print_fleet(report: &FleetReport, target: &Target) {
    if report.tenants.is_empty() && report.not_started.is_empty() {
        println!("no tenants to migrate (module {})", target.module);
        return;
    }
    for t in report.tenants.iter().filter(|t| !t.resumed) {
        match &t.outcome {
            Ok(r) => print_report(&t.tenant, r),
            Err(e) => {
                anstream::eprintln!("{} tenant `{}`: {e}", styled(BAD, "failed:"), t.tenant)
            }
        }
    }
    let resumed = report.resumed();
    if resumed > 0 {
        eprintln!(
            "resumed an unfinished run of these files: {resumed} tenants it had finished were skipped"
        );
    }
    let mut counts = format!(
        "{} applied, {} failed, {} up to date, {resumed} done by an earlier run",
        report.applied(),
        report.failed().count(),
        report.up_to_date(),
    );
    if report.canary_failed {
        counts.push_str(&format!(
            ", {} not started (the canary failed)",
            report.not_started.len()
        ));
    }
    eprintln!("tenants: {counts}");
}

/// The run as one document: every tenant reached, the failed and the not started, the canary,
/// the counts, and with `--drift` each tenant's drift report (`drift`, else null).
fn print_fleet_json(
    ctx: &Context,
    report: &FleetReport,
    failed: &[&TenantMigration],
    drift: Option<&[DriftReport]>,
) {
    let rows: Vec<Value> = report
        .tenants
        .iter()
        .map(|t| {
            let mut row = tenant_json(&t.tenant, t.outcome.as_ref());
            row["resumed"] = json!(t.resumed);
            row
        })
        .collect();
    let failed: Vec<&str> = failed.iter().map(|t| t.tenant.as_str()).collect();
    ctx.print_json(
        json!({
            "tenants": rows,
            "failed": failed,
            "not_started": report.not_started,
            "canary": {"tenants": report.canary, "failed": report.canary_failed},
            "summary": {
                "applied": report.applied(),
                "failed": failed.len(),
                "up_to_date": report.up_to_date(),
                "resumed": report.resumed(),
                "not_started": report.not_started.len(),
            },
            "drift": drift.map(|d| serde_json::to_value(d).unwrap_or(Value::Null)),
        }),
        None,
    );
}

/// The failed tenants' names, the first 20 of them and how many more.
fn names_in_brief(failed: &[&TenantMigration]) -> String {
    const SHOWN: usize = 20;
    let mut names: Vec<String> = failed
        .iter()
        .take(SHOWN)
        .map(|t| format!("`{}`", t.tenant))
        .collect();
    if failed.len() > SHOWN {
        names.push(format!("and {} more", failed.len() - SHOWN));
    }
    names.join(", ")
}

/// One tenant's migration as JSON: the files applied, or the error.
fn tenant_json(name: &str, outcome: std::result::Result<&MigrationReport, &Error>) -> Value {
    match outcome {
        Ok(report) => json!({
            "name": name,
            "applied": report
                .applied
                .iter()
                .map(|a| json!({"file": a.filename, "ms": a.execution_time.as_millis() as u64}))
                .collect::<Vec<_>>(),
            "error": null,
        }),
        Err(e) => json!({"name": name, "applied": [], "error": e.to_string()}),
    }
}

fn print_report(tenant: &str, report: &MigrationReport) {
    if report.applied.is_empty() {
        anstream::println!("tenant `{tenant}`: {}", styled(GOOD, "up to date"));
    }
    for a in &report.applied {
        anstream::println!(
            "tenant `{tenant}`: {} {} ({} ms)",
            styled(GOOD, "applied"),
            a.filename,
            a.execution_time.as_millis()
        );
    }
}
