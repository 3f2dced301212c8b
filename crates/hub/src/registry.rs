//! A module registry folder served read-only at `/registry/…` (used by `reeve dev`; any
//! static HTTP server or bucket does the same job in production). Paths are confined to the
//! folder: only plain relative components, no `..`, no hidden files.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;

/// Routes serving `dir` under `/registry/`.
pub fn routes<S: Clone + Send + Sync + 'static>(dir: PathBuf) -> Router<S> {
    Router::new()
        .route("/registry/{*path}", get(file))
        .with_state(Arc::new(dir))
}

async fn file(State(dir): State<Arc<PathBuf>>, Path(path): Path<String>) -> Response {
    let ok = !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty() && c != "." && c != ".." && !c.starts_with('.') && !c.contains('\\')
        });
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    }
    match tokio::fs::read(dir.join(&path)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
