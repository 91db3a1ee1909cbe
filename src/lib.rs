#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use pgdbm_core::*;
pub use pgdbm_macros::{embed_migrations, test, tsql, tsql_as, tsql_scalar, tsql_str};
