//! Runtime core of [pgdbm](https://docs.rs/pgdbm): configuration, pool, the [`Database`] manager
//! with table templating, transactions, COPY, migrations and test support.
//!
//! Most users depend on the `pgdbm` facade crate, which re-exports everything here.
//!
//! With default features off only the pure modules ([`template`], [`ident`], [`project`], [`build`]) are
//! built; that is what `pgdbm-macros` uses at compile time without building a database driver
//! for the host.
#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::return_self_not_must_use)]

pub mod build;
pub mod compiled;
pub mod ident;
#[cfg(feature = "lint")]
pub mod lint;
pub mod migrations;
pub mod named_params;
pub mod project;
pub mod sql_lex;
pub mod template;

#[cfg(feature = "runtime")]
mod runtime;
#[cfg(feature = "runtime")]
pub use runtime::*;
