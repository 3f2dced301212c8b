//! The OpenAPI document of the hub's API (`GET /api/v1/openapi.json`), generated from the
//! code: the handlers in [`crate::api`] carry their `#[utoipa::path]` descriptions and the
//! body and row types derive `ToSchema`; [`crate::api::routes`] builds the router and the
//! document from the same list, so they cannot drift apart.

use std::sync::OnceLock;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts: title, tags, the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "reeve hub API",
        description = "The reeve hub's fleet API (docs/hub.md). Operators authenticate with \
            the bearer token `reeve hub operator add` printed; roles: viewer (read), operator \
            (send), admin. What an operator sends with `POST /api/v1/messages` is also signed \
            by their own key; nodes' policies judge that signature.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Bearer),
    components(schemas(crate::api::MessageState)),
    security(("bearer" = [])),
    tags(
        (name = "hub", description = "The hub itself"),
        (name = "nodes", description = "Enrolment and the nodes"),
        (name = "messages", description = "Requests sent to nodes and their replies"),
        (name = "fleet", description = "Events and the central error log"),
    )
)]
struct Base;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator's API token (rvo_…) from `reeve hub operator add`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The fixed parts, before the routes add their paths.
pub fn base() -> Document {
    Base::openapi()
}

/// The whole document.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| crate::api::routes().into_openapi())
}

/// The whole document as JSON.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_json().unwrap_or_else(|_| "{}".into()))
}
