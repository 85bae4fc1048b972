//! Updates (SPEC §11 `outdated`): whether what a receipt records is still
//! what its source offers. The rule only compares; what the source offers
//! now is learnt by the use case (a ref list, the registry's digest).

use crate::domain::digest::TreeDigest;
use crate::domain::receipt::Receipt;

/// What a receipt's source offers now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The source names one immutable revision (a full commit sha, a
    /// pinned archive): it never moves.
    Pinned,
    /// The source follows a ref, which points at this revision now.
    Revision(String),
    /// The source's content now (a registry plugin): its digest and the
    /// version its `plugin.yaml` declares.
    Content { digest: TreeDigest, version: String },
    /// It could not be told.
    Unavailable(Unavailable),
}

/// Why what a source offers could not be told. Each reason is a fixed
/// sentence: nothing of a path, URL, credential, token or upstream answer
/// reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The repository, ref or registry plugin no longer exists.
    Gone,
    /// The source could not be reached or answered unexpectedly.
    Unreachable,
    /// The lookup did not finish before the fetch deadline.
    TimedOut,
    /// Every fetch slot was taken.
    Busy,
    /// The source's scheme has no resolver, or its grammar refuses it now.
    Unsupported,
    /// What the source holds now breaks a staging rule (size, hostile
    /// path, integrity, …).
    Refused,
    /// A ref-following receipt from before revisions were recorded.
    NoRecordedRevision,
}

impl Unavailable {
    /// The `reason` of an `unavailable` entry.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Gone => {
                "the source no longer has this plugin (repository, ref or registry entry gone)"
            }
            Self::Unreachable => "the source could not be reached; try again later",
            Self::TimedOut => "looking up the source timed out; try again later",
            Self::Busy => "too many plugin fetches in progress; try again later",
            Self::Unsupported => "the source's scheme or form is no longer supported",
            Self::Refused => {
                "what the source holds now is refused by the staging rules; installing it shows why"
            }
            Self::NoRecordedRevision => {
                "the install record has no revision to compare (installed before revisions were recorded); update the plugin to record one"
            }
        }
    }
}

/// `outdated`'s status of one receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateStatus {
    Current,
    Outdated,
    Pinned,
    Unavailable(Unavailable),
}

impl UpdateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Outdated => "outdated",
            Self::Pinned => "pinned",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// The reason of an `unavailable` status.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Unavailable(why) => Some(why.reason()),
            _ => None,
        }
    }
}

/// What the source offers now, as far as it is known: a ref's new commit
/// has no digest or version until it is staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub revision: Option<String>,
    pub digest: Option<TreeDigest>,
    pub version: Option<String>,
}

/// One receipt against its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateCheck {
    pub status: UpdateStatus,
    /// `None` when pinned or unavailable.
    pub available: Option<Available>,
}

/// The `outdated` rule: a ref is current while it points at the recorded
/// revision; registry content while its digest is the recorded one.
pub fn check_update(receipt: &Receipt, upstream: Upstream) -> UpdateCheck {
    let unavailable = |why| UpdateCheck {
        status: UpdateStatus::Unavailable(why),
        available: None,
    };
    match upstream {
        Upstream::Pinned => UpdateCheck {
            status: UpdateStatus::Pinned,
            available: None,
        },
        Upstream::Unavailable(why) => unavailable(why),
        Upstream::Revision(now) => {
            let Some(recorded) = receipt.revision() else {
                return unavailable(Unavailable::NoRecordedRevision);
            };
            if recorded.eq_ignore_ascii_case(&now) {
                UpdateCheck {
                    status: UpdateStatus::Current,
                    available: Some(Available {
                        revision: Some(now),
                        digest: Some(receipt.digest.clone()),
                        version: receipt.version().map(str::to_owned),
                    }),
                }
            } else {
                UpdateCheck {
                    status: UpdateStatus::Outdated,
                    available: Some(Available {
                        revision: Some(now),
                        digest: None,
                        version: None,
                    }),
                }
            }
        }
        Upstream::Content { digest, version } => UpdateCheck {
            status: if receipt.matches(&digest) {
                UpdateStatus::Current
            } else {
                UpdateStatus::Outdated
            },
            available: Some(Available {
                revision: None,
                digest: Some(digest),
                version: Some(version),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::{FileDigest, sha256, tree_digest};
    use crate::domain::name::{PluginName, WorkspaceId};
    use crate::domain::receipt::Provenance;

    const OLD: &str = "1111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222";

    fn digest(content: &str) -> TreeDigest {
        tree_digest(&[FileDigest {
            path: "f".into(),
            sha256: sha256(content.as_bytes()),
        }])
    }

    fn receipt(revision: Option<&str>, with_provenance: bool) -> Receipt {
        Receipt {
            workspace_id: WorkspaceId::parse("ws").unwrap(),
            plugin: PluginName::parse("p").unwrap(),
            source: "github://o/p#v1".into(),
            digest: digest("v1"),
            size_bytes: 1,
            installed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            installed_by: "admin".into(),
            provenance: with_provenance.then(|| Provenance {
                revision: revision.map(str::to_owned),
                version: "1.0.0".into(),
                files: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_ref_at_the_recorded_revision_is_current_and_a_moved_one_outdated() {
        let r = receipt(Some(OLD), true);
        let same = check_update(&r, Upstream::Revision(OLD.to_uppercase()));
        assert_eq!(same.status, UpdateStatus::Current);
        let available = same.available.unwrap();
        assert_eq!(available.digest, Some(r.digest.clone()));
        assert_eq!(available.version.as_deref(), Some("1.0.0"));
        let moved = check_update(&r, Upstream::Revision(NEW.into()));
        assert_eq!(moved.status, UpdateStatus::Outdated);
        assert_eq!(
            moved.available,
            Some(Available {
                revision: Some(NEW.into()),
                digest: None,
                version: None
            }),
            "a new commit's content is unknown until staged"
        );
    }

    #[test]
    fn registry_content_compares_digests() {
        let r = receipt(None, true);
        let content = |d| Upstream::Content {
            digest: d,
            version: "2.0.0".into(),
        };
        assert_eq!(
            check_update(&r, content(digest("v1"))).status,
            UpdateStatus::Current
        );
        let changed = check_update(&r, content(digest("v2")));
        assert_eq!(changed.status, UpdateStatus::Outdated);
        assert_eq!(changed.available.unwrap().digest, Some(digest("v2")));
    }

    #[test]
    fn pinned_and_unavailable_offer_nothing_and_only_unavailable_has_a_reason() {
        let r = receipt(Some(OLD), true);
        let pinned = check_update(&r, Upstream::Pinned);
        assert_eq!(
            (pinned.status, pinned.available),
            (UpdateStatus::Pinned, None)
        );
        assert_eq!(pinned.status.reason(), None);
        let gone = check_update(&r, Upstream::Unavailable(Unavailable::Gone));
        assert_eq!(gone.status.as_str(), "unavailable");
        assert!(gone.status.reason().is_some());
    }

    #[test]
    fn an_old_receipt_following_a_ref_cannot_be_compared() {
        for r in [receipt(None, false), receipt(None, true)] {
            let check = check_update(&r, Upstream::Revision(NEW.into()));
            assert_eq!(
                check.status,
                UpdateStatus::Unavailable(Unavailable::NoRecordedRevision)
            );
        }
    }

    #[test]
    fn no_reason_names_a_path_url_or_secret() {
        for why in [
            Unavailable::Gone,
            Unavailable::Unreachable,
            Unavailable::TimedOut,
            Unavailable::Busy,
            Unavailable::Unsupported,
            Unavailable::Refused,
            Unavailable::NoRecordedRevision,
        ] {
            let reason = why.reason();
            assert!(
                !reason.contains('/') && !reason.contains("://") && !reason.contains('@'),
                "{reason}"
            );
        }
    }
}
