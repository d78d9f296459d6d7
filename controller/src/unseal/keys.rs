//! Sealing keys as upstream stores them: `kubernetes.io/tls` Secrets in the controller
//! namespace, labelled `sealedsecrets.bitnami.com/sealed-secrets-key: active`, PKCS#1 `tls.key`
//! and a self-signed `tls.crt`. Every active key opens values; the newest (latest certificate
//! NotBefore) seals and is served at `/v1/cert.pem`. Renewal adds a key, never removes one.
//! Existing upstream key Secrets are used as they are.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use sealkit_keys::seal::manifest::load_private_keys;
use sealkit_keys::seal::{Fingerprint, Keyring, PrivateKey, certificate_validity};

/// The label that marks key Secrets, and its value for keys in use.
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// The label value of keys in use (anything else, e.g. `compromised`, is not loaded).
pub const KEY_ACTIVE: &str = "active";

/// The keys loaded from the key Secrets.
#[derive(Debug, Default)]
pub struct SealingKeys {
    /// Every active key (opens values).
    pub keyring: Keyring,
    /// The newest key's certificate (PEM) and fingerprint: what sealing uses.
    pub newest: Option<NewestKey>,
    /// Key Secrets that could not be used, with the reason (no key material in messages).
    pub skipped: Vec<String>,
    /// How many of the keyring's RSA operations are already in the metric.
    reported: std::sync::atomic::AtomicU64,
}

impl SealingKeys {
    /// Adds the keyring's RSA private-key operations since the last report to `counter`.
    /// Exact when reconciles run concurrently: each caller adds a disjoint delta (a
    /// before/after difference around one call would count the others' work too).
    pub fn report_ops(&self, counter: &prometheus_client::metrics::counter::Counter) {
        let now = self.keyring.private_key_operations();
        let prev = self
            .reported
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        counter.inc_by(now.saturating_sub(prev));
    }
}

/// The key that seals.
#[derive(Debug, Clone)]
pub struct NewestKey {
    /// Its certificate, as served at `/v1/cert.pem`.
    pub cert_pem: String,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// The certificate's NotBefore (renewal is measured from it).
    pub not_before: SystemTime,
    /// The key Secret's name.
    pub secret_name: String,
}

/// Loads every active key Secret. Secrets are ordered by certificate NotBefore (upstream's
/// default `--key-order-priority CertNotBefore`), oldest first.
pub fn load(secrets: &[Secret]) -> SealingKeys {
    let mut out = SealingKeys::default();
    let mut entries: Vec<(SystemTime, String, PrivateKey, String)> = Vec::new();
    for s in secrets {
        let name = s.name_any();
        if s.labels().get(KEY_LABEL).map(String::as_str) != Some(KEY_ACTIVE) {
            continue;
        }
        let data = s.data.clone().unwrap_or_default();
        let (Some(key), Some(cert)) = (data.get("tls.key"), data.get("tls.crt")) else {
            out.skipped
                .push(format!("{name}: missing tls.key or tls.crt"));
            continue;
        };
        let key = match load_private_keys(&key.0) {
            Ok(mut keys) if !keys.is_empty() => keys.remove(0),
            Ok(_) => {
                out.skipped.push(format!("{name}: tls.key holds no key"));
                continue;
            }
            Err(e) => {
                out.skipped.push(format!("{name}: tls.key: {e}"));
                continue;
            }
        };
        let cert_pem = String::from_utf8_lossy(&cert.0).into_owned();
        let not_before = match certificate_validity(cert_pem.as_bytes()) {
            Ok((nb, _)) => nb,
            Err(e) => {
                out.skipped.push(format!("{name}: tls.crt: {e}"));
                continue;
            }
        };
        entries.push((not_before, name, key, cert_pem));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    for (not_before, name, key, cert_pem) in entries {
        let fingerprint = key.fingerprint().clone();
        if out.keyring.add(key) {
            out.newest = Some(NewestKey {
                cert_pem,
                fingerprint,
                not_before,
                secret_name: name,
            });
        }
    }
    out
}

/// Whether a new key is due: none yet, the newest is older than `renew_period` (None
/// disables renewal, as `--key-renew-period 0`), or older than the `cutoff` time.
pub fn needs_new_key(
    newest: Option<SystemTime>,
    now: SystemTime,
    renew_period: Option<Duration>,
    cutoff: Option<SystemTime>,
) -> bool {
    let Some(nb) = newest else { return true };
    if cutoff.is_some_and(|c| nb < c && now >= c) {
        return true;
    }
    renew_period.is_some_and(|p| now.duration_since(nb).unwrap_or_default() >= p)
}

/// A new key Secret in upstream's layout (`generateName: <prefix>`).
pub fn new_key_secret(
    prefix: &str,
    namespace: &str,
    bits: usize,
    ttl: Duration,
    cn: &str,
) -> Result<(Secret, Fingerprint), String> {
    let key = PrivateKey::generate(bits).map_err(|e| e.to_string())?;
    let cert = key
        .self_signed_certificate(cn, ttl)
        .map_err(|e| e.to_string())?;
    let pem = key.to_pkcs1_pem().map_err(|e| e.to_string())?;
    let secret = Secret {
        metadata: ObjectMeta {
            generate_name: Some(prefix.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                KEY_LABEL.to_string(),
                KEY_ACTIVE.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.into_bytes())),
            ("tls.key".to_string(), ByteString(pem.as_bytes().to_vec())),
        ])),
        ..Default::default()
    };
    Ok((secret, key.fingerprint().clone()))
}

/// Where and how sealing keys are kept and made.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// The namespace of the key Secrets (the controller's).
    pub namespace: String,
    /// `generateName` prefix of new key Secrets.
    pub prefix: String,
    /// RSA key size of new keys.
    pub size: usize,
    /// Certificate lifetime of new keys.
    pub ttl: Duration,
    /// A new key when the newest is this old (`None`: never).
    pub renew_period: Option<Duration>,
    /// A new key when the newest was made before this time.
    pub cutoff: Option<SystemTime>,
    /// Common name of new certificates.
    pub common_name: String,
}

/// Every active key Secret of `ns`, loaded (unusable ones are skipped and logged).
pub async fn load_from(client: &kube::Client, ns: &str) -> Result<SealingKeys, kube::Error> {
    use kube::api::{Api, ListParams};
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{KEY_LABEL}={KEY_ACTIVE}")))
        .await?;
    let keys = load(&secrets.items);
    for s in &keys.skipped {
        tracing::warn!(key_secret = %s, "skipping a key Secret");
    }
    Ok(keys)
}

/// Loads the keys into `slot`, first adding a new one when this replica leads and renewal is
/// due; the slot changes only when the set of keys did. RSA key generation (seconds of CPU for
/// 4096 bits) runs on the blocking pool, never on an async worker.
pub async fn refresh(
    client: &kube::Client,
    settings: &KeySettings,
    slot: &std::sync::RwLock<std::sync::Arc<SealingKeys>>,
    leader: bool,
) -> Result<(), kube::Error> {
    use kube::api::{Api, PostParams};
    let mut keys = load_from(client, &settings.namespace).await?;
    let due = needs_new_key(
        keys.newest.as_ref().map(|n| n.not_before),
        SystemTime::now(),
        settings.renew_period,
        settings.cutoff,
    );
    if leader && due {
        let s = settings.clone();
        let made = tokio::task::spawn_blocking(move || {
            new_key_secret(&s.prefix, &s.namespace, s.size, s.ttl, &s.common_name)
        })
        .await;
        match made {
            Ok(Ok((secret, fp))) => {
                Api::<Secret>::namespaced(client.clone(), &settings.namespace)
                    .create(&PostParams::default(), &secret)
                    .await?;
                tracing::info!(fingerprint = %fp, "generated a new sealing key");
                keys = load_from(client, &settings.namespace).await?;
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot generate a sealing key"),
            Err(e) => tracing::error!(error = %e, "the key generation task failed"),
        }
    }
    let fingerprints = |k: &SealingKeys| {
        k.keyring
            .keys()
            .map(|k| k.fingerprint().clone())
            .collect::<Vec<_>>()
    };
    let changed = slot
        .read()
        .map(|current| fingerprints(&current) != fingerprints(&keys))
        .unwrap_or(true);
    if changed {
        if let Ok(mut s) = slot.write() {
            *s = std::sync::Arc::new(keys);
        }
        tracing::info!("sealing keys loaded");
    }
    Ok(())
}

/// Reloads the keys every minute (a key restored from a backup, renewal by the leader), for
/// as long as the process runs.
pub fn spawn_refresh(
    client: kube::Client,
    settings: KeySettings,
    state: std::sync::Arc<super::http::AppState>,
    leader: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            let leading = *leader.borrow();
            if let Err(e) = refresh(&client, &settings, &state.keys, leading).await {
                tracing::warn!(error = %e, "cannot refresh sealing keys");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(mut s: Secret, name: &str) -> Secret {
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn newest_seals_all_open_and_inactive_are_ignored() {
        let (a, fa) =
            new_key_secret("k", "kube-system", 2048, Duration::from_secs(3600), "").expect("a");
        std::thread::sleep(Duration::from_millis(1100)); // certificates have one-second resolution
        let (b, fb) =
            new_key_secret("k", "kube-system", 2048, Duration::from_secs(3600), "").expect("b");
        let (mut c, _) =
            new_key_secret("k", "kube-system", 2048, Duration::from_secs(3600), "").expect("c");
        c.metadata.labels = Some(BTreeMap::from([(
            KEY_LABEL.to_string(),
            "compromised".to_string(),
        )]));
        let broken = Secret {
            metadata: ObjectMeta {
                name: Some("broken".into()),
                labels: Some(BTreeMap::from([(
                    KEY_LABEL.to_string(),
                    KEY_ACTIVE.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        let keys = load(&[named(b, "kb"), named(a, "ka"), named(c, "kc"), broken]);
        assert_eq!(keys.keyring.len(), 2);
        let newest = keys.newest.expect("newest");
        assert_eq!(newest.fingerprint, fb);
        assert_eq!(newest.secret_name, "kb");
        assert!(keys.keyring.keys().any(|k| k.fingerprint() == &fa));
        assert_eq!(
            keys.skipped,
            vec!["broken: missing tls.key or tls.crt".to_string()]
        );
    }

    #[test]
    fn renewal_schedule() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert!(needs_new_key(None, t0, None, None));
        assert!(!needs_new_key(Some(t0), t0 + day, Some(30 * day), None));
        assert!(needs_new_key(Some(t0), t0 + 30 * day, Some(30 * day), None));
        assert!(
            !needs_new_key(Some(t0), t0 + 365 * day, None, None),
            "0 disables renewal"
        );
        assert!(
            needs_new_key(Some(t0), t0 + 2 * day, None, Some(t0 + day)),
            "cutoff forces a key"
        );
        assert!(!needs_new_key(
            Some(t0 + 3 * day),
            t0 + 4 * day,
            None,
            Some(t0 + day)
        ));
    }
}
