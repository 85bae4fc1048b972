//! Filesystem adapters: the curated local registry (`PLUGINS_DIR`) and the
//! `local://` resolver that stages a copy of one of its plugins, and the
//! tarball unpacker other resolvers (https) stage through.

mod archive_store;
mod parallel;
mod registry;
mod staging;
mod tree;
mod unpack;

pub use archive_store::{FsArchiveStore, pack_tree};
pub use registry::{LocalRegistry, LocalResolver};
pub use staging::FsStaging;
pub use tree::copy_tree;
pub use unpack::{
    INVALID_ARCHIVE_MESSAGE, METADATA_ALLOWANCE, METADATA_WINDOW, UnpackedRoot, unpack_archive,
    unpack_tar,
};

/// Creates a new file of a staged plugin. Plugin files keep only their
/// executable bit: 0755 or 0644, whatever the umask. `create_new`, so an
/// entry can never overwrite an earlier one.
pub(crate) fn create_plugin_file(
    path: &std::path::Path,
    executable: bool,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = if executable { 0o755 } else { 0o644 };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}
