//! `/orgs/:id/plugins/allowlist` (SPEC §5): which plugins an org's
//! workspaces may install or download. Admin token.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::app::error::AppError;
use crate::app::http::ApiTags;
use crate::app::http::extract::{Caller, JsonBody};
use crate::app::http::problem::Problem;
use crate::app::usecases::UseCases;
use crate::app::usecases::allowlist::AllowlistEntry;
use crate::domain::name::WorkspaceId;

pub struct AllowlistApi;

/// One allowed plugin.
#[derive(Debug, Object)]
pub struct AllowlistEntryView {
    pub plugin_name: String,
    pub enabled_by: String,
    pub enabled_at: DateTime<Utc>,
}

/// An org's allowlist; an empty list allows every plugin.
#[derive(Debug, Object)]
pub struct Allowlist {
    pub org_id: String,
    /// Sorted by plugin name.
    pub plugins: Vec<AllowlistEntryView>,
    /// True when the list is empty.
    pub allow_all: bool,
}

/// The new allowlist, replacing the old one atomically.
#[derive(Debug, Object, serde::Deserialize)]
pub struct AllowlistRequest {
    /// Plugin names; `[]` allows all. Duplicates collapse.
    pub plugins: Option<Vec<String>>,
    /// Who enabled new entries (default `admin`); kept entries keep theirs.
    pub enabled_by: Option<String>,
}

fn view(org: &WorkspaceId, entries: Vec<AllowlistEntry>) -> Allowlist {
    Allowlist {
        org_id: org.to_string(),
        allow_all: entries.is_empty(),
        plugins: entries
            .into_iter()
            .map(|e| AllowlistEntryView {
                plugin_name: e.plugin_name.to_string(),
                enabled_by: e.enabled_by,
                enabled_at: e.enabled_at,
            })
            .collect(),
    }
}

fn parse_org(raw: &str) -> Result<WorkspaceId, AppError> {
    WorkspaceId::parse(raw).map_err(|_| AppError::InvalidWorkspaceId)
}

#[OpenApi(tag = "ApiTags::Allowlist")]
impl AllowlistApi {
    /// Read an org's plugin allowlist (admin)
    #[oai(
        path = "/orgs/:id/plugins/allowlist",
        method = "get",
        operation_id = "getAllowlist"
    )]
    async fn get(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<Allowlist>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let org = parse_org(&id)?;
        let entries = app.allowlists.get(&org).await?;
        Ok(Json(view(&org, entries)))
    }

    /// Replace an org's plugin allowlist atomically (admin)
    ///
    /// Every entry must be a valid plugin name, else nothing changes.
    #[oai(
        path = "/orgs/:id/plugins/allowlist",
        method = "put",
        operation_id = "putAllowlist"
    )]
    async fn put(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        body: JsonBody<AllowlistRequest>,
    ) -> Result<Json<Allowlist>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let org = parse_org(&id)?;
        let req = body.read(app.body_max_bytes()).await?;
        let stored = app
            .allowlists
            .replace(&org, req.plugins, req.enabled_by)
            .await?;
        Ok(Json(view(&org, stored)))
    }
}
