//! The local registry listing and the registered source schemes (SPEC §3,
//! §5 "available").

use std::sync::Arc;

use crate::app::error::AppError;
use crate::domain::manifest::Manifest;
use crate::domain::runtime::Runtime;
use crate::ports::registry::PluginRegistry;
use crate::ports::resolver::ResolverRegistry;

/// What the registry offers, and from which schemes plugins can come.
#[derive(Clone)]
pub struct RegistryListing {
    registry: Arc<dyn PluginRegistry>,
    resolvers: ResolverRegistry,
}

impl RegistryListing {
    pub fn new(registry: Arc<dyn PluginRegistry>, resolvers: ResolverRegistry) -> Self {
        Self {
            registry,
            resolvers,
        }
    }

    /// The registry's plugins sorted by name, only those supporting
    /// `runtime` when given (a plugin that declares no runtimes supports
    /// all).
    pub async fn list(&self, runtime: Option<&Runtime>) -> Result<Vec<Manifest>, AppError> {
        let plugins = self.registry.list().await.map_err(AppError::Registry)?;
        Ok(plugins
            .into_iter()
            .filter(|m| runtime.is_none_or(|r| m.supports(r)))
            .collect())
    }

    /// The registered source schemes, sorted.
    pub fn schemes(&self) -> Vec<String> {
        self.resolvers.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::name::PluginName;
    use crate::ports::registry::{MockPluginRegistry, RegistryError};

    fn manifest(name: &str, yaml: &str) -> Manifest {
        Manifest::from_yaml(PluginName::parse(name).unwrap(), Some(yaml.as_bytes()))
    }

    fn listing(registry: MockPluginRegistry) -> RegistryListing {
        RegistryListing::new(Arc::new(registry), ResolverRegistry::new())
    }

    #[tokio::test]
    async fn a_runtime_keeps_the_plugins_supporting_it_and_those_declaring_none() {
        let mut registry = MockPluginRegistry::new();
        registry.expect_list().returning(|| {
            Ok(vec![
                manifest("any", "version: 1.0.0\n"),
                manifest("claude-only", "runtimes: [claude_code]\n"),
                manifest("codex-only", "runtimes: [codex]\n"),
            ])
        });
        let listing = listing(registry);
        let names = |list: Vec<Manifest>| {
            list.into_iter()
                .map(|m| m.name.to_string())
                .collect::<Vec<_>>()
        };
        let claude = Runtime::parse("claude-code").unwrap();
        assert_eq!(
            names(listing.list(Some(&claude)).await.unwrap()),
            ["any", "claude-only"]
        );
        assert_eq!(
            names(listing.list(None).await.unwrap()),
            ["any", "claude-only", "codex-only"]
        );
    }

    #[tokio::test]
    async fn an_unreadable_registry_is_a_registry_error() {
        let mut registry = MockPluginRegistry::new();
        registry
            .expect_list()
            .returning(|| Err(RegistryError::Unavailable("gone".into())));
        let err = listing(registry).list(None).await.unwrap_err();
        assert!(matches!(err, AppError::Registry(_)), "{err:?}");
    }
}
