//! A tiny HTTPS server on loopback for the `https://` resolver: a
//! self-signed certificate for `localhost` and `127.0.0.1` generated at
//! start, fixed routes (bytes, a status, a redirect), and a log of the
//! paths requested so tests can assert that nothing reached the network.
//!
//! One request per connection (`Connection: close`), HTTP/1.1 only: just
//! enough for reqwest, with nothing to configure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Clone)]
pub enum Route {
    Body(Arc<Vec<u8>>),
    Status(u16),
    Redirect(String),
    /// Announces this Content-Length and sends nothing.
    ClaimLength(u64),
}

pub struct HttpsServer {
    pub port: u16,
    ca_pem: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl HttpsServer {
    pub async fn start() -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("self-signed certificate");
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("tls config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, q) = (routes.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, routes, requests) = (acceptor.clone(), r.clone(), q.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    requests.lock().unwrap().push(path.clone());
                    let route = routes.lock().unwrap().get(&path).cloned();
                    let (status, extra, body): (u16, String, Arc<Vec<u8>>) = match route {
                        Some(Route::ClaimLength(len)) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                            );
                            let _ = tls.write_all(head.as_bytes()).await;
                            let _ = tls.shutdown().await;
                            return;
                        }
                        Some(Route::Body(body)) => (200, String::new(), body),
                        Some(Route::Status(status)) => (status, String::new(), Arc::default()),
                        Some(Route::Redirect(to)) => {
                            (302, format!("Location: {to}\r\n"), Arc::default())
                        }
                        None => (404, String::new(), Arc::default()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n",
                        body.len()
                    );
                    if tls.write_all(response.as_bytes()).await.is_ok() {
                        let _ = tls.write_all(&body).await;
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            port,
            ca_pem: certified.cert.pem(),
            routes,
            requests,
            task,
        }
    }

    /// Writes the certificate to `dir/ca.pem`, for PLUGIN_HTTPS_CA_FILE.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write ca");
        path
    }

    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    /// Serves `bytes` at `path` and returns the pinned source for it.
    pub fn serve(&self, path: &str, bytes: Vec<u8>) -> String {
        let digest = sha256_hex(&bytes);
        self.route(path, Route::Body(Arc::new(bytes)));
        format!("https://localhost:{}{path}#sha256={digest}", self.port)
    }

    /// The request paths seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}
