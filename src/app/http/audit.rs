//! `GET /audit` (SPEC §11): the audit log, newest first, filtered and
//! paged. Admin token. There is no route that edits or deletes an event.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::app::error::AppError;
use crate::app::http::ApiTags;
use crate::app::http::dto::{CURSOR_REFUSAL, page_limit};
use crate::app::http::extract::Caller;
use crate::app::http::problem::Problem;
use crate::app::usecases::UseCases;
use crate::domain::audit::{AuditAction, AuditCursor, AuditFilter, AuditRecord};
use crate::domain::name::{PluginName, WorkspaceId};

pub struct AuditApi;

/// One audit event: who did what to which workspace, and how it ended.
#[derive(Debug, Object)]
pub struct AuditEventView {
    /// Grows with every event.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `admin`, or the id of the workspace token that acted (never a secret).
    pub actor: String,
    /// `install`, `update`, `uninstall`, `allowlist_replace`,
    /// `workspace_put`, `workspace_delete`, `token_issue` or `token_revoke`.
    pub action: String,
    /// The workspace acted on (for `allowlist_replace`, the org).
    #[oai(nullable)]
    pub workspace_id: Option<String>,
    #[oai(nullable)]
    pub plugin: Option<String>,
    /// The normalized source, user info removed.
    #[oai(nullable)]
    pub source: Option<String>,
    /// The plugin's `h1:` content digest.
    #[oai(nullable)]
    pub digest: Option<String>,
    /// `ok`, `unchanged`, `refused` (a policy said no) or `failed`.
    pub outcome: String,
    /// The HTTP status the request answered.
    pub status: u16,
}

/// A page of events, newest first.
#[derive(Debug, Object)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; null at the end.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl From<AuditRecord> for AuditEventView {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        Self {
            id: r.id,
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.to_string(),
            workspace_id: e.workspace_id.as_ref().map(ToString::to_string),
            plugin: e.plugin.as_ref().map(ToString::to_string),
            source: e.source().map(str::to_owned),
            digest: e.digest.as_ref().map(ToString::to_string),
            outcome: e.outcome.to_string(),
            status: e.status,
        }
    }
}

fn bad(message: String) -> AppError {
    AppError::InvalidQuery(message)
}

/// The query's filters as domain values; each bad one says what it takes.
fn filter(
    workspace: Option<&str>,
    plugin: Option<&str>,
    action: Option<&str>,
    since: Option<&str>,
    cursor: Option<&str>,
) -> Result<AuditFilter, AppError> {
    Ok(AuditFilter {
        workspace: workspace
            .map(|w| {
                WorkspaceId::parse(w).map_err(|_| {
                    bad("workspace must be a workspace id ([A-Za-z0-9][A-Za-z0-9_-]{0,63})".into())
                })
            })
            .transpose()?,
        plugin: plugin
            .map(|p| {
                PluginName::parse(p)
                    .map_err(|_| bad("plugin must be a plugin name (e.g. hello-world)".into()))
            })
            .transpose()?,
        action: action
            .map(|a| {
                a.parse::<AuditAction>()
                    .map_err(|()| bad(format!("action must be one of: {}", AuditAction::names())))
            })
            .transpose()?,
        since: since
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        bad("since must be an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)".into())
                    })
            })
            .transpose()?,
        before: cursor
            .map(|c| AuditCursor::parse(c).ok_or_else(|| bad(CURSOR_REFUSAL.into())))
            .transpose()?,
    })
}

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// Read the audit log (admin)
    ///
    /// One event per state-changing request and per policy refusal, newest
    /// first; follow `next_cursor` for older ones. Filters combine.
    #[oai(path = "/audit", method = "get", operation_id = "listAuditEvents")]
    #[expect(clippy::too_many_arguments, reason = "one parameter per query filter")]
    async fn list(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        /// Only events about this workspace (or org).
        workspace: Query<Option<String>>,
        /// Only events about this plugin.
        plugin: Query<Option<String>>,
        /// Only events of this action (e.g. `install`).
        action: Query<Option<String>>,
        /// Only events at or after this RFC 3339 time.
        since: Query<Option<String>>,
        /// 1–500, default 100.
        limit: Query<Option<String>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditPage>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let filter = filter(
            workspace.0.as_deref(),
            plugin.0.as_deref(),
            action.0.as_deref(),
            since.0.as_deref(),
            cursor.0.as_deref(),
        )?;
        let limit = page_limit(limit.0.as_deref())?;
        let page = app.audit.page(&filter, limit).await?;
        Ok(Json(AuditPage {
            events: page.events.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_filter_says_what_it_takes() {
        let cases = [
            (
                (Some("bad id!"), None, None, None, None),
                "workspace must be",
            ),
            ((None, Some("../x"), None, None, None), "plugin must be"),
            (
                (None, None, Some("delete_everything"), None, None),
                "action must be one of: install, update",
            ),
            (
                (None, None, None, Some("yesterday"), None),
                "since must be an RFC 3339 time",
            ),
            (
                (None, None, None, None, Some("42")),
                "cursor is not a value",
            ),
        ];
        for ((w, p, a, s, c), expected) in cases {
            let message = filter(w, p, a, s, c).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
        let ok = filter(
            Some("ws-1"),
            Some("p"),
            Some("token_issue"),
            Some("2026-01-01T00:00:00+02:00"),
            None,
        )
        .unwrap();
        assert_eq!(ok.action, Some(AuditAction::TokenIssue));
        assert_eq!(ok.since.unwrap().to_rfc3339(), "2025-12-31T22:00:00+00:00");
    }
}
