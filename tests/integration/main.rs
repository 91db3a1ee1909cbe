//! Integration tests against the real PostgreSQL server (no mocks). Each test works in a
//! database of its own, so the tests run in parallel.

mod common;

mod config;
mod database;
mod inspect;
mod lock_waits;
mod migration_tools;
mod migrations;
mod pool;
mod query_stats;
mod shared_pool;
mod transaction;
