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
