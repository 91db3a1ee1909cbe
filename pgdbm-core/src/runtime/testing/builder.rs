//! What goes into a test database: the options of [`TestDatabaseBuilder`], the template they
//! key (one module's migrations, or every module of a `pgdbm.toml`), and the clone made of it.

use std::path::{Path, PathBuf};

use super::template_db::{self, ModuleSpec, TemplateSpec};
use super::{SWEPT, TestDatabase, test_server};
use crate::ident::{IdentifierKind, validate_identifier};
use crate::migrations::MigrationSet;
use crate::project::{FILE_NAME, Project};
use crate::runtime::config::DatabaseConfig;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};

/// Options for a test database: migrations, module, schema, fixtures.
#[derive(Clone, Debug, Default)]
pub struct TestDatabaseBuilder {
    project: Option<PathBuf>,
    migrations: Option<PathBuf>,
    module: Option<String>,
    schema: Option<String>,
    fixtures: Vec<PathBuf>,
    min_connections: Option<usize>,
    max_connections: Option<usize>,
    server: Option<String>,
}

impl TestDatabaseBuilder {
    /// Apply the `*.sql` files of this directory (made absolute against the current directory,
    /// which `cargo test` sets to the crate's root).
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn migrations(mut self, dir: impl Into<PathBuf>) -> Self {
        self.migrations = Some(dir.into());
        self
    }

    /// Migrate every module of a `pgdbm.toml` into its schema, in the order `pgdbm prepare`
    /// and `pgdbm migrate apply --all` use ([`Project::module_set`]): the set `tsql!` checks
    /// queries against. `path` is the file, or a directory to look for it from (as the macros
    /// do: that directory, then up to the workspace root); the test's `Database` renders into
    /// the top-level `schema` unless [`schema`](Self::schema) says otherwise. Instead of
    /// [`migrations`](Self::migrations) and [`module`](Self::module).
    ///
    /// [`Project::module_set`]: crate::project::Project::module_set
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn project(mut self, path: impl Into<PathBuf>) -> Self {
        self.project = Some(path.into());
        self
    }

    /// The module the migrations are recorded under (default: the schema, else `default`).
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn module(mut self, module: &str) -> Self {
        self.module = Some(module.to_string());
        self
    }

    /// Render `{{tables.x}}` into this schema (created by the migrations run).
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = Some(schema.to_string());
        self
    }

    /// A SQL file run after the migrations (templated, several statements allowed).
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn fixture(mut self, path: impl Into<PathBuf>) -> Self {
        self.fixtures.push(path.into());
        self
    }

    /// Pool size of the test's `Database` (default 1 to 5).
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn pool_size(mut self, min: usize, max: usize) -> Self {
        self.min_connections = Some(min);
        self.max_connections = Some(max);
        self
    }

    /// Use this server (its maintenance-database URL) instead of discovering one.
    #[must_use = "the builder does nothing until `build().await`"]
    pub fn server(mut self, admin_url: impl Into<String>) -> Self {
        self.server = Some(admin_url.into());
        self
    }

    pub(super) async fn admin_url(&self) -> Result<String> {
        match &self.server {
            Some(u) => Ok(u.clone()),
            None => Ok(test_server().await?.admin_url.clone()),
        }
    }

    /// Builds the template if needed and returns its name (`None` when there is nothing to
    /// apply: the test database starts empty), with the schema the test's `Database` uses.
    pub(super) async fn template(
        &self,
        admin_url: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        if let Some(s) = &self.schema {
            validate_identifier(s, IdentifierKind::Schema)?;
        }
        let (modules, schema) = match &self.project {
            Some(path) => self.project_modules(path)?,
            None => (self.own_module()?, self.schema.clone()),
        };
        let mut fixtures = Vec::new();
        for f in &self.fixtures {
            let content = std::fs::read_to_string(f).map_err(|e| {
                Error::config(
                    "fixtures",
                    format!("cannot read fixture `{}`: {e}", f.display()),
                )
            })?;
            fixtures.push((f.display().to_string(), content));
        }
        if modules.is_empty() && fixtures.is_empty() && schema.is_none() {
            return Ok((None, schema));
        }
        let spec = TemplateSpec {
            modules,
            schema: schema.as_deref(),
            fixtures,
        };
        let name = template_db::ensure_template(admin_url, &spec).await?;
        Ok((Some(name), schema))
    }

    /// The module of [`migrations`](Self::migrations), if given.
    fn own_module(&self) -> Result<Vec<ModuleSpec>> {
        let Some(d) = &self.migrations else {
            return Ok(Vec::new());
        };
        let dir = absolute(d)?;
        let set =
            MigrationSet::from_dir(&dir).map_err(|e| Error::config("migrations", e.to_string()))?;
        let module = self
            .module
            .clone()
            .or_else(|| self.schema.clone())
            .unwrap_or_else(|| "default".into());
        Ok(vec![ModuleSpec {
            dir,
            set,
            module,
            schema: self.schema.clone(),
        }])
    }

    /// Every module of the `pgdbm.toml` at or above `path`, and the schema the test uses.
    fn project_modules(&self, path: &Path) -> Result<(Vec<ModuleSpec>, Option<String>)> {
        let path = absolute(path)?;
        let file = if path.is_dir() {
            Project::find(&path).ok_or_else(|| {
                Error::config(
                    "project",
                    format!(
                        "no {FILE_NAME} in {} or above it (up to the workspace root)",
                        path.display()
                    ),
                )
            })?
        } else {
            path
        };
        let project = Project::load(&file).map_err(|e| Error::config("project", e.to_string()))?;
        let mut modules = Vec::new();
        for m in project
            .module_set()
            .map_err(|e| Error::config("project", e.to_string()))?
        {
            let Some(dir) = &m.migrations else { continue };
            let set = MigrationSet::from_dir(&dir.path)
                .map_err(|e| Error::config("migrations", e.to_string()))?;
            modules.push(ModuleSpec {
                dir: dir.path.clone(),
                set,
                module: m.name.clone(),
                schema: m.schema.clone(),
            });
        }
        let schema = self
            .schema
            .clone()
            .or_else(|| project.default_module.schema.clone());
        Ok((modules, schema))
    }

    /// Creates the database (a clone of the template) and connects to it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no server is found (field `test_server`) or the migrations or a
    /// fixture cannot be read or a fixture fails (`migrations`, `fixtures`); [`Error::Identifier`]
    /// for an invalid schema; [`Error::Migration`] when a migration fails; [`Error::Connect`] or
    /// [`Error::Query`] when the server refuses (a user that may not `CREATE DATABASE`, say).
    pub async fn build(self) -> Result<TestDatabase> {
        let admin_url = self.admin_url().await?;
        sweep_once(&admin_url).await;
        let (template, schema) = self.template(&admin_url).await?;
        let name = template_db::create_test_db(&admin_url, template.as_deref()).await?;
        // From here on the guard drops the database whatever happens.
        let mut guard = TestDatabase {
            db: None,
            name,
            admin_url,
            template,
        };
        let mut config = DatabaseConfig::new(template_db::url_for(&guard.admin_url, &guard.name))
            .min_connections(self.min_connections.unwrap_or(1))
            .max_connections(self.max_connections.unwrap_or(5))
            .retry_attempts(1);
        if let Some(s) = &schema {
            config = config.schema(s);
        }
        guard.db = Some(Database::connect(config).await?);
        Ok(guard)
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| Error::config("migrations", e.to_string()))
}

pub(super) async fn sweep_once(admin_url: &str) {
    if SWEPT.set(()).is_ok() {
        match template_db::drop_stale(admin_url).await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(
                    count = dropped.len(),
                    "pgdbm: dropped test databases left by killed runs"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "pgdbm: could not look for leftover test databases")
            }
        }
    }
}
