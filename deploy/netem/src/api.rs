//! The Toxiproxy-compatible HTTP API of `geosaga-netem`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{Netem, NetemError, ProxySpec, parse_toxic};

/// The API's routes.
pub fn router(netem: Netem) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list).post(create))
        .route("/proxies/{name}", get(show).post(update).delete(delete))
        .route("/proxies/{name}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{name}/toxics/{toxic}",
            get(show_toxic).post(update_toxic).delete(delete_toxic),
        )
        .with_state(netem)
}

impl IntoResponse for NetemError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            axum::Json(json!({"error": self.message, "status": self.status})),
        )
            .into_response()
    }
}

type Answer = Result<Response, NetemError>;

fn json_body(body: &Bytes) -> Result<Value, NetemError> {
    serde_json::from_slice(body).map_err(|e| NetemError::new(400, format!("the body is not JSON: {e}")))
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok((status, axum::Json(body)).into_response())
}

async fn version() -> Answer {
    ok(
        StatusCode::OK,
        json!({"version": format!("geosaga-netem {}", env!("CARGO_PKG_VERSION"))}),
    )
}

async fn reset(State(netem): State<Netem>) -> Answer {
    let failures = netem.reset_all(false).await;
    if failures.is_empty() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(NetemError::new(500, failures.join("; ")))
    }
}

async fn list(State(netem): State<Netem>) -> Answer {
    let mut all = Map::new();
    for (name, link) in netem.all().await {
        all.insert(name, link.to_json().await);
    }
    ok(StatusCode::OK, Value::Object(all))
}

fn spec(body: Value) -> Result<ProxySpec, NetemError> {
    serde_json::from_value(body)
        .map_err(|e| NetemError::new(400, format!("a proxy is {{name, listen, upstream, enabled}}: {e}")))
}

async fn create(State(netem): State<Netem>, body: Bytes) -> Answer {
    let link = netem.create(spec(json_body(&body)?)?).await?;
    ok(StatusCode::CREATED, link.to_json().await)
}

/// Creates the proxies given, or updates those that exist (a changed listen address or
/// upstream replaces the proxy; its toxics go with it).
async fn populate(State(netem): State<Netem>, body: Bytes) -> Answer {
    let list = match json_body(&body)? {
        Value::Array(items) => items,
        Value::Object(mut o) if o.get("proxies").is_some_and(Value::is_array) => o
            .remove("proxies")
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default(),
        _ => return Err(NetemError::new(400, "populate takes a list of proxies")),
    };
    let specs = list.into_iter().map(spec).collect::<Result<Vec<_>, _>>()?;
    let mut created = Vec::new();
    for s in specs {
        let existing = netem.get(&s.name).await.ok();
        let link = match existing {
            Some(link) if link.upstream == s.upstream && link_listens_as(&link, &s.listen).await => {
                set_enabled(&link, s.enabled).await?;
                link
            }
            Some(_) => {
                netem.delete(&s.name).await?;
                netem.create(s).await?
            }
            None => netem.create(s).await?,
        };
        created.push(link.to_json().await);
    }
    ok(StatusCode::CREATED, json!({"proxies": created}))
}

async fn link_listens_as(link: &super::Link, listen: &str) -> bool {
    link.listen().await == listen || listen.ends_with(":0")
}

async fn set_enabled(link: &super::Link, enabled: bool) -> Result<(), NetemError> {
    if enabled {
        link.enable().await.map_err(|e| NetemError::new(500, e))
    } else {
        link.disable().await;
        Ok(())
    }
}

async fn show(State(netem): State<Netem>, Path(name): Path<String>) -> Answer {
    ok(StatusCode::OK, netem.get(&name).await?.to_json().await)
}

/// Toxiproxy's update: only `enabled` may change here (a new listen address or upstream
/// is a new proxy).
async fn update(State(netem): State<Netem>, Path(name): Path<String>, body: Bytes) -> Answer {
    let link = netem.get(&name).await?;
    let body = json_body(&body)?;
    let obj = body
        .as_object()
        .ok_or_else(|| NetemError::new(400, "the body is a JSON object"))?;
    let listen = link.listen().await;
    for (field, value) in obj {
        match field.as_str() {
            "enabled" => {
                let enabled = value
                    .as_bool()
                    .ok_or_else(|| NetemError::new(400, format!("enabled: {value} is not a boolean")))?;
                set_enabled(&link, enabled).await?;
                tracing::info!(proxy = %name, enabled, "proxy switched");
            }
            "name" if value.as_str() == Some(name.as_str()) => {}
            "upstream" if value.as_str() == Some(link.upstream.as_str()) => {}
            "listen" if value.as_str().is_some_and(|l| l == listen || l.ends_with(":0")) => {}
            other => {
                return Err(NetemError::new(
                    400,
                    format!(
                        "{other}: geosaga-netem changes only `enabled` of a proxy; delete and create it to change {other}"
                    ),
                ));
            }
        }
    }
    ok(StatusCode::OK, link.to_json().await)
}

async fn delete(State(netem): State<Netem>, Path(name): Path<String>) -> Answer {
    netem.delete(&name).await?;
    tracing::info!(proxy = %name, "proxy deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn toxics(State(netem): State<Netem>, Path(name): Path<String>) -> Answer {
    let link = netem.get(&name).await?;
    let list: Vec<Value> = link.toxics().iter().map(|t| t.to_json()).collect();
    ok(StatusCode::OK, Value::Array(list))
}

async fn add_toxic(State(netem): State<Netem>, Path(name): Path<String>, body: Bytes) -> Answer {
    let link = netem.get(&name).await?;
    let toxic = parse_toxic(&json_body(&body)?, None)?;
    link.add_toxic(toxic.clone())?;
    tracing::info!(proxy = %name, toxic = %toxic.to_json(), "toxic added");
    ok(StatusCode::OK, toxic.to_json())
}

async fn show_toxic(State(netem): State<Netem>, Path((name, toxic)): Path<(String, String)>) -> Answer {
    let link = netem.get(&name).await?;
    let toxics = link.toxics();
    let found = toxics
        .iter()
        .find(|t| t.name == toxic)
        .ok_or_else(|| NetemError::new(404, format!("toxic {toxic} not found")))?;
    ok(StatusCode::OK, found.to_json())
}

async fn update_toxic(State(netem): State<Netem>, Path((name, toxic)): Path<(String, String)>, body: Bytes) -> Answer {
    let link = netem.get(&name).await?;
    let toxics = link.toxics();
    let current = toxics
        .iter()
        .find(|t| t.name == toxic)
        .ok_or_else(|| NetemError::new(404, format!("toxic {toxic} not found")))?;
    let mut updated = parse_toxic(&json_body(&body)?, Some(current))?;
    updated.name = current.name.clone();
    link.replace_toxic(updated.clone())?;
    tracing::info!(proxy = %name, toxic = %updated.to_json(), "toxic updated");
    ok(StatusCode::OK, updated.to_json())
}

async fn delete_toxic(State(netem): State<Netem>, Path((name, toxic)): Path<(String, String)>) -> Answer {
    netem.get(&name).await?.remove_toxic(&toxic)?;
    tracing::info!(proxy = %name, toxic, "toxic removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
