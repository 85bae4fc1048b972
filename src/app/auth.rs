//! Authentication and authorization (SPEC §5 "Every /workspaces/:id/...
//! route", §7): who is calling, and may they touch this workspace.

use crate::app::error::AppError;
use crate::app::state::AppState;
use crate::domain::name::WorkspaceId;
use crate::domain::token::{Presented, TokenHash, TokenId, TokenRecord};
use crate::domain::workspace::Workspace;

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

/// A live workspace token: known, not revoked, its workspace not removed.
async fn live_token(
    state: &AppState,
    secret: &str,
) -> Result<Option<(TokenRecord, Workspace)>, AppError> {
    let hash = TokenHash::of(secret);
    let Some(token) = state
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
    let workspace = state
        .workspaces
        .workspace(&token.workspace_id)
        .await
        .map_err(AppError::AuthCheckFailed)?;
    Ok(workspace.filter(|w| !w.is_removed()).map(|w| (token, w)))
}

async fn touch(state: &AppState, token: &TokenRecord) {
    if let Err(e) = state.tokens.touch_token(&token.id, crate::app::now()).await {
        tracing::warn!(token = %token.id, error = ?e, "could not record token use");
    }
}

/// Admin-only routes: the admin token, else 403 for a valid workspace
/// token and 401 for anything else.
pub async fn authorize_admin(state: &AppState, presented: &Presented) -> Result<(), AppError> {
    match presented {
        Presented::Missing => Err(AppError::MissingToken),
        Presented::Malformed => Err(AppError::InvalidToken),
        Presented::Bearer(secret) => {
            if TokenHash::of(secret).matches(&state.admin_token) {
                return Ok(());
            }
            match live_token(state, secret).await? {
                Some(_) => Err(AppError::AdminRequired),
                None => Err(AppError::InvalidToken),
            }
        }
    }
}

/// Every `/workspaces/:id/...` route: auth first (the workspace's own token
/// or the admin token), then the workspace record.
pub async fn authorize_workspace(
    state: &AppState,
    presented: &Presented,
    raw_id: &str,
) -> Result<(Principal, Workspace), AppError> {
    let principal = match presented {
        Presented::Malformed => return Err(AppError::InvalidToken),
        Presented::Missing => {
            if !state.policy.allow_tokenless_workspaces {
                return Err(AppError::MissingToken);
            }
            return tokenless(state, raw_id).await;
        }
        Presented::Bearer(secret) => {
            if TokenHash::of(secret).matches(&state.admin_token) {
                Principal::Admin
            } else {
                // Another workspace's token is as invalid as a wrong one:
                // one indistinguishable 401.
                return match live_token(state, secret).await? {
                    Some((token, workspace)) if token.workspace_id.as_str() == raw_id => {
                        touch(state, &token).await;
                        Ok((Principal::Workspace(token.id), workspace))
                    }
                    _ => Err(AppError::InvalidToken),
                };
            }
        }
    };
    let id = WorkspaceId::parse(raw_id).map_err(|_| AppError::InvalidWorkspaceId)?;
    let workspace = state
        .workspaces
        .workspace(&id)
        .await
        .map_err(AppError::WorkspaceLookupFailed)?
        .ok_or(AppError::WorkspaceNotFound)?;
    Ok((principal, workspace))
}

/// No token, tokenless access allowed: only an existing workspace with no
/// live token; anything else still needs a token.
async fn tokenless(state: &AppState, raw_id: &str) -> Result<(Principal, Workspace), AppError> {
    let Ok(id) = WorkspaceId::parse(raw_id) else {
        return Err(AppError::MissingToken);
    };
    let workspace = state
        .workspaces
        .workspace(&id)
        .await
        .map_err(AppError::AuthCheckFailed)?;
    let Some(workspace) = workspace.filter(|w| !w.is_removed()) else {
        return Err(AppError::MissingToken);
    };
    let has_token = state
        .tokens
        .has_live_token(&id)
        .await
        .map_err(AppError::AuthCheckFailed)?;
    if has_token {
        return Err(AppError::MissingToken);
    }
    Ok((Principal::Tokenless, workspace))
}
