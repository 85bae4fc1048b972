//! Workspaces as this service records them (SPEC §1, §8): field rules, the
//! org a workspace belongs to, its container, and when it may be restarted.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::domain::name::WorkspaceId;
use crate::domain::runtime::Runtime;

/// A workspace's lifecycle status (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkspaceStatus {
    Provisioning,
    Online,
    Offline,
    Paused,
    Hibernated,
    Removed,
}

impl WorkspaceStatus {
    pub const ALL: [Self; 6] = [
        Self::Provisioning,
        Self::Online,
        Self::Offline,
        Self::Paused,
        Self::Hibernated,
        Self::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Paused => "paused",
            Self::Hibernated => "hibernated",
            Self::Removed => "removed",
        }
    }
}

impl fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkspaceStatus {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(FieldError::new(
                "status",
                "status must be one of provisioning, online, offline, paused, hibernated, removed",
            ))
    }
}

/// A Docker container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerName(String);

impl ContainerName {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let bytes = s.as_bytes();
        let ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                "container",
                "container must be a Docker name matching [a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bad field in a workspace record; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The fields a caller sets on a workspace, validated (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSpec {
    pub name: String,
    pub runtime: Runtime,
    pub parent_id: Option<WorkspaceId>,
    pub container: Option<ContainerName>,
    pub status: WorkspaceStatus,
}

/// The fields of a workspace as they arrive, before validation.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceInput<'a> {
    pub name: Option<&'a str>,
    pub runtime: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub container: Option<&'a str>,
    pub status: Option<&'a str>,
}

impl WorkspaceSpec {
    /// Validates every field; the first bad one is reported by name.
    pub fn validate(id: &WorkspaceId, input: WorkspaceInput<'_>) -> Result<Self, FieldError> {
        let name = input
            .name
            .ok_or_else(|| FieldError::new("name", "name is required (1-200 characters)"))?;
        let name_len = name.chars().count();
        if name_len == 0 || name_len > 200 || name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "name must be 1-200 characters without control characters",
            ));
        }
        let runtime = input.runtime.ok_or_else(|| {
            FieldError::new("runtime", "runtime is required (e.g. \"claude_code\")")
        })?;
        let runtime =
            Runtime::parse(runtime).map_err(|e| FieldError::new("runtime", e.to_string()))?;
        let parent_id = match input.parent_id {
            None => None,
            Some(p) => {
                let parent = WorkspaceId::parse(p).map_err(|_| {
                    FieldError::new(
                        "parent_id",
                        "parent_id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}",
                    )
                })?;
                if &parent == id {
                    return Err(FieldError::new(
                        "parent_id",
                        "parent_id must differ from the workspace's own id",
                    ));
                }
                Some(parent)
            }
        };
        let container = input.container.map(ContainerName::parse).transpose()?;
        let status = input
            .status
            .map(str::parse)
            .transpose()?
            .unwrap_or(WorkspaceStatus::Online);
        Ok(Self {
            name: name.to_owned(),
            runtime,
            parent_id,
            container,
            status,
        })
    }
}

/// The container of record `id`: `explicit`, else `ws-` + the first 12
/// characters of the id (SPEC §8).
pub fn effective_container(id: &WorkspaceId, explicit: Option<&ContainerName>) -> ContainerName {
    match explicit {
        Some(name) => name.clone(),
        None => ContainerName(id.container_default()),
    }
}

impl WorkspaceSpec {
    /// The container record `id` holds with these fields: its effective
    /// container unless it is `removed`. Two records never hold the same
    /// one (SPEC §6).
    pub fn claimed_container(&self, id: &WorkspaceId) -> Option<ContainerName> {
        (self.status != WorkspaceStatus::Removed)
            .then(|| effective_container(id, self.container.as_ref()))
    }
}

/// A workspace record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub spec: WorkspaceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Workspace {
    /// The org is the direct parent, or the workspace itself (SPEC §1).
    pub fn org_id(&self) -> &WorkspaceId {
        self.spec.parent_id.as_ref().unwrap_or(&self.id)
    }

    /// The record's explicit container, else `ws-` + the first 12
    /// characters of the id.
    pub fn container_name(&self) -> ContainerName {
        effective_container(&self.id, self.spec.container.as_ref())
    }

    /// Restarts are skipped for workspaces that are not meant to run.
    pub fn accepts_restarts(&self) -> bool {
        !matches!(
            self.spec.status,
            WorkspaceStatus::Paused | WorkspaceStatus::Hibernated | WorkspaceStatus::Removed
        )
    }

    /// A removed workspace's tokens are dead.
    pub fn is_removed(&self) -> bool {
        self.spec.status == WorkspaceStatus::Removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    fn input<'a>() -> WorkspaceInput<'a> {
        WorkspaceInput {
            name: Some("Agent"),
            runtime: Some("claude-code"),
            ..Default::default()
        }
    }

    #[test]
    fn a_minimal_workspace_is_online_with_a_normalized_runtime() {
        let spec = WorkspaceSpec::validate(&id("ws1"), input()).unwrap();
        assert_eq!(spec.runtime.as_str(), "claude_code");
        assert_eq!(spec.status, WorkspaceStatus::Online);
        assert_eq!(spec.parent_id, None);
        assert_eq!(spec.container, None);
    }

    #[test]
    fn every_bad_field_is_refused_naming_the_field() {
        let long_name = "n".repeat(201);
        let long_container = format!("c{}", "x".repeat(128));
        let cases: Vec<(WorkspaceInput, &str)> = vec![
            (
                WorkspaceInput {
                    name: None,
                    ..input()
                },
                "name",
            ),
            (
                WorkspaceInput {
                    name: Some(""),
                    ..input()
                },
                "name",
            ),
            (
                WorkspaceInput {
                    name: Some(&long_name),
                    ..input()
                },
                "name",
            ),
            (
                WorkspaceInput {
                    name: Some("a\u{7}b"),
                    ..input()
                },
                "name",
            ),
            (
                WorkspaceInput {
                    runtime: None,
                    ..input()
                },
                "runtime",
            ),
            (
                WorkspaceInput {
                    runtime: Some("Claude"),
                    ..input()
                },
                "runtime",
            ),
            (
                WorkspaceInput {
                    parent_id: Some("-bad"),
                    ..input()
                },
                "parent_id",
            ),
            (
                WorkspaceInput {
                    parent_id: Some("ws1"),
                    ..input()
                },
                "parent_id",
            ),
            (
                WorkspaceInput {
                    container: Some("/x"),
                    ..input()
                },
                "container",
            ),
            (
                WorkspaceInput {
                    container: Some(""),
                    ..input()
                },
                "container",
            ),
            (
                WorkspaceInput {
                    container: Some(&long_container),
                    ..input()
                },
                "container",
            ),
            (
                WorkspaceInput {
                    status: Some("deleted"),
                    ..input()
                },
                "status",
            ),
            (
                WorkspaceInput {
                    status: Some("Online"),
                    ..input()
                },
                "status",
            ),
        ];
        for (case, field) in cases {
            let err = WorkspaceSpec::validate(&id("ws1"), case.clone()).unwrap_err();
            assert_eq!(err.field, field, "{case:?}");
            assert!(
                err.message.contains(field),
                "message names the field: {err}"
            );
        }
    }

    #[test]
    fn a_200_character_name_and_a_128_character_container_are_accepted() {
        let name = "é".repeat(200);
        let container = format!("c{}", "x".repeat(127));
        let spec = WorkspaceSpec::validate(
            &id("ws1"),
            WorkspaceInput {
                name: Some(&name),
                container: Some(&container),
                parent_id: Some("org-1"),
                status: Some("hibernated"),
                ..input()
            },
        )
        .unwrap();
        assert_eq!(spec.status, WorkspaceStatus::Hibernated);
        assert_eq!(spec.parent_id, Some(id("org-1")));
    }

    fn workspace(id_: &str, input: WorkspaceInput) -> Workspace {
        let now = Utc::now();
        Workspace {
            id: id(id_),
            spec: WorkspaceSpec::validate(&id(id_), input).unwrap(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn the_org_is_the_direct_parent_or_the_workspace_itself() {
        let alone = workspace("ws1", input());
        assert_eq!(alone.org_id().as_str(), "ws1");
        let child = workspace(
            "ws2",
            WorkspaceInput {
                parent_id: Some("org"),
                ..input()
            },
        );
        assert_eq!(child.org_id().as_str(), "org");
    }

    #[test]
    fn the_container_is_explicit_or_derived_from_the_id() {
        let derived = workspace("0123456789abcdef", input());
        assert_eq!(derived.container_name().as_str(), "ws-0123456789ab");
        let short = workspace("abc", input());
        assert_eq!(short.container_name().as_str(), "ws-abc");
        let explicit = workspace(
            "ws1",
            WorkspaceInput {
                container: Some("my.box"),
                ..input()
            },
        );
        assert_eq!(explicit.container_name().as_str(), "my.box");
    }

    #[test]
    fn a_record_claims_its_effective_container_unless_removed() {
        for status in WorkspaceStatus::ALL {
            let derived = workspace(
                "0123456789abcdef",
                WorkspaceInput {
                    status: Some(status.as_str()),
                    ..input()
                },
            );
            let explicit = workspace(
                "ws1",
                WorkspaceInput {
                    container: Some("my.box"),
                    status: Some(status.as_str()),
                    ..input()
                },
            );
            let claims = |w: &Workspace| w.spec.claimed_container(&w.id).map(|c| c.to_string());
            if status == WorkspaceStatus::Removed {
                assert_eq!(claims(&derived), None);
                assert_eq!(claims(&explicit), None);
            } else {
                assert_eq!(
                    claims(&derived).as_deref(),
                    Some("ws-0123456789ab"),
                    "{status}"
                );
                assert_eq!(claims(&explicit).as_deref(), Some("my.box"), "{status}");
            }
        }
    }

    #[test]
    fn restarts_are_skipped_for_paused_hibernated_and_removed_workspaces() {
        for status in WorkspaceStatus::ALL {
            let ws = workspace(
                "ws1",
                WorkspaceInput {
                    status: Some(status.as_str()),
                    ..input()
                },
            );
            let expected = !matches!(
                status,
                WorkspaceStatus::Paused | WorkspaceStatus::Hibernated | WorkspaceStatus::Removed
            );
            assert_eq!(ws.accepts_restarts(), expected, "{status}");
            assert_eq!(ws.is_removed(), status == WorkspaceStatus::Removed);
        }
    }
}
