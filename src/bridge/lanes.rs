//! Lanes: one ordered, durable worker per portal in each direction, and the supervisor that
//! keeps the daemon's long-running tasks alive.
//!
//! Matrix -> Telegram has a lane per room, Telegram -> Matrix a lane per chat. A lane drains its
//! own part of the inbox in order (`bridge::run_worker`), so a Telegram group held to its pace,
//! or a chat whose room cannot be joined yet, delays only itself. Order is kept within a lane;
//! across lanes none is promised: messages of two chats may be bridged in either order. A lane
//! of a room or chat that is not a portal (an invite from a stranger, an unbridged group) ends
//! once its inbox is empty, so thousands of such rooms cost nothing once handled.

use futures::FutureExt;

use crate::error::Error;
use crate::storage::{Direction, InboxItem, Store};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::error::Result;

/// Start and wake lanes: on every wake-up (at the latest every 5 s) `list` names the keys with
/// waiting work; a lane is started by `spawn(key, wake)` for each key without a running one, and
/// every listed lane is woken. `gauge` is told how many lanes run.
pub async fn run_lanes<K, L, LF, S>(
    direction: &'static str,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    list: L,
    spawn: S,
    gauge: impl Fn(usize),
) where
    K: Eq + Hash + Clone,
    L: Fn() -> LF,
    LF: Future<Output = Result<Vec<K>>>,
    S: Fn(K, Arc<Notify>) -> JoinHandle<()>,
{
    let mut lanes: HashMap<K, (Arc<Notify>, JoinHandle<()>)> = HashMap::new();
    loop {
        lanes.retain(|_, (_, handle)| !handle.is_finished());
        match list().await {
            Ok(keys) => {
                for key in keys {
                    let (lane_wake, _) = lanes.entry(key.clone()).or_insert_with(|| {
                        let lane_wake = Arc::new(Notify::new());
                        (lane_wake.clone(), spawn(key, lane_wake))
                    });
                    lane_wake.notify_one();
                }
            }
            Err(e) => tracing::error!(direction, "cannot read the inbox: {e}"),
        }
        gauge(lanes.len());
        tokio::select! {
            _ = wake.notified() => {},
            _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, (_, handle)) in lanes {
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
}

/// Crashes in a row (each run shorter than [`STABLE_RUN`]) after which restarting is taken not
/// to help: with the backoff below that is about three minutes of a task that cannot run.
pub const GIVE_UP_AFTER: u32 = 8;

/// A run this long resets the crash count and the backoff.
const STABLE_RUN: Duration = Duration::from_secs(300);

/// Run `task` until it returns (it returns when the daemon stops). If it panics, log the task's
/// name and the panic, and start it again after a backoff (1 s, doubling up to 60 s): a bug in
/// one loop must not silently stop the poller, the config watcher or a direction of bridging.
/// After [`GIVE_UP_AFTER`] crashes in a row restarting cannot help: the error stops the daemon
/// with a non-zero exit, so the service manager starts it afresh (and the operator is paged)
/// instead of a daemon that runs without one of its loops.
pub async fn supervise<F, Fut>(name: &'static str, stop: watch::Receiver<bool>, task: F) -> crate::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let first_backoff = if crate::failpoint::armed("fast-restarts") {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(1)
    };
    let mut backoff = first_backoff;
    let mut crashes = 0;
    loop {
        let started = std::time::Instant::now();
        // The spawned task's panic comes back as its `JoinError`: no catch_unwind needed here.
        let what = match tokio::spawn(task()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_panic() => {
                crate::metrics::METRICS.task_restarted();
                panic_message(&*e.into_panic())
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= STABLE_RUN {
            crashes = 0;
            backoff = first_backoff;
        }
        crashes += 1;
        if crashes >= GIVE_UP_AFTER {
            tracing::error!(
                task = name,
                "task crashed: {what}; {crashes} crashes in a row, giving up"
            );
            return Err(crate::Error::Internal(format!(
                "task `{name}` crashed {crashes} times in a row (last: {what}); restarting it cannot help"
            )));
        }
        tracing::error!(task = name, "task crashed: {what}; restarting it in {backoff:?}");
        if *stop.borrow() {
            return Ok(());
        }
        let mut stop = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`), or "".
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// When a worker removes bridged items from its inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneAt {
    /// After each item, before the next: replaying a bridged item after a crash would send it
    /// again (Matrix -> Telegram: `sendMessage` has no idempotency key).
    EachItem,
    /// Once per batch, in one commit: a replay is a no-op (Telegram -> Matrix: the message map is
    /// written after each send, and Matrix transaction ids derive from Telegram ids).
    EachBatch,
}

/// Drain an inbox in order (`exit_when_drained`: return once it is empty, for a lane of a room
/// or chat that is not a portal): `next` fetches a batch (at most [`crate::storage::BATCH`] items; a
/// shorter batch means the inbox is drained, or `next` woke the worker for the rest), `handle`
/// bridges one item, `done` removes bridged items. Transient failures are retried in place with
/// backoff; permanent ones are recorded and skipped.
#[allow(clippy::too_many_arguments)]
pub async fn run_worker<N, H, D, F1, F2, F3>(
    name: &'static str,
    direction: Direction,
    store: Store,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    done_at: DoneAt,
    exit_when_drained: bool,
    next: N,
    handle: H,
    done: D,
) where
    N: Fn() -> F1,
    F1: std::future::Future<Output = Result<Vec<InboxItem>>>,
    H: Fn(InboxItem) -> F2,
    F2: std::future::Future<Output = Result<()>>,
    D: Fn(Vec<i64>) -> F3,
    F3: std::future::Future<Output = Result<()>>,
{
    // Removing bridged items must not fail quietly: an item left in the inbox is bridged again
    // (Matrix -> Telegram: posted twice). Retried until it works or the daemon stops.
    let finish_stop = shutdown.clone();
    let finish = |keys: Vec<i64>| {
        let (done, store) = (&done, &store);
        let mut stop = finish_stop.clone();
        async move {
            if keys.is_empty() {
                return;
            }
            let mut wait = Duration::from_millis(250);
            while let Err(e) = done(keys.clone()).await {
                tracing::error!(worker = name, ?keys, "cannot mark done, retrying in {wait:?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = stop.wait_for(|s| *s) => return,
                }
                if !store.until_writable(&mut stop).await {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    };
    // A short batch drained the inbox: wait for a wake-up instead of asking again (a wake-up
    // sent meanwhile is kept by the `Notify`, so nothing waits for the timer).
    let mut drained = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if drained {
            tokio::select! {
                _ = wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
                _ = shutdown.changed() => return,
            }
        }
        // Nothing is bridged while results cannot be saved: a post whose link is lost would be
        // posted again.
        if store.write_fault().is_some() && !store.until_writable(&mut shutdown).await {
            return;
        }
        let batch = match next().await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(worker = name, "cannot read inbox: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        drained = batch.len() < crate::storage::BATCH;
        let mut bridged = Vec::with_capacity(batch.len());
        'batch: for item in batch {
            let key = item.key;
            let mut backoff = Duration::from_millis(250);
            loop {
                // A panic while bridging one item (a bug, or input a parser chokes on) must not
                // stop the worker: it counts as a permanent failure of that item.
                let outcome = std::panic::AssertUnwindSafe(handle(item.clone())).catch_unwind().await;
                let outcome = outcome.unwrap_or_else(|panic| {
                    Err(Error::Internal(format!(
                        "panic while bridging: {}",
                        panic_message(&*panic)
                    )))
                });
                match outcome {
                    Ok(()) => break,
                    // Held (standby): the rest of the batch stays in the inbox, untouched; the
                    // lane asks again (and gets nothing while the hold lasts).
                    Err(Error::Held(why)) => {
                        tracing::debug!(worker = name, key, "held: {why}");
                        drained = true;
                        break 'batch;
                    }
                    Err(e) if e.is_transient() => {
                        let wait = match &e {
                            Error::Telegram {
                                retry_after: Some(d), ..
                            } => *d,
                            _ => backoff,
                        };
                        if store.write_fault().is_some() {
                            // The database refuses writes: retry as soon as it takes them again.
                            tracing::warn!(worker = name, key, "waiting for database writes to work: {e}");
                            if !store.until_writable(&mut shutdown).await {
                                finish(bridged).await;
                                return;
                            }
                            continue;
                        }
                        tracing::warn!(worker = name, key, "transient failure, retrying in {wait:?}: {e}");
                        // A wake-up (new work, or the room just set up) retries at once, except
                        // where Telegram said how long to wait.
                        let told_to_wait = matches!(
                            &e,
                            Error::Telegram {
                                retry_after: Some(_),
                                ..
                            }
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {},
                            _ = wake.notified(), if !told_to_wait => {},
                            _ = shutdown.changed() => {
                                finish(bridged).await;
                                return;
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                    Err(e) => {
                        tracing::error!(worker = name, key, "cannot bridge, skipping: {e}");
                        crate::metrics::METRICS.failed(direction);
                        let _ = store
                            .record_failure(direction, &format!("{name}:{key}"), &e.to_string())
                            .await;
                        break;
                    }
                }
            }
            bridged.push(key);
            if done_at == DoneAt::EachItem {
                finish(std::mem::take(&mut bridged)).await;
            }
            if *shutdown.borrow() {
                finish(bridged).await;
                return;
            }
        }
        finish(bridged).await;
        if drained && exit_when_drained {
            return;
        }
    }
}
