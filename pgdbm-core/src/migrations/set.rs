//! An ordered, validated set of migrations, read from a directory or embedded.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::file::{hex, python_strip, read_sql_files};
use super::repeatable::{self, is_repeatable};
use super::{
    DOWN_DIR, DOWN_SUFFIX, DownMigration, Migration, RepeatableMigration, SourceError,
    is_no_transaction, new_migration_filename,
};

/// An ordered, validated set of migrations: by version number, then by file name; version
/// numbers unique. The repeatable files of `repeatable/` are kept apart
/// ([`repeatable`](Self::repeatable)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
    repeatable: Vec<RepeatableMigration>,
}

impl MigrationSet {
    /// The `*.sql` regular files at the top of `dir`, in apply order, with their down files from
    /// `dir/down/` (see [`DownMigration`]) and the repeatable files of `dir/repeatable/` (see
    /// [`RepeatableMigration`]).
    ///
    /// Hidden files (`.name.sql`), other extensions and other subdirectories are ignored. A missing
    /// directory is an error (not an empty set), so a wrong path cannot pass for "nothing to do".
    /// A symlink that leads outside `dir`, a file that is not UTF-8 and an empty file are errors
    /// naming the file.
    ///
    /// # Errors
    ///
    /// [`SourceError::Directory`] when `dir` (or `dir/down/`) is missing or cannot be listed,
    /// [`SourceError::Unreadable`] / [`SourceError::OutsideDirectory`] for a file that cannot be
    /// read or links outside `dir`, and the validation errors of
    /// [`from_embedded`](Self::from_embedded).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<MigrationSet, SourceError> {
        let dir = dir.as_ref();
        let dir_err = |source| SourceError::Directory {
            path: dir.to_path_buf(),
            source,
        };
        let root = dir.canonicalize().map_err(dir_err)?;
        let mut files = read_sql_files(&root, &root, "")?;
        let down = root.join(DOWN_DIR);
        if down.is_dir() {
            let prefix = format!("{DOWN_DIR}/");
            files.extend(read_sql_files(&root, &down, &prefix)?);
        }
        files.extend(repeatable::read_dir(&root)?);
        Self::build(files)
    }

    /// A set from `(filename, content)` pairs, e.g. files embedded at compile time; validated and
    /// ordered like [`MigrationSet::from_dir`], whatever order the pairs come in. Down files are
    /// named `down/NNN_name.down.sql`, repeatable files `repeatable/NAME.sql`.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] naming the file: an invalid or empty file (see [`Migration::new`]), a name
    /// or version given twice ([`DuplicateFile`](SourceError::DuplicateFile),
    /// [`DuplicateVersion`](SourceError::DuplicateVersion)), a `.down.sql` file outside `down/`
    /// ([`DownAmongUpFiles`](SourceError::DownAmongUpFiles)), or a down file with no up file of its
    /// name ([`DownWithoutUp`](SourceError::DownWithoutUp)), or an invalid repeatable file (see
    /// [`RepeatableMigration::new`]).
    pub fn from_embedded(files: &[(&str, &str)]) -> Result<MigrationSet, SourceError> {
        Self::build(
            files
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
        )
    }

    fn build(files: Vec<(String, String)>) -> Result<MigrationSet, SourceError> {
        let prefix = format!("{DOWN_DIR}/");
        let (repeatables, files): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(n, _)| is_repeatable(n));
        let repeatable = repeatable::build(repeatables)?;
        let (downs, ups): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(n, _)| n.starts_with(&prefix));
        if let Some((n, _)) = ups.iter().find(|(n, _)| n.ends_with(DOWN_SUFFIX)) {
            return Err(SourceError::DownAmongUpFiles {
                filename: n.clone(),
            });
        }
        let mut migrations = ups
            .iter()
            .map(|(n, c)| Migration::new(n, c))
            .collect::<Result<Vec<_>, _>>()?;
        migrations.sort_by(|a, b| (&a.version, &a.filename).cmp(&(&b.version, &b.filename)));
        for pair in migrations.windows(2) {
            if pair[0].filename == pair[1].filename {
                return Err(SourceError::DuplicateFile {
                    filename: pair[0].filename.clone(),
                });
            }
            if pair[0].version.number == pair[1].version.number {
                return Err(SourceError::DuplicateVersion {
                    version: pair[0].version.number,
                    first: pair[0].filename.clone(),
                    second: pair[1].filename.clone(),
                });
            }
        }
        for (path, content) in downs {
            let name = &path[prefix.len()..];
            let bad = |problem| SourceError::DownWithoutUp {
                filename: name.to_string(),
                problem,
            };
            let stem = name
                .strip_suffix(DOWN_SUFFIX)
                .ok_or_else(|| bad("does not end in `.down.sql`"))?;
            let up = format!("{stem}.sql");
            let m = migrations
                .iter_mut()
                .find(|m| m.filename == up)
                .ok_or_else(|| bad("has no up file of the same name"))?;
            if m.down.is_some() {
                return Err(SourceError::DuplicateFile { filename: path });
            }
            if python_strip(&content).is_empty() {
                return Err(SourceError::Empty { filename: path });
            }
            m.down = Some(DownMigration {
                no_transaction: is_no_transaction(&content),
                filename: path,
                content,
            });
        }
        Ok(MigrationSet {
            migrations,
            repeatable,
        })
    }

    /// The migrations in apply order.
    pub fn iter(&self) -> std::slice::Iter<'_, Migration> {
        self.migrations.iter()
    }

    /// The repeatable files (`repeatable/*.sql`), in apply order (by file name).
    pub fn repeatable(&self) -> &[RepeatableMigration] {
        &self.repeatable
    }

    /// The repeatable file with this path (`repeatable/NAME.sql`).
    pub fn get_repeatable(&self, filename: &str) -> Option<&RepeatableMigration> {
        self.repeatable.iter().find(|r| r.filename == filename)
    }

    /// How many versioned migrations there are (repeatable files aside).
    pub fn len(&self) -> usize {
        self.migrations.len()
    }

    /// Whether there are no versioned migrations (repeatable files aside).
    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }

    /// The migration with this file name.
    pub fn get(&self, filename: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.filename == filename)
    }

    /// One SHA-256 (lowercase hex) over every file name and checksum, in apply order: identifies
    /// the set, e.g. to key a template database built from it. Renaming, editing (beyond what
    /// [`checksum`](super::checksum) ignores), adding or removing a file (repeatable files
    /// included) changes it.
    pub fn set_checksum(&self) -> String {
        let mut h = Sha256::new();
        for m in &self.migrations {
            // NUL and newline cannot occur in the checksum, so the encoding is unambiguous.
            h.update(m.filename.as_bytes());
            h.update([0]);
            h.update(m.checksum.as_bytes());
            h.update([b'\n']);
        }
        // Their names start with `repeatable/`, which no versioned file's does.
        for r in &self.repeatable {
            h.update(r.filename.as_bytes());
            h.update([0]);
            h.update(r.checksum.as_bytes());
            h.update([b'\n']);
        }
        hex(&h.finalize())
    }

    /// The file name the next migration called `name` gets; see [`new_migration_filename`].
    ///
    /// # Errors
    ///
    /// [`SourceError::InvalidName`], as [`new_migration_filename`] returns it.
    pub fn next_filename(&self, name: &str) -> Result<String, SourceError> {
        new_migration_filename(self, name)
    }
}

impl<'a> IntoIterator for &'a MigrationSet {
    type Item = &'a Migration;
    type IntoIter = std::slice::Iter<'a, Migration>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::checksum;
    use crate::migrations::test_dir::TempDir;

    fn names(set: &MigrationSet) -> Vec<&str> {
        set.iter().map(|m| m.filename.as_str()).collect()
    }

    #[test]
    fn orders_by_number_then_name_and_rejects_duplicates() {
        let set = MigrationSet::from_embedded(&[
            ("10_c.sql", "c"),
            ("2_b.sql", "b"),
            ("V3__x.sql", "x"),
            ("001_a.sql", "a"),
        ])
        .unwrap();
        assert_eq!(
            names(&set),
            ["001_a.sql", "2_b.sql", "V3__x.sql", "10_c.sql"]
        );
        assert_eq!(set.len(), 4);
        assert!(!set.is_empty());
        assert_eq!(set.get("V3__x.sql").unwrap().content, "x");
        assert_eq!(set.get("V3__x.sql").unwrap().checksum, checksum("x"));
        assert!(set.get("3_x.sql").is_none());
        assert_eq!((&set).into_iter().count(), 4);

        let err = MigrationSet::from_embedded(&[("1_a.sql", "a"), ("001_b.sql", "b")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "migrations `001_b.sql` and `1_a.sql` have the same version 1; give one of them another number"
        );
        let err = MigrationSet::from_embedded(&[("1_a.sql", "a"), ("V1__a.sql", "b")]).unwrap_err();
        assert!(
            matches!(err, SourceError::DuplicateVersion { version: 1, .. }),
            "{err}"
        );
        let err = MigrationSet::from_embedded(&[("1_a.sql", "a"), ("1_a.sql", "a")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "migration `1_a.sql` is listed twice; list each file once"
        );
        let err = MigrationSet::from_embedded(&[("1_a.sql", " \r\n\t")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "migration `1_a.sql` is empty; write the SQL in it or delete it"
        );
        let err = MigrationSet::from_embedded(&[("1_a.sql", "x"), ("init.sql", "x")]).unwrap_err();
        assert!(
            err.to_string().contains("`init.sql` has no version"),
            "{err}"
        );
        assert!(MigrationSet::from_embedded(&[]).unwrap().is_empty());
    }

    #[test]
    fn set_checksum_identifies_names_and_contents() {
        let base = MigrationSet::from_embedded(&[("1_a.sql", "A"), ("2_b.sql", "B")]).unwrap();
        let sum = base.set_checksum();
        assert_eq!(sum.len(), 64);
        assert!(
            sum.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // The input order does not matter, and neither does what checksum() ignores.
        let same = MigrationSet::from_embedded(&[("2_b.sql", "B\r\n"), ("1_a.sql", " A")]).unwrap();
        assert_eq!(same.set_checksum(), sum);
        for other in [
            vec![("1_a.sql", "A"), ("2_b.sql", "C")],
            vec![("1_a.sql", "A"), ("2_c.sql", "B")],
            vec![("1_a.sql", "A")],
            vec![("1_a.sql", "A"), ("2_b.sql", "B"), ("3_c.sql", "C")],
        ] {
            let set = MigrationSet::from_embedded(&other).unwrap();
            assert_ne!(set.set_checksum(), sum, "{other:?}");
        }
        // sha256 of nothing.
        assert_eq!(
            MigrationSet::default().set_checksum(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn reads_a_directory() {
        let dir = TempDir::new("read");
        std::fs::create_dir_all(dir.0.join("sub")).unwrap();
        std::fs::create_dir_all(dir.0.join("006_dir.sql")).unwrap();
        dir.write("10_c.sql", "SELECT 10;");
        dir.write("002_b.sql", "SELECT 2;\r\n");
        dir.write("001_a.sql", "-- pgdbm:no-transaction\nSELECT 1;");
        dir.write(".003_hidden.sql", "x");
        dir.write("004_notes.txt", "x");
        dir.write("005_upper.SQL", "x");
        dir.write("README", "x");
        dir.write("sub/005_nested.sql", "x");
        let set = MigrationSet::from_dir(&dir.0).unwrap();
        assert_eq!(names(&set), ["001_a.sql", "002_b.sql", "10_c.sql"]);
        let b = set.get("002_b.sql").unwrap();
        assert_eq!(b.content, "SELECT 2;\r\n");
        assert_eq!(b.checksum, checksum("SELECT 2;"));
        assert_eq!(b.name, "b");
        assert!(set.get("001_a.sql").unwrap().no_transaction);
        assert_eq!(
            set,
            MigrationSet::from_embedded(&[
                ("002_b.sql", "SELECT 2;\r\n"),
                ("10_c.sql", "SELECT 10;"),
                ("001_a.sql", "-- pgdbm:no-transaction\nSELECT 1;"),
            ])
            .unwrap()
        );
        // A symlink that stays inside the directory is read like a file.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.0.join("10_c.sql"), dir.0.join("11_d.sql")).unwrap();
            let set = MigrationSet::from_dir(&dir.0).unwrap();
            assert_eq!(set.get("11_d.sql").unwrap().content, "SELECT 10;");
        }
    }

    #[test]
    fn directory_errors_name_the_path() {
        let err = MigrationSet::from_dir("/nonexistent/migrations").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot read the migrations directory `/nonexistent/migrations`: "),
            "{text}"
        );
        assert!(text.ends_with("; create it (an empty directory means no migrations) or point the migrator at the right path"), "{text}");

        let dir = TempDir::new("empty");
        assert!(MigrationSet::from_dir(&dir.0).unwrap().is_empty());

        dir.write("001_a.sql", "  \n");
        let err = MigrationSet::from_dir(&dir.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "migration `001_a.sql` is empty; write the SQL in it or delete it"
        );

        dir.write("001_a.sql", b"SELECT '\xff';");
        let err = MigrationSet::from_dir(&dir.0).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot read migration `{}`: invalid utf-8",
                dir.0.canonicalize().unwrap().join("001_a.sql").display()
            )),
            "{text}"
        );
        assert!(text.ends_with("; save the file as UTF-8"), "{text}");
        std::fs::remove_file(dir.0.join("001_a.sql")).unwrap();

        dir.write("init.sql", "SELECT 1;");
        let err = MigrationSet::from_dir(&dir.0).unwrap_err();
        assert!(matches!(&err, SourceError::NoVersion { filename } if filename == "init.sql"));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_links_leading_outside() {
        let dir = TempDir::new("link");
        let outside = TempDir::new("link-outside");
        outside.write("x.sql", "SELECT 1;");
        dir.write("001_a.sql", "SELECT 1;");
        std::os::unix::fs::symlink(outside.0.join("x.sql"), dir.0.join("002_link.sql")).unwrap();
        let err = MigrationSet::from_dir(&dir.0).unwrap_err();
        let root = dir.0.canonicalize().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "migration `{}` resolves to `{}`, outside the migrations directory; refusing to read it: copy the file into the directory instead of linking to it",
                root.join("002_link.sql").display(),
                outside.0.canonicalize().unwrap().join("x.sql").display()
            )
        );

        std::fs::remove_file(dir.0.join("002_link.sql")).unwrap();
        std::os::unix::fs::symlink(dir.0.join("missing"), dir.0.join("003_broken.sql")).unwrap();
        let err = MigrationSet::from_dir(&dir.0).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot read migration `{}`: ",
                root.join("003_broken.sql").display()
            )),
            "{text}"
        );
        assert!(text.ends_with("(a broken symlink?)"), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn refuses_non_utf8_file_names() {
        use std::os::unix::ffi::OsStrExt;
        let dir = TempDir::new("name");
        let name = std::ffi::OsStr::from_bytes(b"001_\xff.sql");
        std::fs::write(dir.0.join(name), "SELECT 1;").unwrap();
        let err = MigrationSet::from_dir(&dir.0).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(": its name is not valid UTF-8; rename it (e.g. 001_name.sql)"),
            "{err}"
        );
    }

    #[test]
    fn down_files_live_in_down_and_pair_with_their_up_file() {
        let tmp = TempDir::new("down");
        tmp.write("001_a.sql", "CREATE TABLE {{tables.a}} (id int);");
        tmp.write("002_b.sql", "CREATE TABLE {{tables.b}} (id int);");
        std::fs::create_dir(tmp.0.join("down")).unwrap();
        tmp.write(
            "down/002_b.down.sql",
            "-- pgdbm:no-transaction\nDROP TABLE {{tables.b}};",
        );
        let set = MigrationSet::from_dir(&tmp.0).unwrap();
        assert_eq!(names(&set), ["001_a.sql", "002_b.sql"]);
        assert_eq!(set.get("001_a.sql").unwrap().down, None);
        let down = set.get("002_b.sql").unwrap().down.clone().unwrap();
        assert_eq!(down.filename, "down/002_b.down.sql");
        assert!(down.content.contains("DROP TABLE"));
        assert!(down.no_transaction);
        // A down file does not change what the set applies.
        let ups = MigrationSet::from_embedded(&[
            ("001_a.sql", "CREATE TABLE {{tables.a}} (id int);"),
            ("002_b.sql", "CREATE TABLE {{tables.b}} (id int);"),
        ])
        .unwrap();
        assert_eq!(set.set_checksum(), ups.set_checksum());

        tmp.write("down/003_c.down.sql", "DROP TABLE c;");
        let err = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "down migration `down/003_c.down.sql` has no up file of the same name; name it after the migration it undoes: `down/NNN_name.down.sql` for `NNN_name.sql`"
        );
        std::fs::remove_file(tmp.0.join("down/003_c.down.sql")).unwrap();
        tmp.write("down/001_a.sql", "DROP TABLE a;");
        let err = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert!(
            err.to_string()
                .contains("`down/001_a.sql` does not end in `.down.sql`"),
            "{err}"
        );
        std::fs::remove_file(tmp.0.join("down/001_a.sql")).unwrap();
        tmp.write("down/001_a.down.sql", "  \n");
        let err = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert!(
            matches!(err, SourceError::Empty { ref filename } if filename == "down/001_a.down.sql"),
            "{err}"
        );
    }

    #[test]
    fn a_down_file_among_the_up_files_is_refused() {
        // pgdbm (Python) would run it as a migration, before its up file.
        let tmp = TempDir::new("down-top");
        tmp.write("001_a.sql", "CREATE TABLE a (id int);");
        tmp.write("001_a.down.sql", "DROP TABLE a;");
        let err = MigrationSet::from_dir(&tmp.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`001_a.down.sql` is a down migration at the top of the migrations directory, where pgdbm (Python) would apply it as an up migration (it runs every *.sql file there); move it to `down/001_a.down.sql`"
        );
        let err = MigrationSet::from_embedded(&[
            ("001_a.sql", "SELECT 1;"),
            ("001_a.down.sql", "SELECT 1;"),
        ])
        .unwrap_err();
        assert!(matches!(err, SourceError::DownAmongUpFiles { .. }));
        let set = MigrationSet::from_embedded(&[
            ("down/001_a.down.sql", "SELECT 2;"),
            ("001_a.sql", "SELECT 1;"),
        ])
        .unwrap();
        assert_eq!(
            set.get("001_a.sql").unwrap().down.as_ref().unwrap().content,
            "SELECT 2;"
        );
    }
}
