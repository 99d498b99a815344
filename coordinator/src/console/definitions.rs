//! The definitions: each with its versions, its DAG, its plan (the stages forward and the
//! order compensations would run in) and its JSON document.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use sagas::SagaDefinition;
use serde::Deserialize;

use super::dag::{self, Node};
use super::page::{self, Section};
use super::session::Ctx;
use crate::api::extract::param;
use crate::api::{ApiError, ApiState};

/// `GET /ui/definitions`.
pub async fn list(State(state): State<ApiState>, ctx: Ctx) -> Response {
    let definitions = match state.coordinator.store().list_definitions().await {
        Ok(d) => d,
        Err(e) => return page::refusal(&ctx, &ApiError::from(e)),
    };
    let now = page::now_ms();
    let body = html! {
        h1 { "Definitions" }
        @if definitions.is_empty() {
            p { "No definition yet. Register one with " code { "geosaga definitions apply FILE" } "." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Latest version" } th scope="col" { "Stored" } th scope="col" { "Sagas" } } }
                    tbody {
                        @for d in &definitions {
                            tr {
                                td { a href={ "/ui/definitions/" (d.name) } { (d.name) } }
                                td.num { "v" (d.latest_version) }
                                td { (page::ago(d.updated_at_ms, now)) }
                                td { a href={ "/ui?definition=" (d.name) } { "its sagas" } }
                            }
                        }
                    }
                }
            }
        }
    };
    page::render(StatusCode::OK, "Definitions", &ctx, Some(Section::Definitions), body)
}

/// The query of one definition's page.
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

/// `GET /ui/definitions/{name}?version=`.
pub async fn show(
    State(state): State<ApiState>,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Response {
    match load(&state, &name, query.version.as_deref()).await {
        Ok(markup) => page::render(StatusCode::OK, &name, &ctx, Some(Section::Definitions), markup),
        Err(e) => page::refusal(&ctx, &e),
    }
}

async fn load(state: &ApiState, name: &str, version: Option<&str>) -> Result<Markup, ApiError> {
    let version = param::<i64>(
        "version",
        version.filter(|v| !v.is_empty()),
        "a version number (1 or more)",
    )?;
    let (latest, _) = state.coordinator.definition(name, None).await?;
    let (record, def) = match version {
        Some(v) => state.coordinator.definition(name, Some(v)).await?,
        None => state.coordinator.definition(name, None).await?,
    };
    let nodes: Vec<Node> = def
        .steps
        .iter()
        .map(|s| Node {
            shown: None,
            detail: sagas::render::describe(&s.action),
        })
        .collect();
    Ok(html! {
        h1 { (def.name) }
        nav.actions aria-label="Versions" {
            "Versions:"
            @for v in (1..=latest.version).rev() {
                @if v == record.version {
                    a href={ "/ui/definitions/" (name) "?version=" (v) } aria-current="page" { strong { "v" (v) } }
                } @else {
                    a href={ "/ui/definitions/" (name) "?version=" (v) } { "v" (v) }
                }
            }
            a href={ "/ui?definition=" (name) } { "Its sagas" }
        }
        @if let Some(description) = &def.description { p { (description) } }
        dl.facts {
            dt { "Version" } dd { (record.version) @if record.version == latest.version { " (latest)" } }
            dt { "Stored" } dd { (page::time(record.created_at_ms)) " UTC" }
            dt { "Content hash" } dd.mono { (record.content_hash) }
        }
        h2 { "DAG" }
        (dag::render(&def, &nodes))
        h2 { "Plan" }
        (plan(&def))
        h2 { "JSON" }
        (page::json(&record.document))
    })
}

/// The stages forward, then the order compensations run in when the last stage fails.
fn plan(def: &SagaDefinition) -> Markup {
    let stages = sagas::render::stages(def);
    html! {
        h3 { "Forward" }
        ol {
            @for stage in &stages {
                li {
                    @if stage.len() > 1 { "In parallel: " }
                    @for (n, &i) in stage.iter().enumerate() {
                        @if n > 0 { "; " }
                        strong { (def.steps[i].name) } " "
                        span.muted { (sagas::render::describe(&def.steps[i].action)) }
                    }
                }
            }
        }
        h3 { "Unwind order" }
        p.note { "The reverse of the dependency graph: a step is undone after every step that depended on it." }
        ol {
            @for stage in stages.iter().rev() {
                @for &i in stage {
                    @let step = &def.steps[i];
                    li {
                        @match &step.compensation {
                            Some(c) => { "undo " strong { (step.name) } " " span.muted { (sagas::render::describe(c)) } }
                            None => { strong { (step.name) } " has no compensation (skipped)" }
                        }
                    }
                }
            }
        }
    }
}
