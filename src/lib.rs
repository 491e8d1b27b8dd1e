//! csbox: a sandbox launcher for parallel Claude Code sessions.
//!
//! The path of `csbox run`: `cli` → `commands::run` → `resolve` (profile, flags, facts) →
//! `plan` (pure data) → `sandbox` (namespaces, mounts, capabilities, seccomp,
//! supervision), with `session` (store, lock, metadata) beside it; `oci` exports the same
//! plan as an OCI runtime spec.

#[macro_use]
pub mod log;

pub mod cli;
pub mod commands;
pub mod doctor;
pub mod error;
pub mod exit;
pub mod fault;
pub mod fsutil;
pub mod gc;
pub mod gitconfig;
pub mod gitdirs;
pub mod hints;
pub mod human;
pub mod net;
pub mod oci;
pub mod pathkey;
pub mod paths;
pub mod plan;
pub mod profile;
pub mod resolve;
pub mod sandbox;
pub mod session;
pub mod trace;
pub mod update;
