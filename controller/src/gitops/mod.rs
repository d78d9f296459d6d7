//! The GitOps sync loop (Flux's `GitRepository` + `Kustomization`): fetch a source, render a
//! path, decrypt SOPS documents, server-side apply in stages, prune safely.

pub mod apply;
pub mod reconcile;
pub mod run;
pub mod source;
pub mod webhook;

#[cfg(test)]
mod testutil;
