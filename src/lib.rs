//! b2bsync: moves partner accounts that still sign in with internal credentials onto
//! Microsoft Entra B2B collaboration, in place, over several scheduled runs.
//!
//! The pipeline (see `docs/architecture.md`):
//! `source` (LDAP) and `cloud` (Graph) read, `mapping`, `join`, `plan` and `guard` are pure,
//! `apply` writes, `state` remembers, `report` tells; `pipeline` wires one run and `cli` is
//! the command line. The Graph emulator that the tests and rehearsals run against is a crate
//! of its own (`crates/graph-emulator`), which this one never links.

pub mod apply;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod guard;
pub mod join;
pub mod mapping;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod source;
pub mod state;
