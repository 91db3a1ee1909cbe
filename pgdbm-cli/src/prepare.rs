//! `pgdbm prepare [--check]`: sqlx's offline data (`.sqlx/`) written or checked against a scratch
//! database migrated the way pgdbm.toml says. (`--check-compat` is in `compat.rs`; it reuses the
//! server, scratch database and migration steps here.)
//!
//! The server is the one `--env` or DATABASE_URL names, else the throwaway server (started if
//! needed). The scratch database is named like a test database (`pgdbm_test_<secs>_<pid>_prepare`)
//! so that one left behind by a killed run is dropped by the next test run's sweep or by
//! `pgdbm test cleanup`; otherwise it is dropped before the command exits, whatever happened.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pgdbm_core::ident::quote_identifier;
use pgdbm_core::migrations::MigrationSet;
use pgdbm_core::project::Project;
use pgdbm_core::testing::TEST_DATABASE_PREFIX;
use pgdbm_core::{Database, DatabaseConfig};

use crate::cli::{ModuleArgs, PrepareArgs};
use crate::context::{Context, Failure, Result, Target, fail};
use crate::exit::Code;
use crate::output::{BAD, PENDING, styled};
use crate::test_server::{binaries, masked, throwaway};

/// How to install the sqlx-cli `pgdbm prepare` drives.
pub const INSTALL_SQLX_CLI: &str = "cargo install sqlx-cli --version 0.9.0 --no-default-features --features postgres,rustls --locked";

pub async fn run(ctx: &Context, args: PrepareArgs) -> Result<Code> {
    // Everything that can be checked without a server is checked first: the modules and their
    // files, the cargo workspace and sqlx-cli.
    let (project, targets, modules) = modules(ctx, "pgdbm prepare")?;
    let workspace = cargo_dir()?;
    check_sqlx_cli(&workspace).await?;

    let server_url = server_url(ctx, project).await?;
    with_scratch_database(&server_url, "prepare", async |scratch_url: String| {
        migrate(ctx, &targets, &modules, &scratch_url).await?;
        anstream::eprintln!(
            "pgdbm: scratch database {} migrated ({}); running cargo sqlx prepare{}",
            masked(&scratch_url),
            module_names(&targets),
            if args.check { " --check" } else { "" }
        );
        cargo_sqlx_prepare(&workspace, &scratch_url, args.check).await
    })
    .await
}

/// pgdbm.toml, every module it declares (in depends_on order, their migration files read and
/// valid) and the options that select them all; `command` names the caller in the error when
/// there is no pgdbm.toml.
pub(crate) fn modules<'c>(
    ctx: &'c Context,
    command: &str,
) -> Result<(&'c Project, Vec<Target>, ModuleArgs)> {
    let Some(project) = &ctx.project else {
        return fail(format!(
            "{command} migrates a scratch database the way pgdbm.toml says, and no pgdbm.toml was found (here or above, or --config FILE)"
        ));
    };
    let modules = ModuleArgs {
        all: true,
        ..ModuleArgs::default()
    };
    let targets = ctx.targets(&modules)?;
    for t in &targets {
        MigrationSet::from_dir(&t.dir).map_err(|e| Failure(e.to_string()))?;
    }
    Ok((project, targets, modules))
}

/// `shop, billing`: the modules' names, for messages.
pub(crate) fn module_names(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| t.module.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server scratch databases go on: `--env`'s, else DATABASE_URL's, else the throwaway
/// server (started if needed, and said so).
pub(crate) async fn server_url(ctx: &Context, project: &Project) -> Result<String> {
    Ok(match &ctx.env {
        Some(name) => project.environment(name)?.resolve_url()?,
        None => match std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            Some(url) => url,
            None => {
                let server = throwaway();
                let url = server.start_or_reuse(&binaries()?).await?;
                anstream::eprintln!(
                    "pgdbm: DATABASE_URL is not set; using the throwaway server in {}",
                    server.root().display()
                );
                url
            }
        },
    })
}

/// Creates a scratch database on the server of `server_url`, runs `work` with its URL, and
/// drops it afterwards whatever `work` returned (a failure to drop is a warning). It is named
/// like a test database (`pgdbm_test_<secs>_<pid>_<purpose>`), so one a killed run leaves behind
/// is dropped by the next test run's sweep or by `pgdbm test cleanup`.
pub(crate) async fn with_scratch_database<T>(
    server_url: &str,
    purpose: &str,
    work: impl AsyncFnOnce(String) -> Result<T>,
) -> Result<T> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let scratch = format!(
        "{TEST_DATABASE_PREFIX}{secs}_{}_{purpose}",
        std::process::id()
    );
    let scratch_url = url_for(server_url, &scratch)?;
    admin(
        server_url,
        &format!("CREATE DATABASE {}", quote_identifier(&scratch)),
    )
    .await?;
    let result = work(scratch_url).await;
    let dropped = admin(
        server_url,
        &format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&scratch)
        ),
    )
    .await;
    if let Err(e) = dropped {
        anstream::eprintln!(
            "{} could not drop the scratch database `{scratch}`: {e}; `pgdbm test cleanup` drops it once this process is gone",
            styled(PENDING, "warning:")
        );
    }
    result
}

/// The nearest directory, from here up, with a `Cargo.toml` (cargo sqlx runs there).
pub(crate) fn cargo_dir() -> Result<PathBuf> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure(format!("cannot read the current directory: {e}")))?;
    match cwd.ancestors().find(|d| d.join("Cargo.toml").is_file()) {
        Some(d) => Ok(d.to_path_buf()),
        None => fail(format!(
            "no Cargo.toml in {} or above; run pgdbm prepare in the cargo workspace whose queries .sqlx/ holds",
            cwd.display()
        )),
    }
}

/// Fails with the install command when `cargo sqlx` is missing.
async fn check_sqlx_cli(workspace: &Path) -> Result<()> {
    let out = tokio::process::Command::new("cargo")
        .args(["sqlx", "--version"])
        .current_dir(workspace)
        .output()
        .await
        .map_err(|e| {
            Failure(format!(
                "cannot run `cargo` ({e}); pgdbm prepare needs cargo and sqlx-cli on PATH"
            ))
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        if !stdout.contains(" 0.9.") {
            anstream::eprintln!(
                "{} `cargo sqlx --version` says `{}`; pgdbm is built on sqlx 0.9, whose offline data sqlx-cli 0.9 writes (`{INSTALL_SQLX_CLI}`)",
                styled(PENDING, "warning:"),
                stdout.trim()
            );
        }
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("no such command") {
        return fail(format!(
            "`cargo sqlx` is not installed; pgdbm prepare runs sqlx-cli's `cargo sqlx prepare`. Install it with:\n  {INSTALL_SQLX_CLI}"
        ));
    }
    fail(format!(
        "`cargo sqlx --version` failed ({}): {}",
        out.status,
        stderr.trim()
    ))
}

/// `url` with its database replaced by `database` (its user, password and options kept).
fn url_for(url: &str, database: &str) -> Result<String> {
    let mut u = url::Url::parse(url).map_err(|e| {
        Failure(format!(
            "the server's URL is not a URL ({e}); expected postgresql://user:password@host:port/database"
        ))
    })?;
    u.set_path(&format!("/{database}"));
    Ok(u.to_string())
}

/// Runs one statement (outside a transaction) on the database `url` names.
async fn admin(url: &str, sql: &str) -> Result<()> {
    let db = Database::connect(crate::context::admin_config(url).min_connections(1)).await?;
    let r = db.execute(sql, ()).await;
    db.close().await;
    r.map(|_| ()).map_err(Failure::from)
}

/// The connection settings for the scratch database: the environment's (DB_PASSWORD,
/// DB_SSL_*) with the scratch URL, and no DB_SCHEMA (a module's schema is pgdbm.toml's).
pub(crate) fn scratch_config(scratch_url: &str) -> Result<DatabaseConfig> {
    Ok(DatabaseConfig::from_lookup(|k| match k {
        "DATABASE_URL" => Some(scratch_url.to_string()),
        "DB_SCHEMA" => None,
        _ => std::env::var(k).ok(),
    })?
    .min_connections(1)
    .max_connections(2)
    .retry_attempts(1))
}

/// A manager on the scratch database in `target`'s schema, for its migrator.
pub(crate) async fn connect_scratch(scratch_url: &str, target: &Target) -> Result<Database> {
    let mut config = scratch_config(scratch_url)?;
    if let Some(s) = &target.schema {
        config = config.schema(s);
    }
    Ok(Database::connect(config).await?)
}

/// Applies every module's migrations into its schema of the scratch database, in pgdbm.toml's
/// order, as `pgdbm migrate apply --all` does.
pub(crate) async fn migrate(
    ctx: &Context,
    targets: &[Target],
    modules: &ModuleArgs,
    scratch_url: &str,
) -> Result<()> {
    for t in targets {
        let db = connect_scratch(scratch_url, t).await?;
        // A scratch database for sqlx's offline data: lint is `migrate apply`'s job.
        let r = ctx
            .migrator(&db, t, modules)
            .lint(pgdbm_core::lint::LintPolicy::Off)
            .apply_pending()
            .await;
        db.close().await;
        r?;
    }
    Ok(())
}

/// `cargo sqlx prepare --workspace [--check] -- --workspace --all-targets` against the scratch
/// database, its output passed straight through; fails when sqlx does.
async fn cargo_sqlx_prepare(workspace: &Path, scratch_url: &str, check: bool) -> Result<Code> {
    let mut cmd = tokio::process::Command::new("cargo");
    cmd.args(["sqlx", "prepare", "--workspace"]);
    if check {
        cmd.arg("--check");
    }
    cmd.args(["--", "--workspace", "--all-targets"]);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_a_crate) {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(workspace)
        .env("DATABASE_URL", scratch_url)
        // A project may set SQLX_OFFLINE=true for its builds (.cargo/config.toml, the
        // environment, .env); the macros must reach the scratch database here.
        .env("SQLX_OFFLINE", "false");
    let status = cmd
        .status()
        .await
        .map_err(|e| Failure(format!("cannot run `cargo sqlx prepare`: {e}")))?;
    if status.success() {
        return Ok(Code::Ok);
    }
    anstream::eprintln!(
        "{} `cargo sqlx prepare{}` failed ({status}){}",
        styled(BAD, "error:"),
        if check { " --check" } else { "" },
        if check {
            "; refresh .sqlx/ with `pgdbm prepare` and commit it"
        } else {
            ""
        }
    );
    Ok(Code::Error)
}

/// The variables cargo sets for the crate it runs (`cargo run`, `cargo test`): passed on to the
/// inner cargo they would make build scripts that watch them (ring's watches
/// `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …) run again, and everything above them rebuild, on
/// every run.
fn set_by_cargo_for_a_crate(name: &str) -> bool {
    matches!(
        name,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_MANIFEST_LINKS"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || name.starts_with("CARGO_CFG_")
}
