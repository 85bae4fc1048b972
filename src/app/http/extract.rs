//! Request extractors that keep the order of SPEC §5: credentials are read
//! first and never fail extraction (the use case decides), and JSON bodies
//! are read only when the handler asks, after auth and the runtime guard.

use std::marker::PhantomData;

use poem::http::header::AUTHORIZATION;
use poem::{Body, Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSecurityScheme, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use crate::app::error::AppError;
use crate::domain::token::{Presented, parse_authorization};

const SCHEME: &str = "bearerAuth";

/// The `Authorization` header as presented, parsed but not yet checked.
pub struct Caller(pub Presented);

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "A workspace token (POST /workspaces/{id}/tokens) or the admin token.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let presented = match request.headers().get(AUTHORIZATION) {
            None => Presented::Missing,
            Some(value) => match value.to_str() {
                Ok(text) => parse_authorization(Some(text)),
                Err(_) => Presented::Malformed,
            },
        };
        Ok(Self(presented))
    }
}

/// A JSON request body, documented as `T` but read only by [`JsonBody::read`].
pub struct JsonBody<T> {
    body: Body,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: Type + DeserializeOwned> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self {
            body: body.take().unwrap_or_default(),
            _t: PhantomData,
        })
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// Reads at most `limit` bytes (413 beyond) and parses them as one JSON
    /// value with nothing after it (400 otherwise). Unknown fields are
    /// ignored; types are strict (serde, not poem-openapi's coercions).
    pub async fn read(self, limit: u64) -> Result<T, AppError> {
        let bytes = read_capped(self.body, limit).await?;
        serde_json::from_slice(&bytes).map_err(|_| AppError::InvalidBody)
    }
}

async fn read_capped(body: Body, limit: u64) -> Result<Vec<u8>, AppError> {
    use futures_util::TryStreamExt;
    let mut stream = body.into_bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await.map_err(|e| {
        if e.kind() == super::transport::BODY_IDLE_KIND {
            AppError::BodyTimedOut
        } else {
            AppError::InvalidBody
        }
    })? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(AppError::BodyTooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A page size, 1–500 ([`DEFAULT_PAGE`] when absent): `?limit=` of every
/// paginated list.
pub fn page_limit(raw: Option<&str>) -> Result<u64, AppError> {
    match raw {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::InvalidQuery(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            }),
    }
}

/// Items per page when `limit` is absent.
pub const DEFAULT_PAGE: u64 = 100;
/// The largest `limit`.
pub const MAX_PAGE: u64 = 500;
