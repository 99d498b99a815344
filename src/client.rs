//! The CLI's commands that talk to a coordinator's REST API, and the offline ones
//! (`definitions validate`, `plan`).

use geosaga::{out, outln};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

use crate::Server;

/// An error answer from the API (a problem details document).
#[derive(Debug)]
pub struct ApiFailure {
    status: u16,
    problem: Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = self
            .problem
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        let detail = self.problem.get("detail").and_then(Value::as_str).unwrap_or("");
        write!(f, "{title} (HTTP {}): {detail}", self.status)?;
        if let Some(errors) = self.problem.get("errors").and_then(Value::as_array) {
            for e in errors {
                let path = e.get("path").and_then(Value::as_str).unwrap_or("");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                write!(f, "\n  {path}: {message}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// Invalid definition files found offline.
#[derive(Debug)]
struct Invalid;

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some definitions are invalid")
    }
}

impl std::error::Error for Invalid {}

/// The exit code for an error (see the binary's documentation).
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<Invalid>().is_some()
        || matches!(
            error.downcast_ref::<geosaga::check::Error>(),
            Some(geosaga::check::Error::Invalid(_))
        )
    {
        return 5;
    }
    match error.downcast_ref::<ApiFailure>().map(|f| f.status) {
        Some(404) => 3,
        Some(409) => 4,
        Some(400 | 422) => 5,
        _ => 1,
    }
}

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            base: server.server.trim_end_matches('/').to_owned(),
            token: server.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the coordinator at {} (is `geosaga dev` or `geosaga serve` running?)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            return Err(ApiFailure { status, problem: value }.into());
        }
        Ok((status, value))
    }
}

fn print_json(value: &Value) {
    outln!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cuts long cell text so that tables fit a terminal (`--json` shows everything).
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max - 1).collect();
    format!("{cut}…")
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
}

/// `geosaga definitions apply`.
pub async fn apply(server: &Server, files: &[PathBuf]) -> anyhow::Result<u8> {
    let api = Api::new(server);
    for file in files {
        let doc = read_json(file)?;
        let (status, answer) = api
            .call(reqwest::Method::POST, "/v1/definitions", Some(&doc))
            .await
            .with_context(|| format!("registering {}", file.display()))?;
        if server.json {
            print_json(&answer);
        } else {
            let what = if status == 201 { "registered" } else { "unchanged" };
            outln!("{what}: {} version {}", text(&answer["name"]), text(&answer["version"]));
            for w in answer["warnings"].as_array().into_iter().flatten() {
                outln!("  warning: {}: {}", text(&w["path"]), text(&w["message"]));
            }
        }
    }
    Ok(0)
}

/// `geosaga definitions validate`: offline, every fault with its path.
pub fn validate(files: &[PathBuf]) -> anyhow::Result<u8> {
    let mut bad = false;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        match sagas::validate::parse_definition(&text) {
            Ok(def) => {
                outln!("ok: {} ({} steps): {}", file.display(), def.steps.len(), def.name);
                for w in &def.warnings {
                    outln!("  warning: {}: {}", w.path, w.message);
                }
            }
            Err(errors) => {
                bad = true;
                outln!("invalid: {}", file.display());
                for e in errors.0 {
                    let path = if e.path.is_empty() {
                        "(document)".to_owned()
                    } else {
                        e.path
                    };
                    outln!("  {path}: {}", e.message);
                }
            }
        }
    }
    if bad { Err(Invalid.into()) } else { Ok(0) }
}

/// `geosaga definitions list`.
pub async fn list_definitions(server: &Server) -> anyhow::Result<u8> {
    let (_, answer) = Api::new(server)
        .call(reqwest::Method::GET, "/v1/definitions", None)
        .await?;
    if server.json {
        print_json(&answer);
        return Ok(0);
    }
    let mut t = table(&["name", "latest version"]);
    for d in answer
        .get("definitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        t.add_row(vec![text(&d["name"]), text(&d["latest_version"])]);
    }
    outln!("{t}");
    Ok(0)
}

/// `geosaga plan`.
pub fn plan(file: &Path, dot: bool) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let def = sagas::validate::parse_definition(&text).map_err(|e| {
        eprintln!("invalid: {}", file.display());
        for e in e.0 {
            eprintln!("  {}: {}", e.path, e.message);
        }
        anyhow::Error::from(Invalid)
    })?;
    if dot {
        out!("{}", sagas::render::plan_dot(&def));
    } else {
        out!("{}", sagas::render::plan_text(&def));
    }
    Ok(0)
}

/// `geosaga saga start`.
pub async fn start(
    server: &Server,
    definition: &str,
    input: &str,
    version: Option<i64>,
    idempotency_key: Option<String>,
    wait: bool,
) -> anyhow::Result<u8> {
    let input: Value = serde_json::from_str(input).map_err(|e| anyhow!("--input is not valid JSON: {e}"))?;
    let body =
        json!({"definition": definition, "version": version, "input": input, "idempotency_key": idempotency_key});
    let path = if wait { "/v1/sagas?wait_ms=60000" } else { "/v1/sagas" };
    let (_, saga) = Api::new(server).call(reqwest::Method::POST, path, Some(&body)).await?;
    print_saga(server, &saga);
    Ok(if wait { outcome_code(&saga) } else { 0 })
}

fn outcome_code(saga: &Value) -> u8 {
    match saga["status"].as_str() {
        Some("completed") => 0,
        Some("compensated") => 10,
        Some("stuck") => 11,
        _ => 12,
    }
}

fn print_saga(server: &Server, saga: &Value) {
    if server.json {
        print_json(saga);
        return;
    }
    outln!(
        "saga {}  {} v{}  status: {}",
        text(&saga["id"]),
        text(&saga["definition"]),
        text(&saga["version"]),
        text(&saga["status"])
    );
    if !saga["error"].is_null() {
        outln!("error: {}", text(&saga["error"]));
    }
    if let Some(url) = saga["trace_url"].as_str() {
        outln!("trace: {url}");
    }
    let mut t = table(&["step", "status", "attempts", "output / last error", "compensation"]);
    for s in saga["steps"].as_array().into_iter().flatten() {
        let detail = if s["output"].is_null() {
            text(&s["error"]["message"])
        } else {
            text(&s["output"])
        };
        let c = &s["compensation"];
        let comp = match c["attempts"].as_u64() {
            Some(1) => format!("{} (1 attempt)", text(&c["status"])),
            Some(n) if n > 1 => format!("{} ({n} attempts)", text(&c["status"])),
            _ => text(&c["status"]),
        };
        // A compensated step whose action's outcome was unknown says so.
        let status = match (s["status"].as_str(), s["outcome_unknown"].as_bool()) {
            (Some(status @ ("compensating" | "compensated" | "compensation_failed")), Some(true)) => {
                format!("{status} (outcome was unknown)")
            }
            _ => text(&s["status"]),
        };
        t.add_row(vec![
            text(&s["name"]),
            status,
            text(&s["attempts"]),
            shorten(&detail, 70),
            comp,
        ]);
    }
    outln!("{t}");
    // Why a compensation failed is what an operator of a stuck saga needs first.
    for s in saga["steps"].as_array().into_iter().flatten() {
        let c = &s["compensation"];
        if c["status"] == "failed" && !c["error"].is_null() {
            outln!(
                "compensation of {} failed: {}",
                text(&s["name"]),
                text(&c["error"]["message"])
            );
        }
    }
}

/// `geosaga saga show`.
pub async fn show(server: &Server, id: &str) -> anyhow::Result<u8> {
    let (_, saga) = Api::new(server)
        .call(reqwest::Method::GET, &format!("/v1/sagas/{id}"), None)
        .await?;
    print_saga(server, &saga);
    Ok(0)
}

/// `geosaga saga list`.
pub async fn list(
    server: &Server,
    status: Option<String>,
    definition: Option<String>,
    limit: u32,
    cursor: Option<String>,
) -> anyhow::Result<u8> {
    let mut query = vec![format!("limit={limit}")];
    query.extend(status.map(|s| format!("status={s}")));
    query.extend(definition.map(|d| format!("definition={d}")));
    query.extend(cursor.map(|c| format!("cursor={c}")));
    let (_, page) = Api::new(server)
        .call(reqwest::Method::GET, &format!("/v1/sagas?{}", query.join("&")), None)
        .await?;
    if server.json {
        print_json(&page);
        return Ok(0);
    }
    let mut t = table(&["id", "definition", "status", "created", "error"]);
    for s in page["sagas"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text(&s["id"]),
            text(&s["definition"]),
            text(&s["status"]),
            text(&s["created_at"]),
            shorten(&text(&s["error"]), 60),
        ]);
    }
    outln!("{t}");
    if let Some(next) = page["next_cursor"].as_str() {
        outln!("more: --cursor {next}");
    }
    Ok(0)
}

/// `geosaga saga events`.
pub async fn events(server: &Server, id: &str) -> anyhow::Result<u8> {
    let (_, log) = Api::new(server)
        .call(reqwest::Method::GET, &format!("/v1/sagas/{id}/events"), None)
        .await?;
    if server.json {
        print_json(&log);
        return Ok(0);
    }
    let mut t = table(&["seq", "at", "type", "step", "attempt", "detail"]);
    for e in log["events"].as_array().into_iter().flatten() {
        let detail = if !e["error"].is_null() {
            text(&e["error"]["message"])
        } else if !e["output"].is_null() {
            text(&e["output"])
        } else {
            text(&e["reason"])
        };
        t.add_row(vec![
            text(&e["seq"]),
            text(&e["at"]),
            text(&e["type"]),
            text(&e["step"]),
            text(&e["attempt"]),
            shorten(&detail, 70),
        ]);
    }
    outln!("{t}");
    Ok(0)
}

/// `geosaga saga cancel`.
pub async fn cancel(server: &Server, id: &str, reason: &str) -> anyhow::Result<u8> {
    let body = json!({"reason": reason});
    let (_, saga) = Api::new(server)
        .call(reqwest::Method::POST, &format!("/v1/sagas/{id}/cancel"), Some(&body))
        .await?;
    print_saga(server, &saga);
    Ok(0)
}

/// `geosaga saga retry`.
pub async fn retry(server: &Server, id: &str) -> anyhow::Result<u8> {
    let (_, saga) = Api::new(server)
        .call(reqwest::Method::POST, &format!("/v1/sagas/{id}/retry"), None)
        .await?;
    print_saga(server, &saga);
    Ok(0)
}
