//! Migration files: discovery, versions, order, checksums, and creating the next file.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A migration set could not be read, or a new migration file could not be created.
///
/// Every message names the directory or file concerned and says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The directory does not exist or cannot be listed.
    #[error(
        "cannot read the migrations directory `{}`: {source}; create it (an empty directory means no migrations) or point the migrator at the right path",
        path.display()
    )]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read migration `{}`: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why (not UTF-8, I/O error), with what to do about it.
        reason: String,
    },
    /// A file resolves (through a symlink) outside the directory.
    #[error(
        "migration `{}` resolves to `{}`, outside the migrations directory; refusing to read it: copy the file into the directory instead of linking to it",
        path.display(), target.display()
    )]
    OutsideDirectory {
        /// The file.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The file name carries no version.
    #[error(
        "migration `{filename}` has no version in its name; name files like 001_name.sql, V1__name.sql or 20240101120000_name.sql"
    )]
    NoVersion {
        /// The file name.
        filename: String,
    },
    /// The version in the file name does not fit in 128 bits.
    #[error(
        "migration `{filename}` has a version with too many digits (at most 38); use a shorter number such as 001 or a 14-digit timestamp"
    )]
    VersionTooLarge {
        /// The file name.
        filename: String,
    },
    /// The file name is longer than the history table stores.
    #[error(
        "migration file name `{filename}` is {chars} characters long, but the history table stores at most 255; rename it"
    )]
    FilenameTooLong {
        /// The file name.
        filename: String,
        /// Its length in characters.
        chars: usize,
    },
    /// Two files share a version.
    #[error(
        "migrations `{first}` and `{second}` have the same version {version}; give one of them another number"
    )]
    DuplicateVersion {
        /// The version number.
        version: u128,
        /// One file.
        first: String,
        /// The other.
        second: String,
    },
    /// The same file name was given twice (embedded migrations).
    #[error("migration `{filename}` is listed twice; list each file once")]
    DuplicateFile {
        /// The file name.
        filename: String,
    },
    /// The file is empty or only white space.
    #[error("migration `{filename}` is empty; write the SQL in it or delete it")]
    Empty {
        /// The file name.
        filename: String,
    },
    /// A name given to create a migration file is not usable.
    #[error("invalid migration name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why, and what is accepted.
        reason: &'static str,
    },
    /// Writing a new migration file failed (it already exists, or an I/O error).
    #[error("cannot create migration `{}`: {source}; {hint}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The longest file name the history table stores (`filename VARCHAR(255)`, in characters).
pub const MAX_FILENAME_LEN: usize = 255;

/// The version at the start of a migration file name.
///
/// Ordered by number first, so `2_b.sql` comes before `10_c.sql`; `text` only breaks ties (which
/// a [`MigrationSet`] never holds, since it refuses duplicate numbers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MigrationVersion {
    /// The version as a number: `001_a.sql` → 1.
    pub number: u128,
    /// The digits as written in the file name: `001_a.sql` → `"001"`, `V7__a.sql` → `"7"` (what
    /// pgdbm's `Migration.version` returns for these names).
    pub text: String,
}

impl fmt::Display for MigrationVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One migration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The file name, e.g. `001_create_users.sql`.
    pub filename: String,
    /// The version from the name.
    pub version: MigrationVersion,
    /// The rest of the name, without the version, its separator and `.sql`: `create_users`.
    pub name: String,
    /// The file's text, before templating.
    pub content: String,
    /// pgdbm's checksum of the text (see [`checksum`]).
    pub checksum: String,
    /// Whether the file has a `-- pgdbm:no-transaction` line (see [`is_no_transaction`]).
    pub no_transaction: bool,
}

/// pgdbm's checksum: lowercase hex SHA-256 of the text with CRLF turned into LF and surrounding
/// white space trimmed (Python: `sha256(content.replace("\r\n", "\n").strip().encode())`).
///
/// ```
/// assert_eq!(
///     pgdbm_core::migrations::checksum("SELECT 1;\r\n"),
///     pgdbm_core::migrations::checksum("  SELECT 1;"),
/// );
/// ```
pub fn checksum(content: &str) -> String {
    let normalized = content.replace("\r\n", "\n");
    hex(&Sha256::digest(python_strip(&normalized).as_bytes()))
}

/// Python's `str.strip()`: Rust's `trim()` plus U+001C..U+001F, which Python counts as white
/// space and Unicode does not. A checksum that differed from pgdbm's would make every applied file
/// look modified.
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `content` has pgdbm's marker: a line that starts with exactly `-- pgdbm:no-transaction`
/// followed by white space or the end of the text (Python:
/// `re.search(r"^-- pgdbm:no-transaction(?=\s|$)", content, re.MULTILINE)`).
///
/// ```
/// use pgdbm_core::migrations::is_no_transaction;
/// assert!(is_no_transaction("-- pgdbm:no-transaction\r\nCREATE INDEX CONCURRENTLY i ON t (a);"));
/// assert!(!is_no_transaction("  -- pgdbm:no-transaction\n"));
/// ```
pub fn is_no_transaction(content: &str) -> bool {
    const MARKER: &str = "-- pgdbm:no-transaction";
    // Python's `^` with MULTILINE only matches after `\n`, so splitting on `\n` alone is exact.
    content.split('\n').any(|line| {
        line.strip_prefix(MARKER)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })
}

/// The version in a file name: `001_name.sql` → 1, `V1__name.sql` → 1,
/// `20240101120000_name.sql` → 20240101120000; `None` for any other name.
///
/// ```
/// use pgdbm_core::migrations::parse_version;
/// let v = parse_version("007_add_posts.sql").unwrap();
/// assert_eq!((v.number, v.text.as_str()), (7, "007"));
/// assert!(parse_version("init.sql").is_none());
/// ```
pub fn parse_version(filename: &str) -> Option<MigrationVersion> {
    split_version(filename).ok().map(|(v, _)| v)
}

/// Why a name carries no usable version.
enum VersionProblem {
    Missing,
    TooLarge,
}

/// Splits `filename` into its version and the name after the separator (`.sql` removed).
fn split_version(filename: &str) -> Result<(MigrationVersion, &str), VersionProblem> {
    let digits_then = |s: &str, sep: &str| -> Option<(usize, usize)> {
        let end = s.find(|c: char| !c.is_ascii_digit())?;
        (end > 0 && s[end..].starts_with(sep)).then_some((end, end + sep.len()))
    };
    let (digits, rest) = match digits_then(filename, "_") {
        Some((end, rest)) => (&filename[..end], &filename[rest..]),
        None => {
            let after_v = filename.strip_prefix('V').ok_or(VersionProblem::Missing)?;
            let (end, rest) = digits_then(after_v, "__").ok_or(VersionProblem::Missing)?;
            (&after_v[..end], &after_v[rest..])
        }
    };
    let number = digits.parse().map_err(|_| VersionProblem::TooLarge)?;
    let name = rest.strip_suffix(".sql").unwrap_or(rest);
    Ok((
        MigrationVersion {
            number,
            text: digits.to_string(),
        },
        name,
    ))
}

impl Migration {
    /// A migration from a file name and its text, validated: the name carries a version and fits
    /// the history table, and the text is not empty.
    ///
    /// ```
    /// use pgdbm_core::migrations::Migration;
    /// let m = Migration::new("V2__add_posts.sql", "CREATE TABLE {{tables.posts}} (id int);").unwrap();
    /// assert_eq!((m.version.number, m.name.as_str(), m.no_transaction), (2, "add_posts", false));
    /// ```
    pub fn new(filename: &str, content: &str) -> Result<Migration, SourceError> {
        let (version, name) = split_version(filename).map_err(|problem| match problem {
            VersionProblem::Missing => SourceError::NoVersion {
                filename: filename.to_string(),
            },
            VersionProblem::TooLarge => SourceError::VersionTooLarge {
                filename: filename.to_string(),
            },
        })?;
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
        Ok(Migration {
            filename: filename.to_string(),
            name: name.to_string(),
            version,
            checksum: checksum(content),
            no_transaction: is_no_transaction(content),
            content: content.to_string(),
        })
    }
}

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
pub fn create_migration_file(dir: impl AsRef<Path>, name: &str) -> Result<PathBuf, SourceError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| SourceError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    let set = MigrationSet::from_dir(dir)?;
    let filename = new_migration_filename(&set, name)?;
    let path = dir.join(&filename);
    let body = format!(
        "-- Migration: {}\n\
         -- Write tables as {{{{tables.name}}}} so they land in the service's schema.\n\
         -- The runner applies this file and records it in one transaction; add a line\n\
         -- `-- pgdbm:no-transaction` for statements such as CREATE INDEX CONCURRENTLY.\n\n",
        name.trim()
    );
    let create_err = |hint, source| SourceError::Create {
        path: path.clone(),
        hint,
        source,
    };
    // create_new: another process creating the same file between from_dir and here must not be
    // overwritten.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "a file with that name already exists; try again or pick another name"
            } else {
                "check that the directory is writable"
            };
            create_err(hint, e)
        })?;
    std::io::Write::write_all(&mut f, body.as_bytes())
        .map_err(|e| create_err("check the free disk space", e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("pgdbm-src-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, content: impl AsRef<[u8]>) {
            std::fs::write(self.0.join(name), content).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(set: &MigrationSet) -> Vec<&str> {
        set.iter().map(|m| m.filename.as_str()).collect()
    }

    #[test]
    fn checksum_matches_python() {
        // Values from hashlib.sha256(content.replace("\r\n", "\n").strip().encode()).hexdigest()
        let c =
            "CREATE TABLE IF NOT EXISTS {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT);\r\n";
        assert_eq!(
            checksum(c),
            "7c1bb0eef737009f5bf43b11f6cc003f67c1916d39f1a03c43d023a503241caf"
        );
        assert_eq!(
            checksum("\n SELECT 1;\r\nSELECT 2;\t\n"),
            "f64316e71b25e7e950d2440c39420b51dfcc2931e172a923d5b7f89fdc67342d"
        );
        // Python's strip() also trims Unicode white space such as U+00A0 and U+3000, and the
        // separators U+001C..U+001F that Rust's trim() keeps.
        assert_eq!(
            checksum("\u{a0}SELECT 'é';\u{3000}"),
            "c5f84c3f2634f117a637e393398187dd6e5d3d2d3bde89f8237f4d5891d4bf58"
        );
        assert_eq!(checksum("\u{1c}\u{85}x\u{1f}\u{2029}"), checksum("x"));
        assert_eq!(checksum("\u{200b}x"), checksum("\u{200b}x ")); // ZWSP is not white space
        assert_ne!(checksum("\u{200b}x"), checksum("x"));
        assert_eq!(checksum("\n\n  x  \n"), checksum("x"));
        assert_ne!(checksum("a\rb"), checksum("a\nb")); // a lone CR is kept, as in pgdbm
    }

    #[test]
    fn versions_and_names() {
        let parts = |f: &str| {
            let m = Migration::new(f, "SELECT 1;").unwrap();
            (m.version.number, m.version.text, m.name)
        };
        assert_eq!(parts("001_name.sql"), (1, "001".into(), "name".into()));
        assert_eq!(parts("V1__name.sql"), (1, "1".into(), "name".into()));
        assert_eq!(parts("V12__a_b.sql"), (12, "12".into(), "a_b".into()));
        assert_eq!(
            parts("20240101120000_create_users.sql"),
            (
                20240101120000,
                "20240101120000".into(),
                "create_users".into()
            )
        );
        // Embedded names need not end in .sql; `_` after the first separator stays in the name.
        assert_eq!(parts("2__x"), (2, "2".into(), "_x".into()));
        assert_eq!(parts("3_.sql"), (3, "3".into(), String::new()));
        assert_eq!(parse_version("V1__a.sql").unwrap().to_string(), "1");
        for bad in [
            "v2__a.sql",
            "V1_a.sql",
            "Vx__a.sql",
            "custom.name.sql",
            "_1.sql",
            "001.sql",
            "001-a.sql",
            "",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
            let err = Migration::new(bad, "SELECT 1;").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "migration `{bad}` has no version in its name; name files like 001_name.sql, V1__name.sql or 20240101120000_name.sql"
                )
            );
        }
        let huge = format!("{}_a.sql", "9".repeat(39));
        assert_eq!(parse_version(&huge), None);
        let err = Migration::new(&huge, "SELECT 1;").unwrap_err();
        assert!(matches!(err, SourceError::VersionTooLarge { .. }));
        assert!(err.to_string().starts_with(&format!(
            "migration `{huge}` has a version with too many digits"
        )));
    }

    #[test]
    fn version_order_is_numeric() {
        let v = |f: &str| parse_version(f).unwrap();
        assert!(v("2_b.sql") < v("10_c.sql"));
        assert!(v("001_a.sql") < v("2_b.sql"));
        assert!(v("V9__a.sql") < v("20240101120000_a.sql"));
    }

    #[test]
    fn long_file_names_are_refused() {
        let ok = format!("1_{}.sql", "a".repeat(MAX_FILENAME_LEN - 6));
        assert_eq!(ok.chars().count(), MAX_FILENAME_LEN);
        assert!(Migration::new(&ok, "SELECT 1;").is_ok());
        let long = format!("1_{}.sql", "é".repeat(MAX_FILENAME_LEN - 5));
        let err = Migration::new(&long, "SELECT 1;").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "migration file name `{long}` is 256 characters long, but the history table stores at most 255; rename it"
            )
        );
    }

    #[test]
    fn marker() {
        assert!(is_no_transaction("-- pgdbm:no-transaction\nCREATE INDEX"));
        assert!(is_no_transaction(
            "SELECT 1;\r\n-- pgdbm:no-transaction\r\nX"
        ));
        assert!(is_no_transaction("x\n-- pgdbm:no-transaction"));
        assert!(is_no_transaction(
            "-- pgdbm:no-transaction because CONCURRENTLY\n"
        ));
        assert!(is_no_transaction("-- pgdbm:no-transaction\tx"));
        assert!(!is_no_transaction("--pgdbm:no-transaction\n"));
        assert!(!is_no_transaction("  -- pgdbm:no-transaction\n"));
        assert!(!is_no_transaction("--  pgdbm:no-transaction\n"));
        assert!(!is_no_transaction("-- pgdbm:no-transactions\n"));
        assert!(!is_no_transaction("-- pgdbm:no-transaction;\n"));
        assert!(!is_no_transaction("-- PGDBM:NO-TRANSACTION\n"));
        assert!(!is_no_transaction("SELECT 1; -- pgdbm:no-transaction\n"));
        let m = Migration::new("1_a.sql", "-- pgdbm:no-transaction\nSELECT 1;").unwrap();
        assert!(m.no_transaction);
        assert!(
            !Migration::new("1_a.sql", "SELECT 1;")
                .unwrap()
                .no_transaction
        );
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
