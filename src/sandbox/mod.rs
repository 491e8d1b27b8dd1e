//! Applying a plan: clone into new namespaces, set up in the child, supervise from outside.
//!
//! Process tree: the supervisor (csbox, outside; holds the session lock) → pid 1 of the new
//! pid namespace (our code: mounts, drops privileges, reaps, forwards signals) → the command.
//! The path of a launch: [`prepare::prepare`] (plan → steps), [`launch::launch`] (clone),
//! [`child::child_main`] (the steps, then exec), [`supervise::supervise`] (the wait);
//! [`outcome`] says how it ended.

pub mod child;
pub mod compat;
pub mod egress;
pub mod enter;
pub mod landlock;
pub mod launch;
pub mod outcome;
pub mod prepare;
mod relay;
pub mod seccomp;
pub mod steps;
pub mod supervise;
pub(crate) mod syscalls;

pub use compat::launch_unsandboxed;
pub use launch::launch;
pub use outcome::{Launch, SetupError, Started};
pub(crate) use supervise::{pipe, read_full};
#[cfg(test)]
mod tests;
