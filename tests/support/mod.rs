#![allow(dead_code)]
//! Test support for fault-injection tests: private PostgreSQL servers (and replicas), PgBouncer
//! and an HTTP load driver.

pub mod captured;
pub mod http_load;
pub mod myservice;
pub mod packages;
pub mod partition;
pub mod patroni;
pub mod pg_server;
pub mod pgbouncer;
pub mod service;
pub mod tools;
