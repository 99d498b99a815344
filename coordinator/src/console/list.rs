//! The sagas: newest first, filtered by status and definition, searched by saga id or
//! idempotency key, paged with the API's cursor. The first page refreshes itself (the
//! script polls [`fragment`]); older pages stay still, as a reader paging back expects.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use sagas::SagaStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::page::{self, Section};
use super::session::Ctx;
use super::tone;
use crate::api::ApiError;
use crate::api::ApiState;
use crate::api::error::Kind as _;
use crate::api::sagas::{ListQuery, list_page};
use crate::store::SagaRecord;

/// Sagas per page.
pub const PAGE: u32 = 30;

/// How often the first page refreshes itself, in milliseconds.
pub const REFRESH_MS: u32 = 2000;

/// The list's query: the filters, the search and the page.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ListParams {
    /// A saga status, or empty for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// A definition name, or empty for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    /// A saga id or an idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    /// The API's cursor of the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

impl ListParams {
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    fn search(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|q| !q.is_empty())
    }
}

/// One page of rows, or the API's refusal of the query.
struct Rows {
    rows: Vec<SagaRecord>,
    next_cursor: Option<String>,
}

async fn rows(state: &ApiState, params: &ListParams) -> Result<Rows, ApiError> {
    let mut query = ListQuery {
        status: params.status.clone().filter(|s| !s.is_empty()),
        definition: params.definition.clone(),
        limit: Some(PAGE.to_string()),
        cursor: params.cursor.clone(),
        ..ListQuery::default()
    };
    if let Some(q) = params.search() {
        if let Ok(id) = Uuid::parse_str(q)
            && let Some(record) = state.coordinator.store().get_saga(id).await?
        {
            return Ok(Rows {
                rows: vec![record],
                next_cursor: None,
            });
        }
        query.idempotency_key = Some(q.to_owned());
    }
    let (rows, next_cursor) = list_page(state, query).await?;
    Ok(Rows { rows, next_cursor })
}

/// `GET /ui`: the sagas.
pub async fn page(State(state): State<ApiState>, ctx: Ctx, Query(params): Query<ListParams>) -> Response {
    let definitions = match state.coordinator.store().list_definitions().await {
        Ok(d) => d,
        Err(e) => return page::refusal(&ctx, &ApiError::from(e)),
    };
    let result = rows(&state, &params).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.kind.status(),
    };
    let selected = |v: &Option<String>, option: &str| v.as_deref() == Some(option);
    let live = params.cursor.is_none();
    let body = html! {
        h1 { "Sagas" }
        form.filters method="get" action="/ui" role="search" {
            label {
                "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in SagaStatus::ALL {
                        option value=(s.as_str()) selected[selected(&params.status, s.as_str())] { (s.as_str()) }
                    }
                }
            }
            label {
                "Definition"
                select name="definition" {
                    option value="" { "any" }
                    @for d in &definitions {
                        option value=(d.name) selected[selected(&params.definition, &d.name)] { (d.name) }
                    }
                }
            }
            label {
                "Saga id or idempotency key"
                input type="search" name="q" value=(params.q.as_deref().unwrap_or_default()) placeholder="e.g. order-1042";
            }
            button type="submit" { "Show" }
            a href="/ui" { "Clear" }
        }
        @if live {
            p.note { "This page updates itself every " (REFRESH_MS / 1000) " s while it is open." }
            div #sagas data-refresh={ "/ui/fragments/sagas?" (params.query()) } data-every=(REFRESH_MS) {
                (table(&result, &params))
            }
        } @else {
            div #sagas { (table(&result, &params)) }
        }
    };
    page::render(status, "Sagas", &ctx, Some(Section::Sagas), body)
}

/// `GET /ui/fragments/sagas`: the table alone, for the page to refresh itself.
pub async fn fragment(State(state): State<ApiState>, Query(params): Query<ListParams>) -> Response {
    let result = rows(&state, &params).await;
    page::html_response(StatusCode::OK, table(&result, &params))
}

fn table(result: &Result<Rows, ApiError>, params: &ListParams) -> Markup {
    let page = match result {
        Ok(page) => page,
        Err(error) => return page::problem(error),
    };
    let now = page::now_ms();
    let filtered = params.status.as_deref().is_some_and(|s| !s.is_empty())
        || params.definition.as_deref().is_some_and(|d| !d.is_empty())
        || params.search().is_some();
    html! {
        p.refreshed { "As of " (page::time(now)) " UTC" }
        @if page.rows.is_empty() {
            @if filtered {
                p { "No saga matches." }
            } @else if params.cursor.is_some() {
                p { "No older sagas." }
            } @else {
                p { "No sagas yet. Start one with " code { "geosaga saga start transfer --input '{\"from\":\"alice\",\"to\":\"bob\",\"amount\":50}'" } "." }
            }
        } @else {
            div.scroll {
                table.cards {
                    caption.sr { "Sagas, newest first" }
                    thead { tr {
                        th scope="col" { "Saga" }
                        th scope="col" { "Definition" }
                        th scope="col" { "Status" }
                        th scope="col" { "Started" }
                        th scope="col" { "Duration" }
                        th scope="col" { "Error" }
                        th.hide-narrow scope="col" { "Idempotency key" }
                    } }
                    tbody {
                        @for r in &page.rows { (row(r, now)) }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if params.cursor.is_some() {
                a href={ "/ui?" (ListParams { cursor: None, ..params.clone() }.query()) } { "Newest" }
            }
            @if let Some(next) = &page.next_cursor {
                a href={ "/ui?" (ListParams { cursor: Some(next.clone()), ..params.clone() }.query()) } { "Older sagas →" }
            }
        }
    }
}

fn row(r: &SagaRecord, now: i64) -> Markup {
    let id = r.id.to_string();
    let settled = r.status.is_settled();
    let took = if settled { r.updated_at_ms } else { now } - r.created_at_ms;
    let error = r.error.as_deref().map(|e| {
        let short: String = e.chars().take(140).collect();
        if short.len() < e.len() {
            format!("{short}…")
        } else {
            short
        }
    });
    html! {
        tr {
            td.mono.id data-label="Saga" { a href={ "/ui/sagas/" (id) } data-key=(id) { (id) } }
            td.nowrap data-label="Definition" { (r.definition) " " span.muted { "v" (r.version) } }
            td data-label="Status" { (page::badge(tone::saga(r.status))) }
            td.nowrap data-label="Started" { (page::ago(r.created_at_ms, now)) br; span.muted { (page::time(r.created_at_ms)) } }
            td.num data-label="Duration" { @if !settled { "running " } (page::duration(took)) }
            td data-label="Error" { @if let Some(e) = error { span.error { (e) } } }
            td.hide-narrow.mono data-label="Idempotency key" { (r.idempotency_key.as_deref().unwrap_or("")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_keeps_only_what_was_given() {
        let params = ListParams {
            status: Some("stuck".into()),
            q: Some("order 7&x".into()),
            ..ListParams::default()
        };
        assert_eq!(params.query(), "status=stuck&q=order+7%26x");
        assert_eq!(ListParams::default().query(), "");
    }

    #[test]
    fn a_refused_query_shows_its_problem() {
        let refused = Err(ApiError::parameter("/query/status", "`nope` is not a status"));
        let html = table(&refused, &ListParams::default()).into_string();
        assert!(html.contains("/query/status"), "{html}");
    }
}
