//! `GET /workspaces/:id/plugins/:name/download`: the plugin as a tarball
//! for external agents (SPEC §5 Download).

use std::sync::Arc;

use futures_util::StreamExt;
use poem::http::{HeaderValue, StatusCode, header};
use poem::web::Data;
use poem::{Body, IntoResponse, Response};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::{ApiResponse, OpenApi};

use crate::app::http::ApiTags;
use crate::app::http::extract::Caller;
use crate::app::http::file_body::FileBody;
use crate::app::http::problem::{Allowlist, Problem};
use crate::app::usecases::UseCases;
use crate::app::usecases::download::{Download, DownloadRequest};

pub struct DownloadApi;

/// The archive, or 304 when the client already has this content.
pub enum DownloadResponse {
    Archive { download: Download, body: Body },
    NotModified { download: Download },
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

impl IntoResponse for DownloadResponse {
    fn into_response(self) -> Response {
        let (download, body, status) = match self {
            Self::Archive { download, body } => (download, Some(body), StatusCode::OK),
            Self::NotModified { download } => (download, None, StatusCode::NOT_MODIFIED),
        };
        let mut builder = Response::builder()
            .status(status)
            .header(header::VARY, "Accept");
        match &download {
            Download::NotModified { name, source, etag } => {
                builder = builder
                    .header(header::ETAG, header_value(etag))
                    .header("X-Plugin-Name", header_value(name.as_str()))
                    .header("X-Plugin-Source", header_value(source));
            }
            Download::Archive {
                name,
                source,
                etag,
                kind,
                archive,
                ..
            } => {
                builder = builder
                    .header(header::ETAG, header_value(etag))
                    .header(header::CONTENT_TYPE, kind.content_type())
                    .header(
                        header::CONTENT_DISPOSITION,
                        header_value(&format!(
                            "attachment; filename=\"{name}.{}\"",
                            kind.extension()
                        )),
                    )
                    .header(header::CONTENT_LENGTH, archive.len)
                    .header("X-Plugin-Name", header_value(name.as_str()))
                    .header("X-Plugin-Source", header_value(source));
            }
        }
        match body {
            Some(body) => builder.body(body),
            None => builder.finish(),
        }
    }
}

fn string_header(name: &str, description: &str) -> MetaHeader {
    MetaHeader {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
    }
}

impl ApiResponse for DownloadResponse {
    fn meta() -> MetaResponses {
        let binary =
            || MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "binary")));
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "The plugin's regular files as a tarball: gzip by default, zstd with `Accept: application/zstd` or `?format=tar.zst`. No Content-Encoding: the body is the archive.",
                    status: Some(200),
                    status_range: None,
                    content: vec![
                        MetaMediaType {
                            content_type: "application/gzip",
                            schema: binary(),
                        },
                        MetaMediaType {
                            content_type: "application/zstd",
                            schema: binary(),
                        },
                    ],
                    headers: vec![
                        string_header("ETag", "Strong: the plugin's h1 digest and the format"),
                        string_header(
                            "Content-Disposition",
                            "attachment; filename=\"<name>.tar.gz\"",
                        ),
                        string_header("X-Plugin-Name", "The plugin's name"),
                        string_header("X-Plugin-Source", "The normalized source"),
                    ],
                },
                MetaResponse {
                    description: "`If-None-Match` holds the current ETag: the client's copy is current.",
                    status: Some(304),
                    status_range: None,
                    content: vec![],
                    headers: vec![string_header("ETag", "The current ETag")],
                },
            ],
        }
    }

    fn register(_registry: &mut Registry) {}
}

#[OpenApi(tag = "ApiTags::WorkspacePlugins")]
impl DownloadApi {
    /// Download a plugin as a tarball (external agents pull plugins here)
    ///
    /// Any workspace may download; the name-mismatch rule and the org
    /// allowlist apply. The same content always gives the same bytes.
    #[oai(
        path = "/workspaces/:id/plugins/:name/download",
        method = "get",
        operation_id = "downloadPlugin"
    )]
    #[expect(
        clippy::too_many_arguments,
        reason = "poem-openapi takes each parameter and header as an argument"
    )]
    async fn download(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        name: Path<String>,
        /// Where to take the plugin from; default `local://<name>`.
        source: Query<Option<String>>,
        /// `tar.gz` (default) or `tar.zst`.
        format: Query<Option<String>>,
        #[oai(name = "Accept")] accept: Header<Option<String>>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> Result<DownloadResponse, Problem<Allowlist>> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let mut outcome = app
            .download
            .download(
                &workspace,
                DownloadRequest {
                    name: &name,
                    source: source.0.as_deref(),
                    format: format.0.as_deref(),
                    accept: accept.0.as_deref(),
                    if_none_match: if_none_match.0.as_deref(),
                },
            )
            .await?;
        // The archive is complete on disk before the first byte is sent:
        // Content-Length is exact, never a truncated 200.
        match outcome.take_stream()? {
            None => Ok(DownloadResponse::NotModified { download: outcome }),
            Some((file, len, guard)) => {
                // What keeps the archive's disk accounted for (and, for one
                // the cache could not take, its fetch slot) lives as long as
                // the stream.
                let stream = FileBody::new(file, len).map(move |chunk| {
                    let _held = &guard;
                    chunk
                });
                Ok(DownloadResponse::Archive {
                    body: Body::from_bytes_stream(stream),
                    download: outcome,
                })
            }
        }
    }
}
