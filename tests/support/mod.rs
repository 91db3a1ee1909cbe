#![allow(dead_code)]
//! Test support for fault-injection tests: a private PostgreSQL server and an HTTP load driver.

pub mod captured;
pub mod http_load;
pub mod pg_server;
pub mod service;
