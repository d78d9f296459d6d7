//! The ExternalSecret syncer: ESO's `external-secrets.io/v1` manifests, AWS Secrets Manager and
//! Parameter Store, with one shared, batching fetch cache.
//!
//! - `provider`: the provider seam (+ an in-memory provider for tests);
//! - `aws`: the AWS SDK providers, with a token bucket per (credentials, region, API);
//! - `cache`: the cross-ExternalSecret fetch cache that coalesces requests into batch calls;
//! - `sync`: pure data building (property, decoding, extract, find, rewrite, templates);
//! - `reconcile`: refresh decision, store resolution, write, status.

pub mod aws;
pub mod cache;
pub mod provider;
pub mod reconcile;
pub mod run;
pub mod sync;
