//! The one place errors become HTTP: status, `{"error": …}` body, extra
//! fields, `Retry-After`. 5xx causes are logged here, never sent.

use std::marker::PhantomData;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaHeader, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object, ResponseContent};

use crate::app::error::AppError;
use crate::domain::policy::AllowlistRefusal;
use crate::domain::staging::StagingError;

/// Seconds a client should wait before retrying a 503 or a 429.
const RETRY_AFTER_SECS: u32 = 5;

/// An error: `error` is a human-readable, actionable message.
#[derive(Debug, Clone, Object, Default)]
#[oai(skip_serializing_if_is_none)]
pub struct ErrorBody {
    /// What went wrong and how to fix it.
    pub error: String,
    /// The normalized plugin source the error is about.
    pub source: Option<String>,
    /// How to do it instead.
    pub hint: Option<String>,
    /// Registered source schemes, when the scheme is unknown.
    pub available_schemes: Option<Vec<String>>,
    /// The plugin name a source resolved to (download name mismatch).
    pub resolved_name: Option<String>,
    /// The plugin name the URL requested (download name mismatch).
    pub requested_name: Option<String>,
    /// The offending allowlist entry.
    pub plugin_name: Option<String>,
    /// The offending field of a workspace record.
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            ..Self::default()
        }
    }
}

/// Which dependency states a route answers with **503** and `Retry-After`
/// (SPEC §5, §6). The document lists them per route, so a 503 anywhere
/// else, or with another message, is a conformance finding.
pub trait Unavailability {
    /// The 503 response's description; `None` for routes that never send one.
    const STATES: Option<&'static str>;
}

/// The route depends on nothing that answers 503.
#[derive(Debug)]
pub enum Never {}

/// The route reads or acts in the container (a container that stops
/// during a listing is 503 too).
#[derive(Debug)]
pub enum Container {}

/// Install: the container and the org allowlist.
#[derive(Debug)]
pub enum ContainerAndAllowlist {}

/// Download: the org allowlist.
#[derive(Debug)]
pub enum Allowlist {}

impl Unavailability for Never {
    const STATES: Option<&'static str> = None;
}

impl Unavailability for Container {
    const STATES: Option<&'static str> = Some(
        "A dependency state: `container engine unavailable` or `workspace container not running`. Retry after `Retry-After` seconds.",
    );
}

impl Unavailability for ContainerAndAllowlist {
    const STATES: Option<&'static str> = Some(
        "A dependency state: `allowlist unavailable`, `container engine unavailable` or `workspace container not running`. Retry after `Retry-After` seconds.",
    );
}

impl Unavailability for Allowlist {
    const STATES: Option<&'static str> = Some(
        "The allowlist store did not answer: `allowlist unavailable`. Retry after `Retry-After` seconds.",
    );
}

/// Every error response of the API: a status and an [`ErrorBody`];
/// `U` says which 503s the route documents.
#[derive(Debug)]
pub struct Problem<U: Unavailability = Never> {
    status: StatusCode,
    body: ErrorBody,
    _unavailable: PhantomData<fn() -> U>,
}

impl<U: Unavailability> Problem<U> {
    pub fn new(status: StatusCode, body: ErrorBody) -> Self {
        Self {
            status,
            body,
            _unavailable: PhantomData,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl<U: Unavailability> IntoResponse for Problem<U> {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS;
        let mut response = Json(self.body).into_response();
        response.set_status(self.status);
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl<U: Unavailability> From<Problem<U>> for poem::Error {
    fn from(problem: Problem<U>) -> Self {
        poem::Error::from_response(problem.into_response())
    }
}

impl<U: Unavailability> ApiResponse for Problem<U> {
    fn meta() -> MetaResponses {
        let body = <Json<ErrorBody> as ResponseContent>::media_types;
        let mut responses = vec![MetaResponse {
            description: "The request cannot be served as sent; `error` says why; 429 carries `Retry-After`.",
            status: None,
            status_range: Some("4XX".to_owned()),
            content: body(),
            headers: vec![MetaHeader {
                name: "Retry-After".to_owned(),
                description: Some("With 429: seconds to wait before retrying.".to_owned()),
                required: false,
                deprecated: false,
                schema: <u32 as Type>::schema_ref(),
            }],
        }];
        if let Some(states) = U::STATES {
            responses.push(MetaResponse {
                description: states,
                status: Some(503),
                status_range: None,
                content: body(),
                headers: vec![MetaHeader {
                    name: "Retry-After".to_owned(),
                    description: Some("Seconds to wait before retrying.".to_owned()),
                    required: true,
                    deprecated: false,
                    schema: <u32 as Type>::schema_ref(),
                }],
            });
        }
        responses.push(MetaResponse {
            description: "The service or an upstream failed; `error` names what failed, the cause is logged, never sent.",
            status: None,
            status_range: Some("5XX".to_owned()),
            content: body(),
            headers: vec![],
        });
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        <Json<ErrorBody> as ResponseContent>::register(registry);
    }
}

/// The JSON body of an error the HTTP transport answers before any
/// handler runs: a request hyper could not parse. None for other statuses.
pub fn transport_error_json(status: StatusCode, max_header_bytes: usize) -> Option<String> {
    let message = match status {
        StatusCode::BAD_REQUEST => {
            "malformed HTTP request: the request line, the path or a header is not valid HTTP/1.1"
                .to_owned()
        }
        StatusCode::URI_TOO_LONG => "request URI too long".to_owned(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            format!("request headers too large (at most {max_header_bytes} bytes and 100 headers)")
        }
        _ => return None,
    };
    serde_json::to_string(&serde_json::json!({ "error": message })).ok()
}

fn staging(error: &StagingError) -> (StatusCode, ErrorBody) {
    use StagingError as E;
    let status = match error {
        E::SourceRequired
        | E::Unparsable
        | E::NoResolver { .. }
        | E::InvalidName { .. }
        | E::InvalidSpec { .. }
        | E::ResolverReturnedInvalidName { .. }
        | E::UnsafePath { .. }
        | E::Symlink { .. }
        | E::SpecialFile { .. } => StatusCode::BAD_REQUEST,
        E::CallerSha256 { error, .. } => match error {
            crate::domain::digest::CallerSha256Error::Invalid => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        },
        E::Refused { .. } | E::Unpinned { .. } | E::Integrity { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        E::NotFound { .. } => StatusCode::NOT_FOUND,
        E::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        E::FetchFailed { .. } => StatusCode::BAD_GATEWAY,
        E::TooLarge { .. } | E::TooManyEntries { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    let mut body = ErrorBody::new(error.to_string());
    body.source = error.source_echo().map(str::to_owned);
    match error {
        E::NoResolver { available, .. } => body.available_schemes = Some(available.clone()),
        E::InvalidSpec { hint, .. } => body.hint = Some((*hint).to_owned()),
        _ => {}
    }
    (status, body)
}

/// The status `error` answers with: what the audit log records for a
/// request that failed (SPEC §11), from the same table as the response.
pub fn status_of(error: &AppError) -> u16 {
    describe(error).0.as_u16()
}

impl<U: Unavailability> From<AppError> for Problem<U> {
    fn from(error: AppError) -> Self {
        let (status, body) = describe(&error);
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %error, cause = ?std::error::Error::source(&error), "request failed");
        }
        Self::new(status, body)
    }
}

/// The one mapping of an error to its status and body.
fn describe(error: &AppError) -> (StatusCode, ErrorBody) {
    use AppError as E;
    let message = error.to_string();
    match error {
        E::MissingToken | E::InvalidToken => (StatusCode::UNAUTHORIZED, ErrorBody::new(message)),
        E::AdminRequired => (StatusCode::FORBIDDEN, ErrorBody::new(message)),
        E::WorkspaceNotFound | E::TokenNotFound => (StatusCode::NOT_FOUND, ErrorBody::new(message)),
        E::InvalidWorkspaceId
        | E::InvalidPluginName
        | E::PluginsRequired
        | E::RuntimeRequired
        | E::InvalidRuntime
        | E::InvalidQuery(_)
        | E::UnsupportedFormat
        | E::InvalidBody => (StatusCode::BAD_REQUEST, ErrorBody::new(message)),
        E::InvalidField(field) => (
            StatusCode::BAD_REQUEST,
            ErrorBody {
                field: Some(field.field.to_owned()),
                ..ErrorBody::new(message)
            },
        ),
        E::InvalidAllowlistEntry(entry) => (
            StatusCode::BAD_REQUEST,
            ErrorBody {
                plugin_name: Some(entry.clone()),
                ..ErrorBody::new(message)
            },
        ),
        E::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorBody::new(message)),
        E::BodyTimedOut => (StatusCode::REQUEST_TIMEOUT, ErrorBody::new(message)),
        E::ContainerTaken { .. } => (StatusCode::CONFLICT, ErrorBody::new(message)),
        E::Staging(e) => staging(e),
        E::Guard(refusal) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorBody {
                hint: Some(refusal.hint.to_owned()),
                ..ErrorBody::new(message)
            },
        ),
        E::Allowlist(AllowlistRefusal::NotAllowed(_)) => {
            (StatusCode::FORBIDDEN, ErrorBody::new(message))
        }
        E::Allowlist(AllowlistRefusal::Unavailable) => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorBody::new(message))
        }
        E::NameMismatch(mismatch) => (
            StatusCode::BAD_REQUEST,
            ErrorBody {
                resolved_name: Some(mismatch.resolved.to_string()),
                requested_name: Some(mismatch.requested.to_string()),
                ..ErrorBody::new(message)
            },
        ),
        E::EngineUnavailable(_) | E::ContainerNotRunning => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorBody::new(message))
        }
        E::InstallTimedOut { source_text } => (
            StatusCode::GATEWAY_TIMEOUT,
            ErrorBody {
                source: Some(source_text.clone()),
                ..ErrorBody::new(message)
            },
        ),
        E::UninstallTimedOut => (StatusCode::GATEWAY_TIMEOUT, ErrorBody::new(message)),
        E::NotInstalled(_) | E::NoInstallRecord(_) => {
            (StatusCode::NOT_FOUND, ErrorBody::new(message))
        }
        E::TooManyFetches => (StatusCode::TOO_MANY_REQUESTS, ErrorBody::new(message)),
        E::CopyFailed(_)
        | E::PackFailed(_)
        | E::RemoveFailed(_)
        | E::ListFailed(_)
        | E::VerifyFailed(_)
        | E::AuthCheckFailed(_)
        | E::WorkspaceLookupFailed(_)
        | E::Registry(_)
        | E::Store(_)
        | E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorBody::new(message)),
    }
}
