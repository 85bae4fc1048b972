//! The local registry listing and the registered source schemes (SPEC §3,
//! §5 "available").

use std::sync::Arc;

use crate::app::error::AppError;
pub use crate::ports::registry::Catalog;
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

    /// The registry's plugins sorted by name, as the live index last saw
    /// them; [`Catalog::supporting`] keeps those supporting a runtime (a
    /// plugin that declares no runtimes supports all).
    pub async fn catalog(&self) -> Result<Catalog, AppError> {
        self.registry.list().await.map_err(AppError::Registry)
    }

    /// The registered source schemes, sorted.
    pub fn schemes(&self) -> Vec<String> {
        self.resolvers.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::Manifest;
    use crate::domain::name::PluginName;
    use crate::domain::runtime::Runtime;
    use crate::ports::registry::{MockPluginRegistry, RegistryError};

    fn manifest(name: &str, yaml: &str) -> Arc<Manifest> {
        Arc::new(Manifest::from_yaml(
            PluginName::parse(name).unwrap(),
            Some(yaml.as_bytes()),
        ))
    }

    fn listing(registry: MockPluginRegistry) -> RegistryListing {
        RegistryListing::new(Arc::new(registry), ResolverRegistry::new())
    }

    #[tokio::test]
    async fn a_runtime_keeps_the_plugins_supporting_it_and_those_declaring_none() {
        let mut registry = MockPluginRegistry::new();
        registry.expect_list().returning(|| {
            Ok(Catalog::new(
                7,
                vec![
                    manifest("any", "version: 1.0.0\n"),
                    manifest("claude-only", "runtimes: [claude_code]\n"),
                    manifest("codex-only", "runtimes: [codex]\n"),
                ],
            ))
        });
        let catalog = listing(registry).catalog().await.unwrap();
        assert_eq!(catalog.generation, 7);
        let names = |runtime: Option<&Runtime>| {
            catalog
                .supporting(runtime)
                .map(|m| m.name.to_string())
                .collect::<Vec<_>>()
        };
        let claude = Runtime::parse("claude-code").unwrap();
        assert_eq!(names(Some(&claude)), ["any", "claude-only"]);
        assert_eq!(names(None), ["any", "claude-only", "codex-only"]);
    }

    #[tokio::test]
    async fn an_unreadable_registry_is_a_registry_error() {
        let mut registry = MockPluginRegistry::new();
        registry
            .expect_list()
            .returning(|| Err(RegistryError::Unavailable("gone".into())));
        let err = listing(registry).catalog().await.unwrap_err();
        assert!(matches!(err, AppError::Registry(_)), "{err:?}");
    }
}
