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
use crate::app::http::rendered::{RenderCache, RenderedJson};
use crate::app::usecases::UseCases;
use crate::domain::runtime::Runtime;

/// The registry routes, with their listings rendered once per generation.
#[derive(Default)]
pub struct PluginsApi {
    listings: RenderCache,
}

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

#[OpenApi(tag = "ApiTags::Plugins")]
impl PluginsApi {
    /// List the local registry's plugins
    ///
    /// Sorted by name. With `runtime`, only plugins supporting it (a plugin
    /// that declares no runtimes supports all).
    #[oai(path = "/plugins", method = "get", operation_id = "listPlugins")]
    async fn list(
        &self,
        app: Data<&Arc<UseCases>>,
        /// Keep only plugins supporting this runtime (`-` and `_` are equal).
        runtime: Query<Option<String>>,
    ) -> Result<RenderedJson<Vec<PluginInfo>>, Problem> {
        let runtime = optional_runtime(runtime.0.as_deref())?;
        let catalog = app.registry.catalog().await?;
        let variant = runtime.as_ref().map_or("", |r| r.as_str());
        Ok(self
            .listings
            .get_or_render(catalog.generation, variant, || {
                catalog
                    .supporting(runtime.as_ref())
                    .map(|m| PluginInfo::from_manifest(m.clone(), None))
                    .collect()
            }))
    }

    /// List the registered source schemes
    #[oai(
        path = "/plugins/sources",
        method = "get",
        operation_id = "listSources"
    )]
    async fn sources(&self, app: Data<&Arc<UseCases>>) -> Json<Sources> {
        Json(Sources {
            schemes: app.registry.schemes(),
        })
    }
}
