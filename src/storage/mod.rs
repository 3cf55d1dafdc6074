//! SQLite storage (sqlx). Everything the bridge must not forget across a restart lives here:
//! portals, puppets, the message map, accepted appservice transactions, inboxes of work not yet
//! bridged, and the Telegram update offset.
//!
//! One file per table group, each an `impl Store` block (as mautrix bridgev2's `database/`):
//!
//! - this file: [`Store`] itself (opening, the daemon lock, the single write path
//!   `Store::write`, the write-fault alarm), `kv`, backups, [`Direction`];
//! - [`portals`] holds `portals`;
//! - [`puppets`] holds `puppets` (and their avatars), `memberships`, `e2ee_devices`;
//! - [`messages`] holds `messages` (the message map), `tg_send_intents`, `reactions`;
//! - [`inbox`] holds `mx_transactions`, `mx_seen`, `mx_inbox`, `tg_inbox` and the Telegram offset;
//! - [`cutover`] holds `mode_switches`, `announcements`, `echo_watch`;
//! - [`audit`] holds `failures`, and for the readiness gates `message_files` (files that crossed,
//!   by kind) and `rollcalls` / `rollcall_answers`; it reads the counts `tgmx audit` / `tgmx status`
//!   show.
//!
//! Ids are typed (ruma) in and out; Telegram chat and message ids stay `i64` / `i32`, as
//! everywhere in the bridge. An id read back that does not parse was not written by this bridge:
//! a single row read is an error naming the column (not transient, so the item fails and is
//! recorded instead of being retried forever); a list (`Store::mx_lanes`) leaves it out with a
//! warning.

pub mod audit;
pub mod cutover;
pub mod inbox;
pub mod messages;
pub mod portals;
pub mod puppets;

pub use audit::{Failure, Pending, Shortfall};
pub use cutover::{PendingAnnouncement, Switch};
pub use inbox::{BATCH, InboxItem, MxEvent, TgUpdate};
pub use messages::{MessageLink, MessagePart, RemovedReaction};
pub use portals::Portal;
pub use puppets::{E2eeDevice, Puppet};

use std::str::FromStr;

use std::sync::Arc;

use futures::FutureExt;
use ruma::{OwnedRoomId, OwnedUserId};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArgumentsBuffer, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::watch;

use crate::error::Result;

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

/// Column `column` of a row of `table` (named in the error). A value that does not decode (a
/// [`Direction`] not known) is an error naming the column, not transient (a `Db` error would be
/// retried forever).
fn column<'r, T>(row: &'r SqliteRow, table: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    use sqlx::Row;
    row.try_get(column).map_err(|e| match e {
        sqlx::Error::ColumnDecode { source, .. } => {
            crate::error::Error::Internal(format!("database: {table}.{column} cannot be read: {source}"))
        }
        e => e.into(),
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

/// The bridge's database: a pool of SQLite connections, the caches and the write-fault alarm,
/// shared by every task (cheap to clone).
#[derive(Clone)]
pub struct Store {
    /// Connections to the database file (four; WAL, so reads go on while one writes).
    pool: SqlitePool,
    /// Facts read before every Telegram -> Matrix send, kept in memory once read or written
    /// (only this process writes them): registered puppets and memberships.
    cache: std::sync::Arc<std::sync::Mutex<Cache>>,
    /// Why writes fail, while they do (disk full, I/O error, read-only, locked); `None` when the
    /// last write committed. Intake stops while it is set: nothing may be confirmed to Telegram
    /// or a homeserver that could not be saved.
    fault: Arc<watch::Sender<Option<String>>>,
    /// The database file and its identity (device, inode) when opened: a file deleted or
    /// replaced under the daemon takes writes that no one will ever read.
    file: Option<Arc<(std::path::PathBuf, (u64, u64))>>,
    /// Set once the file is found deleted or replaced: writes into the old file still succeed,
    /// but no longer clear the fault (only a restart does).
    file_gone: Arc<std::sync::atomic::AtomicBool>,
}

/// The file of a `sqlite://` database URL.
pub fn database_file(url: &str) -> Result<std::path::PathBuf> {
    Ok(SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf())
}

/// Held by the running daemon (see [`Store::lock_for_daemon`]).
pub struct DaemonLock {
    /// The lock file, `flock`ed while open.
    _file: std::fs::File,
}

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
/// a constraint): disk full, I/O error, read-only file, a lock held too long, a broken file.
pub fn is_storage_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
            // BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
            matches!(code, 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26)
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// An open write transaction on a connection of its own. Unless it ends cleanly (committed or
/// rolled back), the connection is closed instead of going back to the pool: after a failed
/// `COMMIT` or `ROLLBACK` (disk full) SQLite may still hold the transaction open, and a pooled
/// connection in that state would turn every later transaction into a savepoint of one that
/// never commits, and lock out the other connections.
struct WriteTx {
    /// The connection the transaction runs on.
    conn: PoolConnection<Sqlite>,
    /// Still open (not certainly committed or rolled back): the connection is closed on drop.
    open: bool,
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
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

impl Store {
    /// Open (creating if missing, mode 0600) and migrate.
    pub async fn open(url: &str) -> Result<Store> {
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
        sqlx::migrate!("./migrations").run(&pool).await?;
        let file = file_id(&path).map(|id| Arc::new((path, id)));
        Ok(Store {
            pool,
            cache: Default::default(),
            fault: Arc::new(watch::channel(None).0),
            file,
            file_gone: Default::default(),
        })
    }

    /// Refuse a second daemon on the same database: an exclusive lock on `<database>.lock`, held
    /// until the returned guard is dropped (or the process ends, however it ends).
    pub fn lock_for_daemon(url: &str) -> Result<DaemonLock> {
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
        Ok(DaemonLock { _file: file })
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
        let r = sqlx::query(
            "INSERT INTO kv (key, value) VALUES ('write_probe', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(&self.pool)
        .await;
        self.noted(r).map(|_| ())
    }

    /// Run `body` in one write transaction (`BEGIN IMMEDIATE` when `immediate`: reads inside see
    /// the state the writes apply to) and commit. On any failure the transaction is rolled back
    /// and, if that is not certain, its connection is closed (see [`WriteTx`]).
    async fn write<T>(&self, immediate: bool, body: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>) -> Result<T> {
        // Getting a connection and `BEGIN` write nothing: they can raise the alarm, only the
        // `COMMIT` may clear it.
        let conn = self.pool.acquire().await.map_err(|e| self.failed(e))?;
        let mut tx = WriteTx { conn, open: true };
        let begin = if immediate { "BEGIN IMMEDIATE" } else { "BEGIN" };
        sqlx::raw_sql(begin)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
        match body(&mut tx).await {
            Ok(v) => {
                self.noted(sqlx::raw_sql("COMMIT").execute(&mut *tx).await)?;
                tx.open = false;
                Ok(v)
            }
            Err(e) => {
                if let crate::error::Error::Db(db) = &e
                    && is_storage_fault(db)
                {
                    self.raise(db.to_string());
                }
                if sqlx::raw_sql("ROLLBACK").execute(&mut *tx).await.is_ok() {
                    tx.open = false;
                }
                Err(e)
            }
        }
    }

    /// The connection pool, for reads outside these methods (checks, tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    // ---- key/value ----

    /// A value of the `kv` table (small state: the Telegram offset, catch-up marks, the daemon's
    /// pid...).
    pub async fn get_kv(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM kv WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Set a value of the `kv` table.
    pub async fn set_kv(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    /// A consistent copy of the database at `path`, taken online (`VACUUM INTO`).
    pub async fn backup(&self, path: &std::path::Path) -> Result<()> {
        sqlx::query("VACUUM INTO ?")
            .bind(path.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

/// A fresh store in a temporary directory (kept while the `TempDir` lives).
#[cfg(test)]
pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::open(&url).await.unwrap(), dir)
}
