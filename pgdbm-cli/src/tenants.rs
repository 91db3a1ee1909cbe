//! `pgdbm tenants …`: one schema per tenant on one database, through [`Tenants`].

use pgdbm_core::migrations::MigrationSet;
use pgdbm_core::{MigrationReport, SharedPool, Tenants};
use serde_json::json;

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
    let args = match &cmd {
        TenantsCommand::List(args)
        | TenantsCommand::Create { args, .. }
        | TenantsCommand::Migrate { args, .. }
        | TenantsCommand::Drop { args, .. } => args,
    };
    let target = module_of(ctx, args)?;
    if matches!(
        cmd,
        TenantsCommand::Create { .. } | TenantsCommand::Migrate { .. }
    ) {
        // The files are read and checked before any connection is made.
        MigrationSet::from_dir(&target.dir).map_err(|e| Failure(e.to_string()))?;
    }
    let pool = connect(ctx).await?;
    let mut tenants = Tenants::new(&pool, &target.module, &target.dir).concurrency(2);
    if let Some(schema) = &target.schema {
        tenants = tenants.compiled_schema(schema);
    }
    let r = one(ctx, cmd, &tenants, &target).await;
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
/// room for `migrate` to work on two tenants at a time.
async fn connect(ctx: &Context) -> Result<SharedPool> {
    let config = ctx
        .database_config()?
        .min_connections(1)
        .max_connections(4)
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
        TenantsCommand::List(_) => {
            let names = tenants.list().await?;
            let rows: Vec<(String, String)> = names
                .into_iter()
                .map(|n| {
                    let schema = tenants.schema_for(&n).unwrap_or_default();
                    (n, schema)
                })
                .collect();
            if ctx.json {
                ctx.print_json(
                    json!(
                        rows.iter()
                            .map(|(name, schema)| json!({"name": name, "schema": schema}))
                            .collect::<Vec<_>>()
                    ),
                    None,
                );
            } else if rows.is_empty() {
                println!("no tenants (module {})", target.module);
            } else {
                let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
                for (name, schema) in &rows {
                    println!("{name:<width$}  {schema}");
                }
            }
            Ok(Code::Ok)
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
            print_report(&name, &report);
            Ok(Code::Ok)
        }
        TenantsCommand::Migrate { name: None, .. } => {
            let done = tenants.migrate_all().await?;
            if done.is_empty() {
                println!("no tenants to migrate (module {})", target.module);
            }
            let mut failed = 0;
            for t in &done {
                match &t.outcome {
                    Ok(report) => print_report(&t.tenant, report),
                    Err(e) => {
                        failed += 1;
                        anstream::eprintln!(
                            "{} tenant `{}`: {e}",
                            styled(BAD, "failed:"),
                            t.tenant
                        );
                    }
                }
            }
            if failed > 0 {
                return fail(format!(
                    "{failed} of {} tenants failed to migrate (the others were migrated); fix the error and run `pgdbm tenants migrate` again",
                    done.len()
                ));
            }
            Ok(Code::Ok)
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
