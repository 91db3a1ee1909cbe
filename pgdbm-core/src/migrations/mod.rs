//! Migration files, with no database involved: discovery, versions and order, pgdbm's
//! checksums, the `-- pgdbm:no-transaction` marker, repeatable files and a statement splitter.
//! The runner ([`Migrator`](crate::Migrator)) and the `embed_migrations!` / `tsql!` macros
//! share them.

mod create;
mod error;
mod file;
mod relations;
mod repeatable;
mod set;
mod split;
#[cfg(test)]
mod test_dir;

pub use create::{create_migration_file, create_repeatable_file, new_migration_filename};
pub use error::SourceError;
pub use file::{
    DOWN_DIR, DOWN_SUFFIX, DownMigration, MAX_FILENAME_LEN, Migration, MigrationVersion, checksum,
    is_no_transaction, parse_version,
};
pub use relations::Relations;
pub use repeatable::{REPEATABLE_DIR, RepeatableMigration, is_repeatable};
pub use set::MigrationSet;
pub use split::{Statement, char_position_to_byte_offset, line_col, split_statements};
