//! `pgdbm.toml`: one project file for pgdbm (Python) and pgdbm (Rust).
//!
//! The file is pgdbm (Python)'s CLI configuration plus three top-level keys of ours:
//!
//! ```toml
//! schema = "myservice"        # ours: the default module's schema (what tsql! without module = uses)
//! migrations = "migrations"   # ours: its migrations directory
//! module = "myservice"        # ours: the module name its migrations are recorded under
//!
//! [project]                   # Python's: name (required), default_env = "dev"
//! name = "myservice"
//!
//! [database]                  # Python's: migrations_table = "schema_migrations"
//!
//! [environments.prod]         # Python's: url / connection_string / host, port, database, …
//! url = "${DATABASE_URL}"
//!
//! [modules.billing]           # both: migrations_path (Python's; `migrations` is our alias),
//! migrations_path = "billing/migrations"   # schema, mode, depends_on
//! schema = "billing"
//! depends_on = ["myservice"]
//!
//! [shared_pool]               # Python's: min_connections, max_connections, modules
//!
//! [lint]                      # ours: policy = "deny" | "warn" | "off", exclude, include
//! ```
//!
//! pgdbm (Python) ignores keys it does not know, so it reads this file; we accept every key it
//! knows. Unlike Python, a key *neither* side knows is an error here (naming the key, its
//! section, the file and line, and the keys that section takes), so a misspelling never silently
//! drops a setting. Relative paths are resolved against the file's directory.
//!
//! Pure: no database, no async runtime; built without the `runtime` feature too.

use std::path::{Path, PathBuf};

mod env;
mod error;
mod fields;
mod lint;
mod order;
mod parse;
#[cfg(test)]
mod tests;

pub use error::{Location, ProjectError};
#[cfg(feature = "lint")]
pub(crate) use lint::rule_names;
pub use lint::{LintConfig, LintPolicy, UnknownLintPolicy};

/// The file name looked for by [`Project::find`].
pub const FILE_NAME: &str = "pgdbm.toml";

/// A parsed `pgdbm.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Project {
    /// The file it was read from (as given to [`load`](Self::load) or [`parse`](Self::parse)).
    pub path: PathBuf,
    /// `[project]`, if present.
    pub project: Option<ProjectInfo>,
    /// `[database] migrations_table` (default `schema_migrations`), a valid identifier.
    pub migrations_table: String,
    /// The top-level module: `schema`, `migrations` and its name `module` (default: the schema,
    /// else `default`). When `[modules.NAME]` has the same name they are one module: values
    /// missing on one side come from the other, and values on both sides must agree.
    pub default_module: ModuleConfig,
    /// `[environments.NAME]`, in file order.
    pub environments: Vec<Environment>,
    /// `[modules.NAME]`, in file order. [`module_order`](Self::module_order) sorts them.
    pub modules: Vec<ModuleConfig>,
    /// `[shared_pool]`, if present.
    pub shared_pool: Option<SharedPoolConfig>,
    /// `[lint]` (ours): what `apply` does with migration lint findings (default: deny).
    pub lint: LintConfig,
}

/// `[project]`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectInfo {
    /// `name` (required, as pgdbm (Python) requires it).
    pub name: String,
    /// `default_env` (default `dev`).
    pub default_env: String,
}

/// A module: a schema and the migrations that define it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModuleConfig {
    /// The module name (the `NAME` of `[modules.NAME]`); migrations are recorded under it.
    pub name: String,
    /// `schema`: where its `{{tables.x}}` render; `None` for bare names (`schema = ""` or absent).
    pub schema: Option<String>,
    /// `migrations_path` or its alias `migrations`.
    pub migrations: Option<MigrationsDir>,
    /// `mode` (default [`ModuleMode::Dual`]).
    pub mode: ModuleMode,
    /// `depends_on`: modules whose migrations run first. Each names a `[modules.*]` section.
    pub depends_on: Vec<String>,
}

/// A migrations directory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationsDir {
    /// Resolved against the directory of the file.
    pub path: PathBuf,
    /// As written in the file, for messages.
    pub written: String,
}

/// `mode` of a module, as pgdbm (Python) defines it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ModuleMode {
    /// `standalone`: the module owns its database.
    Standalone,
    /// `library`: the module runs on a database someone else owns.
    Library,
    /// `dual` (the default): either.
    #[default]
    Dual,
}

impl ModuleMode {
    /// Every mode, as written in the file.
    pub const NAMES: [&'static str; 3] = ["standalone", "library", "dual"];

    /// The mode as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleMode::Standalone => "standalone",
            ModuleMode::Library => "library",
            ModuleMode::Dual => "dual",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "standalone" => Some(ModuleMode::Standalone),
            "library" => Some(ModuleMode::Library),
            "dual" => Some(ModuleMode::Dual),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModuleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[environments.NAME]`: how to reach a database. Its `Debug` masks passwords.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Environment {
    /// The `NAME` of `[environments.NAME]`.
    pub name: String,
    /// `url`, as written (`"${VAR}"` is expanded by [`resolve_url`](Self::resolve_url)).
    pub url: Option<String>,
    /// `connection_string`, as written (expanded like `url`).
    pub connection_string: Option<String>,
    /// `host`.
    pub host: Option<String>,
    /// `port` (default 5432).
    pub port: u16,
    /// `database`.
    pub database: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `schema` (default `public`), a valid identifier.
    pub schema: String,
    /// `ssl_enabled` (default false).
    pub ssl_enabled: bool,
    /// `ssl_mode`.
    pub ssl_mode: Option<String>,
    /// `ssl_ca_file`, as written.
    pub ssl_ca_file: Option<String>,
    /// `ssl_cert_file`, as written.
    pub ssl_cert_file: Option<String>,
    /// `ssl_key_file`, as written.
    pub ssl_key_file: Option<String>,
}

/// `[shared_pool]`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedPoolConfig {
    /// `min_connections` (default 10).
    pub min_connections: u32,
    /// `max_connections` (default 100), at least `min_connections`.
    pub max_connections: u32,
    /// `modules`: the modules sharing the pool, each a `[modules.*]` section.
    pub modules: Vec<String>,
}

/// The nearest `name` that `found` accepts, in `start_dir` or an ancestor, stopping after the
/// Cargo workspace root (the first ancestor other than `start_dir` whose `Cargo.toml` has a
/// `[workspace]` section): where a crate's `pgdbm.toml` or `.sqlx/` is looked for.
pub fn find_near(start_dir: &Path, name: &str, found: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    for dir in start_dir.ancestors() {
        let candidate = dir.join(name);
        if found(&candidate) {
            return Some(candidate);
        }
        if dir != start_dir
            && std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|t| t.contains("[workspace]"))
        {
            break;
        }
    }
    None
}

impl Project {
    /// The `pgdbm.toml` for `start_dir`: in it or the nearest ancestor that has one, stopping
    /// after the Cargo workspace root (the first ancestor other than `start_dir` whose
    /// `Cargo.toml` has a `[workspace]` section).
    pub fn find(start_dir: &Path) -> Option<PathBuf> {
        find_near(start_dir, FILE_NAME, Path::is_file)
    }

    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    ///
    /// [`ProjectError::Read`] when the file cannot be read, else the errors of
    /// [`parse`](Self::parse).
    pub fn load(path: &Path) -> Result<Project, ProjectError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProjectError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as the file at `path` (relative paths in it resolve against its directory).
    ///
    /// # Errors
    ///
    /// A [`ProjectError`] naming the place in the file: [`Syntax`](ProjectError::Syntax) for
    /// invalid TOML, [`UnknownKey`](ProjectError::UnknownKey),
    /// [`WrongType`](ProjectError::WrongType) or [`Invalid`](ProjectError::Invalid) for a bad
    /// entry, [`UnknownModule`](ProjectError::UnknownModule) for an undeclared dependency and
    /// [`Cycle`](ProjectError::Cycle) for circular `depends_on`.
    pub fn parse(text: &str, path: &Path) -> Result<Project, ProjectError> {
        parse::parse(text, path)
    }

    /// The `[modules.NAME]` section called `name`.
    pub fn module(&self, name: &str) -> Option<&ModuleConfig> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The `[modules.*]` sections in the order their migrations run: every module after the
    /// modules it `depends_on`. Deterministic, and the order pgdbm (Python)'s
    /// `resolve_module_order` gives: modules are taken in file order, each preceded
    /// (depth-first) by its not yet placed dependencies in the order `depends_on` lists them.
    ///
    /// A dependency cycle is an error naming it (`a → b → a`); [`load`](Self::load) already
    /// refuses such a file.
    ///
    /// # Errors
    ///
    /// [`ProjectError::Cycle`] when modules depend on each other in a circle.
    pub fn module_order(&self) -> Result<Vec<&ModuleConfig>, ProjectError> {
        order::module_order(&self.modules, &self.path)
    }

    /// Every module of the file, in the order their migrations run: the set `tsql!` checks
    /// queries against, and the one every command and helper that walks modules uses (`pgdbm
    /// prepare`, `migrate … --all`, tenants, test databases), so that none of them can miss a
    /// module the macros accept.
    ///
    /// That is the [`module_order`](Self::module_order) of the `[modules.*]` sections, preceded
    /// by the top-level module when it has migrations and no `[modules.NAME]` twin (a twin is
    /// already one of the sections, with the top-level values merged in). It goes first because
    /// no section can depend on it: `depends_on` names sections only.
    ///
    /// ```
    /// # use std::path::Path;
    /// # use pgdbm_core::project::Project;
    /// let text = "schema = \"shop\"\nmigrations = \"migrations\"\n\n\
    ///             [modules.billing]\nmigrations_path = \"billing\"\nschema = \"billing\"\n";
    /// let p = Project::parse(text, Path::new("/srv/pgdbm.toml")).unwrap();
    /// let names: Vec<&str> = p.module_set().unwrap().iter().map(|m| m.name.as_str()).collect();
    /// assert_eq!(names, ["shop", "billing"]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ProjectError::Cycle`], as [`module_order`](Self::module_order).
    pub fn module_set(&self) -> Result<Vec<&ModuleConfig>, ProjectError> {
        let mut set = self.module_order()?;
        let top = &self.default_module;
        if top.migrations.is_some() && self.module(&top.name).is_none() {
            set.insert(0, top);
        }
        Ok(set)
    }

    /// `[environments.NAME]`; an error listing the declared environments if there is none.
    ///
    /// # Errors
    ///
    /// [`ProjectError::UnknownEnvironment`], listing the declared ones, when there is no
    /// `[environments.NAME]` called `name`.
    pub fn environment(&self, name: &str) -> Result<&Environment, ProjectError> {
        self.environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ProjectError::UnknownEnvironment {
                path: self.path.clone(),
                name: name.to_string(),
                declared: self.environments.iter().map(|e| e.name.clone()).collect(),
            })
    }

    /// `[project] default_env`, else `dev` (pgdbm (Python)'s default).
    pub fn default_env(&self) -> &str {
        self.project
            .as_ref()
            .map_or("dev", |p| p.default_env.as_str())
    }
}
