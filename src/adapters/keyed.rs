//! Locks keyed by a value, created on first use and dropped with their
//! last user; and [`LocalWorkspaceLocks`], the in-process
//! [`WorkspaceLocks`]: all a single process needs (SQLite), and the
//! first stage in front of a database lock (PostgreSQL), so one replica
//! sends at most one waiter per workspace to the database.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use crate::domain::name::WorkspaceId;
use crate::ports::coordination::{HoldError, WorkspaceHold, WorkspaceLocks};

/// One lock per key, created on first use and dropped with its last
/// user, so the map holds only keys in use.
pub struct KeyedLocks<K, L> {
    map: Arc<Mutex<HashMap<K, Arc<L>>>>,
}

impl<K, L> Default for KeyedLocks<K, L> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

impl<K, L> Clone for KeyedLocks<K, L> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
        }
    }
}

impl<K: Eq + Hash + Clone, L: Default> KeyedLocks<K, L> {
    pub fn get(&self, key: &K) -> KeyedLock<K, L> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let lock = Arc::clone(map.entry(key.clone()).or_default());
        KeyedLock {
            key: key.clone(),
            lock,
            map: Arc::clone(&self.map),
        }
    }

    /// Keys whose lock is held or awaited.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A handle on one key's lock; the map entry goes when the last handle
/// does.
pub struct KeyedLock<K: Eq + Hash, L> {
    key: K,
    lock: Arc<L>,
    map: Arc<Mutex<HashMap<K, Arc<L>>>>,
}

impl<K: Eq + Hash, L> std::ops::Deref for KeyedLock<K, L> {
    type Target = Arc<L>;
    fn deref(&self) -> &Arc<L> {
        &self.lock
    }
}

impl<K: Eq + Hash, L> Drop for KeyedLock<K, L> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Handles are only made under this mutex: two counts (the map's
        // and ours) means nobody else holds or waits for the lock.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::ptr_eq(l, &self.lock) && Arc::strong_count(l) == 2)
        {
            map.remove(&self.key);
        }
    }
}

/// Serializes holds of one workspace within this process; entries of
/// idle workspaces are dropped.
#[derive(Clone, Default)]
pub struct LocalWorkspaceLocks {
    locks: KeyedLocks<WorkspaceId, tokio::sync::Mutex<()>>,
}

/// Held while one holder has the workspace in this process.
pub struct LocalHold {
    // Field order: the guard is released before the handle is dropped.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _handle: KeyedLock<WorkspaceId, tokio::sync::Mutex<()>>,
}

impl LocalWorkspaceLocks {
    /// Holds `id` in this process, waiting at most until `deadline`.
    pub async fn hold_local(
        &self,
        id: &WorkspaceId,
        deadline: Option<Instant>,
    ) -> Result<LocalHold, HoldError> {
        let handle = self.locks.get(id);
        let locking = Arc::clone(&handle).lock_owned();
        let guard = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), locking)
                .await
                .map_err(|_| HoldError::TimedOut)?,
            None => locking.await,
        };
        Ok(LocalHold {
            _guard: guard,
            _handle: handle,
        })
    }

    /// Workspaces with a hold held or awaited.
    pub fn in_use(&self) -> usize {
        self.locks.len()
    }
}

#[async_trait]
impl WorkspaceLocks for LocalWorkspaceLocks {
    async fn hold(
        &self,
        workspace: &WorkspaceId,
        deadline: Option<Instant>,
    ) -> Result<WorkspaceHold, HoldError> {
        Ok(WorkspaceHold::new(
            self.hold_local(workspace, deadline).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(50))
    }

    #[tokio::test]
    async fn a_workspace_hold_serializes_and_other_workspaces_proceed() {
        let locks = LocalWorkspaceLocks::default();
        let a = WorkspaceId::parse("a").unwrap();
        let held = locks.hold(&a, None).await.unwrap();
        assert!(
            matches!(locks.hold(&a, soon()).await, Err(HoldError::TimedOut)),
            "a second hold of the same workspace waits until its deadline"
        );
        let b = WorkspaceId::parse("b").unwrap();
        assert!(
            locks.hold(&b, soon()).await.is_ok(),
            "another workspace is not blocked"
        );
        drop(held);
        assert!(locks.hold(&a, soon()).await.is_ok());
    }

    #[tokio::test]
    async fn the_lock_map_holds_only_workspaces_in_use() {
        let locks = LocalWorkspaceLocks::default();
        for i in 0..100 {
            let id = WorkspaceId::parse(&format!("ws{i}")).unwrap();
            drop(locks.hold(&id, None).await.unwrap());
        }
        assert_eq!(locks.in_use(), 0);
        let id = WorkspaceId::parse("busy").unwrap();
        let held = locks.hold(&id, None).await.unwrap();
        let waiter = {
            let locks = locks.clone();
            let id = id.clone();
            tokio::spawn(async move { drop(locks.hold(&id, None).await.unwrap()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(locks.in_use(), 1);
        let timed_out = locks.hold(&id, soon()).await;
        assert!(timed_out.is_err());
        assert_eq!(locks.in_use(), 1, "a waiter that gave up leaves no entry");
        drop(held);
        waiter.await.unwrap();
        assert_eq!(locks.in_use(), 0, "the last user removes the entry");
    }
}
