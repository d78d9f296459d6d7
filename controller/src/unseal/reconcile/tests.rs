//! Reconcile behaviour against the in-memory API: create, update, unmanaged collision, managed,
//! self-heal, no RSA on restart, key rotation, failures with status and Events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealkit_keys::seal::PublicKey;
use sealkit_keys::seal::manifest::{SealOptions, seal_secret};

use super::*;
use crate::runtime::metrics::Metrics;
use crate::unseal::keys::{load, new_key_secret};
use crate::unseal::memory::MemoryApi;

fn key_secret(name: &str) -> Secret {
    let (mut s, _) =
        new_key_secret("k", "kube-system", 2048, Duration::from_secs(3600), "").expect("key");
    s.metadata.name = Some(name.into());
    s
}

fn state(keys: &[Secret]) -> AppState {
    AppState::new(load(keys), Arc::new(Metrics::default()))
}

fn sealed_for(state: &AppState, ns: &str, password: &str) -> SealedSecret {
    let mut ss = sealed_as(state, "db", password);
    ss.metadata.namespace = Some(ns.into());
    ss.metadata.uid = Some("uid-1".into());
    ss
}

/// `prod/<name>` sealed (strict scope) with the state's newest key.
fn sealed_as(state: &AppState, name: &str, password: &str) -> SealedSecret {
    let keys = state.keys();
    let cert = &keys.newest.as_ref().expect("newest").cert_pem;
    let pk = PublicKey::from_certificate_pem(cert.as_bytes()).expect("cert");
    let doc = seal_secret(
        &serde_json::json!({"kind": "Secret", "metadata": {"name": name, "namespace": "prod"}, "stringData": {"password": password}}),
        &SealOptions::default(),
        &pk,
    )
    .expect("seal");
    let mut ss: SealedSecret = serde_json::from_value(doc).expect("typed");
    ss.metadata.uid = Some(format!("uid-{name}"));
    ss.metadata.generation = Some(1);
    ss
}

fn password(api: &MemoryApi) -> Vec<u8> {
    password_of(api, "prod/db")
}

fn synced(api: &MemoryApi, k: &str) -> (String, String, String) {
    let st = api.statuses.lock().expect("lock");
    let c = &st
        .get(k)
        .expect("status")
        .conditions
        .as_ref()
        .expect("conditions")[0];
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

#[tokio::test]
async fn create_restart_self_heal_and_update() {
    let st = state(&[key_secret("k1")]);
    let api = MemoryApi::default();
    let ss = sealed_for(&st, "prod", "hunter2");
    assert_eq!(reconcile(&ss, &api, &st).await, Ok(Outcome::Done));
    assert_eq!(password(&api), b"hunter2");
    assert_eq!(synced(&api, "prod/db").0, "True");
    assert_eq!(api.events.lock().expect("lock")[0].1.reason, "Unsealed");

    // Restart: the object (now with status) and its Secret are in sync: no write, no RSA.
    let mut ss2 = ss.clone();
    ss2.status = api.statuses.lock().expect("lock").get("prod/db").cloned();
    let ops = st.keys().keyring.private_key_operations();
    let writes = *api.writes.lock().expect("lock");
    assert_eq!(reconcile(&ss2, &api, &st).await, Ok(Outcome::Done));
    assert_eq!(
        st.keys().keyring.private_key_operations(),
        ops,
        "no RSA on the restart path"
    );
    assert_eq!(
        *api.writes.lock().expect("lock"),
        writes,
        "no write when nothing changed"
    );

    // Self-heal: the Secret is deleted, or edited by hand.
    api.secrets.lock().expect("lock").clear();
    reconcile(&ss2, &api, &st).await.expect("heal");
    assert_eq!(password(&api), b"hunter2");
    api.edit_secret("prod/db", |s| {
        s.data.as_mut().expect("data").insert(
            "password".into(),
            k8s_openapi::ByteString(b"edited".to_vec()),
        );
    });
    reconcile(&ss2, &api, &st).await.expect("heal");
    assert_eq!(password(&api), b"hunter2");

    // A new value in Git.
    let mut newer = sealed_for(&st, "prod", "rotated-pw");
    newer.metadata.generation = Some(2);
    reconcile(&newer, &api, &st).await.expect("update");
    assert_eq!(password(&api), b"rotated-pw");
}

#[tokio::test]
async fn key_rotation_keeps_old_values_open() {
    let k1 = key_secret("k1");
    let st = state(std::slice::from_ref(&k1));
    let old = sealed_for(&st, "prod", "old-key-value");
    std::thread::sleep(Duration::from_millis(1100));
    let st2 = state(&[k1, key_secret("k2")]);
    assert_ne!(
        st.keys().newest.as_ref().expect("a").fingerprint,
        st2.keys().newest.as_ref().expect("b").fingerprint,
        "the new key seals"
    );
    let api = MemoryApi::default();
    reconcile(&old, &api, &st2).await.expect("old opens");
    assert_eq!(password(&api), b"old-key-value");
    let fresh = sealed_for(&st2, "prod", "new-key-value");
    reconcile(&fresh, &api, &st2).await.expect("new opens");
    assert_eq!(password(&api), b"new-key-value");
}

#[tokio::test]
async fn failures_give_status_and_events_and_other_objects_continue() {
    let st = state(&[key_secret("k1")]);
    let api = MemoryApi::default();
    // Copied to another namespace: strict scope refuses, with the reason.
    let moved = sealed_for(&st, "staging", "very-secret-value");
    assert_eq!(reconcile(&moved, &api, &st).await, Ok(Outcome::Failed));
    let (status, reason, message) = synced(&api, "staging/db");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ErrUnsealFailed")
    );
    assert!(
        message.contains("'prod/db'") && message.contains("'staging/db'"),
        "{message}"
    );
    assert!(!message.contains("very-secret-value"));
    assert!(
        api.events
            .lock()
            .expect("lock")
            .iter()
            .all(|(_, e)| !e.message.contains("very-secret-value"))
    );

    // A Secret we do not own.
    let foreign = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("db".into()),
            namespace: Some("prod".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.secrets
        .lock()
        .expect("lock")
        .insert("prod/db".into(), foreign);
    let ss = sealed_for(&st, "prod", "pw");
    assert_eq!(reconcile(&ss, &api, &st).await, Ok(Outcome::Failed));
    assert_eq!(synced(&api, "prod/db").1, "ErrUpdateFailed");
    api.secrets.lock().expect("lock").clear();

    // The API refuses the write: an error (retried with backoff), status says why.
    *api.fail_applies.lock().expect("lock") = Some("admission webhook denied".into());
    assert!(reconcile(&ss, &api, &st).await.is_err());
    assert_eq!(synced(&api, "prod/db").1, "ErrUpdateFailed");
    *api.fail_applies.lock().expect("lock") = None;
    assert_eq!(reconcile(&ss, &api, &st).await, Ok(Outcome::Done));
    let metrics = st.metrics.encode();
    assert!(
        metrics.contains("reason=\"unseal\"") && metrics.contains("reason=\"collision\""),
        "{metrics}"
    );
}

/// One replica's view of the shared in-memory cluster: counts the writes it makes.
struct Replica {
    api: Arc<MemoryApi>,
    writes: std::sync::atomic::AtomicU64,
    leading: std::sync::atomic::AtomicBool,
}

impl Replica {
    fn new(api: &Arc<MemoryApi>) -> Arc<Self> {
        Arc::new(Replica {
            api: api.clone(),
            writes: Default::default(),
            leading: Default::default(),
        })
    }
    fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn wrote(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ClusterApi for Replica {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        self.api.get_secret(namespace, name).await
    }
    async fn get_sealed(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SealedSecret>, String> {
        self.api.get_sealed(namespace, name).await
    }
    fn cached_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.api.cached_version(namespace, name)
    }
    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        self.wrote();
        self.api.apply_secret(secret).await
    }
    async fn set_status(
        &self,
        ss: &SealedSecret,
        status: &SealedSecretStatus,
    ) -> Result<(), String> {
        self.wrote();
        self.api.set_status(ss, status).await
    }
    async fn event(&self, ss: &SealedSecret, note: EventNote) {
        self.api.event(ss, note).await
    }
}

/// Waits (bounded) until `cond` holds; the bound only turns a hang into a failure.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn leader_hand_over_only_the_leader_writes() {
    use crate::runtime::leader::{Stopped, while_leading};
    use tokio::sync::watch;

    let st = Arc::new(state(&[key_secret("k1")]));
    let cluster = Arc::new(MemoryApi::default());
    // The SealedSecrets "in the cluster", as a watch would deliver them.
    let store = Arc::new(Mutex::new(vec![sealed_for(&st, "prod", "first")]));
    let replica = |lease: watch::Receiver<bool>| {
        let me = Replica::new(&cluster);
        let (me2, me3, st, store) = (me.clone(), me.clone(), st.clone(), store.clone());
        let task = tokio::spawn(async move {
            while_leading(
                lease,
                || {
                    let (me, st, store) = (me2.clone(), st.clone(), store.clone());
                    async move {
                        loop {
                            let objects = store.lock().expect("lock").clone();
                            for ss in &objects {
                                let _ = reconcile(ss, me.as_ref(), &st).await;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                },
                move |leading| {
                    me3.leading
                        .store(leading, std::sync::atomic::Ordering::SeqCst)
                },
            )
            .await
        });
        (me, task)
    };
    let (lease_a, rx_a) = watch::channel(true);
    let (lease_b, rx_b) = watch::channel(false);
    let (a, task_a) = replica(rx_a);
    let (b, task_b) = replica(rx_b);

    eventually("A unseals", || password(&cluster) == b"first").await;
    assert!(a.writes() > 0);
    assert_eq!(b.writes(), 0, "a follower never writes");

    // Hand-over: A loses the Lease, B gains it; a change made meanwhile is picked up by B.
    lease_a.send(false).expect("a");
    eventually("A stops", || !a.leading()).await;
    let a_writes = a.writes();
    let mut newer = sealed_for(&st, "prod", "second");
    newer.metadata.generation = Some(2);
    *store.lock().expect("lock") = vec![newer];
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        password(&cluster),
        b"first",
        "nobody leads: nothing written"
    );
    lease_b.send(true).expect("b");
    eventually("B unseals the change", || password(&cluster) == b"second").await;
    // B also heals what is deleted while it leads.
    cluster.secrets.lock().expect("lock").clear();
    eventually("B restores the Secret", || password(&cluster) == b"second").await;
    assert_eq!(a.writes(), a_writes, "the old leader stopped writing");

    // And back: A leads again, B stops.
    lease_b.send(false).expect("b");
    eventually("B stops", || !b.leading()).await;
    let b_writes = b.writes();
    lease_a.send(true).expect("a");
    cluster.secrets.lock().expect("lock").clear();
    eventually("A restores the Secret", || password(&cluster) == b"second").await;
    assert_eq!(b.writes(), b_writes);

    // The lease task going away ends the gate.
    drop((lease_a, lease_b));
    assert_eq!(task_a.await.expect("join"), Stopped::SignalClosed);
    assert_eq!(task_b.await.expect("join"), Stopped::SignalClosed);
}

/// The RSA metric counts each operation once when reconciles run in parallel (a before/after
/// difference around one reconcile would also count the work of the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rsa_operations_are_counted_exactly_under_concurrency() {
    let st = Arc::new(state(&[key_secret("k1")]));
    let objects: Vec<SealedSecret> = (0..24).map(|_| sealed_for(&st, "prod", "pw")).collect();
    let tasks: Vec<_> = objects
        .into_iter()
        .map(|ss| {
            let st = st.clone();
            tokio::spawn(async move {
                // A fresh cluster each: every reconcile must unseal its one value.
                let api = MemoryApi::default();
                reconcile(&ss, &api, &st).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), Ok(Outcome::Done));
    }
    let text = st.metrics.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("sealkit_rsa_private_key_operations_total"))
        .expect("metric");
    assert_eq!(
        line, "sealkit_rsa_private_key_operations_total 24",
        "{text}"
    );
    assert_eq!(st.keys().keyring.private_key_operations(), 24);
}

/// A resync of an up-to-date object reads nothing: the watch cache shows the Secret at the
/// version the previous reconcile found up to date. Any write to the Secret gives it a new
/// version, so an edit is still read and healed; a new spec is read and applied.
#[tokio::test]
async fn a_resync_of_an_up_to_date_object_reads_nothing() {
    let st = state(&[key_secret("k1")]);
    let api = MemoryApi::default();
    let ss = sealed_for(&st, "prod", "hunter2");
    let gets = || *api.gets.lock().expect("lock");
    reconcile(&ss, &api, &st).await.expect("create");
    // The watch event of our own write: read once, found up to date, remembered.
    reconcile(&ss, &api, &st).await.expect("event");
    let (reads, ops) = (gets(), st.keys().keyring.private_key_operations());
    for _ in 0..3 {
        reconcile(&ss, &api, &st).await.expect("resync");
    }
    assert_eq!(gets(), reads, "no read while the Secret keeps its version");
    assert_eq!(st.keys().keyring.private_key_operations(), ops);

    api.edit_secret("prod/db", |s| {
        s.data.as_mut().expect("data").insert(
            "password".into(),
            k8s_openapi::ByteString(b"edited".to_vec()),
        );
    });
    reconcile(&ss, &api, &st).await.expect("heal");
    assert_eq!(gets(), reads + 1, "a new version is read");
    assert_eq!(password(&api), b"hunter2");

    let mut newer = sealed_for(&st, "prod", "rotated-pw");
    newer.metadata.generation = Some(2);
    let reads = gets();
    reconcile(&newer, &api, &st).await.expect("update");
    assert_eq!(gets(), reads + 1, "a new spec is read");
    assert_eq!(password(&api), b"rotated-pw");

    // A Secret whose MAC key left the keyring is read (and re-unsealed) again.
    reconcile(&newer, &api, &st).await.expect("event");
    let reads = gets();
    let k2 = key_secret("k2");
    let fresh = state(&[k2]);
    assert!(
        !fresh.verified.holds(
            "prod",
            "db",
            &api.cached_version("prod", "db").expect("version"),
            Expected::of(&newer).hash(),
            &fresh.keys().keyring
        ),
        "a fresh process knows nothing"
    );
    st.verified.forget("prod", "db");
    reconcile(&newer, &api, &st).await.expect("forgotten");
    assert_eq!(gets(), reads + 1);
    // Entries of SealedSecrets that are gone are dropped.
    assert_eq!(st.verified.len(), 1);
    st.verified.retain(|_, name| name != "db");
    assert!(st.verified.is_empty());
}

/// After a restart, one listing fills what the first reconciles would have read: every
/// up-to-date Secret is known, so the first reconcile of each object reads nothing; a Secret
/// edited by hand, one for another spec and an unowned one are not.
#[tokio::test]
async fn a_restart_listing_replaces_one_read_per_object() {
    let k1 = key_secret("k1");
    let st = state(std::slice::from_ref(&k1));
    let api = MemoryApi::default();
    let objects: Vec<SealedSecret> = (0..4)
        .map(|i| sealed_as(&st, &format!("s{i}"), &format!("pw-{i}")))
        .collect();
    for ss in &objects {
        reconcile(ss, &api, &st).await.expect("create");
    }
    // While we are down: s1 is edited by hand, s2's SealedSecret changes; s0 and s3 stay.
    api.edit_secret("prod/s1", |s| {
        s.data.as_mut().expect("data").insert(
            "password".into(),
            k8s_openapi::ByteString(b"edited".to_vec()),
        );
    });
    let mut now = objects.clone();
    now[2] = sealed_as(&st, "s2", "changed");

    // The restart: a new process with the same key, nothing known; one listing.
    let restarted = state(&[k1]);
    let expected = now
        .iter()
        .map(|ss| (("prod".to_string(), ss.name_any()), Expected::of(ss)))
        .collect();
    let listed: Vec<Secret> = api
        .secrets
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    let found = restarted
        .verified
        .fill(&expected, listed, &restarted.keys().keyring);
    assert_eq!(
        found, 2,
        "s0 and s3 are up to date; s1 was edited, s2's spec changed"
    );

    let reads = *api.gets.lock().expect("lock");
    for ss in [&now[0], &now[3]] {
        reconcile(ss, &api, &restarted).await.expect("restart");
    }
    assert_eq!(
        *api.gets.lock().expect("lock"),
        reads,
        "no read for s0 and s3"
    );
    assert_eq!(restarted.keys().keyring.private_key_operations(), 0);
    for ss in [&now[1], &now[2]] {
        reconcile(ss, &api, &restarted).await.expect("restart");
    }
    assert_eq!(
        *api.gets.lock().expect("lock"),
        reads + 2,
        "s1 and s2 are read"
    );
    assert_eq!(password_of(&api, "prod/s1"), b"pw-1", "healed");
    assert_eq!(password_of(&api, "prod/s2"), b"changed", "updated");
}

fn password_of(api: &MemoryApi, key: &str) -> Vec<u8> {
    api.secrets
        .lock()
        .expect("lock")
        .get(key)
        .and_then(|s| s.data.clone())
        .and_then(|d| d.get("password").cloned())
        .map(|b| b.0)
        .unwrap_or_default()
}

/// The watch cache keeps a SealedSecret whose Secret was found up to date without its
/// ciphertext (`lean`). A resync of such a copy reads nothing; when its Secret was edited, the
/// reconcile reads the SealedSecret first and heals the Secret from it; a SealedSecret deleted
/// meanwhile is left alone.
#[tokio::test]
async fn a_lean_cached_copy_is_read_in_full_only_when_it_must_be_planned() {
    let st = state(&[key_secret("k1")]);
    let api = MemoryApi::default();
    let ss = sealed_for(&st, "prod", "hunter2");
    api.sealed
        .lock()
        .expect("lock")
        .insert("prod/db".into(), ss.clone());
    reconcile(&ss, &api, &st).await.expect("create");
    reconcile(&ss, &api, &st).await.expect("event");
    let mut cached = ss.clone();
    crate::unseal::lean::sealed(&mut cached, &st.verified);
    assert!(
        crate::unseal::lean::is_lean(&cached),
        "found up to date: lean"
    );
    assert!(cached.spec.encrypted_data.is_empty());
    let sealed_gets = || *api.sealed_gets.lock().expect("lock");
    let writes = *api.writes.lock().expect("lock");

    reconcile(&cached, &api, &st).await.expect("resync");
    assert_eq!(sealed_gets(), 0, "a resync reads nothing");

    api.edit_secret("prod/db", |s| {
        s.data.as_mut().expect("data").insert(
            "password".into(),
            k8s_openapi::ByteString(b"edited".to_vec()),
        );
    });
    reconcile(&cached, &api, &st).await.expect("heal");
    assert_eq!(sealed_gets(), 1, "the SealedSecret is read to plan");
    assert_eq!(password(&api), b"hunter2");
    assert_eq!(*api.writes.lock().expect("lock"), writes + 1);

    api.sealed.lock().expect("lock").clear();
    api.edit_secret("prod/db", |s| {
        s.data.as_mut().expect("data").clear();
    });
    let outcome = reconcile(&cached, &api, &st).await.expect("deleted");
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        *api.writes.lock().expect("lock"),
        writes + 1,
        "nothing written"
    );
}
