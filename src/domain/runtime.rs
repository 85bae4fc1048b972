//! Runtimes and the rules that depend on them (SPEC §1, §2, §5): name
//! equivalence and the runtime guard. Which plugins a runtime can run is
//! `domain::compatibility`: a runtime knows nothing of manifests.

use std::fmt;

use serde::Serialize;

/// An agent runtime name, stored normalized (`-` becomes `_`), so that
/// `claude-code` and `claude_code` are the same runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Runtime(String);

/// The runtime whose agents live outside any local container.
pub const EXTERNAL: &str = "external";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("runtime must match [a-z0-9][a-z0-9_-]{{0,63}}")]
pub struct RuntimeError;

impl Runtime {
    /// Accepts `[a-z0-9][a-z0-9_-]{0,63}` and normalizes `-` to `_`.
    pub fn parse(s: &str) -> Result<Self, RuntimeError> {
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if !first_ok || !rest_ok || bytes.len() > 64 {
            return Err(RuntimeError);
        }
        Ok(Self(normalize(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `external` runtimes have no local container: plugins are pulled.
    pub fn is_external(&self) -> bool {
        self.0 == EXTERNAL
    }

    /// Whether a runtime name as written in a manifest denotes this runtime.
    pub fn matches(&self, declared: &str) -> bool {
        normalize(declared) == self.0
    }
}

fn normalize(s: &str) -> String {
    s.replace('-', "_")
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Runtime {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a caller tried to do to a workspace's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOperation {
    Install,
    Uninstall,
}

/// Why the runtime guard refused: the message and the hint of SPEC §5.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GuardRefusal {
    pub message: &'static str,
    pub hint: &'static str,
}

/// The runtime guard: pushing into (or removing from) a container is
/// meaningless for an `external` workspace, which has none; say where to go
/// instead rather than falling through to "container not running".
pub fn runtime_guard(runtime: &Runtime, operation: PushOperation) -> Result<(), GuardRefusal> {
    if !runtime.is_external() {
        return Ok(());
    }
    Err(match operation {
        PushOperation::Install => GuardRefusal {
            message: "plugin install via push is not supported for external runtimes",
            hint: "external workspaces pull plugins via GET /workspaces/:id/plugins/:name/download",
        },
        PushOperation::Uninstall => GuardRefusal {
            message: "plugin uninstall via docker exec is not supported for external runtimes",
            hint: "external workspaces manage their own plugin directory; remove it locally",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_follow_the_pattern_and_are_normalized() {
        let good = [
            ("claude_code", "claude_code"),
            ("claude-code", "claude_code"),
            ("external", "external"),
            ("a", "a"),
            ("9x", "9x"),
        ];
        for (input, stored) in good {
            assert_eq!(Runtime::parse(input).unwrap().as_str(), stored, "{input}");
        }
        let too_long = "a".repeat(65);
        for bad in [
            "",
            "-x",
            "_x",
            "Claude",
            "a b",
            "a.b",
            "é",
            too_long.as_str(),
        ] {
            assert!(Runtime::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(Runtime::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn dash_and_underscore_are_the_same_runtime() {
        let rt = Runtime::parse("claude_code").unwrap();
        assert!(rt.matches("claude-code"));
        assert!(rt.matches("claude_code"));
        assert!(!rt.matches("claudecode"));
    }

    #[test]
    fn the_runtime_guard_refuses_only_external_workspaces() {
        let external = Runtime::parse("external").unwrap();
        let docker = Runtime::parse("claude_code").unwrap();
        assert!(runtime_guard(&docker, PushOperation::Install).is_ok());
        assert!(runtime_guard(&docker, PushOperation::Uninstall).is_ok());
        let install = runtime_guard(&external, PushOperation::Install).unwrap_err();
        assert_eq!(
            install.message,
            "plugin install via push is not supported for external runtimes"
        );
        assert!(install.hint.contains("/download"));
        let uninstall = runtime_guard(&external, PushOperation::Uninstall).unwrap_err();
        assert_eq!(
            uninstall.message,
            "plugin uninstall via docker exec is not supported for external runtimes"
        );
    }
}
