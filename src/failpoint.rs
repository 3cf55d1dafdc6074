//! Failpoints: named places where the daemon can be told to fail once, for tests of its own
//! recovery (a crashed task is restarted, a panicking handler does not stop its lane). Off
//! unless `TGMX_FAILPOINTS` names them (comma-separated), e.g. `TGMX_FAILPOINTS=poller-panic`;
//! each named failpoint fires once per process, or every time when its name ends with `*`
//! (`poller-panic*`: a task that cannot run at all). `fast-restarts` shortens the supervisor's
//! restart backoff (from 1 s to 10 ms) so a test of its give-up rule takes seconds.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

static ARMED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| {
    Mutex::new(
        std::env::var("TGMX_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    )
});

/// Whether failpoint `name` fires now (once, or every time when armed as `name*`).
pub fn fire(name: &str) -> bool {
    let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
    armed.remove(name) || armed.contains(&format!("{name}*"))
}

/// Whether `name` is armed (a setting, not consumed).
pub fn armed(name: &str) -> bool {
    ARMED.lock().unwrap_or_else(|p| p.into_inner()).contains(name)
}
