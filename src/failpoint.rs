//! Failpoints: named places where the daemon can be told to fail once, for tests of its own
//! recovery (a crashed task is restarted, a panicking handler does not stop its lane). Off
//! unless `TGMX_FAILPOINTS` names them (comma-separated), e.g. `TGMX_FAILPOINTS=poller-panic`;
//! each named failpoint fires once per process.

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

/// Whether failpoint `name` fires now (at most once).
pub fn fire(name: &str) -> bool {
    ARMED.lock().unwrap_or_else(|p| p.into_inner()).remove(name)
}
