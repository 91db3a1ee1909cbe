//! One migration file: its version, name, pgdbm's checksum and the no-transaction marker.

use std::fmt::{self, Write as _};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::SourceError;

/// The longest file name the history table stores (`filename VARCHAR(255)`, in characters).
pub const MAX_FILENAME_LEN: usize = 255;

/// The version at the start of a migration file name.
///
/// Ordered by number first, so `2_b.sql` comes before `10_c.sql`; `text` only breaks ties (which
/// a [`MigrationSet`](super::MigrationSet) never holds, since it refuses duplicate numbers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// The file that undoes it, if there is one (`down/NNN_name.down.sql`).
    pub down: Option<DownMigration>,
}

/// The file that undoes a migration, for `revert`: `down/NNN_name.down.sql` for `NNN_name.sql`.
///
/// Down files live in a `down/` subdirectory because pgdbm (Python) applies every `*.sql` file at
/// the top of the migrations directory: beside the up files it would run them as migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownMigration {
    /// The path inside the migrations directory, e.g. `down/001_create_users.down.sql`.
    pub filename: String,
    /// The file's text, before templating.
    pub content: String,
    /// Whether the file has a `-- pgdbm:no-transaction` line.
    pub no_transaction: bool,
}

/// The directory, inside the migrations directory, that holds the down files.
pub const DOWN_DIR: &str = "down";

/// The suffix of a down file's name.
pub const DOWN_SUFFIX: &str = ".down.sql";

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
pub(crate) fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
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
    ///
    /// # Errors
    ///
    /// [`SourceError::NoVersion`] when `filename` carries no version,
    /// [`SourceError::VersionTooLarge`] when the version does not fit in 128 bits,
    /// [`SourceError::FilenameTooLong`] beyond 255 characters, and [`SourceError::Empty`] when
    /// `content` is only white space.
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
            down: None,
        })
    }
}

/// `(name, content)` of the `*.sql` regular files directly in `dir` (which is `root` or inside
/// it), sorted, each name prefixed with `prefix`. Every file must resolve inside `root`.
pub(super) fn read_sql_files(
    root: &Path,
    dir: &Path,
    prefix: &str,
) -> Result<Vec<(String, String)>, SourceError> {
    let dir_err = |source| SourceError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
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
        if !target.starts_with(root) {
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
        let name = format!("{prefix}{name}");
        let bytes = std::fs::read(&target).map_err(|e| unreadable(e.to_string()))?;
        let content = String::from_utf8(bytes)
            .map_err(|e| unreadable(format!("{e}; save the file as UTF-8")))?;
        files.push((name, content));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
