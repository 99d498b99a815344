//! The web console through the same router as the API: what it answers without a session,
//! with one, and the headers that keep an injected script from running. (Pages in a real
//! browser: `tests/console.rs` at the workspace root.)

use super::*;

/// The status, headers and text of a console answer.
async fn page(f: &Fixture, method: &str, uri: &str, cookie: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if !cookie.is_empty() {
        request = request.header(header::COOKIE, cookie);
    }
    let response = f
        .app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn session(token: &str) -> String {
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    format!("geosaga_session={hex}")
}

#[tokio::test]
async fn with_tokens_the_console_asks_for_one_and_checks_it_like_the_api() {
    let f = fixture_with(Options::default(), |s| s.tokens = vec![TOKEN.into()]).await;
    let bearer = format!("Bearer {TOKEN}");
    let body = json!({"definition": "trip", "input": {"amount": 3}});
    let started = f
        .call(
            "POST",
            "/v1/sagas?wait_ms=10000",
            &[("authorization", &bearer)],
            Some(body),
        )
        .await;
    let id = started.body["id"].as_str().unwrap().to_owned();
    let pages = [
        "/ui".to_owned(),
        "/ui?status=completed".to_owned(),
        format!("/ui/sagas/{id}"),
        format!("/ui/sagas/{id}/cancel"),
        format!("/ui/sagas/{id}/retry"),
        "/ui/definitions".to_owned(),
        "/ui/definitions/trip".to_owned(),
        "/ui/regions".to_owned(),
        "/ui/anything/else".to_owned(),
    ];
    for cookie in [String::new(), session("wrong"), "geosaga_session=zz".to_owned()] {
        for uri in &pages {
            let (status, headers, text) = page(&f, "GET", uri, &cookie).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{uri} {cookie}");
            assert!(
                headers[header::LOCATION]
                    .to_str()
                    .unwrap()
                    .starts_with("/ui/login?next=%2Fui")
            );
            assert!(!text.contains(&id));
        }
        for uri in ["/ui/fragments/sagas".to_owned(), format!("/ui/fragments/saga/{id}")] {
            let (status, _, text) = page(&f, "GET", &uri, &cookie).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(!text.contains(&id));
        }
        let (status, _, _) = page(&f, "POST", &format!("/ui/sagas/{id}/cancel"), &cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for uri in &pages[..7] {
        let (status, _, _) = page(&f, "GET", uri, &session(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let (_, _, text) = page(&f, "GET", &format!("/ui/sagas/{id}"), &session(TOKEN)).await;
    assert!(text.contains("completed") && text.contains("reserve"), "{text}");
    // Open: the way in, and the assets.
    let (status, _, text) = page(&f, "GET", "/ui/login", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("type=\"password\"") && !text.contains(TOKEN));
    for asset in ["console.css", "console.js", "favicon.svg"] {
        let (status, _, _) = page(&f, "GET", &format!("/ui/assets/{asset}"), "").await;
        assert_eq!(status, StatusCode::OK, "{asset}");
    }
}

#[tokio::test]
async fn console_pages_forbid_foreign_scripts_and_framing() {
    let f = fixture().await;
    let (status, headers, _) = page(&f, "GET", "/", "").await;
    assert_eq!(
        (status, &headers[header::LOCATION]),
        (StatusCode::SEE_OTHER, &"/ui".parse().unwrap())
    );
    let (status, headers, text) = page(&f, "GET", "/ui", "").await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    let csrf = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        csrf.starts_with("geosaga_csrf=") && csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict"),
        "{csrf}"
    );
    assert!(!text.contains("<script>"), "no inline script");
    let (status, _, _) = page(&f, "GET", "/ui/sagas/not-a-uuid", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = page(&f, "GET", &format!("/ui/sagas/{}", Uuid::nil()), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, text) = page(&f, "GET", "/ui?status=nope", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("/query/status"), "the API's problem: {text}");
}
