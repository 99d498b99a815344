//! The web console: what the coordinator knows, as pages a browser shows, at `/ui`.
//!
//! Server-rendered HTML ([maud](https://maud.lambda.xyz/): templates are Rust, checked at
//! compile time, and every interpolated value is escaped) with one small script of our own
//! (`assets/console.js`) that refreshes the parts of a page marked `data-refresh` while
//! sagas run. Every page works without it; the assets are embedded in the binary, so the
//! console needs no build step, no CDN and no network.
//!
//! ## Layout
//! - [`session`]: who may look. With API tokens configured, a login form puts the token in
//!   an HTTP-only cookie and every other route checks it with [`ApiState::accepts`], the
//!   API's own check; every POST carries a CSRF token.
//! - [`page`]: the page shell, the problem document of a refusal, and small formatters.
//! - [`tone`]: the one place where a status becomes a colour.
//! - `list`: the sagas, filtered, searched and paged with the API's cursor.
//! - `saga`: one saga: its DAG, timeline, input and outputs, event log, cancel and retry.
//! - [`dag`] and [`timeline`]: the DAG as SVG and the attempts of a saga as rows (pure).
//! - `definitions`: definitions, their versions, DAG, plan and JSON.
//! - `regions`: what each configured region's `GET /v1/regions` reports.
//!
//! | Route | |
//! |---|---|
//! | `GET /` | redirects to `/ui` |
//! | `GET /ui`, `GET /ui/fragments/sagas` | the sagas (the fragment: the table alone, polled) |
//! | `GET /ui/sagas/{id}`, `GET /ui/fragments/saga/{id}` | one saga |
//! | `GET,POST /ui/sagas/{id}/cancel`, `GET,POST /ui/sagas/{id}/retry` | confirm, then act |
//! | `GET /ui/definitions`, `GET /ui/definitions/{name}?version=` | definitions |
//! | `GET /ui/regions` | the regions |
//! | `GET,POST /ui/login`, `POST /ui/logout` | the session (open) |
//! | `GET /ui/assets/{file}` | the stylesheet and the script (open) |
//!
//! **Invariant:** the console reads and acts through the same coordinator calls as the
//! API's handlers (cancel and retry call the handlers themselves), behind the same token
//! check; it has no data of its own and no route that the API's authorization does not
//! guard.

mod assets;
pub mod dag;
mod definitions;
mod list;
pub mod page;
mod regions;
mod saga;
pub mod session;
pub mod timeline;
pub mod tone;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::get;

use crate::api::ApiState;

/// The console's routes, to merge into the API's router (which adds the state).
pub fn router(state: &ApiState) -> Router<ApiState> {
    let open = Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", axum::routing::post(session::logout))
        .route("/ui/assets/{file}", get(assets::serve));
    let guarded = Router::new()
        .route("/ui", get(list::page))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/fragments/sagas", get(list::fragment))
        .route("/ui/sagas/{id}", get(saga::page))
        .route("/ui/fragments/saga/{id}", get(saga::fragment))
        .route("/ui/sagas/{id}/cancel", get(saga::confirm_cancel).post(saga::cancel))
        .route("/ui/sagas/{id}/retry", get(saga::confirm_retry).post(saga::retry))
        .route("/ui/definitions", get(definitions::list))
        .route("/ui/definitions/{name}", get(definitions::show))
        .route("/ui/regions", get(regions::page))
        .route("/ui/{*rest}", get(page::not_found))
        .route_layer(middleware::from_fn_with_state(state.clone(), session::guard));
    open.merge(guarded)
        .layer(middleware::from_fn(session::csrf_cookie))
        .layer(middleware::from_fn(security_headers))
}

/// Headers every console response carries: scripts and styles from this origin only (an
/// injected `<script>` would not run even if escaping failed), no framing, no sniffing,
/// no referrer leaking saga ids to another site (`same-origin`: with `no-referrer`, browsers
/// send `Origin: null` on the console's own forms).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
