//! `Manifest::from_yaml` (SPEC §2, lenient per field) on arbitrary bytes:
//! never a panic, the directory name always wins, an oversize document is
//! a bare manifest. Time and memory per input are bounded by the runner
//! (scripts/fuzz passes -timeout and -rss_limit_mb to libFuzzer), so an
//! alias bomb shows up as a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workspace_plugins::domain::manifest::{MANIFEST_MAX_BYTES, Manifest};
use workspace_plugins::domain::name::PluginName;

fuzz_target!(|data: &[u8]| {
    let name = PluginName::parse("fuzzed-plugin").expect("a valid plugin name");
    let manifest = Manifest::from_yaml(name.clone(), Some(data));
    assert_eq!(manifest.name, name);
    if data.len() > MANIFEST_MAX_BYTES {
        assert_eq!(manifest, Manifest::bare(name));
    }
});
