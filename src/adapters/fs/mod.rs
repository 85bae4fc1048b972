//! Filesystem adapters: the curated local registry (`PLUGINS_DIR`), its
//! live in-memory index, and the `local://` resolver that stages a copy of one of its plugins, the one
//! staging writer every resolver stages through, the tarball unpacker, the
//! staging area and the download cache.

mod archive_store;
mod index;
mod memo;
mod parallel;
mod registry;
mod staging;
mod tree;
mod unpack;
mod writer;

pub use archive_store::{FsArchiveStore, pack_tree};
pub use index::{DEBOUNCE, IndexOptions, RegistryIndex, SWEEP_PER_SCAN};
pub use memo::DigestMemo;
pub use registry::{LocalRegistry, LocalResolver};
pub use staging::FsStaging;
pub use tree::copy_tree;
pub use unpack::{
    INVALID_ARCHIVE_MESSAGE, METADATA_ALLOWANCE, METADATA_WINDOW, UnpackedRoot, unpack_archive,
    unpack_tar,
};
pub use writer::StagingWriter;
