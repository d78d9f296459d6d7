//! Leadership gate: run the writing loops only while this replica leads.
//!
//! The Lease itself is kept by `kube-lease-manager`; it reports leadership on a
//! `watch::Receiver<bool>`. [`while_leading`] turns that signal into "start the controller when
//! we gain the Lease, drop it (cancelling every in-flight write) as soon as we lose it, start it
//! again on the next gain". Every replica keeps serving HTTP regardless.

use std::future::Future;

use tokio::sync::watch;

/// Why [`while_leading`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The loop future completed on its own (e.g. shutdown on a signal).
    Finished,
    /// The leadership signal went away (the lease task ended).
    SignalClosed,
}

/// Runs `start()` whenever `leader` is true and cancels it when it turns false.
///
/// `on_change` is told every transition (true = started leading), for logs.
pub async fn while_leading<F, Fut>(
    mut leader: watch::Receiver<bool>,
    mut start: F,
    mut on_change: impl FnMut(bool),
) -> Stopped
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return Stopped::SignalClosed;
            }
        }
        on_change(true);
        let mut lost = leader.clone();
        let lost = async move {
            while *lost.borrow_and_update() {
                if lost.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::select! {
            () = start() => return Stopped::Finished,
            still_open = lost => {
                on_change(false);
                if !still_open {
                    return Stopped::SignalClosed;
                }
            }
        }
    }
}

/// A Lease named `sealkit-controller` in `namespace`, held as `identity`: returns the
/// leadership signal and the task that keeps the Lease (dropping it gives the Lease up).
pub async fn lease(
    client: kube::Client,
    namespace: &str,
    identity: String,
    manager: &str,
) -> Result<(watch::Receiver<bool>, impl Send + 'static), String> {
    let lease = kube_lease_manager::LeaseManagerBuilder::new(client, "sealkit-controller")
        .with_namespace(namespace)
        .with_identity(identity)
        .with_field_manager(manager)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let (mut rx, task) = lease.watch().await;
    let (tx, out) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let leading = *rx.borrow_and_update();
            tracing::info!(leading, "leadership changed");
            if tx.send(leading).is_err() || rx.changed().await.is_err() {
                break;
            }
        }
    });
    Ok((out, task))
}

/// This replica's identity: `--identity` / `$POD_NAME`, else the host name.
pub fn identity(flag: Option<&str>) -> String {
    flag.map(str::to_string).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "sealkit".into())
    })
}

/// Leadership as a signal: with `elect`, through a Lease in `namespace` (see [`lease`]);
/// without, this replica always leads. The second value keeps the Lease task (or the sender of
/// the always-true signal) alive: hold it as long as the signal is used.
pub async fn leadership(
    client: kube::Client,
    elect: bool,
    namespace: &str,
    identity_flag: Option<&str>,
    manager: &str,
) -> Result<(watch::Receiver<bool>, Box<dyn std::any::Any + Send>), String> {
    if elect {
        let (rx, task) = lease(client, namespace, identity(identity_flag), manager).await?;
        Ok((rx, Box::new(task)))
    } else {
        let (tx, rx) = watch::channel(true);
        Ok((rx, Box::new(tx)))
    }
}
