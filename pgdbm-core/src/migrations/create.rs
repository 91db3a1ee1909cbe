//! Naming and creating the next migration file.

use std::path::{Path, PathBuf};

use super::{MAX_FILENAME_LEN, MigrationSet, REPEATABLE_DIR, SourceError};

/// The file name the next migration called `name` gets: the highest version number in
/// `existing` plus one, at least three digits (`004_add_posts.sql`).
///
/// `name` is trimmed and lowercased, with spaces and `-` turned into `_`; what remains must be
/// ASCII letters, digits and underscores.
///
/// ```
/// use pgdbm_core::migrations::{new_migration_filename, MigrationSet};
/// let set = MigrationSet::from_embedded(&[("003_users.sql", "SELECT 1;")]).unwrap();
/// assert_eq!(new_migration_filename(&set, "Add posts").unwrap(), "004_add_posts.sql");
/// ```
///
/// # Errors
///
/// [`SourceError::InvalidName`] when `name` is empty or holds other characters than ASCII letters,
/// digits, spaces, `-` and `_`, when the resulting file name would exceed 255 characters, or when
/// the highest existing version cannot be incremented.
pub fn new_migration_filename(existing: &MigrationSet, name: &str) -> Result<String, SourceError> {
    let slug = slug(name)?;
    let last = existing.iter().map(|m| m.version.number).max().unwrap_or(0);
    let next = last.checked_add(1).ok_or_else(|| SourceError::InvalidName {
        name: name.to_string(),
        reason: "the highest existing version is the largest possible number; renumber the files",
    })?;
    let filename = format!("{next:03}_{slug}.sql");
    if filename.chars().count() > MAX_FILENAME_LEN {
        return Err(SourceError::InvalidName {
            name: name.to_string(),
            reason: "the file name would be longer than the 255 characters the history table stores; use a shorter name",
        });
    }
    Ok(filename)
}

fn slug(name: &str) -> Result<String, SourceError> {
    let invalid = |reason| SourceError::InvalidName {
        name: name.to_string(),
        reason,
    };
    let s: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if s.is_empty() {
        return Err(invalid(
            "it is empty; give a short description such as `add posts`",
        ));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid(
            "use only ASCII letters, digits, spaces, '-' and '_', e.g. `add posts`",
        ));
    }
    Ok(s)
}

/// Creates `dir/NNN_name.sql` (the next version, see [`new_migration_filename`]) with a short
/// header comment, and returns its path.
///
/// No `BEGIN`/`COMMIT` is written: the runner applies each file and records it in one
/// transaction itself. Creates `dir` if needed, reads the files already there (so an invalid one
/// is reported now rather than at migration time) and never overwrites a file.
///
/// # Errors
///
/// [`SourceError::Directory`] when `dir` cannot be created or listed, any error of
/// [`MigrationSet::from_dir`] for the files already there, those of [`new_migration_filename`] for
/// `name`, and [`SourceError::Create`] when the file exists already or cannot be written.
pub fn create_migration_file(dir: impl AsRef<Path>, name: &str) -> Result<PathBuf, SourceError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| SourceError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    let set = MigrationSet::from_dir(dir)?;
    let filename = new_migration_filename(&set, name)?;
    let body = format!(
        "-- Migration: {}\n\
         -- Write tables as {{{{tables.name}}}} so they land in the service's schema.\n\
         -- The runner applies this file and records it in one transaction; add a line\n\
         -- `-- pgdbm:no-transaction` for statements such as CREATE INDEX CONCURRENTLY.\n\n",
        name.trim()
    );
    write_new(&dir.join(&filename), &body)?;
    Ok(dir.join(filename))
}

/// Creates the repeatable file `dir/repeatable/name.sql` (see
/// [`RepeatableMigration`](super::RepeatableMigration)) with a short header comment, and returns
/// its path. `name` is cleaned up as for [`new_migration_filename`]; no number is added: the
/// files run in name order, so start the name with one to place it (`10 views`).
///
/// # Errors
///
/// As [`create_migration_file`]: the directory, the files already there, an invalid name, and
/// [`SourceError::Create`] when the file exists already or cannot be written.
pub fn create_repeatable_file(dir: impl AsRef<Path>, name: &str) -> Result<PathBuf, SourceError> {
    let dir = dir.as_ref();
    let sub = dir.join(REPEATABLE_DIR);
    std::fs::create_dir_all(&sub).map_err(|source| SourceError::Directory {
        path: sub.clone(),
        source,
    })?;
    MigrationSet::from_dir(dir)?;
    let filename = format!("{REPEATABLE_DIR}/{}.sql", slug(name)?);
    if filename.chars().count() > MAX_FILENAME_LEN {
        return Err(SourceError::InvalidName {
            name: name.to_string(),
            reason: "the file name would be longer than the 255 characters the history table stores; use a shorter name",
        });
    }
    let body = format!(
        "-- Repeatable migration: {}\n\
         -- Applied after the versioned files whenever this file changes, so keep it safe to\n\
         -- run again: CREATE OR REPLACE, DROP ... IF EXISTS then CREATE, GRANT.\n\
         -- Write tables as {{{{tables.name}}}}; repeatable files run in name order.\n\n",
        name.trim()
    );
    let path = dir.join(filename);
    write_new(&path, &body)?;
    Ok(path)
}

/// Writes `body` to `path`, which must not exist yet.
fn write_new(path: &Path, body: &str) -> Result<(), SourceError> {
    let create_err = |hint, source| SourceError::Create {
        path: path.to_path_buf(),
        hint,
        source,
    };
    // create_new: another process creating the same file between from_dir and here must not be
    // overwritten.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "a file with that name already exists; try again or pick another name"
            } else {
                "check that the directory is writable"
            };
            create_err(hint, e)
        })?;
    std::io::Write::write_all(&mut f, body.as_bytes())
        .map_err(|e| create_err("check the free disk space", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::test_dir::TempDir;

    fn names(set: &MigrationSet) -> Vec<&str> {
        set.iter().map(|m| m.filename.as_str()).collect()
    }

    #[test]
    fn next_file_names() {
        let empty = MigrationSet::default();
        assert_eq!(
            new_migration_filename(&empty, "init").unwrap(),
            "001_init.sql"
        );
        let set = MigrationSet::from_embedded(&[("1_a.sql", "x"), ("V3__c.sql", "x")]).unwrap();
        assert_eq!(
            new_migration_filename(&set, "  Add Posts-table ").unwrap(),
            "004_add_posts_table.sql"
        );
        assert_eq!(set.next_filename("x_2").unwrap(), "004_x_2.sql");
        let stamped = MigrationSet::from_embedded(&[("20240101120000_a.sql", "x")]).unwrap();
        assert_eq!(
            new_migration_filename(&stamped, "b").unwrap(),
            "20240101120001_b.sql"
        );
        let big = MigrationSet::from_embedded(&[("999_a.sql", "x")]).unwrap();
        assert_eq!(new_migration_filename(&big, "b").unwrap(), "1000_b.sql");

        let cases = [
            (
                "",
                "it is empty; give a short description such as `add posts`",
            ),
            (
                "   ",
                "it is empty; give a short description such as `add posts`",
            ),
            (
                "bad/name",
                "use only ASCII letters, digits, spaces, '-' and '_', e.g. `add posts`",
            ),
            (
                "café",
                "use only ASCII letters, digits, spaces, '-' and '_', e.g. `add posts`",
            ),
            (
                "a.b",
                "use only ASCII letters, digits, spaces, '-' and '_', e.g. `add posts`",
            ),
        ];
        for (name, reason) in cases {
            let err = new_migration_filename(&set, name).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid migration name `{name}`: {reason}")
            );
        }
        let err = new_migration_filename(&set, &"a".repeat(300)).unwrap_err();
        assert!(err.to_string().ends_with("use a shorter name"), "{err}");
    }

    #[test]
    fn creates_migration_files() {
        let dir = TempDir::new("create");
        let nested = dir.0.join("db").join("migrations");
        let first = create_migration_file(&nested, "Create users").unwrap();
        assert_eq!(first, nested.join("001_create_users.sql"));
        let text = std::fs::read_to_string(&first).unwrap();
        assert!(text.starts_with("-- Migration: Create users\n"), "{text}");
        assert!(text.contains("{{tables.name}}"), "{text}");
        let upper = text.to_uppercase();
        assert!(
            !upper.contains("BEGIN") && !upper.contains("COMMIT"),
            "{text}"
        );
        // The new file is a valid (comment-only) migration, not a no-transaction one.
        let set = MigrationSet::from_dir(&nested).unwrap();
        assert_eq!(names(&set), ["001_create_users.sql"]);
        assert!(!set.iter().next().unwrap().no_transaction);

        std::fs::write(nested.join("007_x.sql"), "SELECT 7;").unwrap();
        let second = create_migration_file(&nested, "add_posts").unwrap();
        assert_eq!(second, nested.join("008_add_posts.sql"));

        let err = create_migration_file(&nested, "bad/name").unwrap_err();
        assert!(matches!(err, SourceError::InvalidName { .. }), "{err}");
        assert!(!nested.join("009_bad").exists());

        // Existing invalid files are reported instead of being numbered around.
        std::fs::write(nested.join("notes.sql"), "x").unwrap();
        let err = create_migration_file(&nested, "more").unwrap_err();
        assert!(
            err.to_string().contains("`notes.sql` has no version"),
            "{err}"
        );
    }

    #[test]
    fn creates_repeatable_files() {
        let dir = TempDir::new("create-repeatable");
        std::fs::write(dir.0.join("001_a.sql"), "SELECT 1;").unwrap();
        let path = create_repeatable_file(&dir.0, "10 Active users").unwrap();
        assert_eq!(path, dir.0.join("repeatable/10_active_users.sql"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("-- Repeatable migration: 10 Active users\n"),
            "{text}"
        );
        let set = MigrationSet::from_dir(&dir.0).unwrap();
        assert_eq!(names(&set), ["001_a.sql"]);
        assert_eq!(
            set.repeatable()[0].filename,
            "repeatable/10_active_users.sql"
        );
        let err = create_repeatable_file(&dir.0, "10 active-users").unwrap_err();
        assert!(matches!(err, SourceError::Create { .. }), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        let err = create_repeatable_file(&dir.0, "a/b").unwrap_err();
        assert!(matches!(err, SourceError::InvalidName { .. }), "{err}");
    }

    #[test]
    fn create_error_has_a_hint() {
        let err = SourceError::Create {
            path: PathBuf::from("m/001_a.sql"),
            hint: "a file with that name already exists; try again or pick another name",
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        };
        assert_eq!(
            err.to_string(),
            "cannot create migration `m/001_a.sql`: entity already exists; a file with that name already exists; try again or pick another name"
        );
    }
}
