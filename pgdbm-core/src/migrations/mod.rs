//! Migration files, with no database involved: discovery, versions and order, pgdbm's
//! checksums, the `-- pgdbm:no-transaction` marker and a statement splitter. The runner
//! ([`Migrator`](crate::Migrator)) and the `embed_migrations!` / `tsql!` macros share them.

mod relations;
mod source;
mod split;

pub use relations::Relations;
pub use source::{
    MAX_FILENAME_LEN, Migration, MigrationSet, MigrationVersion, SourceError, checksum,
    create_migration_file, is_no_transaction, new_migration_filename, parse_version,
};
pub use split::{Statement, char_position_to_byte_offset, line_col, split_statements};
