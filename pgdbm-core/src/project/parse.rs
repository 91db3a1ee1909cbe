//! The sections of pgdbm.toml: every key checked against its section's list, and the checks
//! that need the whole file (module references, the top-level module, cycles).

use std::ops::Range;
use std::path::Path;

use toml::de::DeTable;

use super::fields::{Cx, Field, fields};
use super::{
    Environment, ModuleConfig, ModuleMode, Project, ProjectError, ProjectInfo, SharedPoolConfig,
};
use crate::ident::{IdentifierKind, validate_identifier};

const TOP: &[&str] = &[
    "schema",
    "migrations",
    "module",
    "project",
    "database",
    "environments",
    "modules",
    "shared_pool",
    "lint",
];
const PROJECT: &[&str] = &["name", "default_env"];
const DATABASE: &[&str] = &["migrations_table"];
const ENVIRONMENT: &[&str] = &[
    "url",
    "connection_string",
    "host",
    "port",
    "database",
    "user",
    "password",
    "schema",
    "ssl_enabled",
    "ssl_mode",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
];
const MODULE: &[&str] = &[
    "migrations_path",
    "migrations",
    "schema",
    "mode",
    "depends_on",
];
const SHARED_POOL: &[&str] = &["min_connections", "max_connections", "modules"];

/// A module name used by `depends_on` or `shared_pool.modules`, checked once all are known.
struct ModuleRef {
    key: String,
    span: Range<usize>,
    name: String,
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Project, ProjectError> {
    let doc = DeTable::parse(text).map_err(|e| ProjectError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let cx = Cx {
        path,
        text,
        base: path.parent().unwrap_or(Path::new(".")),
    };
    let (mut schema, mut migrations, mut module) = (None, None, None);
    let (mut schema_at, mut migrations_at) = (0..0, 0..0);
    let mut project = Project {
        path: path.to_path_buf(),
        project: None,
        migrations_table: "schema_migrations".into(),
        default_module: ModuleConfig::named(String::new()),
        environments: Vec::new(),
        modules: Vec::new(),
        shared_pool: None,
        lint: Default::default(),
    };
    let mut refs = Vec::new();
    for f in fields(doc.get_ref(), "") {
        match f.key {
            "schema" => (schema, schema_at) = (cx.schema(&f)?, f.span.clone()),
            "migrations" => (migrations, migrations_at) = (Some(cx.dir(&f)?), f.span.clone()),
            "module" => module = Some(cx.name(&f)?),
            "project" => project.project = Some(cx.project(&f)?),
            "database" => project.migrations_table = cx.database(&f)?,
            "environments" => {
                for e in fields(
                    cx.table(&f, "a table of [environments.NAME] sections")?,
                    "environments",
                ) {
                    project.environments.push(cx.environment(&e)?);
                }
            }
            "modules" => {
                for m in fields(
                    cx.table(&f, "a table of [modules.NAME] sections")?,
                    "modules",
                ) {
                    project.modules.push(cx.module(&m, &mut refs)?);
                }
            }
            "shared_pool" => project.shared_pool = Some(cx.shared_pool(&f, &mut refs)?),
            "lint" => project.lint = cx.lint(&f)?,
            _ => return Err(cx.unknown(&f, "the top level", TOP)),
        }
    }
    let declared: Vec<String> = project.modules.iter().map(|m| m.name.clone()).collect();
    if let Some(r) = refs.into_iter().find(|r| !declared.contains(&r.name)) {
        return Err(ProjectError::UnknownModule {
            at: cx.at(&r.span),
            key: r.key,
            dependency: r.name,
            declared,
        });
    }

    let name = module
        .or_else(|| schema.clone())
        .unwrap_or_else(|| "default".into());
    let mut default = ModuleConfig {
        schema,
        migrations,
        ..ModuleConfig::named(name)
    };
    if let Some(section) = project.modules.iter_mut().find(|m| m.name == default.name) {
        let name = section.name.clone();
        let disagree = |key: &str, span: &Range<usize>, top: &str, theirs: &str| {
            cx.invalid_at(
                span,
                key,
                format!(
                    "the top-level module is `{name}` and so is [modules.{name}], which makes them one module, but the top level says {key} `{top}` and the section `{theirs}`; make them agree, or name the top-level module differently with module = \"…\""
                ),
            )
        };
        match (&default.schema, &section.schema) {
            (Some(a), Some(b)) if a != b => return Err(disagree("schema", &schema_at, a, b)),
            (Some(a), None) => section.schema = Some(a.clone()),
            (None, Some(b)) => default.schema = Some(b.clone()),
            _ => {}
        }
        match (&default.migrations, &section.migrations) {
            (Some(a), Some(b)) if a.path != b.path => {
                return Err(disagree(
                    "migrations",
                    &migrations_at,
                    &a.written,
                    &b.written,
                ));
            }
            (Some(a), None) => section.migrations = Some(a.clone()),
            (None, Some(b)) => default.migrations = Some(b.clone()),
            _ => {}
        }
        default.mode = section.mode;
        default.depends_on = section.depends_on.clone();
    }
    project.default_module = default;
    project.module_order()?;
    Ok(project)
}

impl ModuleConfig {
    fn named(name: String) -> Self {
        ModuleConfig {
            name,
            schema: None,
            migrations: None,
            mode: ModuleMode::Dual,
            depends_on: Vec::new(),
        }
    }
}

impl Cx<'_> {
    fn project(&self, f: &Field<'_, '_>) -> Result<ProjectInfo, ProjectError> {
        let mut name = None;
        let mut default_env = "dev".to_string();
        for k in fields(self.table(f, "a table")?, "project") {
            match k.key {
                "name" => name = Some(self.name(&k)?),
                "default_env" => default_env = self.name(&k)?,
                _ => return Err(self.unknown(&k, "[project]", PROJECT)),
            }
        }
        let name = name.ok_or_else(|| {
            self.invalid(
                f,
                "[project] needs a name (pgdbm (Python) requires one): name = \"…\"".into(),
            )
        })?;
        Ok(ProjectInfo { name, default_env })
    }

    fn database(&self, f: &Field<'_, '_>) -> Result<String, ProjectError> {
        let mut table = "schema_migrations".to_string();
        for k in fields(self.table(f, "a table")?, "database") {
            match k.key {
                "migrations_table" => {
                    table = self.string(&k)?;
                    validate_identifier(&table, IdentifierKind::MigrationsTable)
                        .map_err(|e| self.invalid(&k, e.to_string()))?;
                }
                _ => return Err(self.unknown(&k, "[database]", DATABASE)),
            }
        }
        Ok(table)
    }

    fn environment(&self, f: &Field<'_, '_>) -> Result<Environment, ProjectError> {
        if f.key.is_empty() {
            return Err(self.invalid(f, "an environment name must not be empty".into()));
        }
        let mut e = Environment {
            name: f.key.to_string(),
            url: None,
            connection_string: None,
            host: None,
            port: 5432,
            database: None,
            user: None,
            password: None,
            schema: "public".into(),
            ssl_enabled: false,
            ssl_mode: None,
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
        };
        let section = format!("[environments.{}]", f.key);
        for k in fields(self.table(f, "a table")?, &f.dotted) {
            let s = || self.string(&k).map(Some);
            match k.key {
                "url" => e.url = s()?,
                "connection_string" => e.connection_string = s()?,
                "host" => e.host = s()?,
                "port" => e.port = self.integer(&k, 1..65536)? as u16,
                "database" => e.database = s()?,
                "user" => e.user = s()?,
                "password" => e.password = s()?,
                "schema" => {
                    e.schema = self.string(&k)?;
                    validate_identifier(&e.schema, IdentifierKind::Schema)
                        .map_err(|err| self.invalid(&k, err.to_string()))?;
                }
                "ssl_enabled" => e.ssl_enabled = self.boolean(&k)?,
                "ssl_mode" => e.ssl_mode = s()?,
                "ssl_ca_file" => e.ssl_ca_file = s()?,
                "ssl_cert_file" => e.ssl_cert_file = s()?,
                "ssl_key_file" => e.ssl_key_file = s()?,
                _ => return Err(self.unknown(&k, &section, ENVIRONMENT)),
            }
        }
        Ok(e)
    }

    fn module(
        &self,
        f: &Field<'_, '_>,
        refs: &mut Vec<ModuleRef>,
    ) -> Result<ModuleConfig, ProjectError> {
        if f.key.is_empty() {
            return Err(self.invalid(f, "a module name must not be empty".into()));
        }
        let mut m = ModuleConfig::named(f.key.to_string());
        let section = format!("[modules.{}]", f.key);
        let mut dir_key = "";
        for k in fields(self.table(f, "a table")?, &f.dotted) {
            match k.key {
                "schema" => m.schema = self.schema(&k)?,
                "migrations_path" | "migrations" => {
                    let dir = self.dir(&k)?;
                    if let Some(first) = &m.migrations
                        && first.written != dir.written
                    {
                        return Err(self.invalid(
                            &k,
                            format!(
                                "{dir_key} is `{}` but {} is `{}`; they are one setting (migrations is pgdbm (Rust)'s alias of migrations_path): keep only migrations_path, which pgdbm (Python) reads too",
                                first.written, k.key, dir.written
                            ),
                        ));
                    }
                    (m.migrations, dir_key) = (Some(dir), k.key);
                }
                "mode" => {
                    let s = self.string(&k)?;
                    m.mode = ModuleMode::from_name(&s).ok_or_else(|| {
                        self.invalid(
                            &k,
                            format!(
                                "unknown mode `{s}`; the modes are: {}",
                                ModuleMode::NAMES.join(", ")
                            ),
                        )
                    })?;
                }
                "depends_on" => {
                    for (name, span) in self.strings(&k)? {
                        m.depends_on.push(name.clone());
                        refs.push(ModuleRef {
                            key: k.dotted.clone(),
                            span,
                            name,
                        });
                    }
                }
                _ => return Err(self.unknown(&k, &section, MODULE)),
            }
        }
        Ok(m)
    }

    fn shared_pool(
        &self,
        f: &Field<'_, '_>,
        refs: &mut Vec<ModuleRef>,
    ) -> Result<SharedPoolConfig, ProjectError> {
        let mut pool = SharedPoolConfig {
            min_connections: 10,
            max_connections: 100,
            modules: Vec::new(),
        };
        let mut max_at = None;
        for k in fields(self.table(f, "a table")?, "shared_pool") {
            let count = |k: &Field<'_, '_>| {
                self.integer(k, 0..i64::from(u32::MAX) + 1)
                    .map(|n| n as u32)
            };
            match k.key {
                "min_connections" => pool.min_connections = count(&k)?,
                "max_connections" => {
                    (pool.max_connections, max_at) = (count(&k)?, Some(k.span.clone()))
                }
                "modules" => {
                    for (name, span) in self.strings(&k)? {
                        pool.modules.push(name.clone());
                        refs.push(ModuleRef {
                            key: k.dotted.clone(),
                            span,
                            name,
                        });
                    }
                }
                _ => return Err(self.unknown(&k, "[shared_pool]", SHARED_POOL)),
            }
        }
        if pool.max_connections == 0 || pool.max_connections < pool.min_connections {
            return Err(self.invalid_at(
                max_at.as_ref().unwrap_or(&f.span),
                "shared_pool.max_connections",
                format!(
                    "max_connections ({}) must be at least 1 and at least min_connections ({})",
                    pool.max_connections, pool.min_connections
                ),
            ));
        }
        Ok(pool)
    }
}
