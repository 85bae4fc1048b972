//! The `local` grammar (SPEC §3): the spec is a registry name.

use crate::domain::name::PluginName;

use super::SpecError;

/// Checks a `local` spec: it must be a registry name (SPEC §2, §3).
///
/// Errors: [`SpecError::InvalidName`].
pub fn parse_local_spec(spec: &str) -> Result<PluginName, SpecError> {
    PluginName::parse_registry(spec).map_err(|_| SpecError::InvalidName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_specs_must_be_registry_names() {
        let cases: &[(&str, Result<&str, SpecError>)] = &[
            ("my-plugin", Ok("my-plugin")),
            ("a.b_c-9", Ok("a.b_c-9")),
            ("My-Plugin", Err(SpecError::InvalidName)),
            ("plügin", Err(SpecError::InvalidName)),
            ("../etc", Err(SpecError::InvalidName)),
            ("a/b", Err(SpecError::InvalidName)),
            ("..", Err(SpecError::InvalidName)),
            ("a..b", Err(SpecError::InvalidName)),
            ("x\0y", Err(SpecError::InvalidName)),
            ("with space", Err(SpecError::InvalidName)),
        ];
        for (spec, want) in cases {
            let got = parse_local_spec(spec);
            assert_eq!(
                got.as_ref().map(PluginName::as_str),
                want.as_ref().copied(),
                "spec {spec:?}"
            );
        }
    }
}
