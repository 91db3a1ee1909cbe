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
    hex(&Sha256::digest(normalized.trim().as_bytes()))
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
        if content.trim().is_empty() {
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
        return Err(invalid("it is empty; give a short description such as `add posts`"));
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

    #[test]
    fn checksum_matches_python() {
        // hashlib.sha256("CREATE TABLE IF NOT EXISTS {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT);".encode()).hexdigest()
        let c =
            "CREATE TABLE IF NOT EXISTS {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT);\r\n";
        assert_eq!(
            checksum(c),
            "7c1bb0eef737009f5bf43b11f6cc003f67c1916d39f1a03c43d023a503241caf"
        );
        assert_eq!(checksum("\n\n  x  \n"), checksum("x"));
        assert_ne!(checksum("a\rb"), checksum("a\nb")); // a lone CR is kept, as in pgdbm
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("001_name.sql"), Some(1));
        assert_eq!(parse_version("V1__name.sql"), Some(1));
        assert_eq!(parse_version("V12__x.sql"), Some(12));
        assert_eq!(
            parse_version("20240101120000_name.sql"),
            Some(20240101120000)
        );
        assert_eq!(parse_version("v2__a.sql"), None);
        assert_eq!(parse_version("V1_a.sql"), None);
        assert_eq!(parse_version("custom.name.sql"), None);
        assert_eq!(parse_version("_1.sql"), None);
    }

    #[test]
    fn marker() {
        assert!(is_no_transaction("-- pgdbm:no-transaction\nCREATE INDEX"));
        assert!(is_no_transaction(
            "SELECT 1;\r\n-- pgdbm:no-transaction\r\nX"
        ));
        assert!(is_no_transaction("x\n-- pgdbm:no-transaction"));
        assert!(!is_no_transaction("--pgdbm:no-transaction\n"));
        assert!(!is_no_transaction("  -- pgdbm:no-transaction\n"));
        assert!(!is_no_transaction("-- pgdbm:no-transactions\n"));
        assert!(!is_no_transaction("-- PGDBM:NO-TRANSACTION\n"));
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
        let names: Vec<&str> = set.iter().map(|m| m.filename.as_str()).collect();
        assert_eq!(names, ["001_a.sql", "2_b.sql", "V3__x.sql", "10_c.sql"]);
        let err = MigrationSet::from_embedded(&[("1_a.sql", "a"), ("001_b.sql", "b")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("001_b.sql") && text.contains("1_a.sql"),
            "{text}"
        );
        let err = MigrationSet::from_embedded(&[("1_a.sql", " \n")]).unwrap_err();
        assert!(err.to_string().contains("`1_a.sql` is empty"), "{err}");
        let err = MigrationSet::from_embedded(&[("init.sql", "x")]).unwrap_err();
        assert!(
            err.to_string().contains("`init.sql` has no version"),
            "{err}"
        );
    }

    #[test]
    fn reads_a_directory() {
        let dir = std::env::temp_dir().join(format!("pgdbm-src-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("002_b.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.join("001_a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.join(".003_hidden.sql"), "x").unwrap();
        std::fs::write(dir.join("004_notes.txt"), "x").unwrap();
        std::fs::write(dir.join("sub").join("005_nested.sql"), "x").unwrap();
        let set = MigrationSet::from_dir(&dir).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().next().unwrap().filename, "001_a.sql");
        assert_eq!(set.next_filename("Add Posts").unwrap(), "003_add_posts.sql");
        assert_eq!(set.set_checksum().len(), 64);

        let path = create_migration_file(&dir, "add posts").unwrap();
        assert!(path.ends_with("003_add_posts.sql"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.to_uppercase().contains("BEGIN;"));
        assert_eq!(MigrationSet::from_dir(&dir).unwrap().len(), 3);
        assert!(create_migration_file(&dir, "bad/name").is_err());

        #[cfg(unix)]
        {
            let outside =
                std::env::temp_dir().join(format!("pgdbm-outside-{}.sql", std::process::id()));
            std::fs::write(&outside, "SELECT 1;").unwrap();
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(&outside, dir.join("009_link.sql")).unwrap();
            let err = MigrationSet::from_dir(&dir).unwrap_err();
            assert!(
                err.to_string().contains("outside the migrations directory"),
                "{err}"
            );
            std::fs::remove_file(&outside).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();

        let err = MigrationSet::from_dir("/nonexistent/migrations").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/migrations"), "{err}");
    }
}
