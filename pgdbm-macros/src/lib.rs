//! Procedural macros of pgdbm. Use them through the `pgdbm` crate.
