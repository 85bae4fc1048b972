//! The one place errors become HTTP: status, `{"error": …}` body, extra
//! fields, `Retry-After`. 5xx causes are logged here, never sent.

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

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

/// Every error response of the API.
#[derive(ApiResponse, Debug)]
pub enum Problem {
    /// The request cannot be served as sent; `error` says why; 429 carries `Retry-After`.
    #[oai(status_range = "4XX")]
    Client(
        StatusCode,
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] Option<u32>,
    ),
    /// The service or a dependency failed; 503 carries `Retry-After`.
    #[oai(status_range = "5XX")]
    Server(
        StatusCode,
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] Option<u32>,
    ),
}

impl Problem {
    pub fn new(status: StatusCode, body: ErrorBody) -> Self {
        if status.is_server_error() {
            let retry = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECS);
            Self::Server(status, Json(body), retry)
        } else {
            let retry = (status == StatusCode::TOO_MANY_REQUESTS).then_some(RETRY_AFTER_SECS);
            Self::Client(status, Json(body), retry)
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client(status, _, _) | Self::Server(status, _, _) => *status,
        }
    }

    pub fn body(&self) -> &ErrorBody {
        match self {
            Self::Client(_, Json(body), _) | Self::Server(_, Json(body), _) => body,
        }
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

impl From<AppError> for Problem {
    fn from(error: AppError) -> Self {
        use AppError as E;
        let message = error.to_string();
        let (status, body) = match &error {
            E::MissingToken | E::InvalidToken => {
                (StatusCode::UNAUTHORIZED, ErrorBody::new(message))
            }
            E::AdminRequired => (StatusCode::FORBIDDEN, ErrorBody::new(message)),
            E::WorkspaceNotFound | E::TokenNotFound => {
                (StatusCode::NOT_FOUND, ErrorBody::new(message))
            }
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
            E::NotInstalled(_) => (StatusCode::NOT_FOUND, ErrorBody::new(message)),
            E::TooManyFetches => (StatusCode::TOO_MANY_REQUESTS, ErrorBody::new(message)),
            E::CopyFailed(_)
            | E::PackFailed(_)
            | E::RemoveFailed(_)
            | E::ListFailed(_)
            | E::AuthCheckFailed(_)
            | E::WorkspaceLookupFailed(_)
            | E::Registry(_)
            | E::Store(_)
            | E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorBody::new(message)),
        };
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %error, cause = ?std::error::Error::source(&error), "request failed");
        }
        Problem::new(status, body)
    }
}
