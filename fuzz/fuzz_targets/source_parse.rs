//! `Source::parse` and the spec grammars (SPEC §3) on arbitrary text: never
//! a panic; a parsed source's normalized form `scheme://spec` re-parses to
//! the same value; the redacted form (what responses and logs echo) parses
//! and is stable; a spec its scheme's grammar accepts prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workspace_plugins::domain::source::{GithubSpec, HttpsSpec, Source, parse_local_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(source) = Source::parse(input) else {
        return;
    };
    let normalized = format!("{}://{}", source.scheme(), source.spec());
    assert!(
        Source::parse(&normalized) == Ok(source.clone()),
        "normalized form {normalized:?} does not re-parse to the same source"
    );
    let redacted = source.redacted();
    assert_eq!(source.to_string(), redacted);
    match Source::parse(&redacted) {
        Ok(again) => assert_eq!(again.redacted(), redacted, "redaction is not stable"),
        Err(e) => panic!("redacted form {redacted:?} does not parse: {e}"),
    }

    let allowed = ["example.com".to_owned(), "[::1]".to_owned()];
    match source.scheme() {
        "local" => {
            let _ = parse_local_spec(source.spec());
        }
        "github" => {
            if let Ok(spec) = GithubSpec::parse(source.spec()) {
                assert_eq!(GithubSpec::parse(&spec.to_string()), Ok(spec));
            }
        }
        "https" => {
            if let Ok(spec) = HttpsSpec::parse(source.spec(), &allowed) {
                let url = spec.url();
                let printed = format!("{}#sha256={}", &url["https://".len()..], spec.sha256);
                assert_eq!(HttpsSpec::parse(&printed, &allowed), Ok(spec));
            }
        }
        _ => {}
    }
});
