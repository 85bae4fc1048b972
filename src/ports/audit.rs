//! The audit log (SPEC §11): append, read newest first, and forget what
//! retention allows. Nothing else edits or deletes an event. An event bound
//! to a receipt change goes through [`crate::ports::receipts::ReceiptStore`]
//! instead, in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::ports::store::StoreError;

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends one event on its own (no receipt change goes with it).
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Up to `limit` events matching `filter`, newest (highest id) first.
    async fn events(
        &self,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Deletes at most `batch` events older than `cutoff`, oldest first,
    /// in one short transaction; answers how many it deleted, so a caller
    /// repeats until fewer than `batch` come back.
    async fn forget_before(&self, cutoff: DateTime<Utc>, batch: u64) -> Result<u64, StoreError>;
}
