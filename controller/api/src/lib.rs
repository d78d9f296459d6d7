//! sealkit-api: the custom resource types sealkit serves, and nothing else.
//!
//! `SealedSecret` (`bitnami.com/v1alpha1`), field for field as upstream's CRD so that existing
//! manifests and the upstream controller keep working; ESO's `ExternalSecret`, `SecretStore` and
//! `ClusterSecretStore` (`external-secrets.io/v1`) for the subset the syncer serves; Flux's
//! `GitRepository` and `Kustomization` for the sync loop. Defaults are applied in code,
//! never as CRD `default:` markers (they cause permanent diffs in GitOps tools).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod external_secret;
mod flux;
mod sealed_secret;

pub use external_secret::*;
pub use flux::*;
pub use sealed_secret::*;
