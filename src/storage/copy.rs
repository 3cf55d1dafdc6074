//! `tgmx migrate-db`: copy a bridge's whole state from an SQLite database into a new
//! PostgreSQL database (the move to PostgreSQL), every table the migrations create, so that the
//! message map, inboxes, offsets, mode history and audit rows carry over.
//!
//! Refused while a daemon uses either database (the daemon locks of both are taken for the
//! copy), and into a database that already holds tgmx data. The target is migrated first, the
//! rows go in one transaction (all or nothing), serial keys keep their values and their sequences
//! continue after them, and the counts are compared afterwards.

use sqlx::{Column, Row};

use super::{Backend, Db, Store};
use crate::error::{Error, Result};

/// Every table the migrations create, each after the tables it refers to (`announcements`
/// after `mode_switches`, `rollcall_answers` after `rollcalls`). A test holds it to the
/// migrations of both backends; a table missing here stops a copy before it starts.
pub const TABLES: &[&str] = &[
    "kv",
    "portals",
    "chat_upgrades",
    "forum_topics",
    "puppets",
    "memberships",
    "e2ee_devices",
    "messages",
    "message_parts",
    "tg_send_intents",
    "reactions",
    "mx_transactions",
    "mx_seen",
    "mx_inbox",
    "tg_inbox",
    "mode_switches",
    "announcements",
    "echo_watch",
    "failures",
    "message_files",
    "rollcalls",
    "rollcall_answers",
    "instances",
    "leases",
];

/// Serial keys (SQLite `AUTOINCREMENT`, PostgreSQL `BIGSERIAL`): copied as they are, and the
/// PostgreSQL sequence then continues after the highest.
const SERIALS: &[(&str, &str)] = &[
    ("mx_inbox", "seq"),
    ("failures", "id"),
    ("mode_switches", "id"),
    ("rollcalls", "id"),
    ("leases", "id"),
];

/// One value of a row being copied.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

fn quoted(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The tables of a store (without sqlx's own).
async fn tables_of(store: &Store) -> Result<Vec<String>> {
    Ok(match store.db() {
        Db::Sqlite(p) => {
            sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                 AND name <> '_sqlx_migrations' ORDER BY name",
            )
            .fetch_all(p)
            .await?
        }
        Db::Postgres(p) => {
            sqlx::query_scalar(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                   AND table_name <> '_sqlx_migrations' ORDER BY 1",
            )
            .fetch_all(p)
            .await?
        }
    })
}

/// Rows per table.
async fn count(store: &Store, table: &str) -> Result<u64> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quoted(table)));
    let n: i64 = on!(store.db(), |p| sqlx::query_scalar(sql).fetch_one(p).await)?;
    Ok(n as u64)
}

/// Tables `TABLES` does not know (a schema newer than this copy).
fn unknown(tables: &[String]) -> Vec<String> {
    tables
        .iter()
        .filter(|t| !TABLES.contains(&t.as_str()))
        .cloned()
        .collect()
}

/// Copy every table of the SQLite database `from` into the PostgreSQL database `to` (see the
/// module). Returns the rows copied per table, in [`TABLES`] order.
pub async fn migrate(from: &str, to: &str) -> Result<Vec<(&'static str, u64)>> {
    if Backend::of(from) != Some(Backend::Sqlite) {
        return Err(Error::Config(format!(
            "--from must be an sqlite:// database (copying from {} is not supported)",
            super::redacted(from)
        )));
    }
    if Backend::of(to) != Some(Backend::Postgres) {
        return Err(Error::Config(format!(
            "--to must be a postgres:// database, not {}",
            super::redacted(to)
        )));
    }
    if !super::database_file(from)?.is_file() {
        return Err(Error::Config(format!(
            "no database at {}",
            super::database_file(from)?.display()
        )));
    }
    // Neither database may be in use by a daemon: held until the copy is done.
    let _from_lock = Store::lock_for_daemon(from).await?;
    let _to_lock = Store::lock_for_daemon(to).await?;
    let source = Store::open(from).await?;
    let target = Store::open(to).await?;
    for (store, which) in [(&source, "source"), (&target, "target")] {
        let unknown = unknown(&tables_of(store).await?);
        if !unknown.is_empty() {
            return Err(Error::Config(format!(
                "the {which} database has tables this tgmx does not know how to copy: {} (a newer \
                 version made them: use that version's migrate-db)",
                unknown.join(", ")
            )));
        }
    }
    for table in TABLES {
        let n = count(&target, table).await?;
        if n > 0 {
            return Err(Error::Config(format!(
                "the target database {} already holds tgmx data ({n} rows in {table}): migrate-db fills \
                 only an empty database (drop and create it again, or choose another)",
                super::redacted(to)
            )));
        }
    }
    let (Db::Sqlite(src), Db::Postgres(dst)) = (source.db(), target.db()) else {
        unreachable!("checked above");
    };
    let mut tx = dst.begin().await?;
    let mut copied = Vec::new();
    for table in TABLES {
        // The source's columns and their types; the target's columns (PostgreSQL has `seq` in
        // `reactions` for SQLite's rowid: it is given in the rows' order).
        let columns: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT name, type FROM pragma_table_info('{table}') ORDER BY cid"
        )))
        .fetch_all(src)
        .await?;
        let target_columns: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(*table)
        .fetch_all(&mut *tx)
        .await?;
        let columns: Vec<(String, bool)> = columns
            .into_iter()
            .filter(|(name, _)| target_columns.contains(name))
            .map(|(name, ty)| {
                let int = ty.to_ascii_uppercase().contains("INT");
                (name, int)
            })
            .collect();
        let list = columns.iter().map(|(c, _)| quoted(c)).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {list} FROM {} ORDER BY rowid",
            quoted(table)
        )))
        .fetch_all(src)
        .await?;
        let mut values: Vec<Vec<Value>> = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut vals = Vec::with_capacity(columns.len());
            for (i, (name, int)) in columns.iter().enumerate() {
                let v = if *int {
                    row.try_get::<Option<i64>, _>(i).map(Value::Int)
                } else {
                    row.try_get::<Option<String>, _>(i).map(Value::Text)
                };
                vals.push(v.map_err(|e| {
                    Error::Internal(format!(
                        "{table}.{name} (column {}) cannot be read from the source: {e}",
                        row.column(i).name()
                    ))
                })?);
            }
            values.push(vals);
        }
        // Many rows per statement (PostgreSQL takes up to 65535 parameters).
        let per_statement = (4000 / columns.len().max(1)).max(1);
        for chunk in values.chunks(per_statement) {
            let mut sql = format!("INSERT INTO {} ({list}) VALUES ", quoted(table));
            let mut n = 0;
            for (r, _) in chunk.iter().enumerate() {
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for c in 0..columns.len() {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    n += 1;
                    sql.push_str(&format!("${n}"));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for v in row {
                    q = match v {
                        Value::Int(i) => q.bind(*i),
                        Value::Text(t) => q.bind(t.clone()),
                    };
                }
            }
            q.execute(&mut *tx).await?;
        }
        copied.push((*table, values.len() as u64));
    }
    for (table, column) in SERIALS {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // The copy, checked.
    for (table, n) in &copied {
        let there = count(&target, table).await?;
        if there != *n {
            return Err(Error::Internal(format!(
                "{table}: {n} rows read from the source but {there} in the target"
            )));
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TABLES` is every table the migrations create, on both backends.
    #[tokio::test]
    async fn every_table_of_the_migrations_is_copied() {
        let (s, _d) = crate::storage::temp_store().await;
        let mut tables = tables_of(&s).await.unwrap();
        tables.sort();
        let mut known: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        known.sort();
        assert_eq!(tables, known);
    }

    #[cfg(tgmx_postgres)]
    #[tokio::test]
    async fn every_table_of_the_postgres_migrations_is_copied() {
        crate::storage::testing::on_postgres(async {
            let (s, _d) = crate::storage::temp_store().await;
            let mut tables = tables_of(&s).await.unwrap();
            tables.sort();
            let mut known: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
            known.sort();
            assert_eq!(tables, known);
        })
        .await
    }

    /// A bridge's state moved from SQLite to PostgreSQL: every table, the same rows, serial keys
    /// that go on after the copied ones; refused into a database that holds tgmx data, and while
    /// a daemon holds either database.
    #[cfg(tgmx_postgres)]
    #[tokio::test]
    async fn migrate_db_copies_an_sqlite_bridge_into_postgres() {
        use crate::storage::{Direction, MessagePart, MxEvent, TgUpdate};
        use crate::telegram::Place;
        use ruma::{event_id, room_id, user_id};

        let dir = tempfile::tempdir().unwrap();
        let from = format!("sqlite://{}", dir.path().join("old.db").display());
        let old = Store::open(&from).await.unwrap();
        let room = room_id!("!ops:hs");
        old.upsert_portal(Place::chat(-100), room, None).await.unwrap();
        old.upsert_portal(Place::topic(-100, Some(7)), room_id!("!deploys:hs"), None)
            .await
            .unwrap();
        old.record_chat_upgrade(-5, -1005).await.unwrap();
        old.save_topic_name(Place::topic(-100, Some(7)), "Deploys")
            .await
            .unwrap();
        old.save_puppet(42, user_id!("@telegram_42:hs"), "Pat").await.unwrap();
        old.set_puppet_avatar(42, "avatar-1").await.unwrap();
        old.set_member(user_id!("@telegram_42:hs"), room, true).await.unwrap();
        old.save_e2ee_device("@telegrambot:hs", ruma::device_id!("DEVICE"), "secret")
            .await
            .unwrap();
        for i in 0..250 {
            old.link_message(
                Place::chat(-100),
                i,
                room,
                &ruma::EventId::parse(format!("$e{i}")).unwrap(),
                if i % 2 == 0 {
                    Direction::TgToMx
                } else {
                    Direction::MxToTg
                },
                user_id!("@telegram_42:hs"),
                1000 + i64::from(i),
                None,
            )
            .await
            .unwrap();
        }
        old.save_part(&MessagePart {
            mx_event_id: event_id!("$e1").to_owned(),
            part: 1,
            tg_chat_id: -100,
            tg_msg_id: 900,
            part_event_id: event_id!("$e1").to_owned(),
        })
        .await
        .unwrap();
        old.begin_send(event_id!("$pending"), -100, 0).await.unwrap();
        old.save_reaction(-100, 1, "@a:hs", "👍", event_id!("$r1"), Direction::MxToTg)
            .await
            .unwrap();
        old.save_reaction(-100, 1, "@b:hs", "🔥", event_id!("$r2"), Direction::MxToTg)
            .await
            .unwrap();
        let ev = |id: &str| MxEvent {
            room: Some(room.to_owned()),
            event_id: Some(ruma::EventId::parse(id).unwrap()),
            ts: None,
            json: format!("{{\"id\":\"{id}\"}}"),
            echo: false,
        };
        old.accept_transaction("t1".into(), &[ev("$in1"), ev("$in2")])
            .await
            .unwrap();
        old.accept_updates(&[
            TgUpdate {
                update_id: 500,
                chat_id: Some(-100),
                json: "{\"u\":500}".into(),
            },
            TgUpdate {
                update_id: 501,
                chat_id: None,
                json: "{\"u\":501}".into(),
            },
        ])
        .await
        .unwrap();
        let first = old.record_switch(None, "parallel", "first start", &[]).await.unwrap();
        let second = old
            .record_switch(
                Some("parallel"),
                "cutover",
                "config",
                &[("tg:-100".into(), "cutover".into())],
            )
            .await
            .unwrap();
        old.announcement_done(second, "tg:-100", Some(77)).await.unwrap();
        old.watch_post(
            "telegram",
            "5",
            user_id!("@alexander:hs"),
            -100,
            "hello",
            crate::storage::now_ms(),
        )
        .await
        .unwrap();
        old.record_failure(Direction::TgToMx, "tg:-100:3", "too large")
            .await
            .unwrap();
        old.note_file(Direction::TgToMx, "tg:-100:2", "voice").await.unwrap();
        let rollcall = crate::storage::audit::Rollcall {
            at: 5,
            room: "#ops:hs".into(),
            tg_chat_id: Some(-100),
            agents: 1,
            timeout_secs: 60,
            answers: vec![crate::storage::audit::RollcallAnswer {
                agent: user_id!("@scout:hs").to_owned(),
                on_telegram: true,
                after_ms: 1200,
            }],
        };
        old.record_rollcall(&rollcall).await.unwrap();
        old.set_kv("daemon_pid", "1").await.unwrap();
        old.lease_taken("host-a").await.unwrap();
        let mut expected = Vec::new();
        for t in TABLES {
            expected.push((*t, count(&old, t).await.unwrap()));
        }
        assert!(
            expected.iter().all(|(_, n)| *n > 0),
            "every table has rows to copy: {expected:?}"
        );

        // A daemon on the source: refused.
        let to = crate::storage::testing::fresh_postgres_database().await;
        let daemon = Store::lock_for_daemon(&from).await.unwrap();
        let e = migrate(&from, &to).await.unwrap_err().to_string();
        assert!(e.contains("another tgmx daemon"), "{e}");
        drop(daemon);

        let copied = migrate(&from, &to).await.unwrap();
        assert_eq!(copied, expected);
        let new = Store::open(&to).await.unwrap();
        assert_eq!(new.backend(), Backend::Postgres);
        let link = new.link_by_tg(-100, 7).await.unwrap().unwrap();
        assert_eq!(link.mx_event_id, event_id!("$e7"));
        assert_eq!(link.direction, Direction::MxToTg);
        assert_eq!(new.portal_room(Place::chat(-100)).await.unwrap().as_deref(), Some(room));
        assert_eq!(
            new.topic_name(Place::topic(-100, Some(7))).await.unwrap().as_deref(),
            Some("Deploys")
        );
        assert_eq!(new.chat_upgrades().await.unwrap(), [(-5, -1005)]);
        assert_eq!(
            new.puppet(42).await.unwrap().unwrap().displayname.as_deref(),
            Some("Pat")
        );
        assert_eq!(new.puppet_avatar(42).await.unwrap().as_deref(), Some("avatar-1"));
        assert_eq!(new.parts_of_tg(-100, 900).await.unwrap().len(), 1);
        assert_eq!(new.latest_mx_reaction(-100, 1).await.unwrap().as_deref(), Some("🔥"));
        assert_eq!(new.tg_offset().await.unwrap(), 502);
        assert_eq!(new.all_tg_inbox().await.unwrap().len(), 2);
        let inbox = new.all_mx_inbox().await.unwrap();
        assert_eq!(
            inbox.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
            ["{\"id\":\"$in1\"}", "{\"id\":\"$in2\"}"]
        );
        assert_eq!(
            new.unseen(&[event_id!("$in1")]).await.unwrap(),
            Vec::<ruma::OwnedEventId>::new()
        );
        assert!(new.begin_send(event_id!("$pending"), -100, 0).await.unwrap().is_some());
        assert_eq!(new.switches().await.unwrap(), old.switches().await.unwrap());
        assert_eq!(new.pinned_announcements("tg:-100", second + 1).await.unwrap(), [77]);
        assert_eq!(new.last_rollcall().await.unwrap(), Some(rollcall));
        assert_eq!(
            new.failures_since(0).await.unwrap(),
            old.failures_since(0).await.unwrap()
        );
        assert_eq!(
            new.e2ee_device("@telegrambot:hs").await.unwrap().unwrap().access_token,
            "secret"
        );
        // Serial keys go on after the copied ones.
        let third = new
            .record_switch(Some("cutover"), "parallel", "rollback", &[])
            .await
            .unwrap();
        assert!(third > second && second > first, "{first} {second} {third}");
        new.accept_transaction("t2".into(), &[ev("$in3")]).await.unwrap();
        let keys: Vec<i64> = new.all_mx_inbox().await.unwrap().iter().map(|i| i.key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");

        // Not into a database that holds tgmx data.
        let e = migrate(&from, &to).await.unwrap_err().to_string();
        assert!(e.contains("already holds tgmx data"), "{e}");
        assert!(!e.contains("password"), "{e}");
    }
}
