//! Test stores on either backend. Storage tests written with `both_backends!` run twice, as
//! `<test>::sqlite` and `<test>::postgres`; [`temp_store`] gives the store of the variant running.
//!
//! PostgreSQL: `TGMX_TEST_POSTGRES_URL` (a server where the URL's user may create databases), or
//! else a throwaway cluster `tests/rig/postgres.sh` starts once per test process, stopped when it
//! exits. Every store is a database of its own. The PostgreSQL variants exist when the build found
//! PostgreSQL (`cfg(tgmx_postgres)`, see build.rs); a developer without it gets one build warning
//! and SQLite runs only, CI (`TGMX_REQUIRE_POSTGRES=1`) fails instead.

use std::cell::Cell;
use std::sync::OnceLock;

use super::Store;

thread_local! {
    /// The backend of the test running on this thread (`#[tokio::test]` runs on one thread).
    static POSTGRES: Cell<bool> = const { Cell::new(false) };
}

/// Run a test body with [`temp_store`] giving PostgreSQL stores.
#[cfg_attr(not(tgmx_postgres), allow(dead_code))]
pub(crate) async fn on_postgres<F: std::future::Future<Output = ()>>(body: F) {
    POSTGRES.with(|p| p.set(true));
    body.await;
    POSTGRES.with(|p| p.set(false));
}

/// The URL of a PostgreSQL server for tests (an admin database of it): `TGMX_TEST_POSTGRES_URL`,
/// or the rig's cluster, started on first use.
pub fn postgres_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("TGMX_TEST_POSTGRES_URL")
            && !url.is_empty()
        {
            return url;
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
        let out = std::process::Command::new("bash")
            .arg(root.join("tests/rig/postgres.sh"))
            .arg("start")
            .env("RIG_DIR", target.join(format!("pg-rig/unit-{}", std::process::id())))
            .env("WATCH_PID", std::process::id().to_string())
            .env("RIG_CLEANUP", "1")
            .output()
            .expect("run tests/rig/postgres.sh");
        assert!(
            out.status.success(),
            "tests/rig/postgres.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 URL").trim().to_owned()
    })
}

/// A fresh, empty PostgreSQL database on the test server; its URL.
pub async fn fresh_postgres_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let admin = postgres_url();
    let name = format!(
        "tgmx_t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        super::now_ms()
    );
    let mut conn: sqlx::PgConnection = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .expect("connect to the test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let _ = sqlx::Connection::close(conn).await;
    let mut url = url::Url::parse(admin).expect("a URL");
    url.set_path(&name);
    url.to_string()
}

/// A fresh store in a temporary directory (kept while the `TempDir` lives): SQLite, or in a
/// `::postgres` variant a fresh PostgreSQL database.
pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    if POSTGRES.with(Cell::get) {
        let url = fresh_postgres_database().await;
        return (Store::open(&url).await.unwrap(), dir);
    }
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::open(&url).await.unwrap(), dir)
}

impl Store {
    /// The text values a query returns (a test's look at what is stored).
    pub(crate) async fn test_strings(&self, sql: &'static str) -> Vec<String> {
        on!(self.db(), |p| sqlx::query_scalar(sql).fetch_all(p).await).unwrap()
    }

    /// Run a statement (a test's write behind the bridge's back).
    pub(crate) async fn test_exec(&self, sql: &'static str) {
        on!(self.db(), |p| sqlx::query(sql).execute(p).await.map(|_| ())).unwrap()
    }
}

/// Storage tests that run on both backends: each `async fn` becomes a module with a `sqlite` and
/// (when the build found PostgreSQL) a `postgres` test; the body gets its store from
/// [`temp_store`].
macro_rules! both_backends {
    ($($(#[$m:meta])* async fn $name:ident() $body:block)*) => {
        $(
            $(#[$m])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body() $body

                #[tokio::test]
                async fn sqlite() {
                    body().await
                }

                #[cfg(tgmx_postgres)]
                #[tokio::test]
                async fn postgres() {
                    $crate::storage::testing::on_postgres(body()).await
                }
            }
        )*
    };
}
pub(crate) use both_backends;
