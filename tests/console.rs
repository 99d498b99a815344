//! The web console in a real browser: Debian's headless Chromium over WebDriver, against
//! real `geosaga dev` and `geosaga serve` processes on free ports. Screenshots are kept in
//! `target/console-screenshots/`. Without Chromium these tests fail, saying how to get it.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use serde_json::{Value, json};
use support::browser::{Browser, PATIENCE};
use support::controlled::Controlled;
use testkit::free_port;
use testkit::process::GeosagaProcess;

/// `POST {url}{path}` with `body`, with a bearer token when given.
async fn post(url: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{url}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Starts a saga and waits for it to settle (up to 10 s); returns its view.
async fn run_saga(url: &str, token: Option<&str>, body: Value) -> Value {
    let (status, saga) = post(url, "/v1/sagas?wait_ms=10000", token, body).await;
    assert_eq!(status, 201, "{saga}");
    saga
}

/// A definition with one step per `(name, action path, compensation path)`, calling the
/// controlled participant, each after the one before.
fn definition(name: &str, participant: &Controlled, steps: &[(&str, &str, Option<&str>)]) -> Value {
    let call = |path: &str| json!({"http": {"method": "POST", "url": format!("{}{path}", participant.url)}});
    let steps: Vec<Value> = steps
        .iter()
        .map(|(step, action, undo)| {
            let mut s = json!({"name": step, "action": call(action), "timeout_ms": 60_000});
            if let Some(undo) = undo {
                s["compensation"] = call(undo);
            }
            s
        })
        .collect();
    json!({
        "name": name,
        "defaults": {
            "retry": {"max_attempts": 1},
            "compensation_retry": {"max_attempts": 2, "initial_backoff_ms": 20, "max_backoff_ms": 40}
        },
        "steps": steps
    })
}

async fn register(url: &str, token: Option<&str>, document: Value) {
    let (status, body) = post(url, "/v1/definitions", token, document).await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

/// `geosaga serve` on SQLite in `dir`, letting steps call any host.
async fn serve(dir: &tempfile::TempDir, extra: &[&str]) -> GeosagaProcess {
    let db = dir.path().join("geosaga.db");
    let mut args = vec!["--allow-any-host"];
    args.extend_from_slice(extra);
    GeosagaProcess::start(db.to_str().unwrap(), &args, dir.path().join("serve.log")).await
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compensated_transfer_shows_the_refusal_and_the_undo() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let args = [
        "dev",
        "--listen",
        url.trim_start_matches("http://"),
        "--demo-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        data.to_str().unwrap(),
        "--regions-port",
        "0",
        "--jaeger-ui",
        "http://jaeger.example:16686",
    ];
    let dev = GeosagaProcess::launch(
        args.iter().map(|a| (*a).to_owned()).collect(),
        Vec::new(),
        dir.path().join("dev.log"),
        url.clone(),
    );
    dev.wait_ready().await;
    until("the banner names the console", || {
        dev.log_text().contains(&format!("Web console: {url}/ui"))
    })
    .await;
    let input = json!({"from": "alice", "to": "closed", "amount": 50});
    let saga = run_saga(&url, None, json!({"definition": "transfer", "input": input})).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    let id = saga["id"].as_str().unwrap();

    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{url}/")).await;
    assert_eq!(browser.url().await, format!("{url}/ui"), "/ redirects to the console");
    let row = browser.wait_for_text("#sagas tbody tr", "compensated").await;
    assert!(row.contains("transfer"), "{row}");
    browser.click(&format!("a[href='/ui/sagas/{id}']")).await;
    browser.wait_for_text("dl.facts", "compensated").await;

    let node = |step: &str| format!("g.node[data-step='{step}']");
    let credit = browser.find(&node("credit")).await;
    assert!(credit.attr("class").await.unwrap().unwrap().contains("t-failed"));
    assert_eq!(credit.attr("data-status").await.unwrap().as_deref(), Some("failed"));
    let stroke = browser
        .eval("return getComputedStyle(document.querySelector(\"g.node[data-step='credit'] rect\")).stroke;")
        .await;
    assert_eq!(stroke, "rgb(207, 34, 46)", "the failed step is red");
    let answer = browser.wait_for_text("tr[data-step='credit']", "422").await;
    assert!(answer.contains("account closed"), "the participant's answer: {answer}");
    let debit = browser.find(&node("debit")).await;
    assert_eq!(debit.attr("data-status").await.unwrap().as_deref(), Some("compensated"));
    assert!(debit.attr("class").await.unwrap().unwrap().contains("t-compensated"));
    browser
        .wait_for_text("tr[data-step='debit']", "succeeded (1 attempt)")
        .await;
    let notify = browser.find(&node("notify")).await;
    assert_eq!(notify.attr("data-status").await.unwrap().as_deref(), Some("not run"));
    browser.wait_for_text("table.timeline", "debit (compensation)").await;
    browser.wait_for_text("table.events", "compensation_succeeded").await;
    let trace = browser.find("a[href^='http://jaeger.example:16686/trace/']").await;
    assert_eq!(trace.text().await.unwrap(), "Open in Jaeger");
    let shot = browser.screenshot("compensated-saga-1280").await;
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);

    // A narrow window: nothing wider than the window but the tables' own scrolling.
    browser.client().set_window_size(400, 900).await.unwrap();
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert_eq!(overflow, 0, "the page scrolls sideways at 400 px");
    browser.screenshot("compensated-saga-400").await;

    browser.client().set_window_size(1280, 900).await.unwrap();
    browser.goto(&format!("{url}/ui/regions")).await;
    for region in ["us-east", "eu-west", "ap-south"] {
        browser.wait_for_text(&format!("#region-{region}"), region).await;
    }
    let cards = browser
        .client()
        .find_all(fantoccini::Locator::Css("section.card"))
        .await
        .unwrap();
    assert_eq!(cards.len(), 3);
    for card in cards {
        let text = card.text().await.unwrap();
        assert!(text.contains("Answered in") && text.contains("healthy"), "{text}");
    }
    browser.screenshot("regions-1280").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_retry_a_stuck_saga_and_cancel_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let participant = Controlled::start(true).await;
    let coordinator = serve(&dir, &[]).await;
    let url = coordinator.url.clone();
    let fragile = definition(
        "fragile",
        &participant,
        &[("charge", "/ok", Some("/undo")), ("ship", "/refuse", None)],
    );
    register(&url, None, fragile).await;
    register(
        &url,
        None,
        definition("held", &participant, &[("reserve", "/hold", Some("/undo"))]),
    )
    .await;
    let stuck = run_saga(&url, None, json!({"definition": "fragile"})).await;
    assert_eq!(stuck["status"], "stuck", "{stuck}");
    let stuck = stuck["id"].as_str().unwrap().to_owned();

    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{url}/ui/sagas/{stuck}")).await;
    browser.wait_for_text("dl.facts", "stuck").await;
    browser.wait_for_text("tr[data-step='charge']", "503").await;
    browser.click(&format!("a[href='/ui/sagas/{stuck}/retry']")).await;
    browser.wait_for_text("h1", "Retry this saga's compensations?").await;
    participant.repair();
    browser.click("main form button[type='submit']").await;
    browser.wait_for_text(".flash", "Retry requested").await;
    browser.wait_for_text("dl.facts", "compensated").await;
    let charge = browser.find("g.node[data-step='charge']").await;
    assert_eq!(
        charge.attr("data-status").await.unwrap().as_deref(),
        Some("compensated")
    );
    browser.wait_for_text("table.timeline", "Operator retry").await;
    browser.screenshot("retried-saga").await;

    let (status, held) = post(&url, "/v1/sagas", None, json!({"definition": "held"})).await;
    assert_eq!(status, 201, "{held}");
    let held = held["id"].as_str().unwrap().to_owned();
    until("the held step is in flight", || {
        participant.holding.load(Ordering::SeqCst) == 1
    })
    .await;
    browser.goto(&format!("{url}/ui/sagas/{held}")).await;
    browser.wait_for_text("dl.facts", "running").await;
    browser.click(&format!("a[href='/ui/sagas/{held}/cancel']")).await;
    let reason = browser.find("input#reason").await;
    reason.clear().await.unwrap();
    reason.send_keys("the operator stops it").await.unwrap();
    browser.click("main form button[type='submit']").await;
    browser.wait_for_text(".flash", "Cancel requested").await;
    participant.release();
    // The page refreshes itself: the step in flight ends, then is undone.
    browser.wait_for_text("dl.facts", "compensated").await;
    browser.wait_for_text("table.events", "the operator stops it").await;
    let reserve = browser.find("g.node[data-step='reserve']").await;
    assert_eq!(
        reserve.attr("data-status").await.unwrap().as_deref(),
        Some("compensated")
    );
    assert_eq!(
        participant.undone.load(Ordering::SeqCst),
        2,
        "charge and reserve undone once each"
    );

    // Cancelling it again is refused, and the page shows the API's problem document.
    browser.goto(&format!("{url}/ui/sagas/{held}/cancel")).await;
    browser.click("main form button[type='submit']").await;
    let problem = browser.wait_for_text(".problem", "409").await;
    assert!(
        problem.contains("Not allowed in the saga's current status"),
        "{problem}"
    );
    browser.close().await;
}

/// The hex of `token`: the session cookie's value.
fn session_cookie(token: &str) -> String {
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    format!("geosaga_session={hex}")
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tokens_nothing_shows_before_login_and_inputs_stay_text() {
    const TOKEN: &str = "console-test-token";
    let dir = tempfile::tempdir().unwrap();
    let participant = Controlled::start(false).await;
    let coordinator = serve(&dir, &["--token", TOKEN]).await;
    let url = coordinator.url.clone();
    register(
        &url,
        Some(TOKEN),
        definition("echo", &participant, &[("echo", "/ok", None)]),
    )
    .await;
    let hostile = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">";
    let body = json!({"definition": "echo", "input": {"note": hostile}, "idempotency_key": "<b>key</b>"});
    let saga = run_saga(&url, Some(TOKEN), body).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    let id = saga["id"].as_str().unwrap().to_owned();

    // Without a session, no page and no data: a page sends to the login form, the rest is 401.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let pages = [
        "/ui".to_owned(),
        format!("/ui/sagas/{id}"),
        format!("/ui/sagas/{id}/cancel"),
        format!("/ui/sagas/{id}/retry"),
        "/ui/definitions".to_owned(),
        "/ui/definitions/echo".to_owned(),
        "/ui/regions".to_owned(),
        "/ui/no-such-page".to_owned(),
    ];
    let wrong = session_cookie("wrong-token");
    for cookie in ["", wrong.as_str()] {
        for path in &pages {
            let response = plain
                .get(format!("{url}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 303, "{path}");
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.starts_with("/ui/login?next="), "{path} -> {location}");
            assert!(!response.text().await.unwrap().contains(&id));
        }
        for path in ["/ui/fragments/sagas".to_owned(), format!("/ui/fragments/saga/{id}")] {
            let response = plain
                .get(format!("{url}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{path}");
            assert!(!response.text().await.unwrap().contains(&id));
        }
        let response = plain
            .post(format!("{url}/ui/sagas/{id}/cancel"))
            .header("cookie", cookie)
            .form(&[("csrf", "0")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    // With the session but without the CSRF token, a POST is refused; with it, the API
    // decides (this saga is not stuck).
    let session = session_cookie(TOKEN);
    let csrf = "0123456789abcdef0123456789abcdef";
    for (cookie, field, expected) in [
        (session.clone(), csrf, 403),
        (
            format!("{session}; geosaga_csrf={csrf}"),
            "ffffffffffffffffffffffffffffffff",
            403,
        ),
        (format!("{session}; geosaga_csrf={csrf}"), csrf, 409),
    ] {
        let response = plain
            .post(format!("{url}/ui/sagas/{id}/retry"))
            .header("cookie", cookie)
            .form(&[("csrf", field)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }

    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{url}/ui/sagas/{id}")).await;
    browser.find("form.login input#token").await;
    assert!(browser.url().await.contains("/ui/login?next="));
    let source = browser.client().source().await.unwrap();
    assert!(
        !source.contains("pwned") && !source.contains("echo"),
        "saga data before login: {source}"
    );
    browser
        .find("input#token")
        .await
        .send_keys("not-the-token")
        .await
        .unwrap();
    browser.click("form.login button").await;
    browser.wait_for_text("[role='alert']", "not accepted").await;
    browser.find("input#token").await.send_keys(TOKEN).await.unwrap();
    browser.click("form.login button").await;
    browser.wait_for_text("dl.facts", "completed").await;
    assert_eq!(
        browser.url().await,
        format!("{url}/ui/sagas/{id}"),
        "back where the login began"
    );
    let cookies = browser.eval("return document.cookie;").await;
    assert!(
        !cookies.as_str().unwrap().contains("geosaga_session"),
        "the session cookie is HTTP-only"
    );
    assert!(!browser.url().await.contains(TOKEN));

    let input = browser
        .wait_for_text("#input pre", "<script>window.__pwned = 1</script>")
        .await;
    assert!(input.contains("onerror"), "{input}");
    assert_eq!(browser.eval("return window.__pwned === undefined;").await, true);
    browser.goto(&format!("{url}/ui?q=%3Cb%3Ekey%3C%2Fb%3E")).await;
    browser.wait_for_text("#sagas tbody", "<b>key</b>").await;
    assert_eq!(
        browser
            .client()
            .find_all(fantoccini::Locator::Css("#sagas b"))
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(browser.eval("return window.__pwned === undefined;").await, true);
    browser.screenshot("escaped-input").await;

    browser.click("form.logout button").await;
    browser.find("form.login").await;
    browser.goto(&format!("{url}/ui")).await;
    browser.find("form.login").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_shows_a_new_saga_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let participant = Controlled::start(false).await;
    let coordinator = serve(&dir, &[]).await;
    let url = coordinator.url.clone();
    register(&url, None, definition("echo", &participant, &[("echo", "/ok", None)])).await;

    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{url}/ui")).await;
    browser.wait_for_text("#sagas", "No sagas yet").await;
    browser.eval("window.__same_page = 42; return null;").await;
    let saga = run_saga(&url, None, json!({"definition": "echo"})).await;
    let id = saga["id"].as_str().unwrap();
    browser.find(&format!("#sagas a[href='/ui/sagas/{id}']")).await;
    browser.wait_for_text("#sagas tbody tr", "completed").await;
    assert_eq!(
        browser.eval("return window.__same_page;").await,
        42,
        "the page was not reloaded"
    );

    // By keyboard alone: Tab from the top reaches the new saga's link, Enter opens it.
    let focused = || async {
        browser
            .eval("return document.activeElement.getAttribute('href') || document.activeElement.tagName;")
            .await
    };
    let mut tabs = 0;
    while focused().await != format!("/ui/sagas/{id}") {
        tabs += 1;
        assert!(tabs < 20, "Tab never reached the saga's link; at {}", focused().await);
        let active = browser.client().active_element().await.unwrap();
        active.send_keys(&Key::Tab).await.unwrap();
    }
    let active = browser.client().active_element().await.unwrap();
    active.send_keys(&Key::Enter).await.unwrap();
    browser.wait_for_text("dl.facts", "completed").await;
    assert_eq!(browser.url().await, format!("{url}/ui/sagas/{id}"));
    browser.close().await;
}
