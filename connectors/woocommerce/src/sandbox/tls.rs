//! HTTPS for the sandbox: a self-signed certificate made at start (`rcgen`) served with rustls
//! (`ring` provider, like the rest of the workspace).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The certificate and key the HTTPS listener presents.
pub struct Identity {
    pub certificate_pem: String,
    certificate_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Identity {
    /// A fresh self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate for fixed names");
        Self {
            certificate_pem: certified.cert.pem(),
            certificate_der: certified.cert.der().clone(),
            key_der: certified.signing_key.serialize_der(),
        }
    }

    fn server_config(&self) -> std::io::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![self.certificate_der.clone()], key)
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Accepts TLS connections on `addr` in a background task and serves `router` on each.
pub async fn serve(addr: SocketAddr, identity: &Identity, router: axum::Router) -> std::io::Result<SocketAddr> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config()?));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "woocommerce sandbox (https) accept failed");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Ok(bound)
}
