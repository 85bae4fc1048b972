//! [`WorkspaceConfigs`] on Docker: each intent is one constant script,
//! run by `exec::run_script` as the agent (`1000:1000`), so whatever the
//! agent planted under `/configs` (symlinks, FIFOs, hard links, huge
//! files) only ever leads where the agent could go itself.
//!
//! On top of running as the agent, each script refuses to act in a
//! directory that does not resolve to itself (`cd -P` then `pwd -P`):
//! with `/configs/plugins` swapped for a symlink to `/tmp`, nothing is
//! written to `/tmp`, although the agent could write there. Once entered,
//! a directory is held by its inode, so a later swap of the path does not
//! redirect the script. Files are read through `tar -c`, which frames them
//! and never follows a symlink or opens a FIFO (a whole plugin tree is
//! hashed as it streams, `tree_hash.rs`, never kept); sizes are checked with
//! `find -size` before reading, and the whole answer is bounded again
//! here. The tools used (`sh`, `tar`, `find`, `mv -T`, `head -c`) are in
//! busybox and in GNU coreutils/findutils/tar.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rand::RngCore;
use tokio::time::Instant;

use super::archive::{read_files, stream_tree_tar};
use super::exec::{Exit, Ran, Script, Stdin, run_script, run_script_into};
use super::tree_hash::TreeHasher;
use super::{DockerEngine, Failure, now};
use crate::domain::drift::InstalledTree;
use crate::domain::layout::plugin_entry;
use crate::domain::manifest::MANIFEST_MAX_BYTES;
use crate::domain::memory::{PluginText, is_memory_source};
use crate::domain::name::PluginName;
use crate::ports::BoxError;
use crate::ports::container::{
    ConfigsError, ContainerId, DeliveryError, EngineError, InstalledEntry, MemoryFile,
    PluginMemory, Removal, RemovalError, TreeReadLimits, WorkspaceConfigs,
};
use crate::ports::staging::{InPlace, TreeCheck};

/// Plugin directories a listing reads at most; more is an error of the
/// listing, not a reason to read on.
pub const MAX_INSTALLED: usize = 1000;
/// What a listing may print: names and manifests.
const LIST_OUTPUT_CAP: usize = 8 * 1024 * 1024;
/// A memory-source file larger than this is not read (its block is left
/// to the fallback step of the stripping rules).
pub const SOURCE_MAX_BYTES: u64 = 1024 * 1024;
/// `/configs/CLAUDE.md` larger than this is left alone rather than read.
pub const MEMORY_FILE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// What an uninstall may read: the manifest, the sources, CLAUDE.md.
const READ_OUTPUT_CAP: usize = 24 * 1024 * 1024;
/// Output of scripts that print nothing but a marker.
const SMALL_OUTPUT_CAP: usize = 4 * 1024;

/// Shared by every script: strict variables, agent-private umask, and the
/// rule for entering a directory.
macro_rules! script {
    ($body:literal) => {
        concat!(
            r#"set -u
umask 022
# Enters $1 only if it resolves to itself: a symlink on the way means the
# agent moved it, and nothing is done there. $2: the exit code when it
# does not exist at all.
inside() {
  if cd -P -- "$1" 2>/dev/null && [ "$(pwd -P)" = "$1" ]; then return 0; fi
  if [ -e "$1" ] || [ -L "$1" ]; then exit 3; fi
  exit "$2"
}
# Removes leftovers of interrupted deliveries from the current directory.
clean_leftovers() {
  for d in .*.staging-* .*.old-*; do
    if [ -e "$d" ] || [ -L "$d" ]; then rm -rf -- "$d" || return 1; fi
  done
}
"#,
            $body
        )
    };
}

/// Exit codes shared by the scripts.
const EXIT_UNSAFE: i64 = 3;
const EXIT_ABSENT: i64 = 4;
const EXIT_TOO_MANY: i64 = 5;
/// What the engine reports for an exec it could not run or aborted.
const EXIT_ENGINE_ABORTED: i64 = 126;

/// `$1` name, `$2` nonce, `$3` seal; stdin: the tree's tar, sealed.
/// Cleans leftovers, extracts into `.<name>.staging-<nonce>`, checks the
/// seal (the whole archive arrived), then swaps: old version aside, new
/// one in, old one removed. Prints `placed` once the new one is in place.
const DELIVER: &str = script!(
    r#"name=$1 new=.$1.staging-$2 old=.$1.old-$2 seal=$3
inside /configs 3
if [ ! -e plugins ] && [ ! -L plugins ]; then mkdir plugins || exit 6; fi
inside /configs/plugins 3
# A leftover the agent cannot remove (root-owned files a runtime left)
# must not block every later delivery.
clean_leftovers || echo "leftovers not removed" >&2
mkdir -- "$new" || exit 6
if ! (inside "/configs/plugins/$new" 3 && tar -x -o -f - && [ -f "$seal" ] && [ ! -L "$seal" ] && rm -f -- "$seal"); then
  rm -rf -- "$new"
  exit 7
fi
if [ -e "$name" ] || [ -L "$name" ]; then
  if ! mv -f -T -- "$name" "$old"; then rm -rf -- "$new"; exit 8; fi
fi
if ! mv -f -T -- "$new" "$name"; then
  if [ -e "$old" ] || [ -L "$old" ]; then mv -f -T -- "$old" "$name"; fi
  rm -rf -- "$new"
  exit 8
fi
echo placed
if [ -e "$old" ] || [ -L "$old" ]; then rm -rf -- "$old" || exit 9; fi
exit 0
"#
);
const EXIT_EXTRACT: i64 = 7;
const EXIT_OLD_LEFT: i64 = 9;

/// `$1` name. Exit 0 when `/configs/plugins/<name>` is a directory.
const IS_INSTALLED: &str = script!(
    r#"inside /configs/plugins 4
if [ -d "$1" ] && [ ! -L "$1" ]; then exit 0; fi
exit 4
"#
);

/// `$1` most directories, `$2` manifest bound + 1. Prints the plugin
/// directories NUL-terminated, an empty name, then the small regular
/// `plugin.yaml` files as tar.
const LIST: &str = script!(
    r#"inside /configs/plugins 0
n=0
for d in *; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then
    n=$((n + 1))
    if [ "$n" -gt "$1" ]; then exit 5; fi
    printf '%s\0' "$d"
  fi
done
printf '\0'
find . -mindepth 2 -maxdepth 2 -name plugin.yaml -type f -size -"$2"c -exec tar -c -f - -- {} +
exit 0
"#
);

/// `$1` name, `$2` source bound + 1, `$3` CLAUDE.md bound + 1. Prints, as
/// tar, the plugin's `plugin.yaml`, `rules/*.md` and root `*.md` files and
/// `configs/CLAUDE.md`, each only when a small regular file.
const READ_MEMORY: &str = script!(
    r#"inside /configs 4
inside /configs/plugins 4
if [ ! -d "$1" ] || [ -L "$1" ]; then exit 4; fi
inside "/configs/plugins/$1" 4
find . -maxdepth 2 -type f -size -"$2"c \( -path ./plugin.yaml -o -path './rules/*.md' -o \( -path './*.md' ! -path './*/*' \) \) -exec tar -c -f - -- {} +
find /configs/CLAUDE.md -maxdepth 0 -type f -size -"$3"c -exec tar -c -f - -C / configs/CLAUDE.md \;
exit 0
"#
);

/// `$1` name. Prints the plugin's directory as `tar -c` of `.`, from
/// inside it: `tar` archives symlinks, FIFOs and devices as what they are
/// (never opened nor followed), and a later swap of the directory's path
/// does not move the script out of the directory it entered. Exit 10 when
/// `tar` could not read everything (what it printed is partial).
const HASH_TREE: &str = script!(
    r#"inside /configs 4
inside /configs/plugins 4
if [ ! -d "$1" ] || [ -L "$1" ]; then exit 4; fi
inside "/configs/plugins/$1" 4
tar -c -f - . || exit 10
exit 0
"#
);
const EXIT_PARTIAL: i64 = 10;

/// `$1` name, `$2` nonce, `$3` length of the new CLAUDE.md (-1: keep
/// it), `$4` its mode, then the skills; stdin: the new CLAUDE.md. In SPEC
/// order: memory file (best-effort, written beside and renamed into
/// place, never truncated), skills, the plugin directory, `sync`.
const REMOVE: &str = script!(
    r#"name=$1 tmp=.CLAUDE.md.wp-$2 len=$3 mode=$4
shift 4
inside /configs/plugins 4
if [ ! -d "$name" ] || [ -L "$name" ]; then exit 4; fi
clean_leftovers || echo "leftovers not removed" >&2
if [ "$len" -ge 0 ]; then
  if ! (inside /configs 3 && set -C && head -c "$len" > "$tmp" && [ "$(wc -c < "$tmp")" -eq "$len" ] && chmod "$mode" "$tmp" && mv -f -T -- "$tmp" CLAUDE.md); then
    (inside /configs 3 && rm -f -- "$tmp")
    echo "memory file not rewritten" >&2
  fi
fi
if [ "$#" -gt 0 ] && { [ -e /configs/skills ] || [ -L /configs/skills ]; }; then
  (inside /configs/skills 3 && rm -rf -- "$@") || exit 11
fi
inside /configs/plugins 4
rm -rf -- "$name" || exit 12
sync || exit 13
exit 0
"#
);

fn nonce() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn failed(what: &str, ran: &Ran) -> BoxError {
    Box::new(Failure(format!(
        "{what}: {:?}: {}",
        ran.exit,
        ran.stderr.trim()
    )))
}

impl DockerEngine {
    async fn run(
        &self,
        container: &ContainerId,
        script: &Script,
        stdin: Stdin,
        stdout_cap: usize,
    ) -> Result<Ran, EngineError> {
        let docker = self.client()?;
        let deadline = Instant::now() + self.call_timeout;
        run_script(
            &docker,
            container,
            script,
            stdin,
            stdout_cap,
            deadline,
            self.call_timeout,
        )
        .await
    }

    /// An exit the script's vocabulary does not explain (killed, shell
    /// missing, engine gone mid-way) is the container stopping if it no
    /// longer runs, else the given failure.
    async fn unexplained(&self, container: &ContainerId, what: &str, ran: Ran) -> ConfigsError {
        if !self.still_running(container).await {
            return ConfigsError::Engine(EngineError::NotRunning);
        }
        match ran.exit {
            Exit::CutOff(e) => ConfigsError::Engine(e),
            Exit::TooLarge => ConfigsError::TooLarge("container output"),
            // The engine's own code for an exec it aborted (its attach
            // stream broke): the engine failed, not the script.
            Exit::Code(EXIT_ENGINE_ABORTED) => {
                ConfigsError::Engine(EngineError::Unavailable(failed(what, &ran)))
            }
            Exit::Code(_) => ConfigsError::Failed(failed(what, &ran)),
        }
    }
}

impl DockerEngine {
    /// A delivery of the tree at `tree`; `check` (a tree read in place)
    /// runs after its last file was read and before the seal is sent.
    async fn deliver_tree(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        tree: &Path,
        check: Option<Arc<dyn TreeCheck>>,
    ) -> Result<(), DeliveryError> {
        let root = tree.to_owned();
        // Planning only reads metadata, but a large tree is still disk I/O.
        let entries =
            tokio::task::spawn_blocking(move || crate::adapters::tartree::plan_tree(&root))
                .await
                .map_err(|e| DeliveryError::NotPlaced(ConfigsError::Failed(Box::new(e))))?
                .map_err(|e| DeliveryError::NotPlaced(ConfigsError::Failed(Box::new(e))))?;
        let nonce = nonce();
        let seal = format!(".workspace-plugins-seal-{nonce}");
        let stream = stream_tree_tar(tree.to_owned(), entries, now(), seal.clone(), check);
        let script = Script {
            text: DELIVER,
            args: vec![plugin.to_string(), nonce, seal],
        };
        let ran = self
            .run(
                container,
                &script,
                Stdin::Stream(stream.body),
                SMALL_OUTPUT_CAP,
            )
            .await
            .map_err(|e| DeliveryError::NotPlaced(e.into()))?;
        if let Some(cause) = stream.failure.get() {
            // The seal was never sent, so nothing was swapped in.
            return Err(DeliveryError::NotPlaced(ConfigsError::Failed(Box::new(
                Failure(format!("packing {}: {cause}", tree.display())),
            ))));
        }
        let placed = ran.stdout.starts_with(b"placed\n");
        if !ran.stderr.is_empty() {
            tracing::warn!(container = %container, plugin = %plugin, stderr = %ran.stderr.trim(), "delivery reported");
        }
        match ran.exit {
            Exit::Code(0) if placed => Ok(()),
            Exit::Code(EXIT_OLD_LEFT) if placed => {
                tracing::warn!(container = %container, plugin = %plugin, "previous version left as a leftover; removed at the next operation");
                Ok(())
            }
            Exit::Code(EXIT_UNSAFE) => Err(DeliveryError::NotPlaced(ConfigsError::UnsafeLayout(
                "/configs/plugins does not resolve to itself",
            ))),
            // Our archive is well formed, so an extraction that failed
            // without a write error inside the container stopped short of
            // its seal: the stream to the engine broke (a send that only
            // reached the socket buffers looks complete from here).
            Exit::Code(EXIT_EXTRACT) if !container_write_error(&ran.stderr) => {
                Err(DeliveryError::NotPlaced(ConfigsError::Engine(
                    EngineError::Unavailable(failed("delivery stream cut", &ran)),
                )))
            }
            Exit::Code(6..=8) => Err(DeliveryError::NotPlaced(ConfigsError::Failed(failed(
                "delivering",
                &ran,
            )))),
            _ if placed => {
                tracing::warn!(container = %container, plugin = %plugin, exit = ?ran.exit, "new version in place; clean-up not confirmed");
                Ok(())
            }
            // The seal never arrived: the script cannot have swapped.
            _ if !ran.stdin_sent => Err(DeliveryError::NotPlaced(
                self.unexplained(container, "delivering", ran).await,
            )),
            _ => Err(DeliveryError::Unknown(
                self.unexplained(container, "delivering", ran).await,
            )),
        }
    }
}

#[async_trait]
impl WorkspaceConfigs for DockerEngine {
    async fn deliver(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        tree: &Path,
    ) -> Result<(), DeliveryError> {
        self.deliver_tree(container, plugin, tree, None).await
    }

    async fn deliver_in_place(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        tree: &InPlace,
    ) -> Result<(), DeliveryError> {
        self.deliver_tree(container, plugin, &tree.dir, Some(tree.check.clone()))
            .await
    }

    async fn is_installed(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
    ) -> Result<bool, ConfigsError> {
        let script = Script {
            text: IS_INSTALLED,
            args: vec![plugin.to_string()],
        };
        let ran = self
            .run(container, &script, Stdin::None, SMALL_OUTPUT_CAP)
            .await?;
        match ran.exit {
            Exit::Code(0) => Ok(true),
            Exit::Code(EXIT_ABSENT) => Ok(false),
            Exit::Code(EXIT_UNSAFE) => Err(ConfigsError::UnsafeLayout(
                "/configs/plugins does not resolve to itself",
            )),
            _ => Err(self.unexplained(container, "checking a plugin", ran).await),
        }
    }

    async fn installed(
        &self,
        container: &ContainerId,
    ) -> Result<Vec<InstalledEntry>, ConfigsError> {
        let script = Script {
            text: LIST,
            args: vec![
                MAX_INSTALLED.to_string(),
                (MANIFEST_MAX_BYTES + 1).to_string(),
            ],
        };
        let ran = self
            .run(container, &script, Stdin::None, LIST_OUTPUT_CAP)
            .await?;
        match ran.exit {
            Exit::Code(0) => {}
            Exit::Code(EXIT_UNSAFE) => {
                return Err(ConfigsError::UnsafeLayout(
                    "/configs/plugins does not resolve to itself",
                ));
            }
            Exit::Code(EXIT_TOO_MANY) => {
                return Err(ConfigsError::TooLarge(
                    "more plugin directories than the bound",
                ));
            }
            Exit::TooLarge => return Err(ConfigsError::TooLarge("listing output")),
            _ => return Err(self.unexplained(container, "listing plugins", ran).await),
        }
        parse_listing(&ran.stdout)
    }

    async fn hash_installed(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        limits: &TreeReadLimits,
    ) -> Result<Option<InstalledTree>, ConfigsError> {
        let script = Script {
            text: HASH_TREE,
            args: vec![plugin.to_string()],
        };
        let mut hasher = TreeHasher::new(*limits);
        let docker = self.client()?;
        let ran = run_script_into(
            &docker,
            container,
            &script,
            Stdin::None,
            &mut hasher,
            Instant::now() + self.call_timeout,
            self.call_timeout,
        )
        .await?;
        let malformed = |e| ConfigsError::Failed(Box::new(e));
        match ran.exit {
            Exit::Code(0) => hasher.finish(true).map(Some).map_err(malformed),
            Exit::Code(EXIT_PARTIAL) => {
                tracing::warn!(container = %container, plugin = %plugin, stderr = %ran.stderr.trim(), "installed tree read in part");
                hasher.finish(false).map(Some).map_err(malformed)
            }
            // Stopped at a bound (then partial), or at a stream that is no
            // tar archive (then an error).
            Exit::TooLarge => hasher.finish(false).map(Some).map_err(malformed),
            Exit::Code(EXIT_ABSENT) => Ok(None),
            Exit::Code(EXIT_UNSAFE) => Err(ConfigsError::UnsafeLayout(
                "the plugin's directory does not resolve to itself",
            )),
            _ => Err(self.unexplained(container, "hashing a plugin", ran).await),
        }
    }

    async fn read_plugin_memory(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
    ) -> Result<Option<PluginMemory>, ConfigsError> {
        let script = Script {
            text: READ_MEMORY,
            args: vec![
                plugin.to_string(),
                (SOURCE_MAX_BYTES + 1).to_string(),
                (MEMORY_FILE_MAX_BYTES + 1).to_string(),
            ],
        };
        let ran = self
            .run(container, &script, Stdin::None, READ_OUTPUT_CAP)
            .await?;
        match ran.exit {
            Exit::Code(0) => {}
            Exit::Code(EXIT_ABSENT) => return Ok(None),
            Exit::Code(EXIT_UNSAFE) => {
                return Err(ConfigsError::UnsafeLayout(
                    "the plugin's directory does not resolve to itself",
                ));
            }
            Exit::TooLarge => return Err(ConfigsError::TooLarge("plugin memory sources")),
            _ => return Err(self.unexplained(container, "reading a plugin", ran).await),
        }
        parse_plugin_memory(&ran.stdout).map(Some)
    }

    async fn remove(&self, container: &ContainerId, removal: &Removal) -> Result<(), RemovalError> {
        let (len, mode, stdin) = match &removal.memory_file {
            Some(file) => (
                file.content.len().to_string(),
                format!("{:o}", file.mode & 0o777),
                Stdin::Bytes(Bytes::copy_from_slice(&file.content)),
            ),
            None => ("-1".to_owned(), "644".to_owned(), Stdin::None),
        };
        let mut args = vec![removal.plugin.to_string(), nonce(), len, mode];
        args.extend(removal.skills.iter().map(ToString::to_string));
        let script = Script { text: REMOVE, args };
        let ran = self
            .run(container, &script, stdin, SMALL_OUTPUT_CAP)
            .await
            .map_err(ConfigsError::from)?;
        if !ran.stderr.is_empty() {
            tracing::warn!(container = %container, plugin = %removal.plugin, stderr = %ran.stderr.trim(), "removal reported");
        }
        match ran.exit {
            Exit::Code(0) => Ok(()),
            Exit::Code(EXIT_ABSENT) => Err(RemovalError::NotInstalled),
            Exit::Code(EXIT_UNSAFE) => Err(RemovalError::Configs(ConfigsError::UnsafeLayout(
                "/configs/plugins does not resolve to itself",
            ))),
            Exit::Code(10..=13) => Err(RemovalError::Incomplete(failed("removing", &ran))),
            _ => match self.unexplained(container, "removing", ran).await {
                ConfigsError::Failed(e) => Err(RemovalError::Incomplete(e)),
                e => Err(RemovalError::Configs(e)),
            },
        }
    }
}

/// Whether a script's stderr names a write failure of the container's own
/// (the errno texts are the same in busybox and GNU tools).
fn container_write_error(stderr: &str) -> bool {
    [
        "No space left",
        "Permission denied",
        "Read-only file system",
        "Disk quota exceeded",
        "Operation not permitted",
    ]
    .iter()
    .any(|text| stderr.contains(text))
}

/// The listing's answer: NUL-terminated names, an empty name, then tar.
fn parse_listing(stdout: &[u8]) -> Result<Vec<InstalledEntry>, ConfigsError> {
    if stdout.is_empty() {
        // No /configs/plugins at all: nothing installed.
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    let mut rest = stdout;
    loop {
        let Some(end) = rest.iter().position(|b| *b == 0) else {
            return Err(ConfigsError::Failed(Box::new(Failure(
                "listing ended without its terminator".into(),
            ))));
        };
        let (name, tail) = rest.split_at(end);
        rest = &tail[1..];
        if name.is_empty() {
            break;
        }
        if let Some(name) = std::str::from_utf8(name).ok().and_then(plugin_entry) {
            names.push(name);
        }
    }
    let files = read_files(rest, MANIFEST_MAX_BYTES as u64)
        .map_err(|e| ConfigsError::Failed(Box::new(e)))?;
    let mut manifests: std::collections::HashMap<String, Vec<u8>> = files
        .into_iter()
        .filter_map(|f| {
            let dir = f.path.strip_suffix("/plugin.yaml")?;
            (!dir.contains('/')).then(|| (dir.to_owned(), f.content))
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|name| InstalledEntry {
            manifest_yaml: manifests.remove(name.as_str()),
            name,
        })
        .collect())
}

fn parse_plugin_memory(stdout: &[u8]) -> Result<PluginMemory, ConfigsError> {
    let files = read_files(stdout, MEMORY_FILE_MAX_BYTES.max(SOURCE_MAX_BYTES))
        .map_err(|e| ConfigsError::Failed(Box::new(e)))?;
    let mut memory = PluginMemory::default();
    for file in files {
        if file.path == "configs/CLAUDE.md" {
            memory.memory_file = Some(MemoryFile {
                content: file.content,
                mode: file.mode,
            });
        } else if file.path == "plugin.yaml" {
            memory.manifest_yaml = Some(file.content);
        } else if is_memory_source(&file.path)
            && let Ok(content) = String::from_utf8(file.content)
        {
            memory.sources.push(PluginText {
                path: file.path,
                content,
            });
        }
    }
    memory.sources.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o640);
            h.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut h, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_listing_pairs_directories_with_their_manifests() {
        let mut out = b"zeta\0.demo.staging-1\0alpha\0bad\\name\0beta\0\0".to_vec();
        out.extend(tar_of(&[
            ("./alpha/plugin.yaml", b"name: alpha\n"),
            ("./.demo.staging-1/plugin.yaml", b"x"),
            ("./nested/dir/plugin.yaml", b"y"),
        ]));
        let listed = parse_listing(&out).unwrap();
        let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "zeta"]);
        assert_eq!(
            listed[0].manifest_yaml.as_deref(),
            Some(&b"name: alpha\n"[..])
        );
        assert_eq!(listed[1].manifest_yaml, None);
    }

    #[test]
    fn an_empty_answer_is_an_empty_listing_and_a_cut_one_is_an_error() {
        assert!(parse_listing(b"").unwrap().is_empty());
        assert!(parse_listing(b"\0").unwrap().is_empty());
        assert!(matches!(
            parse_listing(b"alpha\0bet"),
            Err(ConfigsError::Failed(_))
        ));
    }

    #[test]
    fn plugin_memory_sorts_sources_and_finds_the_memory_file() {
        let out = tar_of(&[
            ("./rules/b.md", b"B"),
            ("./plugin.yaml", b"skills: [x]\n"),
            ("./rules/a.md", b"A"),
            ("./notes.md", b"N"),
            ("./README.md", b"R"),
            ("./bad.md", b"\xff"),
            ("configs/CLAUDE.md", b"# mem\n"),
        ]);
        let memory = parse_plugin_memory(&out).unwrap();
        let paths: Vec<&str> = memory.sources.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["notes.md", "rules/a.md", "rules/b.md"]);
        assert_eq!(memory.manifest_yaml.as_deref(), Some(&b"skills: [x]\n"[..]));
        assert_eq!(
            memory.memory_file,
            Some(MemoryFile {
                content: b"# mem\n".to_vec(),
                mode: 0o640
            })
        );
    }

    #[test]
    fn scripts_name_only_the_domain_layout_paths() {
        use crate::domain::layout::{CLAUDE_MD, CONFIGS_DIR, PLUGINS_DIR, SKILLS_DIR};
        // The scripts are literals, so the layout is written there too:
        // this keeps the two from drifting apart.
        for script in [DELIVER, IS_INSTALLED, LIST, HASH_TREE, READ_MEMORY, REMOVE] {
            for (at, _) in script.match_indices("/configs") {
                let path: String = script[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_'))
                    .collect();
                let path = path.trim_end_matches('/');
                assert!(
                    [CONFIGS_DIR, PLUGINS_DIR, SKILLS_DIR, CLAUDE_MD].contains(&path),
                    "{path} is not a layout path"
                );
            }
        }
        assert!(DELIVER.contains(PLUGINS_DIR) && REMOVE.contains(SKILLS_DIR));
        assert!(
            READ_MEMORY.contains(&CLAUDE_MD[1..]),
            "configs/CLAUDE.md, relative to /"
        );
    }

    #[test]
    fn scripts_are_constants_and_names_travel_as_arguments() {
        for script in [DELIVER, IS_INSTALLED, LIST, HASH_TREE, READ_MEMORY, REMOVE] {
            assert!(script.starts_with("set -u\n"));
            assert!(script.contains("inside()"));
        }
    }
}
