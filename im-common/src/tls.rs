//! TLS on a service's listeners (rustls): the certificate and key a deployment names, and a
//! listener whose connections arrive with their handshake done, for axum.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
    server::TlsStream,
};

use crate::settings::SettingsError;

/// A listener's certificate chain and private key, PEM files (for example from Let's Encrypt:
/// `fullchain.pem` and `privkey.pem`). Read at start; a new certificate takes a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// The rustls configuration for these files, offering `alpn` protocols (`h2`, `http/1.1`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, SettingsError> {
        let unreadable = |path: &PathBuf, error: &dyn std::fmt::Display| {
            SettingsError::new(format!("tls: {}: {error}", path.display()))
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .map_err(|e| unreadable(&self.cert_file, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| unreadable(&self.cert_file, &e))?;
        if chain.is_empty() {
            return Err(unreadable(&self.cert_file, &"no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| unreadable(&self.key_file, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SettingsError::new(format!("tls: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| unreadable(&self.cert_file, &e))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// An acceptor for these files (see [`Self::server_config`]).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<Tls, SettingsError> {
        Ok(Tls(TlsAcceptor::from(self.server_config(alpn)?)))
    }
}

/// A listener's TLS: the server side of each connection's handshake.
#[derive(Clone)]
pub struct Tls(TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// The server side of the handshake on `stream`.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.0.accept(stream).await
    }
}

/// Handshakes in progress at once on a [`TlsListener`]; more wait in the kernel's backlog.
const HANDSHAKES: usize = 256;

/// A TCP listener whose connections come out of [`axum::serve::Listener::accept`] with their
/// TLS handshake done. Handshakes run concurrently, each bounded by a timeout, so a client that
/// stalls its handshake holds up no one.
pub struct TlsListener {
    local_addr: SocketAddr,
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Accepts on `listener`, each handshake given `timeout`.
    pub fn new(listener: TcpListener, acceptor: Tls, timeout: Duration) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (done, handshaken) = mpsc::channel(HANDSHAKES);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local_addr,
            handshaken,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends with the listener itself.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
