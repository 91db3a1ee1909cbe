//! `pgdbm test-server …` (the throwaway server of `pgdbm_core::local_server`) and
//! `pgdbm test cleanup`.

use std::path::{Path, PathBuf};

use pgdbm_core::Database;
use pgdbm_core::local_server::{THROWAWAY_DIR_ENV, ThrowawayServer, find_binaries};
use pgdbm_core::testing::{ServerDiscovery, TEST_DATABASE_PREFIX, drop_stale_test_databases};
use serde_json::json;

use crate::cli::{TestCommand, TestServerCommand};
use crate::context::{Context, Result, fail};
use crate::exit::Code;
use crate::output::{self, GOOD, PENDING, styled};

/// The throwaway server the tests use (`$PGDBM_TEST_SERVER_DIR`, else under `target/`).
pub fn throwaway() -> ThrowawayServer {
    ThrowawayServer::new(ThrowawayServer::default_root())
}

/// The directory holding `initdb` and `pg_ctl`, or a message saying how to get them.
pub fn binaries() -> Result<PathBuf> {
    find_binaries().map_or_else(
        || {
            fail(
                "no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; install PostgreSQL (e.g. `apt-get install postgresql`)",
            )
        },
        Ok,
    )
}

/// `path`, absolute (for messages and JSON).
fn shown(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

pub async fn run(ctx: &Context, cmd: TestServerCommand) -> Result<Code> {
    let server = throwaway();
    let dir = shown(server.root());
    match cmd {
        TestServerCommand::Start => {
            let bin = binaries()?;
            let was_running = server.status().await.is_some();
            let url = server.start_or_reuse(&bin).await?;
            if was_running {
                anstream::eprintln!("{} in {dir}", styled(GOOD, "already running"));
            } else {
                anstream::eprintln!(
                    "{} in {dir} (log: {})",
                    styled(GOOD, "started"),
                    shown(&server.log())
                );
            }
            println!("{url}");
        }
        TestServerCommand::Stop => {
            let stopped = match find_binaries() {
                Some(bin) => server.stop(&bin)?,
                // Without pg_ctl nothing can be stopped; say so only if something runs.
                None if server.status().await.is_none() => false,
                None => return binaries().map(|_| Code::Error),
            };
            if stopped {
                anstream::println!("{} ({dir})", styled(GOOD, "stopped"));
            } else {
                anstream::println!("{} ({dir})", styled(PENDING, "not running"));
            }
        }
        TestServerCommand::Status => {
            let status = server.status().await;
            let url = server_url(status.as_ref());
            if ctx.json {
                output::json(&json!({
                    "running": status.is_some(),
                    "port": status.as_ref().map(|(port, _)| *port),
                    "dir": dir,
                    "url": url,
                }));
            } else {
                match status {
                    Some((port, _)) => {
                        anstream::println!("{}", styled(GOOD, "running"));
                        println!("  port: {port}");
                        println!("  dir:  {dir}");
                        println!("  url:  {}", url.unwrap_or_default());
                    }
                    None => anstream::println!("{} ({dir})", styled(PENDING, "not running")),
                }
            }
        }
        TestServerCommand::Url => match server.status().await {
            Some(status) => println!("{}", server_url(Some(&status)).unwrap_or_default()),
            None => {
                return fail(format!(
                    "the throwaway server is not running ({dir}); start it with `pgdbm test-server start`{}",
                    if std::env::var_os(THROWAWAY_DIR_ENV).is_some() {
                        format!(" (with the same {THROWAWAY_DIR_ENV})")
                    } else {
                        String::new()
                    }
                ));
            }
        },
    }
    Ok(Code::Ok)
}

fn server_url(status: Option<&(u16, PathBuf)>) -> Option<String> {
    status.map(|(port, _)| format!("postgresql://postgres@127.0.0.1:{port}/postgres"))
}

pub async fn run_test(ctx: &Context, cmd: TestCommand) -> Result<Code> {
    let TestCommand::Cleanup { all } = cmd;
    let Some(admin_url) = test_server_url().await? else {
        anstream::println!(
            "{}: no server found for tests and the throwaway server is not running ({})",
            styled(GOOD, "nothing to clean up"),
            shown(throwaway().root())
        );
        return Ok(Code::Ok);
    };
    let shown_url = masked(&admin_url);
    let dropped = if all {
        anstream::eprintln!(
            "{} --all drops every {TEST_DATABASE_PREFIX}* database on {shown_url}, also those of test runs in progress: no tests may be running",
            styled(PENDING, "warning:")
        );
        drop_all(&admin_url).await?
    } else {
        drop_stale_test_databases(&admin_url).await?
    };
    if ctx.json {
        output::json(&json!({"server": shown_url, "dropped": dropped}));
        return Ok(Code::Ok);
    }
    for name in &dropped {
        anstream::println!("{} {name}", styled(GOOD, "dropped"));
    }
    if dropped.is_empty() {
        println!(
            "no {}test databases on {shown_url}",
            if all { "" } else { "stale " }
        );
    } else {
        println!("{} test database(s) dropped on {shown_url}", dropped.len());
    }
    Ok(Code::Ok)
}

/// The server tests use, found the way they find it (`PGDBM_TEST_DATABASE_URL`, `DATABASE_URL`,
/// localhost:5432), else the throwaway server when it runs (never started just to be cleaned).
async fn test_server_url() -> Result<Option<String>> {
    let mut discovery = ServerDiscovery::from_env();
    discovery.throwaway_dir = None;
    match discovery.find().await {
        Ok(server) => Ok(Some(server.admin_url)),
        Err(_) => Ok(throwaway().url().await),
    }
}

/// Drops every `pgdbm_test_*` database on the server; returns their names.
async fn drop_all(admin_url: &str) -> Result<Vec<String>> {
    let db = Database::connect(crate::context::admin_config(admin_url)).await?;
    let r = async {
        let names: Vec<(String,)> = db
            .fetch_all(
                "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
                (TEST_DATABASE_PREFIX,),
            )
            .await?;
        let mut dropped = Vec::new();
        for (name,) in names {
            let sql = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                pgdbm_core::ident::quote_identifier(&name)
            );
            db.execute(&sql, ()).await?;
            dropped.push(name);
        }
        Ok(dropped)
    }
    .await;
    db.close().await;
    r
}

/// `url` without its password.
pub fn masked(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            u.to_string()
        }
        Err(_) => "<the configured server>".to_string(),
    }
}
