//! Authentication and authorization (SPEC §5 "Every /workspaces/:id/...
//! route", §7): who is calling, and may they touch this workspace.

use std::sync::Arc;

use crate::app::error::AppError;
use crate::domain::name::WorkspaceId;
use crate::domain::token::{Presented, TokenHash, TokenId, TokenRecord};
use crate::domain::workspace::Workspace;
use crate::ports::store::{TokenStore, WorkspaceStore};

/// How stale a token's `last_used_at` may get: it says when a token was
/// last used to the minute, not to the request.
pub const TOUCH_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Workspace(TokenId),
    /// A tokenless workspace reached without a token (opt-in setting).
    Tokenless,
}

impl Principal {
    /// How receipts and logs name the actor.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Workspace(id) => id.to_string(),
            Self::Tokenless => "tokenless".into(),
        }
    }
}

/// Who may act: the admin token's hash, the token and workspace stores,
/// and whether tokenless workspaces are reachable without a token.
#[derive(Clone)]
pub struct Access {
    workspaces: Arc<dyn WorkspaceStore>,
    tokens: Arc<dyn TokenStore>,
    /// Only the hash of the admin token is kept in memory.
    admin_token: TokenHash,
    allow_tokenless: bool,
}

impl Access {
    pub fn new(
        workspaces: Arc<dyn WorkspaceStore>,
        tokens: Arc<dyn TokenStore>,
        admin_token: TokenHash,
        allow_tokenless: bool,
    ) -> Self {
        Self {
            workspaces,
            tokens,
            admin_token,
            allow_tokenless,
        }
    }

    /// A live workspace token: known, not revoked, its workspace not removed.
    async fn live_token(&self, secret: &str) -> Result<Option<(TokenRecord, Workspace)>, AppError> {
        let hash = TokenHash::of(secret);
        let Some(token) = self
            .tokens
            .token_by_hash(&hash)
            .await
            .map_err(AppError::AuthCheckFailed)?
        else {
            return Ok(None);
        };
        if token.revoked || !token.hash.matches(&hash) {
            return Ok(None);
        }
        let workspace = self
            .workspaces
            .workspace(&token.workspace_id)
            .await
            .map_err(AppError::AuthCheckFailed)?;
        Ok(workspace.filter(|w| !w.is_removed()).map(|w| (token, w)))
    }

    /// Records that `token` was used, at most once per [`TOUCH_EVERY`]: a
    /// write on every request would make token checks the bottleneck of
    /// every listing (one database write per request).
    async fn touch(&self, token: &TokenRecord) {
        let now = crate::app::now();
        if token
            .last_used_at
            .is_some_and(|at| now.signed_duration_since(at) < TOUCH_EVERY)
        {
            return;
        }
        if let Err(e) = self.tokens.touch_token(&token.id, now).await {
            tracing::warn!(token = %token.id, error = ?e, "could not record token use");
        }
    }

    /// Admin-only routes: the admin token, else 403 for a valid workspace
    /// token and 401 for anything else.
    pub async fn authorize_admin(&self, presented: &Presented) -> Result<(), AppError> {
        match presented {
            Presented::Missing => Err(AppError::MissingToken),
            Presented::Malformed => Err(AppError::InvalidToken),
            Presented::Bearer(secret) => {
                if TokenHash::of(secret).matches(&self.admin_token) {
                    return Ok(());
                }
                match self.live_token(secret).await? {
                    Some(_) => Err(AppError::AdminRequired),
                    None => Err(AppError::InvalidToken),
                }
            }
        }
    }

    /// Every `/workspaces/:id/...` route: auth first (the workspace's own token
    /// or the admin token), then the workspace record.
    pub async fn authorize_workspace(
        &self,
        presented: &Presented,
        raw_id: &str,
    ) -> Result<(Principal, Workspace), AppError> {
        let principal = match presented {
            Presented::Malformed => return Err(AppError::InvalidToken),
            Presented::Missing => {
                if !self.allow_tokenless {
                    return Err(AppError::MissingToken);
                }
                return self.tokenless(raw_id).await;
            }
            Presented::Bearer(secret) => {
                if TokenHash::of(secret).matches(&self.admin_token) {
                    Principal::Admin
                } else {
                    // Another workspace's token is as invalid as a wrong one:
                    // one indistinguishable 401.
                    return match self.live_token(secret).await? {
                        Some((token, workspace)) if token.workspace_id.as_str() == raw_id => {
                            self.touch(&token).await;
                            Ok((Principal::Workspace(token.id), workspace))
                        }
                        _ => Err(AppError::InvalidToken),
                    };
                }
            }
        };
        let id = WorkspaceId::parse(raw_id).map_err(|_| AppError::InvalidWorkspaceId)?;
        let workspace = self
            .workspaces
            .workspace(&id)
            .await
            .map_err(AppError::WorkspaceLookupFailed)?
            .ok_or(AppError::WorkspaceNotFound)?;
        Ok((principal, workspace))
    }

    /// No token, tokenless access allowed: only an existing workspace with no
    /// live token; anything else still needs a token.
    async fn tokenless(&self, raw_id: &str) -> Result<(Principal, Workspace), AppError> {
        let Ok(id) = WorkspaceId::parse(raw_id) else {
            return Err(AppError::MissingToken);
        };
        let workspace = self
            .workspaces
            .workspace(&id)
            .await
            .map_err(AppError::AuthCheckFailed)?;
        let Some(workspace) = workspace.filter(|w| !w.is_removed()) else {
            return Err(AppError::MissingToken);
        };
        let has_token = self
            .tokens
            .has_live_token(&id)
            .await
            .map_err(AppError::AuthCheckFailed)?;
        if has_token {
            return Err(AppError::MissingToken);
        }
        Ok((Principal::Tokenless, workspace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::ADMIN;
    use crate::ports::store::{MockTokenStore, MockWorkspaceStore, StoreError};

    fn workspace(id: &str, status: &str) -> Workspace {
        crate::app::testing::workspace(id, "x", status)
    }

    fn token(secret: &str, workspace: &str, revoked: bool) -> TokenRecord {
        TokenRecord {
            id: TokenId::from_random([7; 12]),
            workspace_id: WorkspaceId::parse(workspace).unwrap(),
            hash: TokenHash::of(secret),
            created_at: crate::app::now(),
            last_used_at: None,
            revoked,
        }
    }

    fn state(workspaces: MockWorkspaceStore, tokens: MockTokenStore, tokenless: bool) -> Access {
        Access::new(
            Arc::new(workspaces),
            Arc::new(tokens),
            TokenHash::of(ADMIN),
            tokenless,
        )
    }

    fn bearer(s: &str) -> Presented {
        Presented::Bearer(s.to_owned())
    }

    fn down() -> StoreError {
        StoreError::Unavailable("db down".into())
    }

    #[tokio::test]
    async fn the_admin_token_needs_no_store_for_auth_but_the_record_lookup_fails_closed() {
        let mut workspaces = MockWorkspaceStore::new();
        workspaces.expect_workspace().returning(|_| Err(down()));
        let st = state(workspaces, MockTokenStore::new(), false);
        let err = st
            .authorize_workspace(&bearer(ADMIN), "ws-1")
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::WorkspaceLookupFailed(_)), "{err:?}");
        assert!(st.authorize_admin(&bearer(ADMIN)).await.is_ok());
    }

    #[tokio::test]
    async fn a_token_store_error_fails_closed_with_auth_check_failed() {
        let mut tokens = MockTokenStore::new();
        tokens.expect_token_by_hash().returning(|_| Err(down()));
        let st = state(MockWorkspaceStore::new(), tokens, false);
        let err = st
            .authorize_workspace(&bearer("t"), "ws-1")
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::AuthCheckFailed(_)), "{err:?}");
        let err = st.authorize_admin(&bearer("t")).await.unwrap_err();
        assert!(matches!(err, AppError::AuthCheckFailed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_live_token_reaches_only_its_own_workspace_and_is_touched() {
        let mut tokens = MockTokenStore::new();
        tokens
            .expect_token_by_hash()
            .returning(|_| Ok(Some(token("t", "ws-1", false))));
        tokens
            .expect_touch_token()
            .times(1)
            .returning(|_, _| Ok(()));
        let mut workspaces = MockWorkspaceStore::new();
        workspaces
            .expect_workspace()
            .returning(|id| Ok(Some(workspace(id.as_str(), "online"))));
        let st = state(workspaces, tokens, false);
        let (principal, ws) = st.authorize_workspace(&bearer("t"), "ws-1").await.unwrap();
        assert_eq!(ws.id.as_str(), "ws-1");
        assert!(matches!(principal, Principal::Workspace(_)));
        let err = st
            .authorize_workspace(&bearer("t"), "ws-2")
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppError::InvalidToken),
            "another workspace: {err:?}"
        );
        let err = st.authorize_admin(&bearer("t")).await.unwrap_err();
        assert!(matches!(err, AppError::AdminRequired), "{err:?}");
    }

    #[tokio::test]
    async fn a_token_used_within_the_minute_is_not_written_again() {
        for (used_ago, writes) in [(10, 0), (120, 1)] {
            let mut tokens = MockTokenStore::new();
            tokens.expect_token_by_hash().returning(move |_| {
                Ok(Some(TokenRecord {
                    last_used_at: Some(crate::app::now() - chrono::Duration::seconds(used_ago)),
                    ..token("t", "ws-1", false)
                }))
            });
            tokens
                .expect_touch_token()
                .times(writes)
                .returning(|_, _| Ok(()));
            let mut workspaces = MockWorkspaceStore::new();
            workspaces
                .expect_workspace()
                .returning(|id| Ok(Some(workspace(id.as_str(), "online"))));
            let st = state(workspaces, tokens, false);
            st.authorize_workspace(&bearer("t"), "ws-1").await.unwrap();
        }
    }

    #[tokio::test]
    async fn revoked_tokens_and_removed_workspaces_are_invalid_tokens() {
        for (revoked, status) in [(true, "online"), (false, "removed")] {
            let mut tokens = MockTokenStore::new();
            tokens
                .expect_token_by_hash()
                .returning(move |_| Ok(Some(token("t", "ws-1", revoked))));
            tokens.expect_touch_token().never();
            let mut workspaces = MockWorkspaceStore::new();
            workspaces
                .expect_workspace()
                .returning(move |id| Ok(Some(workspace(id.as_str(), status))));
            let st = state(workspaces, tokens, false);
            let err = st
                .authorize_workspace(&bearer("t"), "ws-1")
                .await
                .unwrap_err();
            assert!(
                matches!(err, AppError::InvalidToken),
                "{revoked} {status}: {err:?}"
            );
            let err = st.authorize_admin(&bearer("t")).await.unwrap_err();
            assert!(
                matches!(err, AppError::InvalidToken),
                "{revoked} {status}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn no_token_is_missing_unless_tokenless_access_applies() {
        let st = state(MockWorkspaceStore::new(), MockTokenStore::new(), false);
        let err = st
            .authorize_workspace(&Presented::Missing, "ws-1")
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::MissingToken));
        let err = st
            .authorize_workspace(&Presented::Malformed, "ws-1")
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::InvalidToken));

        let mut workspaces = MockWorkspaceStore::new();
        workspaces
            .expect_workspace()
            .returning(|id| Ok(Some(workspace(id.as_str(), "online"))));
        let mut tokens = MockTokenStore::new();
        tokens
            .expect_has_live_token()
            .returning(|id| Ok(id.as_str() == "guarded"));
        let st = state(workspaces, tokens, true);
        let (principal, _) = st
            .authorize_workspace(&Presented::Missing, "open")
            .await
            .unwrap();
        assert_eq!(principal, Principal::Tokenless);
        let err = st
            .authorize_workspace(&Presented::Missing, "guarded")
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::MissingToken));
    }
}
