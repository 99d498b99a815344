//! A participant whose answers the test decides, for sagas that must be caught in a given
//! state: `POST /hold` answers only once released (a saga stays running), `POST /undo`
//! answers 503 while broken (a saga ends stuck), `POST /ok` succeeds and `POST /refuse`
//! answers 422.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The participant's switches and counters.
pub struct Controlled {
    released: watch::Sender<bool>,
    broken: AtomicBool,
    /// `POST /hold` requests waiting now.
    pub holding: AtomicU32,
    /// `POST /undo` requests answered 200.
    pub undone: AtomicU32,
    /// The participant's base URL.
    pub url: String,
}

impl Controlled {
    /// Serves the participant on a free loopback port; `/undo` starts broken or not.
    pub async fn start(broken: bool) -> Arc<Controlled> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let controlled = Arc::new(Controlled {
            released: watch::channel(false).0,
            broken: AtomicBool::new(broken),
            holding: AtomicU32::new(0),
            undone: AtomicU32::new(0),
            url,
        });
        let app = Router::new()
            .route("/hold", post(hold))
            .route("/ok", post(|| async { Json(json!({"ok": true})) }))
            .route(
                "/refuse",
                post(|| async {
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Json(json!({"error": "refused by the test"})),
                    )
                }),
            )
            .route("/undo", post(undo))
            .with_state(controlled.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        controlled
    }

    /// Lets every held request, and every later one, answer.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Makes `/undo` succeed from now on.
    pub fn repair(&self) {
        self.broken.store(false, Ordering::SeqCst);
    }
}

async fn hold(State(c): State<Arc<Controlled>>) -> Json<Value> {
    c.holding.fetch_add(1, Ordering::SeqCst);
    let mut released = c.released.subscribe();
    let _ = released.wait_for(|r| *r).await;
    c.holding.fetch_sub(1, Ordering::SeqCst);
    Json(json!({"held": true}))
}

async fn undo(State(c): State<Arc<Controlled>>) -> (StatusCode, Json<Value>) {
    if c.broken.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "undo is down"})));
    }
    c.undone.fetch_add(1, Ordering::SeqCst);
    (StatusCode::OK, Json(json!({"undone": true})))
}
