//! Workspace tokens (SPEC §7, §8): issue, list, revoke (admin). A secret
//! exists only in the answer that issues it; the store keeps its hash.

use std::sync::Arc;

use rand::RngCore;

use super::access::Principal;
use super::audit::AuditTrail;
use crate::app::error::AppError;
use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::name::WorkspaceId;
use crate::domain::token::{
    SecretKind, TOKEN_BYTES, TokenHash, TokenId, TokenRecord, secret_from_random,
};
use crate::domain::workspace::Workspace;
use crate::ports::store::{TokenStore, WorkspaceStore};

/// A fresh secret of `kind` with 256 bits of randomness: the one place
/// secrets are made (workspace tokens here, the admin token at start-up).
pub fn fresh_secret(kind: SecretKind) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    secret_from_random(kind, bytes)
}

/// A token just issued, with the only copy of its secret.
#[derive(Debug)]
pub struct Issued {
    pub record: TokenRecord,
    pub secret: String,
}

/// A workspace's tokens.
#[derive(Clone)]
pub struct Tokens {
    workspaces: Arc<dyn WorkspaceStore>,
    tokens: Arc<dyn TokenStore>,
    audit: AuditTrail,
}

impl Tokens {
    pub fn new(
        workspaces: Arc<dyn WorkspaceStore>,
        tokens: Arc<dyn TokenStore>,
        audit: AuditTrail,
    ) -> Self {
        Self {
            workspaces,
            tokens,
            audit,
        }
    }

    async fn existing(&self, id: &WorkspaceId) -> Result<Workspace, AppError> {
        self.workspaces
            .workspace(id)
            .await
            .map_err(AppError::WorkspaceLookupFailed)?
            .ok_or(AppError::WorkspaceNotFound)
    }

    /// Issues a token for an existing workspace. Audited (SPEC §11); the
    /// event names the workspace, never the secret.
    pub async fn issue(&self, id: WorkspaceId) -> Result<Issued, AppError> {
        let draft = AuditTrail::draft(AuditAction::TokenIssue, &Principal::Admin, Some(&id));
        let result = self.insert(id).await;
        self.audit
            .conclude(draft, &result, |_| Some((AuditOutcome::Ok, 201)))
            .await;
        result
    }

    async fn insert(&self, id: WorkspaceId) -> Result<Issued, AppError> {
        self.existing(&id).await?;
        let secret = fresh_secret(SecretKind::Workspace);
        let mut id_bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut id_bytes);
        let record = TokenRecord {
            id: TokenId::from_random(id_bytes),
            workspace_id: id,
            hash: TokenHash::of(&secret),
            created_at: crate::app::now(),
            last_used_at: None,
            revoked: false,
        };
        // The record can be deleted between the check above and this
        // insert: the store then refuses the token rather than keep it.
        if !self
            .tokens
            .insert_token(&record)
            .await
            .map_err(AppError::Store)?
        {
            return Err(AppError::WorkspaceNotFound);
        }
        Ok(Issued { record, secret })
    }

    /// The workspace's tokens, revoked ones included; never their secrets.
    pub async fn list(&self, id: &WorkspaceId) -> Result<Vec<TokenRecord>, AppError> {
        self.existing(id).await?;
        self.tokens.tokens(id).await.map_err(AppError::Store)
    }

    /// Revokes one of the workspace's tokens; an id that is not one of
    /// them (or not a token id at all) is not found.
    /// Audited (SPEC §11).
    pub async fn revoke(&self, id: &WorkspaceId, raw_token_id: &str) -> Result<(), AppError> {
        let draft = AuditTrail::draft(AuditAction::TokenRevoke, &Principal::Admin, Some(id));
        let result = self.mark_revoked(id, raw_token_id).await;
        self.audit
            .conclude(draft, &result, |()| Some((AuditOutcome::Ok, 204)))
            .await;
        result
    }

    async fn mark_revoked(&self, id: &WorkspaceId, raw_token_id: &str) -> Result<(), AppError> {
        self.existing(id).await?;
        let token_id = TokenId::parse(raw_token_id).ok_or(AppError::TokenNotFound)?;
        if self
            .tokens
            .revoke_token(id, &token_id)
            .await
            .map_err(AppError::Store)?
        {
            Ok(())
        } else {
            Err(AppError::TokenNotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::workspace;
    use crate::ports::store::{MockTokenStore, MockWorkspaceStore, StoreError};

    fn id(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    fn known(ids: &'static [&'static str]) -> MockWorkspaceStore {
        let mut workspaces = MockWorkspaceStore::new();
        workspaces.expect_workspace().returning(move |wid| {
            Ok(ids
                .contains(&wid.as_str())
                .then(|| workspace(wid.as_str(), "x", "online")))
        });
        workspaces
    }

    #[tokio::test]
    async fn an_issued_token_stores_only_the_hash_of_the_secret_it_returns() {
        let (sent, stored) = std::sync::mpsc::channel();
        let mut tokens = MockTokenStore::new();
        tokens.expect_insert_token().times(1).returning(move |r| {
            sent.send(r.clone()).unwrap();
            Ok(true)
        });
        let issued = Tokens::new(
            Arc::new(known(&["ws-1"])),
            Arc::new(tokens),
            crate::app::testing::recorded_trail().0,
        )
        .issue(id("ws-1"))
        .await
        .unwrap();
        let stored = stored.recv().unwrap();
        assert!(issued.secret.starts_with("wpt_"), "{}", issued.secret);
        assert!(stored.hash.matches(&TokenHash::of(&issued.secret)));
        assert_eq!(stored.id, issued.record.id);
        assert!(!stored.revoked && stored.last_used_at.is_none());
    }

    #[tokio::test]
    async fn no_token_is_issued_for_a_workspace_that_is_gone_before_or_during_the_insert() {
        let mut tokens = MockTokenStore::new();
        tokens
            .expect_insert_token()
            .times(1)
            .returning(|_| Ok(false));
        let issuing = Tokens::new(
            Arc::new(known(&["ws-1"])),
            Arc::new(tokens),
            crate::app::testing::recorded_trail().0,
        );
        let err = issuing.issue(id("ws-2")).await.unwrap_err();
        assert!(matches!(err, AppError::WorkspaceNotFound), "{err:?}");
        // Deleted between the lookup and the insert: the store refused it.
        let err = issuing.issue(id("ws-1")).await.unwrap_err();
        assert!(matches!(err, AppError::WorkspaceNotFound), "{err:?}");
    }

    #[tokio::test]
    async fn a_failing_workspace_lookup_fails_closed() {
        let mut workspaces = MockWorkspaceStore::new();
        workspaces
            .expect_workspace()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        let mut tokens = MockTokenStore::new();
        tokens.expect_insert_token().never();
        let err = Tokens::new(
            Arc::new(workspaces),
            Arc::new(tokens),
            crate::app::testing::recorded_trail().0,
        )
        .issue(id("ws-1"))
        .await
        .unwrap_err();
        assert!(matches!(err, AppError::WorkspaceLookupFailed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn revoking_a_malformed_or_foreign_token_id_is_not_found() {
        let mut tokens = MockTokenStore::new();
        tokens
            .expect_revoke_token()
            .times(1)
            .returning(|_, _| Ok(false));
        let revoking = Tokens::new(
            Arc::new(known(&["ws-1"])),
            Arc::new(tokens),
            crate::app::testing::recorded_trail().0,
        );
        let err = revoking
            .revoke(&id("ws-1"), "not-a-token")
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::TokenNotFound), "{err:?}");
        let foreign = TokenId::from_random([1; 12]).to_string();
        let err = revoking.revoke(&id("ws-1"), &foreign).await.unwrap_err();
        assert!(matches!(err, AppError::TokenNotFound), "{err:?}");
    }
}
