//! The regions this coordinator's region steps use (its `--region NAME=URL` list): what
//! each one's `GET /v1/regions` reports (itself and its peers: health, role, closed
//! timestamp, replication lag) and its `GET /v1/conflicts`, asked of all of them at once
//! when the page is shown. A region that does not answer says so; the page still shows.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::page::{self, Section};
use super::session::Ctx;
use crate::api::ApiState;
use crate::api::views::rfc3339;
use crate::runner::body::{self, Capped};
use crate::runner::region::RegionRunner;

/// How long a region has to answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from a region.
const MAX_BODY: usize = 1 << 20;

/// One row of a region's `GET /v1/regions` (the fields shown; others are ignored).
#[derive(Debug, Clone, Deserialize)]
struct RegionRow {
    name: String,
    #[serde(default)]
    is_self: bool,
    #[serde(default)]
    healthy: bool,
    role: Option<String>,
    state: Option<String>,
    closed_ts: Option<String>,
    replication_lag_ms: Option<u64>,
    unacked_entries: Option<i64>,
    last_contact_ms_ago: Option<u64>,
    anti_entropy_gap: Option<bool>,
    /// Exchanges refused for clock skew (`regions::protocol::ClockSkew`, its `error` shown).
    #[serde(default)]
    clock_skew: Vec<ClockSkew>,
}

/// One side of a clock-skew refusal, as `/v1/regions` shows it.
#[derive(Debug, Clone, Deserialize)]
struct ClockSkew {
    error: String,
}

/// A region's `GET /v1/conflicts`.
#[derive(Debug, Clone, Deserialize)]
struct Conflicts {
    prefixes: Vec<PrefixConflicts>,
}

#[derive(Debug, Clone, Deserialize)]
struct PrefixConflicts {
    prefix: String,
    overwritten: i64,
}

/// What one configured region answered.
struct Report {
    name: String,
    url: String,
    rows: Result<Vec<RegionRow>, String>,
    conflicts: Result<Conflicts, String>,
    took: Duration,
}

async fn get<T: DeserializeOwned>(regions: &RegionRunner, url: &str) -> Result<T, String> {
    let request = regions.request(reqwest::Method::GET, url).timeout(TIMEOUT);
    let response = request.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let body = match body::read(response, MAX_BODY)
        .await
        .map_err(|e| format!("answer cut: {e}"))?
    {
        Capped::Whole(body) => body,
        Capped::Over(_) => return Err(format!("answer larger than {MAX_BODY} bytes")),
    };
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        return Err(format!("HTTP {status}: {text}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))
}

async fn ask(regions: &RegionRunner, name: String, url: String) -> Report {
    let started = Instant::now();
    let (list, conflicts) = (format!("{url}/v1/regions"), format!("{url}/v1/conflicts"));
    let (rows, conflicts) = tokio::join!(
        get::<Vec<RegionRow>>(regions, &list),
        get::<Conflicts>(regions, &conflicts)
    );
    Report {
        name,
        url,
        rows,
        conflicts,
        took: started.elapsed(),
    }
}

/// `GET /ui/regions`.
pub async fn page(State(state): State<ApiState>, ctx: Ctx) -> Response {
    let regions = state.coordinator.runners().http.regions();
    let reports = futures::future::join_all(
        regions
            .directory()
            .regions()
            .iter()
            .map(|(name, url)| ask(regions, name.clone(), url.clone())),
    )
    .await;
    let body = html! {
        h1 { "Regions" }
        @if reports.is_empty() {
            p { "This coordinator has no regions configured. Region steps need them: "
                code { "geosaga serve --region us-east=http://HOST:7401" } " (or " code { "[regions]" } " in its config file); "
                code { "geosaga dev" } " starts three." }
        } @else {
            p.note { "What each region's " code { "GET /v1/regions" } " reports, asked now. "
                a href="/ui/regions" { "Ask again" } }
            @for report in &reports { (card(report)) }
        }
    };
    page::render(StatusCode::OK, "Regions", &ctx, Some(Section::Regions), body)
}

fn card(report: &Report) -> Markup {
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".to_owned());
    html! {
        section.card aria-labelledby={ "region-" (report.name) } {
            h2 #{ "region-" (report.name) } { (report.name) " " span.muted.mono { (report.url) } }
            @match &report.rows {
                Err(e) => { p.alert role="alert" { "Did not answer: " (e) } }
                Ok(rows) => {
                    p.note { "Answered in " (page::duration(report.took.as_millis() as i64)) "." }
                    div.scroll {
                        table {
                            thead { tr {
                                th scope="col" { "Region" } th scope="col" { "Health" } th scope="col" { "Role" }
                                th scope="col" { "Closed timestamp" } th scope="col" { "Replication lag" }
                                th scope="col" { "Unacknowledged" } th scope="col" { "Last contact" }
                            } }
                            tbody {
                                @for r in rows {
                                    tr {
                                        th scope="row" { (r.name) @if r.is_self { " " span.muted { "(itself)" } } }
                                        td {
                                            @if r.healthy { span.badge.t-succeeded { "healthy" } } @else { span.badge.t-failed { "unhealthy" } }
                                            @if let Some(s) = &r.state { " " span.muted { (s) } }
                                            @if r.anti_entropy_gap == Some(true) { " " span.badge.t-possibly-applied { "gap: repairing" } }
                                            @for skew in &r.clock_skew { br; span.badge.t-failed title=(skew.error) { "clock skew" } " " span.muted { (skew.error) } }
                                        }
                                        td { (r.role.as_deref().unwrap_or("—")) }
                                        td { (closed(r.closed_ts.as_deref())) }
                                        td.num { (ms(r.replication_lag_ms)) }
                                        td.num { (r.unacked_entries.map(|n| n.to_string()).unwrap_or_else(|| "—".to_owned())) }
                                        td.num { (ms(r.last_contact_ms_ago)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @match &report.conflicts {
                Err(e) => { p.note { "Conflicts: " (e) } }
                Ok(c) if c.prefixes.is_empty() => { p.note { "Conflicts: no key here is written anywhere (no last-writer-wins conflicts possible)." } }
                Ok(c) => {
                    p { "Conflicts (concurrent writes overwritten by last-writer-wins): "
                        @for (n, p) in c.prefixes.iter().enumerate() {
                            @if n > 0 { ", " }
                            code { (p.prefix) } " " (p.overwritten)
                        }
                    }
                }
            }
        }
    }
}

/// A closed timestamp (`WALL_MS.LOGICAL`, a hybrid logical clock) as its wall time, with
/// the exact value on hover.
fn closed(ts: Option<&str>) -> Markup {
    let Some(ts) = ts else { return html! { "—" } };
    match ts.split('.').next().and_then(|wall| wall.parse::<i64>().ok()) {
        Some(wall) => {
            let full = rfc3339(wall);
            html! { time datetime=(full) title={ "HLC " (ts) } { (full.get(11..23).unwrap_or(&full)) " UTC" } }
        }
        None => html! { span.mono { (ts) } },
    }
}
