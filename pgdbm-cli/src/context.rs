//! What every command starts from: the project file, the database settings, and the modules a
//! command acts on.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pgdbm_core::project::{ModuleConfig, Project};
use pgdbm_core::{Database, DatabaseConfig, Migrator};

use crate::cli::{Global, ModuleArgs};

/// Why a command failed: a message for the user (printed after `error: `).
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<pgdbm_core::Error> for Failure {
    fn from(e: pgdbm_core::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<pgdbm_core::project::ProjectError> for Failure {
    fn from(e: pgdbm_core::project::ProjectError) -> Self {
        Failure(e.to_string())
    }
}

/// A failure with this message.
pub fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Failure(message.into()))
}

/// The commands' result.
pub type Result<T> = std::result::Result<T, Failure>;

/// One connection to `url` for administrative statements (CREATE/DROP DATABASE): no retries,
/// no schema, no statement or lock timeout.
pub fn admin_config(url: &str) -> DatabaseConfig {
    DatabaseConfig::new(url)
        .min_connections(0)
        .max_connections(1)
        .retry_attempts(1)
        .create_schema(false)
        .statement_timeout(None)
        .lock_timeout(None)
}

/// The project file and global options.
pub struct Context {
    /// The parsed pgdbm.toml, if there is one.
    pub project: Option<Project>,
    /// `--env`.
    pub env: Option<String>,
    /// `--json`.
    pub json: bool,
    /// Where the command acts, once [`locate`](Self::locate) found it.
    location: Option<Location>,
}

/// How the database a command acts on was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--env NAME`: an `[environments.NAME]` of pgdbm.toml.
    Environment(String),
    /// `DATABASE_URL`.
    DatabaseUrl,
    /// pgdbm.toml's default environment (`[project] default_env`, else `dev`), with no
    /// `DATABASE_URL`.
    DefaultEnvironment(String),
    /// `DB_HOST`, `DB_PORT`, `DB_NAME` or `DB_USER`.
    Variables,
    /// Nothing set: the database the examples use, on the local server.
    LocalDefault,
}

impl Source {
    /// Whether the user named the database (a command that writes needs that).
    pub fn is_explicit(&self) -> bool {
        *self != Source::LocalDefault
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Environment(name) => write!(f, "--env {name}"),
            Source::DatabaseUrl => f.write_str("DATABASE_URL"),
            Source::DefaultEnvironment(name) => {
                write!(f, "pgdbm.toml's default environment `{name}`")
            }
            Source::Variables => f.write_str("DB_HOST/DB_PORT/DB_NAME/DB_USER"),
            Source::LocalDefault => f.write_str(
                "nothing set: the local default, as the examples use; set DATABASE_URL or --env to choose",
            ),
        }
    }
}

/// Where a command acts: the URL (password masked), its database, and how it was chosen.
#[derive(Clone, Debug)]
pub struct Location {
    /// For [`Source::LocalDefault`], the local server's URL of the default database.
    local_url: Option<String>,
    /// The URL as shown, password masked.
    pub shown: String,
    /// The database name.
    pub database: String,
    /// How it was chosen.
    pub source: Source,
}

/// What a command does to the database, for [`Context::locate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only: may act on the local default, saying so.
    Read,
    /// Writes: refuses unless the database was named. The words name the command.
    Write(&'static str),
}

/// One module a command acts on.
#[derive(Clone, Debug)]
pub struct Target {
    /// The module name the history records.
    pub module: String,
    /// Its migrations directory.
    pub dir: PathBuf,
    /// Its schema.
    pub schema: Option<String>,
}

impl Context {
    /// Reads `.env` and the project file (`--config`, else pgdbm.toml here or above).
    pub fn new(global: &Global) -> Result<Context> {
        // `.env` goes into the environment first, as the library's DatabaseConfig::from_env does.
        let _ = DatabaseConfig::from_env();
        let path = match &global.config {
            Some(p) if !p.is_file() => {
                return fail(format!(
                    "--config `{}` does not exist; give the path of a pgdbm.toml",
                    p.display()
                ));
            }
            Some(p) => Some(p.clone()),
            None => std::env::current_dir().ok().and_then(|d| Project::find(&d)),
        };
        let project = match path {
            Some(p) => Some(Project::load(&p)?),
            None => None,
        };
        Ok(Context {
            project,
            env: global.env.clone(),
            json: global.json,
            location: None,
        })
    }

    /// How the database is chosen: `--env`, else `DATABASE_URL`, else pgdbm.toml's default
    /// environment, else the `DB_*` variables, else nothing (the local default).
    fn source(&self) -> Source {
        let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
        if let Some(name) = &self.env {
            return Source::Environment(name.clone());
        }
        if set("DATABASE_URL") {
            return Source::DatabaseUrl;
        }
        if let Some(p) = &self.project
            && p.environment(p.default_env()).is_ok()
        {
            return Source::DefaultEnvironment(p.default_env().to_string());
        }
        if ["DB_HOST", "DB_PORT", "DB_NAME", "DB_USER"]
            .iter()
            .any(|k| set(k))
        {
            return Source::Variables;
        }
        Source::LocalDefault
    }

    /// Finds where the command acts, refuses a command that writes when the database was not
    /// named (as sqlx-cli does), and says where on stderr (in `--json` the documents carry it).
    ///
    /// The local default is the database the examples use: the project's name (pgdbm.toml's
    /// `[project] name`, else `postgres`) on the server on localhost:5432, or else on the
    /// throwaway server the tests start.
    pub async fn locate(&mut self, access: Access) -> Result<()> {
        let source = self.source();
        if let (Access::Write(what), false) = (access, source.is_explicit()) {
            return fail(format!(
                "`pgdbm {what}` changes a database, and none was named: set DATABASE_URL (e.g. postgresql://user@host:5432/mydb), pass --env NAME (an [environments.NAME] of pgdbm.toml), or declare one in pgdbm.toml as [project] default_env. Read-only commands (migrate status, inspect …) use the local default and say so"
            ));
        }
        let local_url = if source.is_explicit() {
            None
        } else {
            let name = self
                .project
                .as_ref()
                .and_then(|p| p.project.as_ref())
                .map_or("postgres", |p| p.name.as_str());
            Some(pgdbm_core::testing::local_database_url(name).await?)
        };
        self.location = Some(Location {
            local_url,
            shown: String::new(),
            database: String::new(),
            source,
        });
        let config = self.database_config()?;
        let location = self.location.as_mut().expect("set above");
        location.shown = config.to_string();
        location.database = config.get_database().to_string();
        if !self.json {
            anstream::eprintln!(
                "{} {} ({})",
                crate::output::styled(crate::output::HEADING, "database:"),
                location.shown,
                location.source
            );
        }
        Ok(())
    }

    /// Where the command acts, as the `target` of its `--json` documents.
    pub fn target_json(&self, schema: Option<&str>) -> serde_json::Value {
        match &self.location {
            Some(l) => serde_json::json!({
                "url": l.shown,
                "database": l.database,
                "schema": schema,
                "source": l.source.to_string(),
            }),
            None => serde_json::Value::Null,
        }
    }

    /// Prints `--json` output, with where it acted: an object gets a `target` key, a list
    /// becomes `{"target": …, "rows": [...]}`.
    pub fn print_json(&self, value: serde_json::Value, schema: Option<&str>) {
        let target = self.target_json(schema);
        let value = match value {
            serde_json::Value::Object(mut o) => {
                o.insert("target".into(), target);
                serde_json::Value::Object(o)
            }
            other => serde_json::json!({"target": target, "rows": other}),
        };
        crate::output::json(&value);
    }

    /// The connection settings: DATABASE_URL (and the other DB_* variables), else the project
    /// file's environment (`--env`, else `[project] default_env` when the file declares it).
    pub fn database_config(&self) -> Result<DatabaseConfig> {
        self.database_config_with(|_, value| value)
    }

    /// [`database_config`](Self::database_config) with every setting it reads passed through
    /// `map(variable, value)` first: DATABASE_URL (also when pgdbm.toml's environment supplies
    /// the URL), DB_NAME and the other DB_* variables. `pgdbm db` uses it to reach the
    /// maintenance database of the same server with the same credentials and TLS settings.
    pub fn database_config_with(
        &self,
        map: impl Fn(&str, Option<String>) -> Option<String>,
    ) -> Result<DatabaseConfig> {
        if let Some(url) = self.location.as_ref().and_then(|l| l.local_url.clone()) {
            return Ok(DatabaseConfig::from_lookup(|k| {
                map(k, (k == "DATABASE_URL").then(|| url.clone()))
            })?);
        }
        let url_set = std::env::var("DATABASE_URL").is_ok_and(|v| !v.trim().is_empty());
        let env = match (&self.project, &self.env) {
            (Some(p), Some(name)) => Some(p.environment(name)?),
            (None, Some(_)) => {
                return fail(
                    "--env names an [environments.NAME] section of pgdbm.toml, and none was found (here or above, or --config FILE)",
                );
            }
            (Some(p), None) if !url_set => p.environment(p.default_env()).ok(),
            _ => None,
        };
        let Some(e) = env else {
            // `.env` was read into the environment by `Context::new`.
            return Ok(DatabaseConfig::from_lookup(|k| {
                map(k, std::env::var(k).ok())
            })?);
        };
        if !url_set && self.env.is_none() {
            tracing::debug!(environment = %e.name, "pgdbm: DATABASE_URL is not set; using pgdbm.toml's default environment");
        }
        // The environment's settings stand in for the variables the library reads, as pgdbm
        // (Python)'s CLI builds its connection from them; set variables still win over its
        // schema and TLS settings.
        let url = e.resolve_url()?;
        let mode = e
            .ssl_mode
            .clone()
            .or_else(|| e.ssl_enabled.then(|| "require".to_string()));
        let from_env = [
            (
                "DB_SCHEMA",
                (e.schema != "public").then(|| e.schema.clone()),
            ),
            ("DB_SSL_MODE", mode),
            ("DB_SSL_CA_FILE", e.ssl_ca_file.clone()),
            ("DB_SSL_CERT_FILE", e.ssl_cert_file.clone()),
            ("DB_SSL_KEY_FILE", e.ssl_key_file.clone()),
        ];
        Ok(DatabaseConfig::from_lookup(|k| {
            if k == "DATABASE_URL" {
                return map(k, Some(url.clone()));
            }
            let set = std::env::var(k).ok().filter(|v| !v.trim().is_empty());
            map(
                k,
                set.or_else(|| {
                    from_env
                        .iter()
                        .find(|(name, _)| *name == k)
                        .and_then(|(_, v)| v.clone())
                }),
            )
        })?)
    }

    /// The modules `args` selects, in the order a command acts on them.
    pub fn targets(&self, args: &ModuleArgs) -> Result<Vec<Target>> {
        let project = self.project.as_ref();
        // Without --module, a file that declares modules but no top-level one means all of
        // them, as pgdbm (Python)'s CLI does.
        let implicit_all = args.module.is_none()
            && args.dir.is_none()
            && args.schema.is_none()
            && project
                .is_some_and(|p| p.default_module.migrations.is_none() && !p.modules.is_empty());
        if args.all || implicit_all {
            let Some(p) = project else {
                return fail(
                    "--all needs a pgdbm.toml (here or above, or --config FILE) declaring [modules.NAME] sections",
                );
            };
            // The set the macros check queries against: the top-level module too.
            let set = p.module_set()?;
            if set.is_empty() {
                return Ok(vec![target_of(&p.default_module, p)?]);
            }
            return set.into_iter().map(|m| target_of(m, p)).collect();
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
        });
        if let (Some(name), Some(p), None, None) = (&args.module, project, from_file, &args.dir) {
            let mut declared: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
            if p.default_module.migrations.is_some()
                && !declared.contains(&p.default_module.name.as_str())
            {
                declared.push(&p.default_module.name);
            }
            return fail(format!(
                "`{}` declares no module `{name}` (it declares: {}); pick one of those, or give --dir",
                p.path.display(),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ));
        }
        let mut t = match from_file {
            Some(m) => Target {
                module: m.name.clone(),
                dir: m
                    .migrations
                    .as_ref()
                    .map_or_else(|| PathBuf::from("./migrations"), |d| d.path.clone()),
                schema: m.schema.clone(),
            },
            None => Target {
                module: args.module.clone().unwrap_or_default(),
                dir: "./migrations".into(),
                schema: None,
            },
        };
        if let Some(d) = &args.dir {
            t.dir = d.clone();
        }
        if args.schema.is_some() {
            t.schema = args.schema.clone();
        }
        Ok(vec![t])
    }

    /// A manager on `target`'s schema with a small pool (a command needs one or two connections).
    pub async fn connect(&self, target: &Target) -> Result<Database> {
        let mut config = self
            .database_config()?
            .min_connections(1)
            .max_connections(2)
            // A command reports an unreachable server at once rather than retrying for seconds,
            // and creates a schema only when it writes (the migrator does, on apply).
            .retry_attempts(1)
            .create_schema(false);
        if let Some(s) = &target.schema {
            config = config.schema(s);
        }
        match Database::connect(config).await {
            Ok(db) => Ok(db),
            Err(pgdbm_core::Error::Connect(e))
                if self
                    .location
                    .as_ref()
                    .is_some_and(|l| !l.source.is_explicit())
                    && matches!(&e.source, pgdbm_core::sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000")) =>
            {
                fail(format!(
                    "the local default database `{}` does not exist yet (`cargo run --example standalone_service` creates and migrates it); or name another with DATABASE_URL or --env",
                    e.database
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The migrator for `target` on `db`, with the options of `args`.
    pub fn migrator(&self, db: &Database, target: &Target, args: &ModuleArgs) -> Migrator {
        let module = if target.module.is_empty() {
            db.schema().unwrap_or("default").to_string()
        } else {
            target.module.clone()
        };
        let mut m = Migrator::new(db, &target.dir, &module).allow_missing(args.allow_missing);
        let table = args
            .table
            .clone()
            .or_else(|| self.project.as_ref().map(|p| p.migrations_table.clone()));
        if let Some(table) = &table {
            m = m.table(table);
        }
        if let Some(secs) = args.lock_timeout {
            m = m.lock_timeout(Duration::from_secs_f64(secs.max(0.0)));
        }
        if let Some(secs) = args.ddl_lock_timeout {
            m = m.ddl_lock_timeout(Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0))));
        }
        if let Some(n) = args.ddl_lock_attempts {
            m = m.ddl_lock_attempts(n);
        }
        if let Some(p) = &self.project {
            // [lint] (its rule names were checked when pgdbm.toml was read).
            let options = pgdbm_core::lint::LintOptions::from_config(&p.lint).unwrap_or_default();
            m = m.lint(p.lint.policy).lint_options(options);
        }
        if args.transaction_pooler {
            m = m.transaction_pooler(true);
        } else if args.direct {
            m = m.transaction_pooler(false);
        }
        m
    }
}

fn target_of(m: &ModuleConfig, project: &Project) -> Result<Target> {
    let Some(dir) = &m.migrations else {
        return fail(format!(
            "module `{}` in `{}` has no migrations_path; add one",
            m.name,
            project.path.display()
        ));
    };
    Ok(Target {
        module: m.name.clone(),
        dir: dir.path.clone(),
        schema: m.schema.clone(),
    })
}
