//! One saga: its facts, its DAG in the colours of its steps, its steps with their outputs
//! and errors, the timeline of every attempt, its input, its event log, and cancel and
//! retry (each confirmed on a page of its own first, then done by the API's own handler;
//! a refusal shows the API's problem document). While the saga runs, the page refreshes
//! itself from [`fragment`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::dag::{self, Node};
use super::page::{self, Section};
use super::session::{Ctx, Posted};
use super::timeline;
use super::tone::{self, Tone};
use crate::SagaView;
use crate::api::ApiState;
use crate::api::error::Kind as _;
use crate::api::extract::{MaybeJson, SagaId};
use crate::api::sagas::CancelRequest;
use crate::api::views::{CompensationStatus, EventView, SagaResponse};
use crate::api::{ApiError, sagas as api};
use crate::store::StoredEvent;

/// How often a running saga's page refreshes itself, in milliseconds.
pub const REFRESH_MS: u32 = 1000;

fn saga_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::parameter("/path/id", format!("`{raw}` is not a saga id (a UUID)")))
}

/// What the page shows, read as the API's `GET /v1/sagas/{id}` and `.../events` read it.
struct Loaded {
    view: SagaView,
    events: Vec<StoredEvent>,
}

async fn load(state: &ApiState, raw: &str) -> Result<Loaded, ApiError> {
    let id = saga_id(raw)?;
    let view = state.coordinator.saga(id).await?;
    let events = state.coordinator.events(id).await?;
    Ok(Loaded { view, events })
}

/// What the page says after an action.
#[derive(Debug, Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /ui/sagas/{id}`.
pub async fn page(
    State(state): State<ApiState>,
    ctx: Ctx,
    Path(raw): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let loaded = match load(&state, &raw).await {
        Ok(l) => l,
        Err(e) => return page::refusal(&ctx, &e),
    };
    let id = loaded.view.record.id;
    let flash = match done.done.as_deref() {
        Some("cancel") => Some("Cancel requested: the saga starts no more steps and compensates."),
        Some("retry") => Some("Retry requested: the failed compensations run again."),
        _ => None,
    };
    let body = html! {
        h1 { "Saga " span.mono { (id) } }
        @if let Some(flash) = flash { p.flash role="status" { (flash) } }
        div #saga data-refresh={ "/ui/fragments/saga/" (id) } data-every=(REFRESH_MS) {
            (content(&state, &loaded))
        }
    };
    page::render(StatusCode::OK, &format!("Saga {id}"), &ctx, Some(Section::Sagas), body)
}

/// `GET /ui/fragments/saga/{id}`: the page without its shell, for it to refresh itself.
pub async fn fragment(State(state): State<ApiState>, Path(raw): Path<String>) -> Response {
    match load(&state, &raw).await {
        Ok(loaded) => page::html_response(StatusCode::OK, content(&state, &loaded)),
        Err(e) => page::html_response(e.kind.status(), html! { (page::problem(&e)) span data-final {} }),
    }
}

fn content(state: &ApiState, loaded: &Loaded) -> Markup {
    let view = &loaded.view;
    let record = &view.record;
    let response = SagaResponse::new(view, state.jaeger_ui.as_deref());
    let now = page::now_ms();
    let settled = record.status.is_settled();
    let def = view.state.definition();
    let nodes: Vec<Node> = view
        .state
        .steps()
        .iter()
        .zip(&response.steps)
        .map(|(s, v)| Node {
            shown: Some(tone::step(s.status)),
            detail: detail(v.attempts, v.compensation.status),
        })
        .collect();
    let took = if settled { record.updated_at_ms } else { now } - record.created_at_ms;
    let id = record.id;
    html! {
        @if settled { span data-final hidden {} }
        dl.facts {
            dt { "Status" } dd { (page::badge(tone::saga(record.status))) }
            @if let Some(error) = &record.error { dt { "Why it unwound" } dd.error { (error) } }
            dt { "Definition" }
            dd { a href={ "/ui/definitions/" (record.definition) "?version=" (record.version) } { (record.definition) " v" (record.version) } }
            dt { "Started" } dd { (page::time(record.created_at_ms)) " UTC (" (page::ago(record.created_at_ms, now)) ")" }
            dt { "Duration" } dd { (page::duration(took)) @if !settled { " so far" } }
            @if let Some(key) = &record.idempotency_key { dt { "Idempotency key" } dd.mono { (key) } }
            @if let Some(trace) = &response.summary.trace_id {
                dt { "Trace" }
                dd {
                    span.mono { (trace) }
                    @if let Some(url) = &response.summary.trace_url { " " a href=(url) rel="noopener" { "Open in Jaeger" } }
                }
            }
        }
        div.actions {
            @match record.status {
                sagas::SagaStatus::Running => { a.button.danger href={ "/ui/sagas/" (id) "/cancel" } { "Cancel saga…" } }
                sagas::SagaStatus::Stuck => { a.button href={ "/ui/sagas/" (id) "/retry" } { "Retry compensations…" } }
                sagas::SagaStatus::Compensating | sagas::SagaStatus::Completed | sagas::SagaStatus::Compensated => {}
            }
            @if !settled { span.note { "This page updates itself while the saga runs." } }
        }
        h2 { "Steps" }
        (dag::render(def, &nodes))
        ul.legend aria-label="Colours" {
            @for t in Tone::ALL { li { span class={ "badge " (t.class()) } { (t.meaning()) } } }
        }
        div.scroll {
            table.steps.cards {
                thead { tr {
                    th scope="col" { "Step" } th scope="col" { "Status" } th scope="col" { "Attempts" }
                    th scope="col" { "Answer" } th scope="col" { "Compensation" }
                } }
                tbody {
                    @for ((step, s), v) in def.steps.iter().zip(view.state.steps()).zip(&response.steps) {
                        tr #{ "step-" (step.name) } data-step=(step.name) {
                            th scope="row" { (step.name) br; span.muted { (sagas::render::describe(&step.action)) } }
                            td data-label="Status" {
                                (page::badge(tone::step(s.status)))
                                // A step undone (or being undone) although its outcome was unknown.
                                @if v.outcome_unknown && s.status != sagas::StepStatus::PossiblyApplied {
                                    br; span.muted { "its outcome was unknown" }
                                }
                            }
                            td.num data-label="Attempts" { (v.attempts) }
                            td data-label="Answer" {
                                // An error before a success is history: the timeline has it.
                                @match (&v.output, &s.error) {
                                    (Some(output), _) => { (page::json(output)) }
                                    (None, Some(e)) => { (timeline::error(e)) }
                                    (None, None) => {}
                                }
                            }
                            td data-label="Compensation" {
                                (compensation_label(v.compensation.status))
                                @match v.compensation.attempts {
                                    0 => {}
                                    1 => { " " span.muted { "(1 attempt)" } }
                                    n => { " " span.muted { "(" (n) " attempts)" } }
                                }
                                @if let (Some(e), false) = (&s.compensation_error, v.compensation.status == CompensationStatus::Succeeded) {
                                    br; (timeline::error(e))
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        (timeline::render(&timeline::build(&loaded.events), record.created_at_ms, now))
        h2 { "Input" }
        div #input { (page::json(&record.input)) }
        h2 { "Event log" }
        div.scroll {
            table.events.cards {
                thead { tr { th scope="col" { "#" } th scope="col" { "At (UTC)" } th scope="col" { "Event" } th scope="col" { "Fields" } } }
                tbody {
                    @for e in &loaded.events {
                        @let event = EventView::from(e);
                        tr {
                            td.num data-label="#" { (event.seq) }
                            td data-label="At" { (page::time(e.at_ms)) }
                            td.mono data-label="Event" { (event.r#type) }
                            td.mono.fields data-label="Fields" { (serde_json::to_string(&event.fields).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

fn detail(attempts: u32, compensation: CompensationStatus) -> String {
    let tries = match attempts {
        0 => String::new(),
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let undo = match compensation {
        CompensationStatus::None => "no undo",
        CompensationStatus::NotNeeded => "",
        CompensationStatus::Pending => "undo pending",
        CompensationStatus::Running => "undoing",
        CompensationStatus::Succeeded => "undone",
        CompensationStatus::Failed => "undo failed",
    };
    [tries.as_str(), undo]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · ")
}

fn compensation_label(status: CompensationStatus) -> &'static str {
    match status {
        CompensationStatus::None => "none defined",
        CompensationStatus::NotNeeded => "not needed",
        CompensationStatus::Pending => "pending",
        CompensationStatus::Running => "running",
        CompensationStatus::Succeeded => "succeeded",
        CompensationStatus::Failed => "failed",
    }
}

/// An operator action on a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Cancel,
    Retry,
}

async fn confirm(state: &ApiState, ctx: &Ctx, raw: &str, action: Action) -> Response {
    let view = match saga_id(raw) {
        Ok(id) => state.coordinator.saga(id).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let view = match view {
        Ok(v) => v,
        Err(e) => return page::refusal(ctx, &e),
    };
    let id = view.record.id;
    let (title, explain, button, back) = match action {
        Action::Cancel => (
            "Cancel this saga?",
            "It starts no more steps; the steps that succeeded are compensated, the last first. Steps in flight finish first.",
            "Cancel the saga",
            "Keep it running",
        ),
        Action::Retry => (
            "Retry this saga's compensations?",
            "The compensations that failed run again with fresh attempts, then the unwind goes on.",
            "Retry compensations",
            "Leave it stuck",
        ),
    };
    let path = match action {
        Action::Cancel => "cancel",
        Action::Retry => "retry",
    };
    let body = html! {
        h1 { (title) }
        p { "Saga " a.mono href={ "/ui/sagas/" (id) } { (id) } " (" (view.record.definition) ") is " (page::badge(tone::saga(view.record.status))) "." }
        p { (explain) }
        form.stack method="post" action={ "/ui/sagas/" (id) "/" (path) } {
            input type="hidden" name="csrf" value=(ctx.csrf);
            @if action == Action::Cancel {
                label for="reason" { "Reason (kept in the saga's log)" }
                input #reason type="text" name="reason" value="cancelled from the console" maxlength="500";
            }
            div.actions {
                button.danger[action == Action::Cancel] type="submit" { (button) }
                a href={ "/ui/sagas/" (id) } { (back) }
            }
        }
    };
    page::render(StatusCode::OK, title, ctx, Some(Section::Sagas), body)
}

/// `GET /ui/sagas/{id}/cancel`: asks first.
pub async fn confirm_cancel(State(state): State<ApiState>, ctx: Ctx, Path(raw): Path<String>) -> Response {
    confirm(&state, &ctx, &raw, Action::Cancel).await
}

/// `GET /ui/sagas/{id}/retry`: asks first.
pub async fn confirm_retry(State(state): State<ApiState>, ctx: Ctx, Path(raw): Path<String>) -> Response {
    confirm(&state, &ctx, &raw, Action::Retry).await
}

/// The cancel form.
#[derive(Debug, Deserialize)]
pub struct CancelForm {
    reason: Option<String>,
}

/// The retry form (only the CSRF token, which [`Posted`] checks).
#[derive(Debug, Deserialize)]
pub struct RetryForm {}

/// `POST /ui/sagas/{id}/cancel`: `POST /v1/sagas/{id}/cancel`'s handler does it.
pub async fn cancel(
    State(state): State<ApiState>,
    ctx: Ctx,
    Path(raw): Path<String>,
    Posted(form): Posted<CancelForm>,
) -> Response {
    let id = match saga_id(&raw) {
        Ok(id) => id,
        Err(e) => return page::refusal(&ctx, &e),
    };
    let reason = form.reason.filter(|r| !r.trim().is_empty());
    let body = MaybeJson(Some(Some(CancelRequest { reason })));
    match api::cancel(State(state), SagaId(id), body).await {
        Ok(_) => Redirect::to(&format!("/ui/sagas/{id}?done=cancel")).into_response(),
        Err(e) => page::refusal(&ctx, &e),
    }
}

/// `POST /ui/sagas/{id}/retry`: `POST /v1/sagas/{id}/retry`'s handler does it.
pub async fn retry(
    State(state): State<ApiState>,
    ctx: Ctx,
    Path(raw): Path<String>,
    Posted(_): Posted<RetryForm>,
) -> Response {
    let id = match saga_id(&raw) {
        Ok(id) => id,
        Err(e) => return page::refusal(&ctx, &e),
    };
    match api::retry(State(state), SagaId(id)).await {
        Ok(_) => Redirect::to(&format!("/ui/sagas/{id}?done=retry")).into_response(),
        Err(e) => page::refusal(&ctx, &e),
    }
}
