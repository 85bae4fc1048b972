//! The staging pipeline (SPEC §4), in order, shared by install and
//! download: parse, resolve, grammar, pin, fetch under the deadline,
//! re-validate, size, integrity, caller digest. Every rule is a domain
//! function; this module only sequences them around the ports.

use tokio::time::{Instant, timeout_at};

use crate::app::error::AppError;
use crate::app::state::AppState;
use crate::domain::digest::{CallerSha256, TreeDigest, tree_digest};
use crate::domain::name::PluginName;
use crate::domain::source::Source;
use crate::domain::staging::{
    StagingError, check_caller_sha256, check_integrity, check_pinned, check_returned_name,
    grammar_refusal, require_source,
};
use crate::ports::resolver::{FetchError, FetchLimits};
use crate::ports::staging::{StagedTree, StagingAreaError, StagingDir};

/// A staged plugin. The directory is removed when this is dropped.
#[derive(Debug)]
pub struct Staged {
    pub name: PluginName,
    pub source: Source,
    pub digest: TreeDigest,
    pub tree: StagedTree,
    pub dir: StagingDir,
}

fn staging(e: StagingError) -> AppError {
    AppError::Staging(e)
}

/// Runs steps 1–10 of SPEC §4; `deadline` bounds the fetch and the
/// inspection (→ 504 when it fires).
pub async fn stage(
    state: &AppState,
    source: Option<&str>,
    sha256: Option<&str>,
    deadline: Instant,
) -> Result<Staged, AppError> {
    let source = require_source(source).map_err(staging)?;
    let Some(resolver) = state.resolvers.get(source.scheme()) else {
        return Err(staging(StagingError::NoResolver {
            source_text: source.redacted(),
            available: state.resolvers.schemes(),
        }));
    };
    let check = resolver
        .check_spec(source.spec())
        .map_err(|e| staging(grammar_refusal(&source, e)))?;
    check_pinned(&source, check.pinned, state.policy.allow_unpinned).map_err(staging)?;
    let caller_sha256 = sha256
        .map(CallerSha256::parse)
        .transpose()
        .map_err(|error| {
            staging(StagingError::CallerSha256 {
                source_text: source.redacted(),
                error,
            })
        })?;

    let dir = state.staging.create().await.map_err(AppError::internal)?;
    let limits = FetchLimits {
        max_bytes: state.policy.max_dir_bytes,
        cancel: dir.cancellation(),
    };
    let timed_out = || {
        staging(StagingError::Timeout {
            source_text: source.redacted(),
        })
    };
    let fetched = timeout_at(deadline, resolver.fetch(source.spec(), dir.path(), &limits))
        .await
        .map_err(|_| timed_out())?;
    let raw_name = fetched.map_err(|e| fetch_refusal(&source, e))?;
    let name = check_returned_name(&source, &raw_name).map_err(staging)?;
    let tree = timeout_at(deadline, state.staging.inspect(dir.path()))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| match e {
            StagingAreaError::Unsafe(entry) => staging(entry.into_staging_error(&source)),
            StagingAreaError::Io(e) => AppError::Internal(e),
        })?;
    if tree.total_bytes > state.policy.max_dir_bytes {
        return Err(staging(StagingError::TooLarge {
            source_text: source.redacted(),
        }));
    }
    let digest = tree_digest(&tree.files);
    check_integrity(
        &source,
        tree.manifest_json.as_deref(),
        tree.legacy_sha256.as_deref(),
        &digest,
    )
    .map_err(staging)?;
    check_caller_sha256(&source, caller_sha256.as_ref(), tree.plugin_yaml_sha256())
        .map_err(staging)?;
    Ok(Staged {
        name,
        source,
        digest,
        tree,
        dir,
    })
}

/// Step 6's answers. The resolver's own error goes to the log only: it can
/// hold paths, tokens or upstream bodies.
fn fetch_refusal(source: &Source, error: FetchError) -> AppError {
    let source_text = source.redacted();
    staging(match error {
        FetchError::NotFound => StagingError::NotFound { source_text },
        FetchError::TooLarge => StagingError::TooLarge { source_text },
        FetchError::Unsafe(entry) => entry.into_staging_error(source),
        FetchError::Refused(message) => StagingError::Refused {
            source_text,
            message,
        },
        FetchError::Cancelled => StagingError::Timeout { source_text },
        FetchError::Other(cause) => {
            tracing::warn!(source = %source_text, error = %cause, "fetch failed");
            StagingError::FetchFailed {
                source_text,
                scheme: source.scheme().to_owned(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_fetch_keeps_its_message_and_echoes_the_redacted_source() {
        let source = Source::parse("https://u:p@h.test/p.tar.gz").unwrap();
        let refusal = fetch_refusal(
            &source,
            FetchError::Refused("archive sha256 mismatch".into()),
        );
        let AppError::Staging(error) = refusal else {
            panic!("not a staging error: {refusal:?}");
        };
        assert_eq!(error.to_string(), "archive sha256 mismatch");
        assert_eq!(error.source_echo(), Some("https://h.test/p.tar.gz"));
        assert!(matches!(error, StagingError::Refused { .. }));
    }
}
