//! `/plugins`: the local registry and the registered source schemes. Open
//! routes: the browser canvas lists them without a token.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::app::error::AppError;
use crate::app::http::ApiTags;
use crate::app::http::dto::PluginInfo;
use crate::app::http::problem::Problem;
use crate::app::state::AppState;
use crate::domain::runtime::Runtime;

pub struct PluginsApi;

/// The registered source schemes.
#[derive(Debug, Object)]
pub struct Sources {
    /// Sorted scheme names, e.g. `["github", "https", "local"]`.
    pub schemes: Vec<String>,
}

/// Parses an optional `?runtime=`; empty counts as absent.
pub fn optional_runtime(raw: Option<&str>) -> Result<Option<Runtime>, AppError> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(r) => Runtime::parse(r)
            .map(Some)
            .map_err(|_| AppError::InvalidRuntime),
    }
}

/// The registry listing, filtered to `runtime` when given.
pub async fn registry_listing(
    state: &AppState,
    runtime: Option<&Runtime>,
) -> Result<Vec<crate::domain::manifest::Manifest>, AppError> {
    let plugins = state.registry.list().await.map_err(AppError::Registry)?;
    Ok(plugins
        .into_iter()
        .filter(|m| runtime.is_none_or(|r| m.supports(r)))
        .collect())
}

#[OpenApi(tag = "ApiTags::Plugins")]
impl PluginsApi {
    /// List the local registry's plugins
    ///
    /// Sorted by name. With `runtime`, only plugins supporting it (a plugin
    /// that declares no runtimes supports all).
    #[oai(path = "/plugins", method = "get", operation_id = "listPlugins")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        /// Keep only plugins supporting this runtime (`-` and `_` are equal).
        runtime: Query<Option<String>>,
    ) -> Result<Json<Vec<PluginInfo>>, Problem> {
        let runtime = optional_runtime(runtime.0.as_deref())?;
        let plugins = registry_listing(&state, runtime.as_ref()).await?;
        Ok(Json(
            plugins
                .into_iter()
                .map(|m| PluginInfo::from_manifest(m, None))
                .collect(),
        ))
    }

    /// List the registered source schemes
    #[oai(
        path = "/plugins/sources",
        method = "get",
        operation_id = "listSources"
    )]
    async fn sources(&self, state: Data<&Arc<AppState>>) -> Json<Sources> {
        Json(Sources {
            schemes: state.resolvers.schemes(),
        })
    }
}
