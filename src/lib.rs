pub use pgdbm_core::*;
