//! Filesystem adapters: the curated local registry (`PLUGINS_DIR`) and the
//! `local://` resolver that stages a copy of one of its plugins, and the
//! tarball unpacker other resolvers (https) stage through.

mod archive_store;
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
