//! Repeatable migrations: the `*.sql` files of `repeatable/`, beside `down/`.
//!
//! Views, functions and grants are easiest to keep as their current definition, edited in place,
//! rather than as a chain of versioned files that each repeat the whole `CREATE OR REPLACE`. A
//! repeatable file has no version: the runner applies it after the versioned files whenever its
//! checksum differs from the one it recorded (the first time: when it has none). So each one must
//! be safe to run again (`CREATE OR REPLACE VIEW`, `DROP … IF EXISTS` then `CREATE`, `GRANT`).
//!
//! They live in a subdirectory because pgdbm (Python) applies every `*.sql` file at the top of
//! the migrations directory, once: there it would run them as versioned files and never again.
//! It reads neither subdirectories nor (see the runner) the history rows of repeatable files.
//!
//! Order: by file name, so `10_views.sql` runs before `20_grants.sql`. A repeatable file may not
//! be marked `-- pgdbm:no-transaction`: it runs in one transaction with its history row, so that
//! a failure leaves neither the file half-applied nor its row recording a text that did not run.

use std::path::Path;

use super::file::{MAX_FILENAME_LEN, checksum, python_strip};
use super::{SourceError, is_no_transaction};

/// The directory, inside the migrations directory, that holds the repeatable files.
pub const REPEATABLE_DIR: &str = "repeatable";

/// A repeatable migration: `repeatable/NAME.sql`, applied again whenever its text changes.
///
/// ```
/// use pgdbm_core::migrations::RepeatableMigration;
/// let r = RepeatableMigration::new(
///     "repeatable/10_views.sql",
///     "CREATE OR REPLACE VIEW {{tables.active_users}} AS SELECT 1 AS id;",
/// )
/// .unwrap();
/// assert_eq!(r.name, "10_views");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepeatableMigration {
    /// The path inside the migrations directory, e.g. `repeatable/10_views.sql`; the history
    /// records it under this name.
    pub filename: String,
    /// The name without the directory and `.sql`: `10_views`.
    pub name: String,
    /// The file's text, before templating.
    pub content: String,
    /// pgdbm's checksum of the text (see [`checksum`](super::checksum)): a change in it is what
    /// makes the runner apply the file again.
    pub checksum: String,
}

impl RepeatableMigration {
    /// A repeatable migration from its path inside the migrations directory
    /// (`repeatable/NAME.sql`) and its text, validated.
    ///
    /// # Errors
    ///
    /// [`SourceError::Repeatable`] when the name is not `repeatable/NAME.sql` (outside
    /// `repeatable/`, in a subdirectory of it, another extension) or the file is marked
    /// `-- pgdbm:no-transaction`; [`SourceError::FilenameTooLong`] beyond 255 characters;
    /// [`SourceError::Empty`] when the text is only white space.
    pub fn new(filename: &str, content: &str) -> Result<RepeatableMigration, SourceError> {
        let bad = |problem| SourceError::Repeatable {
            filename: filename.to_string(),
            problem,
        };
        let prefix = format!("{REPEATABLE_DIR}/");
        let rest = filename
            .strip_prefix(&prefix)
            .ok_or_else(|| bad("is not in `repeatable/`; put repeatable files there"))?;
        if rest.contains('/') {
            return Err(bad(
                "is in a subdirectory of `repeatable/`; only the files directly in `repeatable/` are read: move it up",
            ));
        }
        let name = rest.strip_suffix(".sql").ok_or_else(|| {
            bad("does not end in `.sql`; only `*.sql` files belong in `repeatable/`: rename it, or move it out of the migrations directory")
        })?;
        if name.is_empty() || name.starts_with('.') {
            return Err(bad(
                "has no name before `.sql`; name it like `repeatable/10_views.sql`",
            ));
        }
        let chars = filename.chars().count();
        if chars > MAX_FILENAME_LEN {
            return Err(SourceError::FilenameTooLong {
                filename: filename.to_string(),
                chars,
            });
        }
        if python_strip(content).is_empty() {
            return Err(SourceError::Empty {
                filename: filename.to_string(),
            });
        }
        if is_no_transaction(content) {
            return Err(bad(
                "is marked `-- pgdbm:no-transaction`, but a repeatable file runs in one transaction with its history row (so a failure changes neither); remove the marker, and put statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY) in a versioned migration",
            ));
        }
        Ok(RepeatableMigration {
            filename: filename.to_string(),
            name: name.to_string(),
            content: content.to_string(),
            checksum: checksum(content),
        })
    }
}

/// Whether `filename` (a path inside the migrations directory, or a history row's file name)
/// names a repeatable file.
pub fn is_repeatable(filename: &str) -> bool {
    filename
        .strip_prefix(REPEATABLE_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `(path, content)` of the files in `root/repeatable/`, named `repeatable/NAME.sql`; nothing
/// when there is no such directory. Anything there but `*.sql` files (and hidden files) is an
/// error: a `views.psql` or a nested directory left unread would pass for applied.
pub(super) fn read_dir(root: &Path) -> Result<Vec<(String, String)>, SourceError> {
    let dir = root.join(REPEATABLE_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let dir_err = |source| SourceError::Directory {
        path: dir.clone(),
        source,
    };
    let mut strays = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let sql_file = path.extension().is_some_and(|e| e == "sql") && !path.is_dir();
        if !name.starts_with('.') && !sql_file {
            strays.push(format!("{REPEATABLE_DIR}/{name}"));
        }
    }
    // read_dir order is arbitrary; the first in name order is the one reported everywhere.
    strays.sort();
    if let Some(filename) = strays.into_iter().next() {
        return Err(SourceError::Repeatable {
            filename,
            problem: "is not a `*.sql` file; only `*.sql` files belong in `repeatable/`: rename it, or move it out of the migrations directory",
        });
    }
    super::file::read_sql_files(root, &dir, &format!("{REPEATABLE_DIR}/"))
}

/// The repeatable files among `files`, validated, in order of file name.
pub(super) fn build(files: Vec<(String, String)>) -> Result<Vec<RepeatableMigration>, SourceError> {
    let mut out = files
        .iter()
        .map(|(n, c)| RepeatableMigration::new(n, c))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.filename.cmp(&b.filename));
    if let Some(pair) = out.windows(2).find(|p| p[0].filename == p[1].filename) {
        return Err(SourceError::DuplicateFile {
            filename: pair[0].filename.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::MigrationSet;
    use crate::migrations::test_dir::TempDir;

    fn names(set: &MigrationSet) -> Vec<&str> {
        set.repeatable()
            .iter()
            .map(|r| r.filename.as_str())
            .collect()
    }

    #[test]
    fn reads_repeatable_files_beside_the_versioned_ones() {
        let tmp = TempDir::new("repeatable");
        tmp.write("001_a.sql", "CREATE TABLE {{tables.a}} (id int);");
        std::fs::create_dir(tmp.0.join("repeatable")).unwrap();
        tmp.write(
            "repeatable/20_grants.sql",
            "GRANT SELECT ON {{tables.v}} TO PUBLIC;",
        );
        tmp.write(
            "repeatable/10_views.sql",
            "CREATE OR REPLACE VIEW {{tables.v}} AS SELECT id FROM {{tables.a}};\r\n",
        );
        tmp.write("repeatable/.hidden.sql", "x");
        let set = MigrationSet::from_dir(&tmp.0).unwrap();
        // Versioned files are unaffected; repeatable ones come in file name order.
        assert_eq!(set.len(), 1);
        assert_eq!(
            names(&set),
            ["repeatable/10_views.sql", "repeatable/20_grants.sql"]
        );
        let views = set.get_repeatable("repeatable/10_views.sql").unwrap();
        assert_eq!(views.name, "10_views");
        assert_eq!(
            views.checksum,
            checksum("CREATE OR REPLACE VIEW {{tables.v}} AS SELECT id FROM {{tables.a}};")
        );
        assert!(set.get("repeatable/10_views.sql").is_none());
        assert!(set.get_repeatable("10_views.sql").is_none());
        // Embedded pairs give the same set, whatever their order.
        let embedded = MigrationSet::from_embedded(&[
            (
                "repeatable/20_grants.sql",
                "GRANT SELECT ON {{tables.v}} TO PUBLIC;",
            ),
            ("001_a.sql", "CREATE TABLE {{tables.a}} (id int);"),
            (
                "repeatable/10_views.sql",
                "CREATE OR REPLACE VIEW {{tables.v}} AS SELECT id FROM {{tables.a}};\r\n",
            ),
        ])
        .unwrap();
        assert_eq!(embedded, set);
        // A set with only repeatable files is valid.
        let only = MigrationSet::from_embedded(&[("repeatable/v.sql", "SELECT 1;")]).unwrap();
        assert!(only.is_empty());
        assert_eq!(names(&only), ["repeatable/v.sql"]);
    }

    #[test]
    fn a_repeatable_file_changes_the_set_checksum() {
        let base = MigrationSet::from_embedded(&[("1_a.sql", "A")]).unwrap();
        let with = |text| {
            MigrationSet::from_embedded(&[("1_a.sql", "A"), ("repeatable/v.sql", text)])
                .unwrap()
                .set_checksum()
        };
        assert_ne!(with("V1"), base.set_checksum());
        assert_ne!(with("V1"), with("V2"));
        assert_eq!(with("V1"), with(" V1\r\n"));
    }

    #[test]
    fn invalid_repeatable_files_are_refused_with_what_to_do() {
        let err = |files: &[(&str, &str)]| MigrationSet::from_embedded(files).unwrap_err();
        let e = err(&[("repeatable/v.psql", "SELECT 1;")]);
        assert_eq!(
            e.to_string(),
            "repeatable migration `repeatable/v.psql` does not end in `.sql`; only `*.sql` files belong in `repeatable/`: rename it, or move it out of the migrations directory"
        );
        let e = err(&[("repeatable/v.sql", " \n\t")]);
        assert_eq!(
            e.to_string(),
            "migration `repeatable/v.sql` is empty; write the SQL in it or delete it"
        );
        let e = err(&[(
            "repeatable/v.sql",
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);",
        )]);
        assert!(
            matches!(&e, SourceError::Repeatable { filename, .. } if filename == "repeatable/v.sql"),
            "{e}"
        );
        assert!(
            e.to_string().contains(
                "is marked `-- pgdbm:no-transaction`, but a repeatable file runs in one transaction"
            ),
            "{e}"
        );
        let e = err(&[("repeatable/sub/v.sql", "SELECT 1;")]);
        assert!(e.to_string().contains("subdirectory"), "{e}");
        let e = err(&[("repeatable/.sql", "SELECT 1;")]);
        assert!(e.to_string().contains("has no name before `.sql`"), "{e}");
        let e = err(&[
            ("repeatable/v.sql", "SELECT 1;"),
            ("repeatable/v.sql", "SELECT 2;"),
        ]);
        assert!(matches!(e, SourceError::DuplicateFile { .. }), "{e}");
        let long = format!("repeatable/{}.sql", "v".repeat(MAX_FILENAME_LEN));
        let e = err(&[(long.as_str(), "SELECT 1;")]);
        assert!(matches!(e, SourceError::FilenameTooLong { .. }), "{e}");
        // Only the pure layer's constructor sees names outside `repeatable/`.
        let e = RepeatableMigration::new("v.sql", "SELECT 1;").unwrap_err();
        assert!(e.to_string().contains("is not in `repeatable/`"), "{e}");
    }

    #[test]
    fn a_directory_with_other_files_in_repeatable_is_refused() {
        let tmp = TempDir::new("repeatable-stray");
        tmp.write("001_a.sql", "SELECT 1;");
        std::fs::create_dir_all(tmp.0.join("repeatable/nested")).unwrap();
        tmp.write("repeatable/v.sql", "SELECT 1;");
        tmp.write("repeatable/notes.txt", "x");
        let e = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "repeatable migration `repeatable/nested` is not a `*.sql` file; only `*.sql` files belong in `repeatable/`: rename it, or move it out of the migrations directory"
        );
        std::fs::remove_dir(tmp.0.join("repeatable/nested")).unwrap();
        let e = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert!(e.to_string().contains("`repeatable/notes.txt`"), "{e}");
        std::fs::remove_file(tmp.0.join("repeatable/notes.txt")).unwrap();
        tmp.write("repeatable/w.sql", "\n");
        let e = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert!(
            matches!(&e, SourceError::Empty { filename } if filename == "repeatable/w.sql"),
            "{e}"
        );
    }

    #[test]
    fn recognizes_repeatable_names() {
        assert!(is_repeatable("repeatable/v.sql"));
        assert!(!is_repeatable("repeatable_v.sql"));
        assert!(!is_repeatable("001_repeatable.sql"));
        assert!(!is_repeatable("down/001_a.down.sql"));
    }
}
