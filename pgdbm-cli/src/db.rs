//! `pgdbm db …`: create, drop or reset the database DATABASE_URL (or `--env`) names.
//!
//! The statements run on the server's `postgres` maintenance database, reached with the same
//! credentials and TLS settings as the named database (a database cannot drop itself, and one
//! that does not exist yet cannot be connected to).

use std::sync::{Arc, Mutex};

use pgdbm_core::ident::{IdentifierKind, quote_identifier, validate_identifier};
use pgdbm_core::migrations::MigrationSet;
use pgdbm_core::{Database, DatabaseConfig};

use crate::cli::{DbCommand, ModuleArgs};
use crate::context::{Context, Failure, Result, fail};
use crate::exit::Code;
use crate::output::{GOOD, styled};

/// The maintenance database the statements run on.
const MAINTENANCE: &str = "postgres";

/// Databases that belong to the server, never dropped or reset.
const RESERVED: [&str; 3] = ["postgres", "template0", "template1"];

/// SQLSTATE `duplicate_database`.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE `object_in_use` (other sessions are connected).
const IN_USE: &str = "55006";

pub async fn run(ctx: &Context, cmd: DbCommand) -> Result<Code> {
    let verb = match &cmd {
        DbCommand::Create => "create",
        DbCommand::Drop { .. } => "drop",
        DbCommand::Reset { .. } => "reset",
    };
    let name = target_database(ctx, verb)?;
    match cmd {
        DbCommand::Create => {
            let admin = admin(ctx).await?;
            let r = create_database(&admin, &name).await;
            admin.close().await;
            r?;
        }
        DbCommand::Drop { yes, force } => {
            refuse_reserved(&name, verb)?;
            if !yes {
                return fail(format!(
                    "`pgdbm db drop` deletes database `{name}` and all its data; add --yes to drop it"
                ));
            }
            let admin = admin(ctx).await?;
            let r = drop_database(&admin, &name, force).await;
            admin.close().await;
            if !r? {
                println!("database `{name}` does not exist; nothing to do");
            }
        }
        DbCommand::Reset {
            yes,
            force,
            modules,
        } => {
            refuse_reserved(&name, verb)?;
            if !yes {
                return fail(format!(
                    "`pgdbm db reset` deletes database `{name}` and all its data, then creates and migrates it; add --yes to reset it"
                ));
            }
            reset(ctx, &name, force, &modules).await?;
        }
    }
    Ok(Code::Ok)
}

/// The name of the database the connection settings name, refused when the URL names none
/// (the server would pick the user name) or when it is not a valid identifier.
fn target_database(ctx: &Context, verb: &str) -> Result<String> {
    let config = ctx.database_config()?;
    // The config's Display is its URL with any password replaced by `****`; a URL from
    // DB_HOST/DB_NAME always has a path.
    let shown = config.to_string();
    let explicit = url::Url::parse(&shown).is_ok_and(|u| {
        !u.path().trim_start_matches('/').is_empty()
            || u.query_pairs().any(|(k, v)| k == "dbname" && !v.is_empty())
    });
    if !explicit {
        return fail(format!(
            "the connection URL `{shown}` names no database (PostgreSQL would take the user name), and `pgdbm db {verb}` acts only on a database named explicitly: put it in the URL's path, e.g. postgresql://user@host:5432/mydb"
        ));
    }
    let name = database_of(&config.target()).unwrap_or_default();
    validate_identifier(&name, IdentifierKind::Database).map_err(|e| Failure(e.to_string()))?;
    Ok(name)
}

/// The database of `host:port/database` as [`DatabaseConfig::target`] writes it (the host may
/// be a socket directory, with slashes of its own).
fn database_of(target: &str) -> Option<String> {
    let bytes = target.as_bytes();
    (0..bytes.len()).find_map(|i| {
        if bytes[i] != b':' {
            return None;
        }
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let slash = i + 1 + digits;
        (digits > 0 && bytes.get(slash) == Some(&b'/')).then(|| target[slash + 1..].to_string())
    })
}

fn refuse_reserved(name: &str, verb: &str) -> Result<()> {
    if RESERVED.contains(&name) {
        return fail(format!(
            "refusing to {verb} database `{name}`: postgres, template0 and template1 belong to the server; point DATABASE_URL at a database of your own"
        ));
    }
    Ok(())
}

/// A connection to the maintenance database of the same server, same credentials.
async fn admin(ctx: &Context) -> Result<Database> {
    let config = ctx.database_config_with(|var, value| match var {
        "DATABASE_URL" => value.map(|u| maintenance_url(&u)),
        "DB_NAME" => Some(MAINTENANCE.to_string()),
        _ => value,
    })?;
    Ok(Database::connect(admin_settings(config)).await?)
}

fn admin_settings(config: DatabaseConfig) -> DatabaseConfig {
    config
        .no_schema()
        .create_schema(false)
        .min_connections(1)
        .max_connections(1)
        .retry_attempts(1)
        // Creating a database copies the template, and dropping one waits for its files.
        .statement_timeout(None)
        .application_name("pgdbm_cli")
}

/// `url` on the maintenance database: its path replaced, a `dbname` parameter removed.
fn maintenance_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        // The config reports an unparseable URL with the setting's name.
        return url.to_string();
    };
    u.set_path(&format!("/{MAINTENANCE}"));
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "dbname")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    u.to_string()
}

async fn exists(admin: &Database, name: &str) -> Result<bool> {
    let found: Option<bool> = admin
        .fetch_value(
            "SELECT true FROM pg_catalog.pg_database WHERE datname = $1",
            (name,),
        )
        .await?;
    Ok(found.is_some())
}

async fn create_database(admin: &Database, name: &str) -> Result<()> {
    if exists(admin, name).await? {
        println!("database `{name}` already exists; nothing to do");
        return Ok(());
    }
    let sql = format!("CREATE DATABASE {}", quote_identifier(name));
    match admin.execute(&sql, ()).await {
        Ok(_) => {
            anstream::println!("{} database `{name}`", styled(GOOD, "created"));
            Ok(())
        }
        // Created by someone else meanwhile.
        Err(e) if e.code() == Some(DUPLICATE_DATABASE) => {
            println!("database `{name}` already exists; nothing to do");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Drops `name` if it exists (`false`: it does not, nothing was done).
async fn drop_database(admin: &Database, name: &str, force: bool) -> Result<bool> {
    if !exists(admin, name).await? {
        return Ok(false);
    }
    let others = sessions(admin, name).await?;
    if others > 0 && !force {
        return in_use(name, others);
    }
    let mut sql = format!("DROP DATABASE IF EXISTS {}", quote_identifier(name));
    if force {
        sql.push_str(" WITH (FORCE)");
    }
    match admin.execute(&sql, ()).await {
        Ok(_) => {}
        // A session connected between the count and the drop.
        Err(e) if e.code() == Some(IN_USE) => {
            let others = sessions(admin, name).await?.max(1);
            return in_use(name, others);
        }
        Err(e) => return Err(e.into()),
    }
    if force && others > 0 {
        anstream::println!(
            "{} database `{name}` (ended {})",
            styled(GOOD, "dropped"),
            plural(others, "other session")
        );
    } else {
        anstream::println!("{} database `{name}`", styled(GOOD, "dropped"));
    }
    Ok(true)
}

/// How many other sessions are connected to `name`.
async fn sessions(admin: &Database, name: &str) -> Result<i64> {
    let n: Option<i64> = admin
        .fetch_value(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            (name,),
        )
        .await?;
    Ok(n.unwrap_or(0))
}

fn in_use<T>(name: &str, others: i64) -> Result<T> {
    fail(format!(
        "database `{name}` has {} connected; nothing was dropped. Close them, or add --force to end them and drop it",
        plural(others, "other session")
    ))
}

fn plural(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Drop, create, migrate. Every module's files are read before anything is dropped.
async fn reset(ctx: &Context, name: &str, force: bool, modules: &ModuleArgs) -> Result<()> {
    let targets = ctx.targets(modules)?;
    for t in &targets {
        MigrationSet::from_dir(&t.dir).map_err(|e| Failure(e.to_string()))?;
    }
    let admin = admin(ctx).await?;
    let r = async {
        if !drop_database(&admin, name, force).await? {
            println!("database `{name}` does not exist; nothing to drop");
        }
        create_database(&admin, name).await
    }
    .await;
    admin.close().await;
    r?;
    let announce = targets.len() > 1;
    for t in &targets {
        let db = ctx.connect(t).await.map_err(|e| after_create(name, e))?;
        let m = ctx.migrator(&db, t, modules);
        let module = m.module().to_string();
        if announce {
            crate::output::module_heading(&module, db.schema());
        }
        // The files the run started, to say which were applied when one fails.
        let started = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&started);
        let report = m
            .on_progress(move |_, _, file| {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(file.to_string())
            })
            .apply_pending()
            .await;
        db.close().await;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                let started = started.lock().unwrap_or_else(|e| e.into_inner());
                // Each file runs in its own transaction: the last one started failed.
                for file in started.iter().take(started.len().saturating_sub(1)) {
                    anstream::println!("{} {file}", styled(GOOD, "applied"));
                }
                return Err(after_create(name, e.into()));
            }
        };
        if report.applied.is_empty() {
            println!("no migrations to apply (module {module})");
        }
        crate::output::applied(&report.applied);
    }
    Ok(())
}

/// An error once the database was recreated: say what state it is in.
fn after_create(name: &str, e: Failure) -> Failure {
    Failure(format!(
        "{e}\n  (database `{name}` was dropped and created again, and its migrations stopped here; fix this and run `pgdbm migrate apply`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_target() {
        assert_eq!(database_of("127.0.0.1:5432/app").as_deref(), Some("app"));
        assert_eq!(
            database_of("/var/run/postgresql:5432/app").as_deref(),
            Some("app")
        );
        assert_eq!(database_of("::1:5432/app").as_deref(), Some("app"));
        assert_eq!(database_of("localhost:5432/").as_deref(), Some(""));
        assert_eq!(database_of("<invalid url>"), None);
    }

    #[test]
    fn the_maintenance_url_keeps_everything_but_the_database() {
        assert_eq!(
            maintenance_url("postgresql://u:p%40ss@h:5433/app?sslmode=require&dbname=x"),
            "postgresql://u:p%40ss@h:5433/postgres?sslmode=require"
        );
        assert_eq!(
            maintenance_url("postgresql://u@h/app"),
            "postgresql://u@h/postgres"
        );
    }
}
