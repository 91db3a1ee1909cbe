//! An ordered, validated set of migrations, read from a directory or embedded.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::file::hex;
use super::{Migration, SourceError, new_migration_filename};

/// An ordered, validated set of migrations: by version number, then by file name; version
/// numbers unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
}

impl MigrationSet {
    /// The `*.sql` regular files at the top of `dir`, in apply order.
    ///
    /// Hidden files (`.name.sql`), other extensions and subdirectories are ignored. A missing
    /// directory is an error (not an empty set), so a wrong path cannot pass for "nothing to do".
    /// A symlink that leads outside `dir`, a file that is not UTF-8 and an empty file are errors
    /// naming the file.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<MigrationSet, SourceError> {
        let dir = dir.as_ref();
        let dir_err = |source| SourceError::Directory {
            path: dir.to_path_buf(),
            source,
        };
        let root = dir.canonicalize().map_err(dir_err)?;
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            let Some(os_name) = path.file_name() else {
                continue;
            };
            let hidden = os_name.as_encoded_bytes().starts_with(b".");
            if hidden || path.extension().is_none_or(|e| e != "sql") {
                continue;
            }
            paths.push(path);
        }
        // read_dir order is arbitrary; sorting makes the first reported error the same everywhere.
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let unreadable = |reason: String| SourceError::Unreadable {
                path: path.clone(),
                reason,
            };
            let target = path
                .canonicalize()
                .map_err(|e| unreadable(format!("{e} (a broken symlink?)")))?;
            if !target.starts_with(&root) {
                return Err(SourceError::OutsideDirectory { path, target });
            }
            if !target.is_file() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return Err(unreadable(
                    "its name is not valid UTF-8; rename it (e.g. 001_name.sql)".into(),
                ));
            };
            let name = name.to_string();
            let bytes = std::fs::read(&target).map_err(|e| unreadable(e.to_string()))?;
            let content = String::from_utf8(bytes)
                .map_err(|e| unreadable(format!("{e}; save the file as UTF-8")))?;
            files.push((name, content));
        }
        Self::build(files)
    }

    /// A set from `(filename, content)` pairs, e.g. files embedded at compile time; validated and
    /// ordered like [`MigrationSet::from_dir`], whatever order the pairs come in.
    pub fn from_embedded(files: &[(&str, &str)]) -> Result<MigrationSet, SourceError> {
        Self::build(
            files
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
        )
    }

    fn build(files: Vec<(String, String)>) -> Result<MigrationSet, SourceError> {
        let mut migrations = files
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
        Ok(MigrationSet { migrations })
    }

    /// The migrations in apply order.
    pub fn iter(&self) -> std::slice::Iter<'_, Migration> {
        self.migrations.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.migrations.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }

    /// The migration with this file name.
    pub fn get(&self, filename: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.filename == filename)
    }

    /// One SHA-256 (lowercase hex) over every file name and checksum, in apply order: identifies
    /// the set, e.g. to key a template database built from it. Renaming, editing (beyond what
    /// [`checksum`] ignores), adding or removing a file changes it.
    pub fn set_checksum(&self) -> String {
        let mut h = Sha256::new();
        for m in &self.migrations {
            // NUL and newline cannot occur in the checksum, so the encoding is unambiguous.
            h.update(m.filename.as_bytes());
            h.update([0]);
            h.update(m.checksum.as_bytes());
            h.update([b'\n']);
        }
        hex(&h.finalize())
    }

    /// The file name the next migration called `name` gets; see [`new_migration_filename`].
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
}
