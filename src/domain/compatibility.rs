//! The compatibility preflight for a runtime change (SPEC §5): which
//! installed plugins keep working under the target runtime.
//!
//! A rule of its own over `manifest` (what a plugin declares) and
//! `runtime` (what a runtime is): `runtime` knows nothing of manifests, so
//! the two never import each other.

use crate::domain::manifest::Manifest;
use crate::domain::runtime::Runtime;

/// The preflight for a runtime change: which installed plugins keep working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    pub target_runtime: Runtime,
    pub compatible: Vec<Manifest>,
    pub incompatible: Vec<Manifest>,
}

impl Compatibility {
    pub fn all_compatible(&self) -> bool {
        self.incompatible.is_empty()
    }
}

/// Splits installed plugins by whether they support `target`.
pub fn partition_compatibility(installed: Vec<Manifest>, target: Runtime) -> Compatibility {
    let (compatible, incompatible) = installed.into_iter().partition(|m| m.supports(&target));
    Compatibility {
        target_runtime: target,
        compatible,
        incompatible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::name::PluginName;

    #[test]
    fn compatibility_partitions_installed_plugins_by_the_target_runtime() {
        let plugin = |name: &str, yaml: &str| {
            Manifest::from_yaml(PluginName::parse(name).unwrap(), Some(yaml.as_bytes()))
        };
        let installed = vec![
            plugin("any", "version: 1.0.0"),
            plugin("only-hermes", "runtimes: [hermes]"),
            plugin("cc", "runtimes: [claude-code]"),
        ];
        let result = partition_compatibility(installed, Runtime::parse("claude-code").unwrap());
        assert_eq!(result.target_runtime.as_str(), "claude_code");
        let names = |v: &[Manifest]| v.iter().map(|m| m.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&result.compatible), ["any", "cc"]);
        assert_eq!(names(&result.incompatible), ["only-hermes"]);
        assert!(!result.all_compatible());
        let empty = partition_compatibility(vec![], Runtime::parse("x").unwrap());
        assert!(empty.all_compatible());
    }
}
