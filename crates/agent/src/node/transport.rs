//! The relay transport's bytes: TCP to the hub (through an HTTP CONNECT proxy when one is
//! configured), TLS, then a WebSocket to `/relay` or one HTTP request (join). The TLS
//! certificate is not what the node trusts — it pins the hub's Ed25519 key and checks it
//! in the first frames — so the relay and the join accept any certificate (a proxy may
//! terminate TLS). An operator's API calls ([`ApiConn`]) carry a bearer token, so they
//! judge the certificate as told ([`ServerCert`]): pinned, or trusted on first use.

use super::cert_pin::{CertFingerprint, CertMismatch, ServerCert};
use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, CertificateError, DigitallySignedStruct, SignatureScheme};

/// The WebSocket to the hub.
pub type Ws = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// Largest frame accepted from the hub.
pub const MAX_FRAME: usize = (1 << 20) + 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Host and `host:port` of an `https://` (or, for the API on loopback, `http://`) URL.
pub fn host_port(url: &str) -> Result<(String, String)> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(r) => (r, 443),
        None => (
            url.strip_prefix("http://")
                .ok_or_else(|| anyhow!("hub URL {url:?} must start with https://"))?,
            80,
        ),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("hub URL {url:?} has no host");
    }
    let (host, addr) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            p.parse::<u16>()
                .with_context(|| format!("hub URL {url:?}: bad port"))?;
            (
                h.trim_matches(['[', ']']).to_string(),
                authority.to_string(),
            )
        }
        _ => (authority.to_string(), format!("{authority}:{default_port}")),
    };
    Ok((host, addr))
}

/// Judges the hub's certificate: without a pin any is accepted (the relay and the join:
/// trust comes from the hub's key, proven in the relay handshake or named by the join
/// token); with one, only the certificate of that fingerprint. Either way it notes what was
/// presented. The server's signature over the handshake is checked with the certificate's
/// key in both cases, so a pinned certificate is one the server holds the key of.
#[derive(Debug)]
struct HubCertVerifier {
    provider: Arc<CryptoProvider>,
    pin: Option<CertFingerprint>,
    presented: Mutex<Option<CertFingerprint>>,
}

impl HubCertVerifier {
    fn new(provider: Arc<CryptoProvider>, pin: Option<CertFingerprint>) -> Self {
        Self {
            provider,
            pin,
            presented: Mutex::new(None),
        }
    }

    fn presented(&self) -> Option<CertFingerprint> {
        self.presented.lock().ok().and_then(|p| *p)
    }

    /// The pin was not met, if that is why the handshake failed.
    fn mismatch(&self, addr: &str) -> Option<CertMismatch> {
        let (expected, presented) = (self.pin?, self.presented()?);
        (expected != presented).then(|| CertMismatch {
            addr: addr.to_string(),
            expected,
            presented,
        })
    }
}

impl ServerCertVerifier for HubCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of(end_entity.as_ref());
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(presented);
        }
        match self.pin {
            Some(pin) if pin != presented => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(verifier: Arc<HubCertVerifier>) -> Result<TlsConnector> {
    let config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tcp(addr: &str, proxy: Option<&str>) -> Result<TcpStream> {
    let Some(proxy) = proxy else {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let _ = s.set_nodelay(true);
        return Ok(s);
    };
    let paddr = proxy
        .strip_prefix("http://")
        .unwrap_or(proxy)
        .trim_end_matches('/');
    let mut s = TcpStream::connect(paddr)
        .await
        .with_context(|| format!("cannot connect to the proxy {paddr}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .context("proxy: send CONNECT")?;
    let mut r = BufReader::new(&mut s);
    let mut status = String::new();
    r.read_line(&mut status)
        .await
        .context("proxy: read reply")?;
    if status.split_whitespace().nth(1) != Some("200") {
        bail!(
            "the proxy {paddr} refused CONNECT {addr}: {}",
            status.trim()
        );
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)
            .await
            .context("proxy: read headers")?
            == 0
        {
            bail!("the proxy closed the connection");
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    if !r.buffer().is_empty() {
        bail!("the proxy sent data before the tunnel opened");
    }
    Ok(s)
}

/// TCP (via the proxy) and TLS to the hub at `url`, whatever certificate it presents
/// (for the relay and the join, whose trust is the hub's key).
pub async fn tls(url: &str, proxy: Option<&str>) -> Result<TlsStream<TcpStream>> {
    tls_verified(url, proxy, Arc::new(HubCertVerifier::new(provider(), None))).await
}

/// TCP (via the proxy) and TLS to the hub at `url`, its certificate judged by `verifier`;
/// a certificate refused for not being the pinned one fails with [`CertMismatch`].
async fn tls_verified(
    url: &str,
    proxy: Option<&str>,
    verifier: Arc<HubCertVerifier>,
) -> Result<TlsStream<TcpStream>> {
    let (host, addr) = host_port(url)?;
    let fut = async {
        let tcp = tcp(&addr, proxy).await?;
        let name = ServerName::try_from(host.clone())
            .with_context(|| format!("bad host name {host:?}"))?;
        match connector(verifier.clone())?.connect(name, tcp).await {
            Ok(s) => Ok(s),
            Err(e) => match verifier.mismatch(&addr) {
                Some(m) => Err(m.into()),
                None => Err(anyhow::Error::new(e).context(format!("TLS with {addr} failed"))),
            },
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out"))?
}

/// Opens the relay WebSocket.
pub async fn websocket(url: &str, proxy: Option<&str>) -> Result<Ws> {
    let stream = tls(url, proxy).await?;
    let (host, addr) = host_port(url)?;
    let _ = host;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
        .write_buffer_size(8 * 1024)
        .read_buffer_size(8 * 1024);
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            format!("wss://{addr}/relay"),
            stream,
            Some(config),
        ),
    )
    .await
    .map_err(|_| anyhow!("the WebSocket handshake with {addr} timed out"))?
    .context("the WebSocket handshake failed")?;
    Ok(ws)
}

/// One API call: method, path (with query), optional JSON body and bearer token.
pub struct Call<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// JSON body.
    pub body: Option<&'a serde_json::Value>,
    /// Operator token.
    pub bearer: Option<&'a str>,
}

/// One JSON request to the hub's API over `https://` (or `http://` on loopback), whatever
/// certificate the hub presents (for the join, which checks the hub's key named by its
/// token; an operator's calls go through an [`ApiConn`] that pins the certificate); returns
/// the status and the JSON body.
pub async fn request(
    url: &str,
    proxy: Option<&str>,
    call: Call<'_>,
) -> Result<(u16, serde_json::Value)> {
    ApiConn::new(url, proxy, ServerCert::Any).call(call).await
}

type Sender = hyper::client::conn::http1::SendRequest<Full<hyper::body::Bytes>>;

/// A connection to the hub's API kept open across calls (HTTP/1.1 keep-alive): a CLI
/// command that makes several calls pays for one TCP and TLS handshake. It reconnects
/// when the hub closed it, judging the hub's certificate each time as told.
pub struct ApiConn {
    url: String,
    proxy: Option<String>,
    cert: ServerCert,
    sender: Option<Sender>,
}

impl std::fmt::Debug for ApiConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConn")
            .field("url", &self.url)
            .field("cert", &self.cert)
            .field("open", &self.sender.is_some())
            .finish()
    }
}

impl ApiConn {
    /// A connection to the hub at `url` (through `proxy`), opened at the first call, that
    /// judges the hub's certificate by `cert` (an `http://` URL has none).
    pub fn new(url: &str, proxy: Option<&str>, cert: ServerCert) -> Self {
        Self {
            url: url.to_string(),
            proxy: proxy.map(str::to_string),
            cert,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<Sender> {
        let (_, addr) = host_port(&self.url)?;
        let proxy = self.proxy.as_deref();
        if self.url.starts_with("https://") {
            let pin = match &self.cert {
                ServerCert::Pinned(p) => Some(*p),
                ServerCert::Any | ServerCert::FirstUse(_) => None,
            };
            let verifier = Arc::new(HubCertVerifier::new(provider(), pin));
            let stream = tls_verified(&self.url, proxy, verifier.clone()).await?;
            if let ServerCert::FirstUse(record) = &mut self.cert {
                // Before any request: a certificate that cannot be recorded is not used.
                let seen = verifier
                    .presented()
                    .context("internal: the hub presented no certificate")?;
                record(&seen)?;
                self.cert = ServerCert::Pinned(seen);
            }
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
            tokio::spawn(conn);
            Ok(sender)
        } else {
            let stream = tcp(&addr, proxy).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }

    /// One JSON request; returns the status and the JSON body.
    pub async fn call(&mut self, call: Call<'_>) -> Result<(u16, serde_json::Value)> {
        let (_, addr) = host_port(&self.url)?;
        let bytes = call.body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(call.method)
            .uri(call.path)
            .header("host", addr.as_str())
            .header("content-type", "application/json");
        if let Some(t) = call.bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(hyper::body::Bytes::from(bytes)))
            .context("build request")?;
        let reuse = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reuse {
            self.sender = Some(self.connect().await?);
        }
        let sender = self
            .sender
            .as_mut()
            .context("internal: no connection to the hub")?;
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("{} {} failed", call.method, call.path))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("read reply")?
            .to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }
}
