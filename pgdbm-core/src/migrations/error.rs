//! Why a migration set could not be read or a file created.

use std::path::PathBuf;

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
    /// A down file lies among the up files, where pgdbm (Python) would apply it as an up migration.
    #[error(
        "`{filename}` is a down migration at the top of the migrations directory, where pgdbm (Python) would apply it as an up migration (it runs every *.sql file there); move it to `down/{filename}`"
    )]
    DownAmongUpFiles {
        /// The file name.
        filename: String,
    },
    /// A file in `down/` is not named after an up file.
    #[error(
        "down migration `down/{filename}` {problem}; name it after the migration it undoes: `down/NNN_name.down.sql` for `NNN_name.sql`"
    )]
    DownWithoutUp {
        /// The file name inside `down/`.
        filename: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A file in `repeatable/` cannot be used as a repeatable migration.
    #[error("repeatable migration `{filename}` {problem}")]
    Repeatable {
        /// The path inside the migrations directory, e.g. `repeatable/views.sql`.
        filename: String,
        /// What is wrong with it, and what to do.
        problem: &'static str,
    },
}
