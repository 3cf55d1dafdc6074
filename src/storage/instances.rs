//! The instances of the bridge on this database (`instances`) and the history of the lease
//! (`leases`): which instance is active since when, which wait as standby, and the failovers
//! (see `app` and `storage::Lease`).

use super::{Store, now_ms};
use crate::error::Result;

/// A row of `instances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its `instance` name.
    pub name: String,
    /// Its process id (on its own host).
    pub pid: i64,
    /// `active` or `standby`.
    pub role: String,
    /// Since when it has had that role (unix ms).
    pub since: i64,
    /// When it last said it was alive (unix ms; every [`Store::HEARTBEAT_MS`]).
    pub seen_at: i64,
}

/// A row of `leases`: an instance took the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTaken {
    pub instance: String,
    pub pid: i64,
    /// When (unix ms).
    pub at: i64,
    /// The instance that had it before (`None`: none on record, the first start).
    pub previous: Option<String>,
}

impl Store {
    /// How often each instance updates its `seen_at`.
    pub const HEARTBEAT_MS: i64 = 5_000;

    /// Say that instance `name` is alive in `role`; `since` is kept while the role stays.
    pub async fn instance_alive(&self, name: &str, role: &str) -> Result<()> {
        let now = now_ms();
        let pid = i64::from(std::process::id());
        self.write(false, async |tx| {
            on!(tx.db(), |c| sqlx::query(
                "INSERT INTO instances (name, pid, role, since, seen_at) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (name) DO UPDATE SET
                   since = CASE WHEN instances.role = excluded.role AND instances.pid = excluded.pid
                           THEN instances.since ELSE excluded.since END,
                   pid = excluded.pid, role = excluded.role, seen_at = excluded.seen_at"
            )
            .bind(name)
            .bind(pid)
            .bind(role)
            .bind(now)
            .execute(c)
            .await
            .map(|_| ()))?;
            Ok(())
        })
        .await
    }

    /// Record that instance `name` took the lease (it is now the active one; any other
    /// instance's `active` row is stale and becomes `standby`). Returns who had it before.
    pub async fn lease_taken(&self, name: &str) -> Result<Option<String>> {
        let now = now_ms();
        let pid = i64::from(std::process::id());
        self.write(false, async |tx| {
            let previous: Option<String> = on!(tx.db(), |c| sqlx::query_scalar(
                "SELECT instance FROM leases ORDER BY id DESC LIMIT 1"
            )
            .fetch_optional(c)
            .await)?;
            on!(tx.db(), |c| sqlx::query(
                "INSERT INTO leases (instance, pid, taken_at, previous) VALUES ($1, $2, $3, $4)"
            )
            .bind(name)
            .bind(pid)
            .bind(now)
            .bind(previous.as_deref())
            .execute(c)
            .await
            .map(|_| ()))?;
            on!(tx.db(), |c| sqlx::query(
                "UPDATE instances SET role = 'standby', since = $2 WHERE role = 'active' AND name <> $1"
            )
            .bind(name)
            .bind(now)
            .execute(c)
            .await
            .map(|_| ()))?;
            on!(tx.db(), |c| sqlx::query(
                "INSERT INTO instances (name, pid, role, since, seen_at) VALUES ($1, $2, 'active', $3, $3)
                 ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, role = 'active',
                   since = excluded.since, seen_at = excluded.seen_at"
            )
            .bind(name)
            .bind(pid)
            .bind(now)
            .execute(c)
            .await
            .map(|_| ()))?;
            Ok(previous)
        })
        .await
    }

    /// Every instance on record, the active one first, then by name.
    pub async fn instances(&self) -> Result<Vec<Instance>> {
        let rows: Vec<(String, i64, String, i64, i64)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT name, pid, role, since, seen_at FROM instances
             ORDER BY CASE role WHEN 'active' THEN 0 ELSE 1 END, name"
        )
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(name, pid, role, since, seen_at)| Instance {
                name,
                pid,
                role,
                since,
                seen_at,
            })
            .collect())
    }

    /// The takings of the lease since `since_ms`, oldest first.
    pub async fn leases_since(&self, since_ms: i64) -> Result<Vec<LeaseTaken>> {
        let rows: Vec<(String, i64, i64, Option<String>)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT instance, pid, taken_at, previous FROM leases WHERE taken_at >= $1 ORDER BY id"
        )
        .bind(since_ms)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(instance, pid, at, previous)| LeaseTaken {
                instance,
                pid,
                at,
                previous,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::temp_store;
    use crate::storage::testing::both_backends;

    both_backends! {
        /// The lease's history and the instances' roles.
        async fn a_taken_lease_makes_its_instance_the_active_one() {
            let (store, _dir) = temp_store().await;
            assert_eq!(store.lease_taken("a").await.unwrap(), None);
            store.instance_alive("b", "standby").await.unwrap();
            let since = store.instances().await.unwrap()[1].since;
            store.instance_alive("b", "standby").await.unwrap();
            let rows = store.instances().await.unwrap();
            let roles = |rows: &[crate::storage::Instance]| {
                rows.iter()
                    .map(|i| (i.name.clone(), i.role.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(roles(&rows), [("a".into(), "active".into()), ("b".into(), "standby".into())]);
            assert_eq!(rows[1].since, since, "a standby's since stays while it waits");
            assert_eq!(store.lease_taken("b").await.unwrap().as_deref(), Some("a"));
            let rows = store.instances().await.unwrap();
            assert_eq!(roles(&rows), [("b".into(), "active".into()), ("a".into(), "standby".into())]);
            let history = store.leases_since(0).await.unwrap();
            assert_eq!(
                history
                    .iter()
                    .map(|l| (l.instance.as_str(), l.previous.as_deref()))
                    .collect::<Vec<_>>(),
                [("a", None), ("b", Some("a"))]
            );
        }
    }
}
