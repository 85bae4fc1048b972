//! The audit log (SPEC §11 "Audit log"): what an event says, and the
//! filters and cursor that read it back. Events are appended, never
//! edited; only retention removes old ones.
//!
//! Invariant: no secret can reach an event. Its fields are ids, names,
//! digests and a source that only [`AuditEvent::with_source`] sets, from a
//! parsed [`Source`]'s redacted form (or a receipt's, stored redacted).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::domain::digest::TreeDigest;
use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::source::Source;

/// A recorded source is at most this many bytes: sources are bounded by
/// their grammars, but a refused one is whatever the caller sent.
pub const MAX_SOURCE_BYTES: usize = 1024;

/// What a state-changing request did (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    Install,
    Update,
    Uninstall,
    AllowlistReplace,
    WorkspacePut,
    WorkspaceDelete,
    TokenIssue,
    TokenRevoke,
}

impl AuditAction {
    pub const ALL: [Self; 8] = [
        Self::Install,
        Self::Update,
        Self::Uninstall,
        Self::AllowlistReplace,
        Self::WorkspacePut,
        Self::WorkspaceDelete,
        Self::TokenIssue,
        Self::TokenRevoke,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Update => "update",
            Self::Uninstall => "uninstall",
            Self::AllowlistReplace => "allowlist_replace",
            Self::WorkspacePut => "workspace_put",
            Self::WorkspaceDelete => "workspace_delete",
            Self::TokenIssue => "token_issue",
            Self::TokenRevoke => "token_revoke",
        }
    }

    /// Every action name, comma-separated: what a bad `action` filter is told.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or(())
    }
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Ok,
    /// An install of what was already there: nothing changed.
    Unchanged,
    /// A policy said no: the org allowlist, pinning, integrity.
    Refused,
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditOutcome {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        [Self::Ok, Self::Unchanged, Self::Refused, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or(())
    }
}

/// One event, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// `admin`, `tokenless`, or the id of the workspace token (never a secret).
    pub actor: String,
    pub action: AuditAction,
    /// The workspace acted on; for an allowlist, the org.
    pub workspace_id: Option<WorkspaceId>,
    pub plugin: Option<PluginName>,
    source: Option<String>,
    pub digest: Option<TreeDigest>,
    pub outcome: AuditOutcome,
    /// The HTTP status the request answered.
    pub status: u16,
}

impl AuditEvent {
    pub fn new(
        at: DateTime<Utc>,
        actor: String,
        action: AuditAction,
        outcome: AuditOutcome,
        status: u16,
    ) -> Self {
        Self {
            at,
            actor,
            action,
            workspace_id: None,
            plugin: None,
            source: None,
            digest: None,
            outcome,
            status,
        }
    }

    /// The source, redacted: user info never reaches the log.
    pub fn with_source(mut self, source: &Source) -> Self {
        self.source = Some(bounded(source.redacted()));
        self
    }

    /// A receipt's source: receipts store the redacted form; redacted
    /// again when it still parses, so a row written by anything else
    /// cannot carry a credential into the log either.
    pub fn with_recorded_source(mut self, recorded: &str) -> Self {
        self.source = Source::parse(recorded).ok().map(|s| bounded(s.redacted()));
        self
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Rebuilds an event read back from storage; its source was redacted
    /// when it was appended.
    pub fn stored(mut self, source: Option<String>) -> Self {
        self.source = source;
        self
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_SOURCE_BYTES {
        let mut end = MAX_SOURCE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// An appended event and its id; ids grow with every append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub event: AuditEvent,
}

/// Which events a reader wants (every field narrows), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub workspace: Option<WorkspaceId>,
    pub plugin: Option<PluginName>,
    pub action: Option<AuditAction>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events older than this cursor's (ids below its id).
    pub before: Option<AuditCursor>,
}

/// Where the next page of events starts: opaque to clients (a versioned,
/// base64url token), so its form can change without breaking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor(i64);

const CURSOR_PREFIX: &str = "a1.";

impl AuditCursor {
    /// The cursor after `record` (the last of a page).
    pub fn after(record: &AuditRecord) -> Self {
        Self(record.id)
    }

    /// Events strictly older than this id come next.
    pub fn before_id(self) -> i64 {
        self.0
    }

    /// A cursor this service handed out; anything else is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let id: i64 = text.strip_prefix(CURSOR_PREFIX)?.parse().ok()?;
        (id > 0 && URL_SAFE_NO_PAD.encode(&bytes) == raw).then_some(Self(id))
    }
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{}", self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent::new(
            DateTime::UNIX_EPOCH,
            "admin".into(),
            AuditAction::Install,
            AuditOutcome::Ok,
            200,
        )
    }

    #[test]
    fn action_and_outcome_names_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
        for outcome in ["ok", "unchanged", "refused", "failed"] {
            assert_eq!(outcome.parse::<AuditOutcome>().unwrap().as_str(), outcome);
        }
        assert!("Install".parse::<AuditAction>().is_err());
        assert!("".parse::<AuditAction>().is_err());
    }

    #[test]
    fn an_events_source_never_holds_user_info() {
        let hex = "a".repeat(64);
        let source =
            Source::parse(&format!("https://user:s3cret@h.example/p.tgz#sha256={hex}")).unwrap();
        let e = event().with_source(&source);
        assert_eq!(
            e.source(),
            Some(format!("https://h.example/p.tgz#sha256={hex}").as_str())
        );
        let e = event().with_recorded_source("https://u:s3cret@h.example/p.tgz");
        assert_eq!(e.source(), Some("https://h.example/p.tgz"));
    }

    #[test]
    fn a_long_source_is_cut_at_a_character_boundary() {
        let long = format!("local://{}", "é".repeat(MAX_SOURCE_BYTES));
        let e = event().with_source(&Source::parse(&long).unwrap());
        let kept = e.source().unwrap();
        assert!(kept.len() <= MAX_SOURCE_BYTES && kept.len() > MAX_SOURCE_BYTES - 4);
        assert!(long.starts_with(kept));
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = AuditCursor(42);
        let text = cursor.to_string();
        assert!(!text.contains("42"), "opaque: {text}");
        assert_eq!(AuditCursor::parse(&text), Some(cursor));
        for bad in [
            "",
            "42",
            "YTEuNDI=",
            &URL_SAFE_NO_PAD.encode("a1.0"),
            &URL_SAFE_NO_PAD.encode("a1.-3"),
            &URL_SAFE_NO_PAD.encode("a2.42"),
            &URL_SAFE_NO_PAD.encode("a1.42 "),
            "%%%",
        ] {
            assert_eq!(AuditCursor::parse(bad), None, "{bad:?}");
        }
    }
}
