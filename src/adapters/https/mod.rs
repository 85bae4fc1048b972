//! The `https://<url>#sha256=<hex>` resolver (SPEC §3, **\[beyond\]**): a
//! pinned tarball on an allowed host, checked against its digest before a
//! single byte of it is unpacked.
//!
//! The fetch, in order:
//! 1. the spec is re-parsed with [`HttpsSpec::parse`] (grammar, pin, host
//!    allow-list), so nothing reaches the network that `check_spec` would
//!    have refused;
//! 2. the archive is downloaded with reqwest (rustls, the system roots plus
//!    `PLUGIN_HTTPS_CA_FILE`), following redirects only to `https` URLs on
//!    allowed hosts, into an anonymous temp file beside `dest` (no name on
//!    disk, so nothing is left behind whatever happens) while it is hashed;
//!    the download is capped at `max_bytes + METADATA_ALLOWANCE`, the most
//!    the unpacker may read from a decompressed stream anyway, and its
//!    bytes are charged to the fetch's disk allowance until the file is
//!    gone;
//! 3. the SHA-256 must equal the pinned digest, else 422
//!    `archive sha256 mismatch` and nothing is unpacked;
//! 4. the file is unpacked with [`unpack_archive`] on a blocking thread,
//!    through the one staging writer;
//! 5. the plugin name is the archive's single top-level directory, if it
//!    has exactly one, else the archive's file name without its extension.
//!
//! reqwest appears only here; the port sees [`FetchError`]s.

use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::adapters::fs::{METADATA_ALLOWANCE, unpack_archive};
use crate::domain::source::{HttpsSpec, SpecError, host_is_allowed};
use crate::ports::resolver::{
    Cancellation, DiskAllowance, FetchError, FetchLimits, Fetched, RevisionNow, SourceResolver,
    SpecCheck,
};

/// The 422 text when the downloaded bytes do not hash to the pinned digest.
pub const SHA256_MISMATCH_MESSAGE: &str = "archive sha256 mismatch";

/// How many redirects a download may follow.
const MAX_REDIRECTS: usize = 5;

/// Bound on establishing a connection; the whole fetch is bounded by the
/// pipeline's deadline (`PLUGIN_INSTALL_FETCH_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the https resolver could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum HttpsSetupError {
    #[error("cannot read PLUGIN_HTTPS_CA_FILE {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PLUGIN_HTTPS_CA_FILE {path} holds no usable PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot set up the https client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A redirect the policy refused; carried through reqwest's error so the
/// fetch can answer 422 with this text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

/// The downloaded archive: an anonymous file whose bytes stay charged to
/// the fetch's disk allowance until it is closed.
struct Archive {
    file: std::fs::File,
    disk: DiskAllowance,
    charged: u64,
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.disk.release(self.charged);
    }
}

/// The `https` resolver.
#[derive(Debug, Clone)]
pub struct HttpsResolver {
    allowed_hosts: Arc<[String]>,
    client: reqwest::Client,
}

impl HttpsResolver {
    /// A resolver fetching only from `allowed_hosts` (empty: every https
    /// source is refused), trusting the system roots plus the PEM
    /// certificates in `ca_file`.
    ///
    /// Errors: the CA file cannot be read or holds no certificate, or the
    /// TLS client cannot be built.
    pub fn new(allowed_hosts: &[String], ca_file: Option<&Path>) -> Result<Self, HttpsSetupError> {
        let allowed_hosts: Arc<[String]> = allowed_hosts.into();
        let policy_hosts = allowed_hosts.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(RedirectRefused(
                    "https source redirected too many times".into(),
                ));
            }
            let url = attempt.url();
            if url.scheme() != "https" {
                return attempt.error(RedirectRefused(
                    "https source redirected to a non-https url".into(),
                ));
            }
            let host = url.host_str().unwrap_or_default().to_owned();
            if host_is_allowed(&host, &policy_hosts) {
                attempt.follow()
            } else {
                attempt.error(RedirectRefused(format!(
                    "https source host \"{host}\" is not allowed"
                )))
            }
        });
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(policy)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("workspace-plugins/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| HttpsSetupError::CaFile {
                path: path.to_owned(),
                source,
            })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|roots| !roots.is_empty())
                .ok_or_else(|| HttpsSetupError::NoCertificate {
                    path: path.to_owned(),
                })?;
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        Ok(Self {
            allowed_hosts,
            client: builder.build().map_err(HttpsSetupError::Client)?,
        })
    }

    /// Downloads `spec`'s archive into an anonymous temp file in `dir`,
    /// hashing it; returns the file (at its end) and the hex digest.
    async fn download(
        &self,
        spec: &HttpsSpec,
        dir: &Path,
        limits: &FetchLimits,
    ) -> Result<(Archive, String), FetchError> {
        let cap = limits.max_bytes.saturating_add(METADATA_ALLOWANCE);
        let response = self
            .client
            .get(spec.url())
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(FetchError::NotFound);
        }
        if !status.is_success() {
            return Err(FetchError::Other(
                format!("{} answered {status}", spec.host).into(),
            ));
        }
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(FetchError::TooLarge);
        }

        let file = tempfile::tempfile_in(dir).map_err(|e| FetchError::Other(Box::new(e)))?;
        let mut archive = Archive {
            file: file
                .try_clone()
                .map_err(|e| FetchError::Other(Box::new(e)))?,
            disk: limits.disk.clone(),
            charged: 0,
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            if limits.cancel.is_cancelled() {
                return Err(FetchError::Cancelled);
            }
            let chunk = chunk.map_err(request_error)?;
            let len = chunk.len() as u64;
            if archive.charged.saturating_add(len) > cap {
                return Err(FetchError::TooLarge);
            }
            // Charged before it is written: the archive and the tree it
            // unpacks to share the fetch's disk allowance.
            archive.disk.charge(len).map_err(|_| FetchError::TooLarge)?;
            archive.charged += len;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| FetchError::Other(Box::new(e)))?;
        }
        file.flush()
            .await
            .map_err(|e| FetchError::Other(Box::new(e)))?;
        tracing::debug!(host = %spec.host, bytes = archive.charged, "https archive downloaded");
        Ok((archive, hex::encode(hasher.finalize())))
    }
}

/// A transport error: a refused redirect keeps its 422 text, anything else
/// is logged (without the URL, whose query may hold a signature).
fn request_error(e: reqwest::Error) -> FetchError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cause {
        if let Some(refused) = err.downcast_ref::<RedirectRefused>() {
            return FetchError::Refused(refused.0.clone());
        }
        cause = err.source();
    }
    FetchError::Other(Box::new(e.without_url()))
}

#[async_trait]
impl SourceResolver for HttpsResolver {
    fn scheme(&self) -> &'static str {
        "https"
    }

    /// An archive pinned by its sha256 never moves; no network.
    async fn revision_now(
        &self,
        spec: &str,
        _cancel: &Cancellation,
    ) -> Result<RevisionNow, FetchError> {
        HttpsSpec::parse(spec, &self.allowed_hosts).map_err(|e| FetchError::Other(Box::new(e)))?;
        Ok(RevisionNow::Pinned)
    }

    /// The grammar, the pin and the host allow-list; no network.
    fn check_spec(&self, spec: &str) -> Result<SpecCheck, SpecError> {
        HttpsSpec::parse(spec, &self.allowed_hosts).map(|_| SpecCheck { pinned: true })
    }

    /// Errors: `NotFound` for 404/410; `Refused` for a digest mismatch, a
    /// refused redirect or an archive that is not a valid tarball;
    /// `TooLarge` for a download or a tree over its cap; `Unsafe` for a
    /// hostile entry; `Cancelled`; `Other` for any other status or
    /// transport error.
    async fn fetch(
        &self,
        spec: &str,
        dest: &Path,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let spec = HttpsSpec::parse(spec, &self.allowed_hosts)
            .map_err(|e| FetchError::Other(Box::new(e)))?;
        // Beside `dest`, not in it: the staged tree must hold only the
        // plugin's files.
        let dir = dest.parent().unwrap_or(dest);
        let (archive, digest) = self.download(&spec, dir, limits).await?;
        if digest != spec.sha256 {
            tracing::warn!(host = %spec.host, expected = %spec.sha256, got = %digest, "https archive digest mismatch");
            return Err(FetchError::Refused(SHA256_MISMATCH_MESSAGE.to_owned()));
        }
        let format = spec.format;
        let dest_dir = dest.to_path_buf();
        let unpack_limits = limits.clone();
        let root = tokio::task::spawn_blocking(move || {
            let mut file = &archive.file;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| FetchError::Other(Box::new(e)))?;
            let root = unpack_archive(
                BufReader::with_capacity(64 * 1024, file),
                format,
                &dest_dir,
                &unpack_limits,
            );
            // Closed (and released) on this thread: freeing a large file's
            // blocks can take a while.
            drop(archive);
            root
        })
        .await
        .map_err(|e| FetchError::Other(Box::new(e)))??;
        Ok(Fetched {
            name: root
                .single_dir
                .unwrap_or_else(|| spec.archive_stem().to_owned()),
            tree: root.tree,
            // The pinned digest the archive's bytes were just checked against.
            revision: Some(digest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(hosts: &[&str]) -> HttpsResolver {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        HttpsResolver::new(&hosts, None).unwrap()
    }

    const PIN: &str = "#sha256=0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn specs_are_pinned_and_checked_against_the_allowed_hosts() {
        let r = resolver(&["example.com"]);
        assert_eq!(r.scheme(), "https");
        assert_eq!(
            r.check_spec(&format!("example.com/p.tar.gz{PIN}")),
            Ok(SpecCheck { pinned: true })
        );
        assert!(matches!(
            r.check_spec("example.com/p.tar.gz"),
            Err(SpecError::Refused { message }) if message.contains("must be pinned")
        ));
        assert!(matches!(
            r.check_spec(&format!("evil.test/p.tar.gz{PIN}")),
            Err(SpecError::Refused { message }) if message == "https source host \"evil.test\" is not allowed"
        ));
    }

    #[test]
    fn a_ca_file_without_certificates_fails_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = HttpsResolver::new(&[], Some(&path)).unwrap_err();
        assert!(err.to_string().contains("PLUGIN_HTTPS_CA_FILE"), "{err}");
        let missing = HttpsResolver::new(&[], Some(&dir.path().join("nope"))).unwrap_err();
        assert!(
            missing.to_string().contains("PLUGIN_HTTPS_CA_FILE"),
            "{missing}"
        );
    }
}
