//! Listeners: HTTPS (relay, API, dashboard) with the hub's certificate, and an optional
//! plain-HTTP one for loopback use. Each connection is served by hyper with upgrades (the
//! relay is a WebSocket).

use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// TLS settings from the hub's certificate.
pub fn tls_acceptor(id: &crate::identity::Identity) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![pki_types::CertificateDer::from(id.cert_der.clone())],
            pki_types::PrivateKeyDer::Pkcs8(id.cert_key_der.clone().into()),
        )
        .context("the hub's TLS certificate is unusable")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_io<I>(io: I, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Serves `app` over TLS on `listener` until the task is dropped.
pub async fn tls(listener: TcpListener, acceptor: TlsAcceptor, app: Router) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(15), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_io(tls, app).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}

/// Serves `app` over plain HTTP on `listener` until the task is dropped.
pub async fn plain(listener: TcpListener, app: Router) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_io(tcp, app.clone()));
    }
}
