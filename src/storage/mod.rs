//! SQLite storage (sqlx). Everything the bridge must not forget across a restart lives here:
//! portals, puppets, the message map, accepted appservice transactions, inboxes of work not yet
//! bridged, and the Telegram update offset.

use std::str::FromStr;

use std::sync::Arc;

use futures::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::watch;

use crate::error::Result;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    TgToMx,
    MxToTg,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::TgToMx => "tg_to_mx",
            Direction::MxToTg => "mx_to_tg",
        }
    }
}

/// What a row of the `failures` table (what `tgmx audit` lists) says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Not carried at all.
    NotDelivered,
    /// Carried without some part (formatting Telegram sent that the bridge cannot read, or only
    /// the text of a message that could not be read in full).
    InPart,
    /// Carried, and possibly twice: an earlier attempt may have posted it too.
    MayRepeat,
}

impl Shortfall {
    /// From the row's `source_ref`, whose prefix names the kind.
    pub fn of(source_ref: &str) -> Shortfall {
        if source_ref.starts_with("possible-repeat:") {
            Shortfall::MayRepeat
        } else if source_ref.starts_with("partly:") {
            Shortfall::InPart
        } else {
            Shortfall::NotDelivered
        }
    }

    /// The audit's line label.
    pub fn label(self) -> &'static str {
        match self {
            Shortfall::NotDelivered => "NOT DELIVERED",
            Shortfall::InPart => "CARRIED IN PART",
            Shortfall::MayRepeat => "MAY SHOW TWICE",
        }
    }
}

/// One row of the message map.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageLink {
    pub tg_chat_id: i64,
    pub tg_msg_id: i32,
    pub mx_room_id: String,
    pub mx_event_id: String,
    pub direction: String,
    pub sender: String,
}

/// A Matrix event as received: its lane (room id, empty when none), its id, its JSON.
#[derive(Debug, Clone)]
pub struct MxEvent {
    pub room: String,
    pub event_id: Option<String>,
    /// `origin_server_ts`, when present.
    pub ts: Option<i64>,
    pub json: String,
    /// The bridge's own event coming back (see `Bridge::is_own_echo`): not stored, only noted.
    pub echo: bool,
}

/// A stored, not yet bridged inbox item.
#[derive(Debug, Clone)]
pub struct InboxItem {
    pub key: i64,
    pub json: String,
}

/// Rows of `(key, json)` as inbox items.
fn inbox_items(rows: Vec<sqlx::sqlite::SqliteRow>) -> Vec<InboxItem> {
    rows.into_iter()
        .map(|r| InboxItem {
            key: r.get(0),
            json: r.get(1),
        })
        .collect()
}

/// Record `ev` as seen inside `tx`; `false` if it was already (events without an id: always new).
async fn mark_seen(tx: &mut sqlx::SqliteConnection, ev: &MxEvent, now: i64) -> Result<bool> {
    let Some(id) = &ev.event_id else {
        return Ok(true);
    };
    Ok(
        sqlx::query("INSERT OR IGNORE INTO mx_seen (event_id, room_id, received_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(&ev.room)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Inbox items fetched per batch (a literal in the queries, so SQLite keeps them prepared).
pub const BATCH: usize = 64;

#[derive(Clone)]
pub struct Store {
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
    conn: PoolConnection<Sqlite>,
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

#[derive(Default)]
struct Cache {
    /// Registered puppets: Telegram user id -> (mxid, display name).
    puppets: std::collections::HashMap<i64, (String, Option<String>)>,
    /// (mxid, room id) pairs known to be joined.
    members: std::collections::HashSet<(String, String)>,
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

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    // ---- key/value ----

    pub async fn get_kv(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM kv WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_kv(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    // ---- portals ----

    pub async fn upsert_portal(&self, tg_chat_id: i64, mx_room_id: &str, alias: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO portals (tg_chat_id, mx_room_id, mx_alias, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(tg_chat_id) DO UPDATE SET mx_room_id = excluded.mx_room_id, mx_alias = excluded.mx_alias",
        )
        .bind(tg_chat_id)
        .bind(mx_room_id)
        .bind(alias)
        .bind(now_ms())
        .execute(&self.pool)
        .map(|r| self.noted(r))
        .await?;
        Ok(())
    }

    /// The stored portal of a chat: (room id, alias it was configured by).
    pub async fn portal(&self, tg_chat_id: i64) -> Result<Option<(String, Option<String>)>> {
        let row = sqlx::query("SELECT mx_room_id, mx_alias FROM portals WHERE tg_chat_id = ?")
            .bind(tg_chat_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// When the portal of this room was linked (events before it are history).
    pub async fn portal_created_at(&self, mx_room_id: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT created_at FROM portals WHERE mx_room_id = ?")
                .bind(mx_room_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn portal_room(&self, tg_chat_id: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT mx_room_id FROM portals WHERE tg_chat_id = ?")
                .bind(tg_chat_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    // ---- puppets ----

    /// The stored display name of a puppet, if it was registered.
    pub async fn puppet(&self, tg_user_id: i64) -> Result<Option<(String, Option<String>)>> {
        if let Some(p) = self.cache.lock().expect("lock").puppets.get(&tg_user_id) {
            return Ok(Some(p.clone()));
        }
        let row = sqlx::query("SELECT mxid, displayname FROM puppets WHERE tg_user_id = ? AND registered = 1")
            .bind(tg_user_id)
            .fetch_optional(&self.pool)
            .await?;
        let puppet: Option<(String, Option<String>)> = row.map(|r| (r.get(0), r.get(1)));
        if let Some(p) = &puppet {
            self.cache.lock().expect("lock").puppets.insert(tg_user_id, p.clone());
        }
        Ok(puppet)
    }

    pub async fn save_puppet(&self, tg_user_id: i64, mxid: &str, displayname: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO puppets (tg_user_id, mxid, displayname, registered, updated_at) VALUES (?, ?, ?, 1, ?)
             ON CONFLICT(tg_user_id) DO UPDATE SET displayname = excluded.displayname, registered = 1,
             updated_at = excluded.updated_at",
        )
        .bind(tg_user_id)
        .bind(mxid)
        .bind(displayname)
        .bind(now_ms())
        .execute(&self.pool)
        .map(|r| self.noted(r))
        .await?;
        self.cache
            .lock()
            .expect("lock")
            .puppets
            .insert(tg_user_id, (mxid.to_owned(), Some(displayname.to_owned())));
        Ok(())
    }

    pub async fn is_member(&self, mxid: &str, room: &str) -> Result<bool> {
        let key = (mxid.to_owned(), room.to_owned());
        if self.cache.lock().expect("lock").members.contains(&key) {
            return Ok(true);
        }
        let member = sqlx::query_scalar::<_, i64>("SELECT 1 FROM memberships WHERE mxid = ? AND mx_room_id = ?")
            .bind(mxid)
            .bind(room)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if member {
            self.cache.lock().expect("lock").members.insert(key);
        }
        Ok(member)
    }

    pub async fn set_member(&self, mxid: &str, room: &str, member: bool) -> Result<()> {
        let key = (mxid.to_owned(), room.to_owned());
        // Forgotten before the delete: a failed delete must not leave a stale "joined" behind.
        self.cache.lock().expect("lock").members.remove(&key);
        let q = if member {
            "INSERT OR IGNORE INTO memberships (mxid, mx_room_id) VALUES (?, ?)"
        } else {
            "DELETE FROM memberships WHERE mxid = ? AND mx_room_id = ?"
        };
        sqlx::query(q)
            .bind(mxid)
            .bind(room)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        if member {
            self.cache.lock().expect("lock").members.insert(key);
        }
        Ok(())
    }

    // ---- message map ----

    #[allow(clippy::too_many_arguments)]
    pub async fn link_message(
        &self,
        tg_chat_id: i64,
        tg_msg_id: i32,
        mx_room_id: &str,
        mx_event_id: &str,
        direction: Direction,
        sender: &str,
        sent_at: i64,
    ) -> Result<()> {
        self.write(false, async |tx| {
            sqlx::query(
                "INSERT OR IGNORE INTO messages
                 (tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender, sent_at, bridged_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(tg_chat_id)
            .bind(tg_msg_id)
            .bind(mx_room_id)
            .bind(mx_event_id)
            .bind(direction.as_str())
            .bind(sender)
            .bind(sent_at)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if direction == Direction::MxToTg {
                sqlx::query("DELETE FROM tg_send_intents WHERE mx_event_id = ?")
                    .bind(mx_event_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Note that `mx_event_id` is about to be sent to Telegram. Returns when an earlier attempt
    /// started (unix ms) if one did and its outcome is unknown: it may have reached Telegram.
    pub async fn begin_send(&self, mx_event_id: &str, tg_chat_id: i64) -> Result<Option<i64>> {
        self.write(true, async |tx| {
            let earlier: Option<i64> =
                sqlx::query_scalar("SELECT started_at FROM tg_send_intents WHERE mx_event_id = ?")
                    .bind(mx_event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if earlier.is_none() {
                sqlx::query("INSERT INTO tg_send_intents (mx_event_id, tg_chat_id, started_at) VALUES (?, ?, ?)")
                    .bind(mx_event_id)
                    .bind(tg_chat_id)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(earlier)
        })
        .await
    }

    /// An attempt that certainly sent nothing (Telegram answered with an error): forget it.
    pub async fn forget_send(&self, mx_event_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM tg_send_intents WHERE mx_event_id = ?")
            .bind(mx_event_id)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    fn link_from_row(r: sqlx::sqlite::SqliteRow) -> MessageLink {
        MessageLink {
            tg_chat_id: r.get(0),
            tg_msg_id: r.get(1),
            mx_room_id: r.get(2),
            mx_event_id: r.get(3),
            direction: r.get(4),
            sender: r.get(5),
        }
    }

    pub async fn link_by_tg(&self, tg_chat_id: i64, tg_msg_id: i32) -> Result<Option<MessageLink>> {
        let row = sqlx::query(
            "SELECT tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender FROM messages
             WHERE tg_chat_id = ? AND tg_msg_id = ?",
        )
        .bind(tg_chat_id)
        .bind(tg_msg_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Self::link_from_row))
    }

    pub async fn link_by_event(&self, mx_event_id: &str) -> Result<Option<MessageLink>> {
        let row = sqlx::query(
            "SELECT tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender FROM messages
             WHERE mx_event_id = ?",
        )
        .bind(mx_event_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Self::link_from_row))
    }

    // ---- appservice transactions and the Matrix inbox ----

    /// Store a transaction and its events in one SQLite transaction (all or nothing); `false`
    /// when both its id and every event were known (a repeat).
    /// An event already seen (fetched by the catch-up before the homeserver delivered it) is
    /// not queued again, and the bridge's own echoes are not stored at all.
    pub async fn accept_transaction(&self, txn_id: &str, events: &[MxEvent]) -> Result<bool> {
        self.accept(txn_id, events, None).await
    }

    /// Queue events the bridge found itself in `room` (catch-up), as [`Store::accept_transaction`]
    /// does, unless the homeserver delivered anything for that room since `read_at` (unix ms, when
    /// the timeline was read): then an event after these in the timeline may be queued already,
    /// and appending them would bridge them out of order. Returns `false` then (read again later).
    pub async fn accept_found(&self, txn_id: &str, room: &str, read_at: i64, events: &[MxEvent]) -> Result<bool> {
        self.accept(txn_id, events, Some((room, read_at))).await
    }

    async fn accept(&self, txn_id: &str, events: &[MxEvent], quiet_since: Option<(&str, i64)>) -> Result<bool> {
        // IMMEDIATE: the check below and the inserts see the same state (no writer in between).
        self.write(true, async |tx| {
            if let Some((room, since)) = quiet_since {
                let delivered: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM mx_seen WHERE room_id = ? AND received_at >= ? LIMIT 1")
                        .bind(room)
                        .bind(since)
                        .fetch_optional(&mut *tx)
                        .await?;
                if delivered.is_some() {
                    return Ok(false);
                }
            }
            let now = now_ms();
            let inserted = sqlx::query("INSERT OR IGNORE INTO mx_transactions (txn_id, received_at) VALUES (?, ?)")
                .bind(txn_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // A known transaction id is no reason to drop events: Synapse on SQLite numbers its
            // transactions from 1 again after a restart. Events are deduplicated by their ids, so
            // a real repeat stores nothing.
            let mut queued = 0;
            for ev in events.iter().filter(|e| !e.echo) {
                if !mark_seen(tx, ev, now).await? {
                    tracing::info!(event_id = ?ev.event_id, "event already received; ignored");
                    continue;
                }
                queued += 1;
                sqlx::query("INSERT INTO mx_inbox (txn_id, room_id, event_json, received_at) VALUES (?, ?, ?, ?)")
                    .bind(txn_id)
                    .bind(&ev.room)
                    .bind(&ev.json)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(inserted > 0 || queued > 0)
        })
        .await
    }

    /// Record an event the bridge found itself; `false` if it was seen already.
    pub async fn mark_seen(&self, ev: &MxEvent) -> Result<bool> {
        self.write(false, async |tx| mark_seen(tx, ev, now_ms()).await).await
    }

    /// Which of these event ids were never seen.
    pub async fn unseen(&self, event_ids: &[&str]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in event_ids {
            let seen: Option<i64> = sqlx::query_scalar("SELECT 1 FROM mx_seen WHERE event_id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            if seen.is_none() {
                out.push((*id).to_owned());
            }
        }
        Ok(out)
    }

    /// When the bridge first saw an event of this room (events before that are history).
    pub async fn first_seen_in(&self, room: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(received_at) FROM mx_seen WHERE room_id = ?")
                .bind(room)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Forget seen event ids and transaction ids older than `max_age_ms`.
    pub async fn prune_seen(&self, max_age_ms: i64) -> Result<u64> {
        let before = now_ms() - max_age_ms;
        sqlx::query("DELETE FROM mx_transactions WHERE received_at < ?")
            .bind(before)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        // An intent that old belongs to an event given up on (a permanent failure).
        sqlx::query("DELETE FROM tg_send_intents WHERE started_at < ?")
            .bind(before)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(sqlx::query("DELETE FROM mx_seen WHERE received_at < ?")
            .bind(before)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?
            .rows_affected())
    }

    /// The device (id, access token) of one of the bridge's users, once logged in.
    pub async fn e2ee_device(&self, user: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT device_id, access_token FROM e2ee_devices WHERE user_id = ?")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn save_e2ee_device(&self, user: &str, device_id: &str, access_token: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO e2ee_devices (user_id, device_id, access_token, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(device_id)
        .bind(access_token)
        .bind(now_ms())
        .execute(&self.pool)
        .map(|r| self.noted(r))
        .await?;
        Ok(())
    }

    /// Rooms with Matrix events waiting (each is bridged by its own ordered worker).
    pub async fn mx_lanes(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT room_id FROM mx_inbox")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The next [`BATCH`] waiting events of one room, in arrival order.
    pub async fn next_mx_lane(&self, room: &str) -> Result<Vec<InboxItem>> {
        let rows = sqlx::query("SELECT seq, event_json FROM mx_inbox WHERE room_id = ? ORDER BY seq LIMIT 64")
            .bind(room)
            .fetch_all(&self.pool)
            .await?;
        Ok(inbox_items(rows))
    }

    /// Every waiting Matrix event, in arrival order.
    pub async fn all_mx_inbox(&self) -> Result<Vec<InboxItem>> {
        let rows = sqlx::query("SELECT seq, event_json FROM mx_inbox ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        Ok(inbox_items(rows))
    }

    pub async fn done_mx_inbox(&self, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM mx_inbox WHERE seq = ?")
            .bind(seq)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    // ---- Telegram inbox and offset ----

    /// Store fetched updates `(update id, chat id, JSON)` and advance the stored offset in one
    /// transaction. Only after this returns may the offset be confirmed to Telegram (by the next
    /// getUpdates call).
    pub async fn accept_updates(&self, updates: &[(i64, Option<i64>, String)]) -> Result<()> {
        let Some(max) = updates.iter().map(|(id, _, _)| *id).max() else {
            return Ok(());
        };
        self.write(false, async |tx| {
            let now = now_ms();
            for (id, chat, json) in updates {
                sqlx::query(
                    "INSERT OR IGNORE INTO tg_inbox (update_id, chat_id, update_json, received_at) VALUES (?, ?, ?, ?)",
                )
                .bind(id)
                .bind(chat)
                .bind(json)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO kv (key, value) VALUES ('tg_offset', ?)
                 ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            )
            .bind((max + 1).to_string())
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    /// Chats with updates waiting (`None`: updates without a chat).
    pub async fn tg_lanes(&self) -> Result<Vec<Option<i64>>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT chat_id FROM tg_inbox")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The next [`BATCH`] waiting updates of one chat, in order.
    pub async fn next_tg_lane(&self, chat: Option<i64>) -> Result<Vec<InboxItem>> {
        let rows =
            sqlx::query("SELECT update_id, update_json FROM tg_inbox WHERE chat_id IS ? ORDER BY update_id LIMIT 64")
                .bind(chat)
                .fetch_all(&self.pool)
                .await?;
        Ok(inbox_items(rows))
    }

    pub async fn tg_offset(&self) -> Result<i64> {
        Ok(self
            .get_kv("tg_offset")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Every waiting Telegram update, in order.
    pub async fn all_tg_inbox(&self) -> Result<Vec<InboxItem>> {
        let rows = sqlx::query("SELECT update_id, update_json FROM tg_inbox ORDER BY update_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(inbox_items(rows))
    }

    /// Remove bridged updates, one commit for all of them.
    pub async fn done_tg_inbox(&self, update_ids: &[i64]) -> Result<()> {
        if update_ids.is_empty() {
            return Ok(());
        }
        let ids = serde_json::to_string(update_ids)?;
        sqlx::query("DELETE FROM tg_inbox WHERE update_id IN (SELECT value FROM json_each(?))")
            .bind(ids)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    // ---- modes and announcements ----

    /// The mode of the newest switch, if any was recorded.
    pub async fn current_mode(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT to_mode FROM mode_switches ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Record a switch and the announcements it owes, atomically. Returns the switch id.
    pub async fn record_switch(
        &self,
        from: Option<&str>,
        to: &str,
        reason: &str,
        announcements: &[(String, String)],
    ) -> Result<i64> {
        self.write(false, async |tx| {
            let id = sqlx::query("INSERT INTO mode_switches (from_mode, to_mode, at, reason) VALUES (?, ?, ?, ?)")
                .bind(from)
                .bind(to)
                .bind(now_ms())
                .bind(reason)
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
            for (target, kind) in announcements {
                sqlx::query("INSERT INTO announcements (switch_id, target, kind) VALUES (?, ?, ?)")
                    .bind(id)
                    .bind(target)
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(id)
        })
        .await
    }

    /// Switch history, oldest first: (from, to, at ms, reason).
    pub async fn switches(&self) -> Result<Vec<(Option<String>, String, i64, String)>> {
        let rows = sqlx::query("SELECT from_mode, to_mode, at, reason FROM mode_switches ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Announcements not yet posted: (switch id, target, kind), oldest first.
    pub async fn pending_announcements(&self) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT switch_id, target, kind FROM announcements WHERE done_at IS NULL ORDER BY switch_id, target",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    pub async fn announcement_done(&self, switch_id: i64, target: &str, tg_msg_id: Option<i32>) -> Result<()> {
        sqlx::query("UPDATE announcements SET done_at = ?, tg_msg_id = ? WHERE switch_id = ? AND target = ?")
            .bind(now_ms())
            .bind(tg_msg_id)
            .bind(switch_id)
            .bind(target)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    /// Telegram messages of earlier posted announcements in a chat (to unpin on rollback).
    pub async fn pinned_announcements(&self, target: &str, before_switch: i64) -> Result<Vec<i32>> {
        Ok(sqlx::query_scalar(
            "SELECT tg_msg_id FROM announcements WHERE target = ? AND switch_id < ? AND tg_msg_id IS NOT NULL",
        )
        .bind(target)
        .bind(before_switch)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- cross-side duplicate watch ----

    /// Remember a post of a mapped identity (platform `telegram` or `matrix`).
    pub async fn watch_post(
        &self,
        platform: &str,
        reference: &str,
        identity: &str,
        chat: i64,
        norm: &str,
        ts: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO echo_watch (platform, ref, identity, tg_chat_id, norm, ts) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(platform)
        .bind(reference)
        .bind(identity)
        .bind(chat)
        .bind(norm)
        .bind(ts)
        .execute(&self.pool).map(|r| self.noted(r))
        .await?;
        sqlx::query("DELETE FROM echo_watch WHERE ts < ?")
            .bind(now_ms() - 86_400_000)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    /// A post of the same identity and text on `platform` within `window_ms` of `ts`.
    pub async fn find_watched(
        &self,
        platform: &str,
        identity: &str,
        chat: i64,
        norm: &str,
        ts: i64,
        window_ms: i64,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT ref FROM echo_watch WHERE platform = ? AND identity = ? AND tg_chat_id = ? AND norm = ?
             AND ts BETWEEN ? AND ? ORDER BY ts LIMIT 1",
        )
        .bind(platform)
        .bind(identity)
        .bind(chat)
        .bind(norm)
        .bind(ts - window_ms)
        .bind(ts + window_ms)
        .fetch_optional(&self.pool)
        .await?)
    }

    // ---- reactions and avatars ----

    pub async fn reaction(&self, chat: i64, msg: i32, reactor: &str, emoji: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT mx_event_id FROM reactions WHERE tg_chat_id = ? AND tg_msg_id = ? AND reactor = ? AND emoji = ?",
        )
        .bind(chat)
        .bind(msg)
        .bind(reactor)
        .bind(emoji)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn save_reaction(
        &self,
        chat: i64,
        msg: i32,
        reactor: &str,
        emoji: &str,
        mx_event: &str,
        direction: Direction,
    ) -> Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO reactions (tg_chat_id, tg_msg_id, reactor, emoji, mx_event_id, direction) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(chat)
        .bind(msg)
        .bind(reactor)
        .bind(emoji)
        .bind(mx_event)
        .bind(direction.as_str())
        .execute(&self.pool).map(|r| self.noted(r))
        .await?;
        Ok(())
    }

    /// Forget a reaction by its Matrix event; returns (chat, message, direction) if it was known.
    pub async fn delete_reaction(&self, mx_event: &str) -> Result<Option<(i64, i32, String)>> {
        let row = sqlx::query("DELETE FROM reactions WHERE mx_event_id = ? RETURNING tg_chat_id, tg_msg_id, direction")
            .bind(mx_event)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// The newest Matrix-side reaction still standing on a Telegram message.
    pub async fn latest_mx_reaction(&self, chat: i64, msg: i32) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT emoji FROM reactions WHERE tg_chat_id = ? AND tg_msg_id = ? AND direction = 'mx_to_tg' ORDER BY rowid DESC LIMIT 1",
        )
        .bind(chat)
        .bind(msg)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn puppet_avatar(&self, tg_user_id: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar::<_, Option<String>>("SELECT avatar_id FROM puppets WHERE tg_user_id = ?")
                .bind(tg_user_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    pub async fn set_puppet_avatar(&self, tg_user_id: i64, avatar_id: &str) -> Result<()> {
        sqlx::query("UPDATE puppets SET avatar_id = ? WHERE tg_user_id = ?")
            .bind(avatar_id)
            .bind(tg_user_id)
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }

    // ---- audit ----

    /// Failures recorded since `since_ms`: (direction, source, reason, at).
    pub async fn failures_since(&self, since_ms: i64) -> Result<Vec<(String, String, String, i64)>> {
        let rows = sqlx::query("SELECT direction, source_ref, reason, at FROM failures WHERE at >= ? ORDER BY id")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Bridge latencies (ms, bridged_at - sent_at) of messages bridged since `since_ms`.
    pub async fn latencies_since(&self, direction: Direction, since_ms: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(bridged_at - sent_at, 0) FROM messages WHERE direction = ? AND bridged_at >= ?",
        )
        .bind(direction.as_str())
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Messages of one chat bridged since `since_ms` in one direction.
    pub async fn count_chat_since(&self, chat: i64, direction: Direction, since_ms: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE tg_chat_id = ? AND direction = ? AND bridged_at >= ?",
        )
        .bind(chat)
        .bind(direction.as_str())
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    /// When `sender` (a Matrix id, puppet or real) last had a message bridged.
    pub async fn last_message_by(&self, sender: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(bridged_at) FROM messages WHERE sender = ?")
                .bind(sender)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Items waiting in the inboxes: (telegram count, matrix count, oldest received_at).
    pub async fn pending(&self) -> Result<(i64, i64, Option<i64>)> {
        let (tg, tg_oldest): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MIN(received_at) FROM tg_inbox")
            .fetch_one(&self.pool)
            .await?;
        let (mx, mx_oldest): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MIN(received_at) FROM mx_inbox")
            .fetch_one(&self.pool)
            .await?;
        let oldest = match (tg_oldest, mx_oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok((tg, mx, oldest))
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

    // ---- failures ----

    /// Whether anything was ever bridged or recorded as not bridged.
    pub async fn has_traffic(&self) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM messages) OR EXISTS(SELECT 1 FROM failures)")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn record_failure(&self, direction: Direction, source_ref: &str, reason: &str) -> Result<()> {
        sqlx::query("INSERT INTO failures (direction, source_ref, reason, at) VALUES (?, ?, ?, ?)")
            .bind(direction.as_str())
            .bind(source_ref)
            .bind(reason)
            .bind(now_ms())
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    fn ev(id: &str, json: &str) -> MxEvent {
        MxEvent {
            room: "!r".into(),
            event_id: Some(id.into()),
            ts: None,
            json: json.into(),
            echo: false,
        }
    }

    #[tokio::test]
    async fn an_event_found_by_the_catch_up_is_not_queued_again() {
        let (s, _d) = store().await;
        assert!(s.mark_seen(&ev("$late", "{}")).await.unwrap());
        assert!(!s.mark_seen(&ev("$late", "{}")).await.unwrap());
        assert_eq!(s.unseen(&["$late", "$other"]).await.unwrap(), ["$other"]);
        // Delivered at last, in a transaction with a new event.
        assert!(
            s.accept_transaction("t9", &[ev("$late", "{\"late\":1}"), ev("$new", "{\"new\":1}")])
                .await
                .unwrap()
        );
        let items = s.all_mx_inbox().await.unwrap();
        assert_eq!(
            items.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
            ["{\"new\":1}"]
        );
    }

    #[tokio::test]
    async fn own_echoes_are_neither_queued_nor_recorded() {
        let (s, _d) = store().await;
        let echo = MxEvent {
            echo: true,
            ..ev("$echo", "{\"echo\":1}")
        };
        assert!(
            s.accept_transaction("t2", &[echo, ev("$real", "{\"real\":1}")])
                .await
                .unwrap()
        );
        let items = s.all_mx_inbox().await.unwrap();
        assert_eq!(
            items.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
            ["{\"real\":1}"]
        );
        assert_eq!(s.unseen(&["$echo", "$real"]).await.unwrap(), ["$echo"]);
    }

    /// A repeated transaction stores nothing; a known transaction id with new events (Synapse on
    /// SQLite numbers transactions from 1 again after a restart) stores the new events.
    #[tokio::test]
    async fn repeated_transactions_are_noops_but_a_reused_id_loses_nothing() {
        let (s, _d) = store().await;
        let first = [ev("$1", "{\"a\":1}"), ev("$2", "{\"a\":2}")];
        assert!(s.accept_transaction("t1", &first).await.unwrap());
        assert!(!s.accept_transaction("t1", &first).await.unwrap());
        assert!(s.accept_transaction("t1", &[ev("$3", "{\"a\":3}")]).await.unwrap());
        let items = s.all_mx_inbox().await.unwrap();
        assert_eq!(
            items.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
            ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]
        );
    }

    #[tokio::test]
    async fn offset_only_moves_forward_and_inbox_keeps_order_per_chat() {
        let (s, _d) = store().await;
        assert_eq!(s.tg_offset().await.unwrap(), 0);
        s.accept_updates(&[
            (11, Some(-1), "b".into()),
            (10, Some(-1), "a".into()),
            (12, Some(-2), "c".into()),
        ])
        .await
        .unwrap();
        assert_eq!(s.tg_offset().await.unwrap(), 13);
        s.accept_updates(&[(5, Some(-1), "old".into()), (4, None, "no chat".into())])
            .await
            .unwrap();
        assert_eq!(s.tg_offset().await.unwrap(), 13);
        let mut lanes = s.tg_lanes().await.unwrap();
        lanes.sort();
        assert_eq!(lanes, [None, Some(-2), Some(-1)]);
        let items = s.next_tg_lane(Some(-1)).await.unwrap();
        assert_eq!(items.iter().map(|i| i.key).collect::<Vec<_>>(), [5, 10, 11]);
        assert_eq!(s.next_tg_lane(None).await.unwrap()[0].key, 4);
        s.done_tg_inbox(&[10]).await.unwrap();
        assert_eq!(s.next_tg_lane(Some(-1)).await.unwrap().len(), 2);
        s.done_tg_inbox(&[4, 5, 11, 12]).await.unwrap();
        assert!(s.all_tg_inbox().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn message_links_both_ways() {
        let (s, _d) = store().await;
        s.link_message(-100, 7, "!r:x", "$e", Direction::TgToMx, "u", 1)
            .await
            .unwrap();
        assert_eq!(s.link_by_event("$e").await.unwrap().unwrap().tg_msg_id, 7);
        assert_eq!(s.link_by_tg(-100, 7).await.unwrap().unwrap().mx_event_id, "$e");
        assert!(s.link_by_tg(-100, 8).await.unwrap().is_none());
    }
}
