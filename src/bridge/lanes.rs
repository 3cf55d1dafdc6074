//! Lanes: one ordered, durable worker per portal in each direction, and the supervisor that
//! keeps the daemon's long-running tasks alive.
//!
//! Matrix -> Telegram has a lane per room, Telegram -> Matrix a lane per chat. A lane drains its
//! own part of the inbox in order (`bridge::run_worker`), so a Telegram group held to its pace,
//! or a chat whose room cannot be joined yet, delays only itself. Order is kept within a lane;
//! across lanes none is promised: messages of two chats may be bridged in either order. A lane
//! of a room or chat that is not a portal (an invite from a stranger, an unbridged group) ends
//! once its inbox is empty, so thousands of such rooms cost nothing once handled.

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
            tracing::error!(task = name, "task crashed: {what}; {crashes} crashes in a row, giving up");
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
