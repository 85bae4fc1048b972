//! `/workspaces`: the service's own workspace records and their tokens
//! (SPEC §8). Admin token, except reading one's own record.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::app::error::AppError;
use crate::app::http::ApiTags;
use crate::app::http::extract::{Caller, JsonBody, page_limit};
use crate::app::http::problem::Problem;
use crate::app::usecases::UseCases;
use crate::app::usecases::workspaces::Upserted;
use crate::domain::name::WorkspaceId;
use crate::domain::workspace::{Workspace, WorkspaceInput};

pub struct WorkspacesApi;

/// The settable fields of a workspace.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(example, skip_serializing_if_is_none)]
pub struct WorkspaceRequest {
    /// 1–200 characters.
    pub name: Option<String>,
    /// `[a-z0-9][a-z0-9_-]{0,63}`, stored with `-` as `_`; `external` for
    /// agents that run elsewhere.
    pub runtime: Option<String>,
    /// The org: a workspace id other than this one (need not exist); null
    /// or absent for none.
    #[oai(nullable)]
    pub parent_id: Option<String>,
    /// Explicit container name; default `ws-` + the first 12 id characters.
    #[oai(nullable)]
    pub container: Option<String>,
    /// provisioning, online (default), offline, paused, hibernated, removed.
    pub status: Option<String>,
}

impl poem_openapi::types::Example for WorkspaceRequest {
    fn example() -> Self {
        Self {
            name: Some("Agent one".into()),
            runtime: Some("claude_code".into()),
            parent_id: Some("org-1".into()),
            container: None,
            status: None,
        }
    }
}

/// A workspace record.
#[derive(Debug, Object)]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    pub runtime: String,
    /// The org; null when the workspace has no parent.
    #[oai(nullable)]
    pub parent_id: Option<String>,
    /// The explicit container name; null for the default.
    #[oai(nullable)]
    pub container: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id.to_string(),
            name: w.spec.name,
            runtime: w.spec.runtime.to_string(),
            parent_id: w.spec.parent_id.map(|p| p.to_string()),
            container: w.spec.container.map(|c| c.to_string()),
            status: w.spec.status.to_string(),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A page of workspaces.
#[derive(Debug, Object)]
pub struct WorkspacePage {
    pub workspaces: Vec<WorkspaceView>,
    /// Pass as `cursor` for the next page; null at the end.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// A newly issued token: the only time its secret is shown.
#[derive(Debug, Object)]
pub struct IssuedToken {
    pub id: String,
    /// The secret: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub created_at: DateTime<Utc>,
}

/// A token as listed: never its secret.
#[derive(Debug, Object)]
pub struct TokenView {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Null until the token is first used.
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

#[derive(ApiResponse)]
pub enum UpsertResponse {
    /// The record was updated.
    #[oai(status = 200)]
    Updated(Json<WorkspaceView>),
    /// The record was created.
    #[oai(status = 201)]
    Created(Json<WorkspaceView>),
}

#[derive(ApiResponse)]
pub enum Created<T: poem_openapi::types::ToJSON> {
    #[oai(status = 201)]
    Created(Json<T>),
}

#[derive(ApiResponse)]
pub enum NoContent {
    #[oai(status = 204)]
    NoContent,
}

fn parse_id(raw: &str) -> Result<WorkspaceId, AppError> {
    WorkspaceId::parse(raw).map_err(|_| AppError::InvalidWorkspaceId)
}

#[OpenApi(tag = "ApiTags::Workspaces")]
impl WorkspacesApi {
    /// Create or update a workspace (admin)
    #[oai(
        path = "/workspaces/:id",
        method = "put",
        operation_id = "putWorkspace"
    )]
    async fn put(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        body: JsonBody<WorkspaceRequest>,
    ) -> Result<UpsertResponse, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let id = parse_id(&id)?;
        let req = body.read(app.body_max_bytes()).await?;
        let (workspace, outcome) = app
            .workspaces
            .put(
                &id,
                WorkspaceInput {
                    name: req.name.as_deref(),
                    runtime: req.runtime.as_deref(),
                    parent_id: req.parent_id.as_deref(),
                    container: req.container.as_deref(),
                    status: req.status.as_deref(),
                },
            )
            .await?;
        let view = Json(WorkspaceView::from(workspace));
        Ok(match outcome {
            Upserted::Created => UpsertResponse::Created(view),
            Upserted::Updated => UpsertResponse::Updated(view),
        })
    }

    /// Read a workspace (admin or that workspace's token)
    #[oai(
        path = "/workspaces/:id",
        method = "get",
        operation_id = "getWorkspace"
    )]
    async fn get(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<WorkspaceView>, Problem> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        Ok(Json(workspace.into()))
    }

    /// List workspaces (admin)
    ///
    /// Sorted by id; follow `next_cursor` for the next page.
    #[oai(path = "/workspaces", method = "get", operation_id = "listWorkspaces")]
    async fn list(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        /// 1–500, default 100.
        limit: Query<Option<String>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<WorkspacePage>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let limit = page_limit(limit.0.as_deref())?;
        let after = cursor
            .0
            .as_deref()
            .map(|c| {
                WorkspaceId::parse(c).map_err(|_| {
                    AppError::InvalidQuery("cursor is not a value returned as next_cursor".into())
                })
            })
            .transpose()?;
        let page = app.workspaces.list(after, limit).await?;
        Ok(Json(WorkspacePage {
            workspaces: page.workspaces.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|id| id.to_string()),
        }))
    }

    /// Remove a workspace and its tokens (admin)
    ///
    /// Installed plugin files are untouched.
    #[oai(
        path = "/workspaces/:id",
        method = "delete",
        operation_id = "deleteWorkspace"
    )]
    async fn delete(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<NoContent, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let id = parse_id(&id)?;
        app.workspaces.delete(&id).await?;
        Ok(NoContent::NoContent)
    }

    /// Issue a workspace token (admin)
    ///
    /// The secret is in this response only; it is stored as a SHA-256 hash.
    #[oai(
        path = "/workspaces/:id/tokens",
        method = "post",
        operation_id = "issueToken"
    )]
    async fn issue_token(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Created<IssuedToken>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let id = parse_id(&id)?;
        let issued = app.tokens.issue(id).await?;
        Ok(Created::Created(Json(IssuedToken {
            id: issued.record.id.to_string(),
            token: issued.secret,
            created_at: issued.record.created_at,
        })))
    }

    /// List a workspace's tokens (admin), never their secrets
    #[oai(
        path = "/workspaces/:id/tokens",
        method = "get",
        operation_id = "listTokens"
    )]
    async fn list_tokens(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<Vec<TokenView>>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let id = parse_id(&id)?;
        let tokens = app.tokens.list(&id).await?;
        Ok(Json(
            tokens
                .into_iter()
                .map(|t| TokenView {
                    id: t.id.to_string(),
                    created_at: t.created_at,
                    last_used_at: t.last_used_at,
                    revoked: t.revoked,
                })
                .collect(),
        ))
    }

    /// Revoke a workspace token (admin)
    #[oai(
        path = "/workspaces/:id/tokens/:token_id",
        method = "delete",
        operation_id = "revokeToken"
    )]
    async fn revoke_token(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        token_id: Path<String>,
    ) -> Result<NoContent, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let id = parse_id(&id)?;
        app.tokens.revoke(&id, &token_id).await?;
        Ok(NoContent::NoContent)
    }
}
