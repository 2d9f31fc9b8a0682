//! b2bsync: moves partner accounts that still sign in with internal credentials onto
//! Microsoft Entra B2B collaboration, in place, over several scheduled runs.
//!
//! The pipeline (see `docs/architecture.md`):
//! `source` (LDAP) and `cloud` (Graph) read, `join`, `mapping` and `plan` are pure,
//! `apply` writes, `state` remembers, `report` tells. `emulator` is the Graph emulator
//! that the tests and rehearsals run against.

pub mod cli;
pub mod cloud;
pub mod config;
pub mod emulator;
pub mod guard;
pub mod join;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod report;
pub mod source;
pub mod state;
