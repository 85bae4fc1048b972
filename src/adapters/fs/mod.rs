//! Filesystem adapters: the curated local registry (`PLUGINS_DIR`) and the
//! `local://` resolver that stages a copy of one of its plugins.

mod archive_store;
mod registry;
mod staging;
mod tree;

pub use archive_store::{FsArchiveStore, pack_tree};
pub use registry::{LocalRegistry, LocalResolver};
pub use staging::FsStaging;
pub use tree::copy_tree;
