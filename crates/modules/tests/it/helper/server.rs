//! A static file server for registry tests, on 127.0.0.1:0: serves a directory, honours
//! `Range: bytes=N-` (or not, on demand), can cut a transfer halfway, and counts the body
//! bytes it sent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use futures_util::StreamExt;

/// Knobs and counters shared with the test.
#[derive(Default)]
pub struct Knobs {
    /// Cut the next whole-file `.tar.gz` transfer at half.
    pub cut_next: AtomicBool,
    /// Ignore `Range` headers (answer 200 with the whole file).
    pub ignore_range: AtomicBool,
    /// Body bytes sent for `.tar.gz` files.
    pub package_bytes_sent: AtomicU64,
    /// Requests received.
    pub requests: AtomicU64,
}

/// A running server; it stops with the test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
}

impl Server {
    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}/registry", self.addr)
    }
}

struct St {
    root: PathBuf,
    knobs: Arc<Knobs>,
}

/// Starts serving `root` at `/registry/`.
pub async fn start(root: PathBuf) -> Server {
    let knobs = Arc::new(Knobs::default());
    let st = Arc::new(St {
        root,
        knobs: Arc::clone(&knobs),
    });
    let app = axum::Router::new().fallback(serve).with_state(st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, knobs }
}

async fn serve(State(st): State<Arc<St>>, uri: Uri, headers: HeaderMap) -> Response {
    st.knobs.requests.fetch_add(1, Ordering::SeqCst);
    let not_found = || {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap()
    };
    let Some(rel) = uri.path().strip_prefix("/registry/") else {
        return not_found();
    };
    if rel.split('/').any(|p| p == "..") {
        return not_found();
    }
    let Ok(data) = tokio::fs::read(st.root.join(rel)).await else {
        return not_found();
    };
    let is_package = rel.ends_with(".tar.gz");
    let len = data.len() as u64;
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| !st.knobs.ignore_range.load(Ordering::SeqCst));
    let mut builder = Response::builder();
    let from = match start {
        Some(s) if s >= len => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .body(Body::empty())
                .unwrap();
        }
        Some(s) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{len}", len - 1),
            );
            s
        }
        None => {
            builder = builder.status(StatusCode::OK);
            0
        }
    };
    let body = Bytes::from(data).slice(from as usize..);
    builder = builder.header(header::CONTENT_LENGTH, body.len());
    let cut = is_package && from == 0 && st.knobs.cut_next.swap(false, Ordering::SeqCst);
    let send_len = if cut { body.len() / 2 } else { body.len() };
    let chunks: Vec<Bytes> = (0..send_len)
        .step_by(16 * 1024)
        .map(|i| body.slice(i..(i + 16 * 1024).min(send_len)))
        .collect();
    let knobs = Arc::clone(&st.knobs);
    let stream = futures_util::stream::iter(chunks).map(move |c| {
        if is_package {
            knobs
                .package_bytes_sent
                .fetch_add(c.len() as u64, Ordering::SeqCst);
        }
        Ok::<_, std::io::Error>(c)
    });
    let body = if cut {
        let tail = futures_util::stream::once(async {
            // Let what was sent reach the client, then break the connection.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::other("cut"))
        });
        Body::from_stream(stream.chain(tail))
    } else {
        Body::from_stream(stream)
    };
    builder.body(body).unwrap()
}
