//! Integration tests against the real ClickHouse server (the dev server, started by the
//! harness when nothing answers): each test has a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod analyst_roles;
mod cluster;
mod events;
mod integrity;
mod migrations;
mod queries;
mod retention;
mod rollups;
mod support;
