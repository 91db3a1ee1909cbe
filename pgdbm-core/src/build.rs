//! For a crate's `build.rs`: rebuild when a migration file is *added*, not only when one changes.
//!
//! `tsql!` and `embed_migrations!` read the migration files at compile time and tell cargo about
//! each file they read, so an edit recompiles the queries. A file that did not exist when they
//! ran is unknown to cargo, and on stable Rust a macro cannot ask cargo to watch a directory.
//! A build script can: this one reads `pgdbm.toml` the way the macros do and asks cargo to run
//! it again (and so recompile the crate) when the file, any module's migrations directory or
//! the variables the macros read change.
//!
//! ```toml
//! [build-dependencies]
//! pgdbm-core = { version = "0.1", default-features = false }  # no driver built for the host
//! ```
//!
//! ```no_run
//! // build.rs: the whole of its `fn main`
//! pgdbm_core::build::rerun_if_migrations_change();
//! ```
//!
//! Pure: reads files and prints cargo directives; built without the `runtime` feature.

use std::path::{Path, PathBuf};

use crate::project::Project;

/// The variables the macros read; a change to one must recompile the queries.
const VARIABLES: [&str; 2] = ["PGDBM_CONFIG", "PGDBM_SCHEMA"];

/// Prints the `cargo::rerun-if-changed` / `rerun-if-env-changed` lines that make cargo rebuild
/// the crate when its `pgdbm.toml` or a module's migrations directory (a file added, removed or
/// edited) changes. Call it from `build.rs`; the crate's directory is `CARGO_MANIFEST_DIR`.
///
/// A `pgdbm.toml` that cannot be read is not this function's to report (the macros report it,
/// pointing at the query): it prints a `cargo::warning` and still watches the file, so fixing it
/// re-runs the script.
pub fn rerun_if_migrations_change() {
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let config = std::env::var("PGDBM_CONFIG").ok().filter(|v| !v.is_empty());
    let (watched, warning) = watched_paths(&dir, config.as_deref());
    for v in VARIABLES {
        println!("cargo::rerun-if-env-changed={v}");
    }
    for p in watched {
        println!("cargo::rerun-if-changed={}", p.display());
    }
    if let Some(w) = warning {
        println!("cargo::warning={w}");
    }
}

/// What [`rerun_if_migrations_change`] watches for a crate in `manifest_dir`: the `pgdbm.toml`
/// the macros read (`config`, as `PGDBM_CONFIG` names it, else the nearest one) and the
/// migrations directory of every module of [`Project::module_set`]. With a warning to print
/// when the file cannot be read.
///
/// ```
/// let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
/// let (paths, warning) = pgdbm_core::build::watched_paths(&dir, None);
/// assert!(warning.is_none());
/// assert!(paths[0].ends_with("pgdbm.toml"));
/// assert!(paths.iter().any(|p| p.ends_with("migrations")));
/// ```
pub fn watched_paths(manifest_dir: &Path, config: Option<&str>) -> (Vec<PathBuf>, Option<String>) {
    let file = match config {
        Some(c) => manifest_dir.join(c),
        None => match Project::find(manifest_dir) {
            Some(f) => f,
            // No file yet: watch where one would appear.
            None => return (vec![manifest_dir.join(crate::project::FILE_NAME)], None),
        },
    };
    let mut paths = vec![file.clone()];
    let project = match Project::load(&file) {
        Ok(p) => p,
        Err(e) => return (paths, Some(format!("pgdbm: {e}"))),
    };
    let set = match project.module_set() {
        Ok(set) => set,
        Err(e) => return (paths, Some(format!("pgdbm: {e}"))),
    };
    for m in set {
        if let Some(d) = &m.migrations
            && !paths.contains(&d.path)
        {
            paths.push(d.path.clone());
        }
    }
    (paths, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn watches_the_file_and_every_modules_directory_once() {
        let tmp = std::env::temp_dir().join(format!("pgdbm-build-test-{}", std::process::id()));
        write(
            &tmp,
            "pgdbm.toml",
            "schema = \"shop\"\nmigrations = \"migrations\"\n[modules.billing]\nmigrations_path = \"billing\"\n[modules.shop2]\nmigrations_path = \"migrations\"\n",
        );
        let (paths, warning) = watched_paths(&tmp, None);
        assert_eq!(warning, None);
        assert_eq!(
            paths,
            [
                tmp.join("pgdbm.toml"),
                tmp.join("migrations"),
                tmp.join("billing")
            ]
        );
        // A broken file is still watched, with a warning that names the problem.
        write(&tmp, "broken.toml", "schema = 5\n");
        let (paths, warning) = watched_paths(&tmp, Some("broken.toml"));
        assert_eq!(paths, [tmp.join("broken.toml")]);
        assert!(warning.unwrap().contains("schema"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
