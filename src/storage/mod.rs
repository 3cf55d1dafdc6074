//! Storage on SQLite (the default) or PostgreSQL (sqlx, each with its own driver: SQLite is
//! opened exactly as before PostgreSQL existed). Everything the bridge must not forget across a restart lives here:
//! portals, puppets, the message map, accepted appservice transactions, inboxes of work not yet
//! bridged, and the Telegram update offset.
//!
//! One file per table group, each an `impl Store` block (as mautrix bridgev2's `database/`):
//!
//! - this file: [`Store`] itself (opening, the daemon lock, the single write path
//!   `Store::write`, the write-fault alarm), `kv`, backups, [`Direction`], and `on!`, which runs
//!   one query text on either backend (`$N` placeholders, which SQLite takes too; the few
//!   statements whose dialects differ are written twice, see [`dialect`]);
//! - [`copy`]: `tgmx migrate-db` (SQLite -> PostgreSQL), and the list of every table;
//! - [`portals`] holds `portals`;
//! - [`puppets`] holds `puppets` (and their avatars), `memberships`, `e2ee_devices`;
//! - [`messages`] holds `messages` (the message map), `tg_send_intents`, `reactions`;
//! - [`inbox`] holds `mx_transactions`, `mx_seen`, `mx_inbox`, `tg_inbox` and the Telegram offset;
//! - [`cutover`] holds `mode_switches`, `announcements`, `echo_watch`;
//! - [`instances`] holds `instances` and `leases` (who is active in an active/standby pair);
//! - [`audit`] holds `failures`, and for the readiness gates `message_files` (files that crossed,
//!   by kind) and `rollcalls` / `rollcall_answers`; it reads the counts `tgmx audit` / `tgmx status`
//!   show.
//!
//! Ids are typed (ruma) in and out; Telegram chat and message ids stay `i64` / `i32`, as
//! everywhere in the bridge. An id read back that does not parse was not written by this bridge:
//! a single row read is an error naming the column (not transient, so the item fails and is
//! recorded instead of being retried forever); a list (`Store::mx_lanes`) leaves it out with a
//! warning.

/// Run `$body` once per backend: `$c` is the backend's pool or connection (a [`Db`] arm), so the
/// same query text and binds compile for SQLite and for PostgreSQL, each with its own driver.
/// With `|$c, $pg|`, `$pg` says which (`true`: PostgreSQL), for the few statements whose text
/// differs (see [`dialect`]).
macro_rules! on {
    ($db:expr, |$c:ident, $pg:ident| $body:expr) => {
        match $db {
            $crate::storage::Db::Sqlite($c) => {
                let $pg = false;
                $body
            }
            $crate::storage::Db::Postgres($c) => {
                let $pg = true;
                $body
            }
        }
    };
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::storage::Db::Sqlite($c) => $body,
            $crate::storage::Db::Postgres($c) => $body,
        }
    };
}

pub mod audit;
pub mod copy;
pub mod cutover;
pub mod inbox;
pub mod instances;
pub mod messages;
pub mod portals;
pub mod puppets;

pub use audit::{Failure, Pending, Shortfall};
pub use cutover::{PendingAnnouncement, Switch};
pub use inbox::{BATCH, InboxItem, MxEvent, TgUpdate};
pub use instances::{Instance, LeaseTaken};
pub use messages::{MessageLink, MessagePart, RemovedReaction};
pub use portals::Portal;
pub use puppets::{E2eeDevice, Puppet};

use std::str::FromStr;

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgPoolOptions, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{
    SqliteArgumentsBuffer, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::watch;

use crate::error::Result;

/// This host's name (Linux: `/proc/sys/kernel/hostname`), if known: names a daemon's lease
/// connection and, by default, its instance.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which way something was bridged. Stored as TEXT (`tg_to_mx` / `mx_to_tg`, see
/// [`Direction::as_str`]) in `messages`, `reactions` and `failures`; binds and reads directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Telegram -> Matrix.
    TgToMx,
    /// Matrix -> Telegram.
    MxToTg,
}

impl Direction {
    /// The stored (and logged) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::TgToMx => "tg_to_mx",
            Direction::MxToTg => "mx_to_tg",
        }
    }

    /// The direction of a stored name.
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "tg_to_mx" => Some(Direction::TgToMx),
            "mx_to_tg" => Some(Direction::MxToTg),
            _ => None,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl sqlx::Type<Sqlite> for Direction {
    fn type_info() -> SqliteTypeInfo {
        <str as sqlx::Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <str as sqlx::Type<Sqlite>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, Sqlite> for Direction {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> std::result::Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<Sqlite>>::encode(self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for Direction {
    fn decode(value: SqliteValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let s = <&str as sqlx::Decode<Sqlite>>::decode(value)?;
        Direction::parse(s).ok_or_else(|| format!("not a direction: {s:?}").into())
    }
}

impl sqlx::Type<Postgres> for Direction {
    fn type_info() -> PgTypeInfo {
        <str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, Postgres> for Direction {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> std::result::Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Direction {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let s = <&str as sqlx::Decode<Postgres>>::decode(value)?;
        Direction::parse(s).ok_or_else(|| format!("not a direction: {s:?}").into())
    }
}

/// The `direction` column of a row of `table`, read as text. A value that is not a [`Direction`]
/// is an error naming the column, not transient (a `Db` error would be retried forever).
fn direction_of(table: &str, raw: &str) -> Result<Direction> {
    Direction::parse(raw).ok_or_else(|| {
        crate::error::Error::Internal(format!(
            "database: {table}.direction cannot be read: not a direction: {raw:?}"
        ))
    })
}

/// A Matrix id (room, event, user...) read back from `table.column`. One that does not parse was
/// not written by this bridge (every id is written from a parsed one): an error naming the column,
/// not transient, so the item it belongs to fails (and is recorded) instead of being retried.
fn parse_id<T>(table_column: &str, raw: String) -> Result<T>
where
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    T::try_from(raw.clone())
        .map_err(|e| crate::error::Error::Internal(format!("database: {table_column} holds {raw:?}, not an id: {e}")))
}

/// The statement of one dialect: SQLite's, or PostgreSQL's when `pg` (see `on!`). Only the
/// few statements SQL does not share are written twice: `INSERT OR REPLACE` where the row order
/// matters, SQLite's two-argument `MAX`, `json_each`, `IS` with a parameter, `rowid`.
fn dialect(pg: bool, sqlite: &'static str, postgres: &'static str) -> &'static str {
    if pg { postgres } else { sqlite }
}

/// One value per backend: a pool, a connection, a query's outcome (see `on!`).
pub enum Db<S, P> {
    /// SQLite (`sqlite://`), the default.
    Sqlite(S),
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres(P),
}

impl<S: Clone, P: Clone> Clone for Db<S, P> {
    fn clone(&self) -> Self {
        match self {
            Db::Sqlite(s) => Db::Sqlite(s.clone()),
            Db::Postgres(p) => Db::Postgres(p.clone()),
        }
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of a database URL (`sqlite:`, `postgres:` or `postgresql:`).
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// Its name, for the operator.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A database URL to show: the password of a PostgreSQL URL replaced (never logged or printed).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string().replacen(":REDACTED@", ":<redacted>@", 1)
        }
        _ => url.to_owned(),
    }
}

/// The bridge's database: a pool of connections (SQLite or PostgreSQL), the caches and the
/// write-fault alarm, shared by every task (cheap to clone).
#[derive(Clone)]
pub struct Store {
    /// Connections to the database (SQLite: four, WAL, so reads go on while one writes).
    pool: Db<SqlitePool, PgPool>,
    /// Facts read before every Telegram -> Matrix send, kept in memory once read or written
    /// (only this process writes them): registered puppets and memberships.
    cache: std::sync::Arc<std::sync::Mutex<Cache>>,
    /// Why writes fail, while they do (disk full, I/O error, read-only, locked, the database
    /// server gone); `None` when the last write committed. Intake stops while it is set: nothing
    /// may be confirmed to Telegram or a homeserver that could not be saved.
    fault: Arc<watch::Sender<Option<String>>>,
    /// The database file and its identity (device, inode) when opened: a file deleted or
    /// replaced under the daemon takes writes that no one will ever read. (SQLite only.)
    file: Option<Arc<(std::path::PathBuf, (u64, u64))>>,
    /// Set once the file is found deleted or replaced: writes into the old file still succeed,
    /// but no longer clear the fault (only a restart does).
    file_gone: Arc<std::sync::atomic::AtomicBool>,
}

/// The file of a `sqlite://` database URL (an error for another backend).
pub fn database_file(url: &str) -> Result<std::path::PathBuf> {
    if Backend::of(url) == Some(Backend::Postgres) {
        return Err(crate::error::Error::Config(format!(
            "the database {} is PostgreSQL, not a file",
            redacted(url)
        )));
    }
    Ok(SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf())
}

/// Held by the running daemon (see [`Store::lock_for_daemon`]); on PostgreSQL it is the lease of
/// an active/standby pair (see [`Store::acquire_lease`]).
pub enum DaemonLock {
    /// SQLite: the lock file, `flock`ed while open.
    File(std::fs::File),
    /// PostgreSQL: the connection holding the session advisory lock [`PG_DAEMON_LOCK`], its
    /// server process id (to tell our own session from another holder), the database's URL and
    /// the instance's name (to take the lock again, see [`DaemonLock::keep`]).
    Postgres {
        conn: Box<PgConnection>,
        backend_pid: i32,
        url: String,
        instance: String,
    },
}

/// Who holds the PostgreSQL daemon lock: a description (application name, address, since when)
/// and the holder's server process id.
pub type LockHolder = (String, Option<i32>);

/// How often the active instance checks the connection that holds its lease (and how long one
/// check may take).
const LEASE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// How long after the last confirmation of its lease the active instance gives way when a standby
/// is around: well before the server frees the lock of a connection it finds dead (about 11 s,
/// the keepalives and user timeout set in [`Store::try_lock_postgres`]), so the old active one
/// has stopped before a standby can take the lock.
const LEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(4);
/// How long a standby that took the lease waits before it starts bridging: longer than the old
/// active instance needs to notice that its lease is gone (one check, [`LEASE_CHECK`], and one
/// attempt to take it again) when its session was ended while it still ran.
pub const TAKEOVER_FENCE: std::time::Duration = std::time::Duration::from_secs(3);

impl DaemonLock {
    /// Keep the lock while the daemon runs. SQLite: nothing to do (the `flock` lasts as long as
    /// the process; pending forever). PostgreSQL: a session lock lasts as long as its connection,
    /// so the connection is checked every second. A check that fails or is slow asks the server
    /// on a new connection: our own session still holds the lock (a slow connection: fine), or
    /// the lock is free and is taken again (a lost connection, a database restart), or another
    /// instance holds it: then this returns [`Error::LeaseLost`](crate::error::Error::LeaseLost)
    /// and the daemon must stop bridging at once. When the server cannot be reached at all for
    /// [`LEASE_GRACE`] and `standby_around()` says a standby instance was seen lately, it returns
    /// too (the standby may take over once the server drops this session); a daemon alone keeps
    /// trying (its writes fail meanwhile, as a storage fault).
    pub async fn keep(&mut self, standby_around: impl Fn() -> bool) -> Result<()> {
        let DaemonLock::Postgres {
            conn,
            backend_pid,
            url,
            instance,
        } = self
        else {
            return std::future::pending().await;
        };
        let mut confirmed = std::time::Instant::now();
        let mut said = false;
        loop {
            tokio::time::sleep(LEASE_CHECK).await;
            let check = tokio::time::timeout(LEASE_CHECK, sqlx::query("SELECT 1").execute(&mut **conn)).await;
            if matches!(check, Ok(Ok(_))) {
                confirmed = std::time::Instant::now();
                said = false;
                continue;
            }
            match tokio::time::timeout(LEASE_CHECK, Store::try_lock_postgres(url, instance)).await {
                Ok(Ok(Ok(DaemonLock::Postgres {
                    conn: new,
                    backend_pid: pid,
                    ..
                }))) => {
                    *conn = new;
                    *backend_pid = pid;
                    confirmed = std::time::Instant::now();
                    tracing::warn!("the database connection that held the lease was lost; lease taken again");
                }
                Ok(Ok(Ok(DaemonLock::File(_)))) => unreachable!("a PostgreSQL lock"),
                Ok(Ok(Err((_, Some(pid))))) if pid == *backend_pid => {
                    // Our own session still holds it: the connection is only slow.
                    confirmed = std::time::Instant::now();
                }
                Ok(Ok(Err((holder, _)))) => {
                    return Err(crate::error::Error::LeaseLost(format!("{holder} took it")));
                }
                Ok(Err(_)) | Err(_) => {
                    if confirmed.elapsed() >= LEASE_GRACE {
                        if standby_around() {
                            return Err(crate::error::Error::LeaseLost(format!(
                                "it could not be confirmed for {} s (the database cannot be reached) and a \
                                 standby instance may take over",
                                LEASE_GRACE.as_secs()
                            )));
                        }
                        if !said {
                            said = true;
                            tracing::warn!(
                                "cannot confirm the lease: the database cannot be reached; no standby instance \
                                 was seen, so this daemon keeps trying"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The key of the session advisory lock a daemon holds on a PostgreSQL database (`tgmx` in
/// ASCII). It shows in `pg_locks` as `locktype = 'advisory'`, `classid = 0`, `objid = 1952935288`.
pub const PG_DAEMON_LOCK: i64 = 0x7467_6d78;

/// The key of the transaction advisory lock an immediate write transaction takes on PostgreSQL
/// (see `Store::write`; written out in the statement there).
pub const PG_WRITE_LOCK: i64 = 0x7467_6d77;

/// (device, inode) of a file.
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Whether an error says the database cannot take writes now (as opposed to a bad statement or
/// a constraint): SQLite: disk full, I/O error, read-only file, a lock held too long, a broken
/// file; PostgreSQL: the connection lost or refused, the server shutting down, out of disk or
/// memory, read-only (a standby server), I/O or data corruption errors.
pub fn is_storage_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                // 08: connection exception; 53: insufficient resources (disk full, out of
                // memory, too many connections); 57P0x: operator intervention (shutdown, crash
                // of another backend, cannot connect now); 58: system (I/O) error; XX001/XX002:
                // data or index corrupted; 25006: read-only transaction (a hot standby); 55P03:
                // a lock not had within lock_timeout (as SQLite's BUSY).
                return code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code.starts_with("58")
                    || matches!(code, "XX001" | "XX002" | "25006" | "55P03");
            }
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
            // BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
            matches!(code, 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// An open write transaction on a connection of its own. Unless it ends cleanly (committed or
/// rolled back), the connection is closed instead of going back to the pool: after a failed
/// `COMMIT` or `ROLLBACK` (disk full) SQLite may still hold the transaction open, and a pooled
/// connection in that state would turn every later transaction into a savepoint of one that
/// never commits, and lock out the other connections. (PostgreSQL: a connection lost mid-way,
/// or a transaction left aborted by a failed statement, is not reused either.)
pub struct WriteTx {
    /// The connection the transaction runs on.
    conn: Db<PoolConnection<Sqlite>, PoolConnection<Postgres>>,
    /// Still open (not certainly committed or rolled back): the connection is closed on drop.
    open: bool,
}

impl WriteTx {
    /// The transaction's connection, to run statements on (see `on!`).
    pub(crate) fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection> {
        match &mut self.conn {
            Db::Sqlite(c) => Db::Sqlite(&mut **c),
            Db::Postgres(c) => Db::Postgres(&mut **c),
        }
    }

    /// Run one statement without arguments (`BEGIN`, `COMMIT`...).
    async fn raw(&mut self, sql: &'static str) -> std::result::Result<(), sqlx::Error> {
        on!(self.db(), |c| sqlx::raw_sql(sql).execute(c).await.map(|_| ()))
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            match &mut self.conn {
                Db::Sqlite(c) => c.close_on_drop(),
                Db::Postgres(c) => c.close_on_drop(),
            }
        }
    }
}

/// What [`Store`] keeps in memory of what it read or wrote (see `Store::cache`).
#[derive(Default)]
struct Cache {
    /// Registered puppets by Telegram user id.
    puppets: std::collections::HashMap<i64, puppets::Puppet>,
    /// (mxid, room id) pairs known to be joined.
    members: std::collections::HashSet<(OwnedUserId, OwnedRoomId)>,
}

/// Connection options of a PostgreSQL URL; the connections name themselves `tgmx` (seen in
/// `pg_stat_activity`).
fn pg_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?.application_name("tgmx"))
}

impl Store {
    /// Open (SQLite: creating the file if missing, mode 0600) and migrate. A PostgreSQL database
    /// must exist (created by its administrator, see the README); its tables are created here.
    pub async fn open(url: &str) -> Result<Store> {
        match Backend::of(url) {
            Some(Backend::Postgres) => Self::open_postgres(url).await,
            _ => Self::open_sqlite(url).await,
        }
    }

    /// Open a database the bridge already uses, without creating anything: `None` when there is
    /// none yet (SQLite: no file; PostgreSQL: no tgmx tables in the database). For the commands
    /// that read the bridge's state: an empty database made on the spot would report "nothing
    /// lost" about a bridge it never saw.
    pub async fn open_existing(url: &str) -> Result<Option<Store>> {
        match Backend::of(url) {
            Some(Backend::Postgres) => {
                let mut conn: PgConnection =
                    <PgConnection as sqlx::Connection>::connect_with(&pg_options(url)?).await?;
                let made: Option<String> = sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)")
                    .fetch_one(&mut conn)
                    .await?;
                sqlx::Connection::close(conn).await?;
                if made.is_none() {
                    return Ok(None);
                }
                Ok(Some(Self::open_postgres(url).await?))
            }
            _ => {
                if !database_file(url)?.exists() {
                    return Ok(None);
                }
                Ok(Some(Self::open_sqlite(url).await?))
            }
        }
    }

    async fn open_sqlite(url: &str) -> Result<Store> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // 256 KiB of page cache per connection instead of SQLite's 2 MB, so the pool's four
            // connections stay near 1 MB as the message map grows: every query is an indexed
            // point lookup, and pages not cached come from the OS page cache.
            .pragma("cache_size", "-256")
            .busy_timeout(std::time::Duration::from_secs(10));
        let path = opts.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        #[cfg(unix)]
        if path.exists() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let file = file_id(&path).map(|id| Arc::new((path, id)));
        Ok(Store::with_pool(Db::Sqlite(pool), file))
    }

    async fn open_postgres(url: &str) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(pg_options(url)?)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Store::with_pool(Db::Postgres(pool), None))
    }

    fn with_pool(pool: Db<SqlitePool, PgPool>, file: Option<Arc<(std::path::PathBuf, (u64, u64))>>) -> Store {
        Store {
            pool,
            cache: Default::default(),
            fault: Arc::new(watch::channel(None).0),
            file,
            file_gone: Default::default(),
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The backend and its version, for `tgmx check`: `SQLite 3.46.0`, `PostgreSQL 15.18 (Debian
    /// 15.18-0+deb12u1) on x86_64-pc-linux-gnu`.
    pub async fn version(&self) -> Result<String> {
        Ok(match self.db() {
            Db::Sqlite(p) => {
                let v: String = sqlx::query_scalar("SELECT sqlite_version()").fetch_one(p).await?;
                format!("SQLite {v}")
            }
            Db::Postgres(p) => {
                let v: String = sqlx::query_scalar("SELECT version()").fetch_one(p).await?;
                v.split(", compiled by").next().unwrap_or(&v).to_owned()
            }
        })
    }

    /// The pool of each backend, to run a statement on (see `on!`).
    pub(crate) fn db(&self) -> Db<&SqlitePool, &PgPool> {
        match &self.pool {
            Db::Sqlite(p) => Db::Sqlite(p),
            Db::Postgres(p) => Db::Postgres(p),
        }
    }

    /// Refuse a second daemon on the same database, until the returned guard is dropped (or the
    /// process ends, however it ends). SQLite: an exclusive lock on `<database>.lock`.
    /// PostgreSQL: the session advisory lock [`PG_DAEMON_LOCK`], held by a connection of its
    /// own (the daemon itself waits for it as a standby instead, see [`Store::acquire_lease`]).
    pub async fn lock_for_daemon(url: &str) -> Result<DaemonLock> {
        if Backend::of(url) == Some(Backend::Postgres) {
            return match Self::try_lock_postgres(url, "tgmx").await? {
                Ok(lock) => Ok(lock),
                Err((holder, _)) => Err(crate::error::Error::Config(format!(
                    "{holder} holds the tgmx daemon lock of the database {}: stop it first",
                    redacted(url)
                ))),
            };
        }
        let path = SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)?;
        #[cfg(unix)]
        {
            use std::io::{Read, Seek, Write};
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let mut holder = String::new();
                let _ = (&file).read_to_string(&mut holder);
                return Err(crate::error::Error::Config(format!(
                    "another tgmx daemon (pid {}) uses the database {}: stop it first (lock: {})",
                    holder.trim(),
                    path.display(),
                    lock_path.display()
                )));
            }
            let mut f = &file;
            let _ = f.set_len(0);
            let _ = f.rewind();
            let _ = write!(f, "{}", std::process::id());
        }
        Ok(DaemonLock::File(file))
    }

    /// PostgreSQL: wait for the lease (the daemon lock) as a standby instance, trying every
    /// second on one connection (a new one after an error); `waiting` is told who holds it each
    /// time that changes. Returns once this instance holds it (it is then the active one). An
    /// instance of the same name holding it is an error (two hosts configured alike would share
    /// encryption devices); so is waiting at all without a configured `instance` name (`named`).
    pub async fn acquire_lease(
        url: &str,
        instance: &str,
        named: bool,
        mut waiting: impl FnMut(&str),
    ) -> Result<DaemonLock> {
        let mut last = String::new();
        let same_name = format!("tgmx {instance} lease ");
        let this_host = format!(" on {}", host_name().unwrap_or_else(|| "?".to_owned()));
        loop {
            match tokio::time::timeout(2 * LEASE_CHECK, Self::try_lock_postgres(url, instance)).await {
                Ok(Ok(Ok(lock))) => return Ok(lock),
                Ok(Ok(Err((holder, _)))) => {
                    // This instance's previous run, whose session the server has not dropped
                    // yet (a host cut off and back): wait for it.
                    let earlier_run = holder.starts_with(&same_name) && holder.contains(&this_host);
                    if holder.starts_with(&same_name) && !earlier_run {
                        return Err(crate::error::Error::Config(format!(
                            "`instance`: another instance named {instance:?} holds the lease ({holder}): give \
                             each instance of a pair a name of its own"
                        )));
                    }
                    if !named && !earlier_run {
                        return Err(crate::error::Error::Config(format!(
                            "`instance`: {holder} holds the lease, so this daemon would be the standby of an \
                             active/standby pair; set `instance` to a name of its own on every instance (each \
                             has encryption devices of its own; README \"Two hosts\")"
                        )));
                    }
                    if holder != last {
                        waiting(&holder);
                        last = holder;
                    }
                }
                Ok(Err(e)) => {
                    let why = format!("the database cannot be reached: {e}");
                    if why != last {
                        tracing::warn!("standby: {why}");
                        last = why;
                    }
                }
                Err(_) => tracing::warn!("standby: the database took over 2 s to answer"),
            }
            tokio::time::sleep(LEASE_CHECK).await;
        }
    }

    /// One try at the PostgreSQL daemon lock, on a new connection named after the instance
    /// (`tgmx <instance> lease pid <pid>` in `pg_stat_activity`): the lock, or who holds it.
    /// The connection asks the server to probe the client every 2 s after 5 s of silence, and to
    /// give up on data not acknowledged for 9 s, so that a host that vanished (cut off, powered
    /// down) loses the lock within about 11 s.
    async fn try_lock_postgres(url: &str, instance: &str) -> Result<std::result::Result<DaemonLock, LockHolder>> {
        let host = host_name().unwrap_or_else(|| "?".to_owned());
        // Who holds the lock is read from pg_stat_activity.application_name (at most 63 bytes).
        let mut name = format!("tgmx {instance} lease pid {} on {host}", std::process::id());
        name.truncate(63);
        let opts = PgConnectOptions::from_str(url)?.application_name(&name).options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "9000"),
        ]);
        let mut conn: PgConnection = <PgConnection as sqlx::Connection>::connect_with(&opts).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PG_DAEMON_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if got {
            let backend_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await?;
            return Ok(Ok(DaemonLock::Postgres {
                conn: Box::new(conn),
                backend_pid,
                url: url.to_owned(),
                instance: instance.to_owned(),
            }));
        }
        let holder: Option<(String, Option<String>, Option<String>, i32)> = sqlx::query_as(
            "SELECT a.application_name, host(a.client_addr), CAST(date_trunc('second', a.backend_start) AS TEXT), a.pid
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND CAST(l.classid AS BIGINT) = 0
               AND CAST(l.objid AS BIGINT) = $1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             LIMIT 1",
        )
        .bind(PG_DAEMON_LOCK)
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten();
        let _ = sqlx::Connection::close(conn).await;
        Ok(Err(match holder {
            Some((app, addr, since, pid)) => (
                format!(
                    "{} (connected from {}, since {})",
                    if app.is_empty() { "a client" } else { app.as_str() },
                    addr.as_deref().unwrap_or("a local socket"),
                    since.as_deref().unwrap_or("?")
                ),
                Some(pid),
            ),
            None => ("another process".to_owned(), None),
        }))
    }

    // ---- write health ----

    /// Why writes fail, while they do.
    pub fn write_fault(&self) -> Option<String> {
        self.fault.borrow().clone()
    }

    /// Follows [`Store::write_fault`].
    pub fn watch_write_fault(&self) -> watch::Receiver<Option<String>> {
        self.fault.subscribe()
    }

    /// Wait until writes work (at once when they do); `false` if `stop` came first.
    pub async fn until_writable(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut fault = self.fault.subscribe();
        tokio::select! {
            r = fault.wait_for(Option::is_none) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Note the outcome of a write: a storage fault raises the alarm, a commit clears it.
    fn noted<T>(&self, r: std::result::Result<T, sqlx::Error>) -> Result<T> {
        match r {
            Ok(v) if self.file_gone.load(std::sync::atomic::Ordering::Relaxed) => Ok(v),
            Ok(v) => {
                self.fault.send_if_modified(|f| {
                    let was = f.take();
                    if let Some(why) = &was {
                        tracing::info!("database writes work again (they failed: {why}); intake resumes");
                    }
                    was.is_some()
                });
                crate::metrics::METRICS.storage_ok(true);
                Ok(v)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A failed database call: raises the alarm if it is a storage fault.
    fn failed(&self, e: sqlx::Error) -> crate::error::Error {
        if is_storage_fault(&e) {
            self.raise(e.to_string());
        }
        e.into()
    }

    /// Raise the alarm: writes fail, `why` (logged once, when it starts).
    fn raise(&self, why: String) {
        self.fault.send_if_modified(|f| {
            if f.is_none() {
                tracing::error!(
                    "database writes fail: {why}; intake stops (nothing more is confirmed to Telegram \
                     or the homeserver) until a write succeeds again"
                );
            }
            let changed = f.as_deref() != Some(why.as_str());
            *f = Some(why);
            changed
        });
        crate::metrics::METRICS.storage_ok(false);
    }

    /// Whether the database file is still the one opened (raises the fault if not).
    pub fn check_file(&self) -> Result<()> {
        if let Some(file) = &self.file
            && file_id(&file.0) != Some(file.1)
        {
            let why = format!(
                "the database file {} was deleted or replaced while the daemon runs: restore it (or \
                 move the new one away) and restart the daemon; what it takes in now would be lost",
                file.0.display()
            );
            self.file_gone.store(true, std::sync::atomic::Ordering::Relaxed);
            self.raise(why.clone());
            return Err(crate::error::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                why,
            )));
        }
        Ok(())
    }

    /// A small write that tells whether the database takes writes (clears the fault when it does).
    /// The database file must also still be the one opened.
    pub async fn probe_write(&self) -> Result<()> {
        self.check_file()?;
        let r = on!(self.db(), |p| {
            sqlx::query(
            "INSERT INTO kv (key, value) VALUES ('write_probe', $1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(p)
        .await
        .map(|_| ())
        });
        self.noted(r)
    }

    /// Run `body` in one write transaction (`BEGIN IMMEDIATE` when `immediate`: reads inside see
    /// the state the writes apply to) and commit. On any failure the transaction is rolled back
    /// and, if that is not certain, its connection is closed (see [`WriteTx`]).
    ///
    /// PostgreSQL has no `BEGIN IMMEDIATE`: an immediate transaction takes a transaction-level
    /// advisory lock first, so immediate transactions run one at a time there too (as SQLite's
    /// one writer). A failed statement aborts a PostgreSQL transaction: the body's error ends it
    /// with `ROLLBACK`.
    async fn write<T>(&self, immediate: bool, body: impl AsyncFnOnce(&mut WriteTx) -> Result<T>) -> Result<T> {
        // Getting a connection and `BEGIN` write nothing: they can raise the alarm, only the
        // `COMMIT` may clear it.
        let conn = match &self.pool {
            Db::Sqlite(p) => p.acquire().await.map(Db::Sqlite),
            Db::Postgres(p) => p.acquire().await.map(Db::Postgres),
        }
        .map_err(|e| self.failed(e))?;
        let mut tx = WriteTx { conn, open: true };
        let begin = match (&tx.conn, immediate) {
            (Db::Sqlite(_), true) => "BEGIN IMMEDIATE",
            // As SQLite's busy timeout: a lock not had in 10 s is a storage fault (55P03).
            (Db::Postgres(_), true) => {
                "BEGIN; SET LOCAL lock_timeout = '10s'; SELECT pg_advisory_xact_lock(1952935287)"
            }
            (_, false) => "BEGIN",
            // PG_WRITE_LOCK, written out.
        };
        tx.raw(begin).await.map_err(|e| self.failed(e))?;
        match body(&mut tx).await {
            Ok(v) => {
                self.noted(tx.raw("COMMIT").await)?;
                tx.open = false;
                Ok(v)
            }
            Err(e) => {
                if let crate::error::Error::Db(db) = &e
                    && is_storage_fault(db)
                {
                    self.raise(db.to_string());
                }
                if tx.raw("ROLLBACK").await.is_ok() {
                    tx.open = false;
                }
                Err(e)
            }
        }
    }

    /// The connection pools, for reads outside these methods (checks, tests, `migrate-db`).
    pub fn pool(&self) -> Db<&SqlitePool, &PgPool> {
        self.db()
    }

    // ---- key/value ----

    /// A value of the `kv` table (small state: the Telegram offset, catch-up marks, the daemon's
    /// pid...).
    pub async fn get_kv(&self, key: &str) -> Result<Option<String>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT value FROM kv WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(p)
        .await)?)
    }

    /// Set a value of the `kv` table.
    pub async fn set_kv(&self, key: &str, value: &str) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        )
        .bind(key)
        .bind(value)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// A consistent copy of an SQLite database at `path`, taken online (`VACUUM INTO`). A
    /// PostgreSQL database is copied with `pg_dump` (see [`pg_dump_command`]).
    pub async fn backup(&self, path: &std::path::Path) -> Result<()> {
        let Db::Sqlite(pool) = self.db() else {
            return Err(crate::error::Error::Config(
                "a PostgreSQL database is backed up with pg_dump (see `tgmx backup`)".into(),
            ));
        };
        sqlx::query("VACUUM INTO ?")
            .bind(path.to_string_lossy().into_owned())
            .execute(pool)
            .await?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

/// The `pg_dump` command that backs up a PostgreSQL database to `path` (custom format, for
/// `pg_restore`), with the password left out of the URL: `pg_dump` takes it from `PGPASSWORD` or
/// `~/.pgpass`.
pub fn pg_dump_command(url: &str, path: &std::path::Path) -> String {
    let shown = match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => redacted(url),
    };
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    format!(
        "pg_dump --format=custom --file={} --dbname={}",
        quote(&path.display().to_string()),
        quote(&shown)
    )
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
pub(crate) use testing::temp_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_is_never_shown() {
        let url = "postgres://tgmx:s3cret@db.example.org:5432/tgmx";
        assert_eq!(redacted(url), "postgres://tgmx:<redacted>@db.example.org:5432/tgmx");
        let cmd = pg_dump_command(url, std::path::Path::new("/backups/tgmx.dump"));
        assert_eq!(
            cmd,
            "pg_dump --format=custom --file='/backups/tgmx.dump' --dbname='postgres://tgmx@db.example.org:5432/tgmx'"
        );
        assert_eq!(
            redacted("sqlite:///var/lib/tgmx/tgmx.db"),
            "sqlite:///var/lib/tgmx/tgmx.db"
        );
        let e = database_file(url).unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    /// A PostgreSQL connection lost in the middle of a write transaction is a storage fault (as
    /// a full disk is on SQLite): the alarm is raised, the connection is not reused, and the
    /// next write that commits clears the alarm.
    #[cfg(tgmx_postgres)]
    #[tokio::test]
    async fn a_postgres_connection_lost_mid_write_is_a_storage_fault() {
        testing::on_postgres(async {
            let (s, _d) = temp_store().await;
            let r = s
                .write(false, async |tx| {
                    on!(tx.db(), |c| sqlx::query(
                        "SELECT pg_terminate_backend(pg_backend_pid())"
                    )
                    .execute(c)
                    .await
                    .map(|_| ()))?;
                    Ok(())
                })
                .await;
            assert!(r.is_err());
            let why = s.write_fault().expect("the alarm is raised");
            assert!(why.contains("terminating connection"), "{why}");
            s.probe_write().await.unwrap();
            assert_eq!(s.write_fault(), None);
            s.set_kv("after", "1").await.unwrap();
            assert_eq!(s.get_kv("after").await.unwrap().as_deref(), Some("1"));
        })
        .await
    }

    /// A second daemon on the same PostgreSQL database is refused, naming the holder; the lock
    /// is free again once the first one's guard is dropped.
    #[cfg(tgmx_postgres)]
    #[tokio::test]
    async fn a_second_daemon_on_a_postgres_database_is_refused() {
        let url = testing::fresh_postgres_database().await;
        let first = Store::lock_for_daemon(&url).await.unwrap();
        let Err(e) = Store::lock_for_daemon(&url).await else {
            panic!("a second lock was given")
        };
        let e = e.to_string();
        assert!(
            e.contains(&format!("lease pid {}", std::process::id())) && e.contains("stop it first"),
            "{e}"
        );
        drop(first);
        // The server notices the closed connection at once or nearly.
        let mut again = None;
        for _ in 0..50 {
            if let Ok(l) = Store::lock_for_daemon(&url).await {
                again = Some(l);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(again.is_some(), "the lock is free once the first daemon is gone");
    }

    /// The daemon's lock survives the loss of its connection (a database restart): taken again
    /// on a new connection; if another process took it first, `keep` says so (the daemon stops;
    /// a standby instance takes over).
    #[cfg(tgmx_postgres)]
    #[tokio::test]
    async fn a_daemon_lock_whose_connection_is_lost_is_taken_again_or_the_daemon_stops() {
        use std::time::Duration;
        let url = testing::fresh_postgres_database().await;
        let kill_holder = async || {
            let mut c: PgConnection = <PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name LIKE 'tgmx % lease pid %'",
            )
            .execute(&mut c)
            .await
            .unwrap();
        };
        let mut lock = Store::lock_for_daemon(&url).await.unwrap();
        kill_holder().await;
        // Within the next check (2 s) the lock is held again: a second daemon is refused.
        let kept = tokio::time::timeout(Duration::from_secs(8), lock.keep(|| false)).await;
        assert!(kept.is_err(), "keep returned: {kept:?}");
        assert!(Store::lock_for_daemon(&url).await.is_err(), "the lock was taken again");

        // Lost, and taken by another process before the daemon could: keep says so.
        kill_holder().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _other = Store::lock_for_daemon(&url).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(8), lock.keep(|| false))
            .await
            .expect("keep returns")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lost the lease") && e.contains("took it"), "{e}");
    }
}
