//! What `tsql!` reads at compile time: `pgdbm.toml`, `PGDBM_SCHEMA`, the migration files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use pgdbm_core::ident::is_valid_identifier;
use pgdbm_core::migrations::{MigrationSet, Relations};
use pgdbm_core::project::{ModuleConfig, Project};

/// One module: the schema its placeholders render into and the migrations that define it
/// (`migrations_path`, or its alias `migrations`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Module {
    pub(crate) schema: Option<String>,
    /// The migrations directory, absolute, and as written in the file (for messages).
    pub(crate) migrations: Option<(PathBuf, String)>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Config {
    /// The file read, if any.
    pub(crate) file: Option<PathBuf>,
    /// The top-level module: what `tsql!` without `module =` uses.
    pub(crate) default: Module,
    /// `[modules.NAME]`, for `tsql!(module = "NAME", …)`.
    pub(crate) modules: BTreeMap<String, Module>,
}

/// Loads the configuration for the crate being compiled.
pub(crate) fn load() -> Result<Config, String> {
    let manifest_dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .map_err(|_| "CARGO_MANIFEST_DIR is not set; build with cargo")?,
    );
    let file = match std::env::var("PGDBM_CONFIG").ok().filter(|v| !v.is_empty()) {
        Some(path) => {
            let p = manifest_dir.join(path);
            if !p.is_file() {
                return Err(format!(
                    "PGDBM_CONFIG names `{}`, which does not exist",
                    p.display()
                ));
            }
            Some(p)
        }
        None => Project::find(&manifest_dir),
    };
    let mut config = match &file {
        Some(f) => from_project(Project::load(f).map_err(|e| e.to_string())?),
        None => Config::default(),
    };
    if let Ok(schema) = std::env::var("PGDBM_SCHEMA") {
        if !schema.is_empty() && !is_valid_identifier(&schema) {
            return Err(format!(
                "invalid schema in PGDBM_SCHEMA: `{schema}`; names must match ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$"
            ));
        }
        config.default.schema = (!schema.is_empty()).then_some(schema);
    }
    Ok(config)
}

/// The parts of a parsed `pgdbm.toml` the macros use.
fn from_project(project: Project) -> Config {
    let module = |m: &ModuleConfig| Module {
        schema: m.schema.clone(),
        migrations: m
            .migrations
            .as_ref()
            .map(|d| (d.path.clone(), d.written.clone())),
    };
    Config {
        default: module(&project.default_module),
        modules: project
            .modules
            .iter()
            .map(|m| (m.name.clone(), module(m)))
            .collect(),
        file: Some(project.path),
    }
}

/// The relations a migrations directory creates, and the files read (for rebuild tracking).
/// Cached per directory for the life of the compiler process, invalidated by file times.
pub(crate) fn relations(dir: &Path) -> Result<(Arc<Relations>, Vec<PathBuf>), String> {
    type Entry = (Vec<(PathBuf, Option<SystemTime>)>, Arc<Relations>);
    static CACHE: OnceLock<Mutex<BTreeMap<PathBuf, Entry>>> = OnceLock::new();
    let listing = listing(dir)?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some((seen, rel)) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(dir)
        && *seen == listing
    {
        return Ok((rel.clone(), listing.into_iter().map(|(p, _)| p).collect()));
    }
    let set = MigrationSet::from_dir(dir).map_err(|e| e.to_string())?;
    let rel = Arc::new(Relations::from_set(&set));
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir.to_path_buf(), (listing.clone(), rel.clone()));
    Ok((rel, listing.into_iter().map(|(p, _)| p).collect()))
}

fn listing(dir: &Path) -> Result<Vec<(PathBuf, Option<SystemTime>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the migrations directory `{}`: {e}",
            dir.display()
        )
    })?;
    let mut out: Vec<(PathBuf, Option<SystemTime>)> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && n.ends_with(".sql")
        })
        .map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).ok()))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether the crate being compiled depends on `sqlx` under that name (sqlx's macros expand to
/// `::sqlx::…` paths).
pub(crate) fn has_sqlx_dependency() -> bool {
    static SEEN: OnceLock<Mutex<BTreeMap<PathBuf, bool>>> = OnceLock::new();
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return true;
    };
    let dir = PathBuf::from(dir);
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(&dir) {
        return *v;
    }
    let found = std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_none_or(|t| manifest_has_sqlx(&t));
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir, found);
    found
}

pub(crate) fn manifest_has_sqlx(t: &toml::Table) -> bool {
    let in_section = |s: Option<&toml::Value>| {
        s.and_then(|v| v.as_table())
            .is_some_and(|d| d.contains_key("sqlx"))
    };
    let direct = ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .any(|k| in_section(t.get(*k)));
    let per_target = t
        .get("target")
        .and_then(|v| v.as_table())
        .is_some_and(|targets| {
            targets.values().any(|tv| {
                ["dependencies", "dev-dependencies"]
                    .iter()
                    .any(|k| in_section(tv.get(*k)))
            })
        });
    direct || per_target
}
