//! `GET /metrics` of a real `geosaga serve` process: the text parses as OpenMetrics (the
//! format Prometheus scrapes), strictly, and its counters match the sagas that ran.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use testkit::http::JsonAnswer;
use testkit::participant;
use testkit::process::CoordinatorProcess;

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A metric family: its type and samples.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    samples: Vec<Sample>,
}

/// Parses the OpenMetrics text format strictly: every sample belongs to the family declared
/// before it (with the suffixes its type allows), labels are well quoted, values are
/// numbers, histograms are cumulative, and `# EOF` ends the text.
fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the text does not end with `# EOF`")?;
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let fault = |what: &str| format!("line {}: {what}: `{line}`", n + 1);
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().ok_or_else(|| fault("no name"))?,
                parts.next(),
            );
            match keyword {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let kind = rest.ok_or_else(|| fault("no type"))?;
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ]
                    .contains(&kind)
                    {
                        return Err(fault("unknown type"));
                    }
                    if families
                        .insert(
                            name.to_owned(),
                            Family {
                                kind: kind.to_owned(),
                                samples: Vec::new(),
                            },
                        )
                        .is_some()
                    {
                        return Err(fault("family declared twice"));
                    }
                    current = Some(name.to_owned());
                }
                _ => return Err(fault("unknown comment")),
            }
            continue;
        }
        let family_name = current.as_ref().ok_or_else(|| fault("sample before any # TYPE"))?;
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(fault("no value")),
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => {
                let end = rest.find("} ").ok_or_else(|| fault("unclosed labels"))?;
                (parse_labels(&rest[..end]).map_err(|e| fault(&e))?, &rest[end + 2..])
            }
            None => (BTreeMap::new(), &rest[1..]),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| fault("not a number"))?,
        };
        let family = families.get_mut(family_name).expect("declared");
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        let suffix = name
            .strip_prefix(family_name.as_str())
            .ok_or_else(|| fault("sample of another family"))?;
        if !suffixes.contains(&suffix) {
            return Err(fault("suffix not allowed for the family's type"));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name `{name}`"));
        }
        if chars.next() != Some('"') {
            return Err(format!("label `{name}` is not quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated label value")? {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                c => value.push(c),
            }
        }
        if labels.insert(name.clone(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => return Err(format!("`{c}` after a label")),
        }
    }
    Ok(labels)
}

/// Buckets are cumulative, end with `+Inf`, and `+Inf` equals `_count`, per label set.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for s in &family.samples {
        let mut labels = s.labels.clone();
        if s.name.ends_with("_bucket") {
            let le = labels.remove("le").ok_or(format!("{name}: a bucket without `le`"))?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{name}: le `{le}`"))?
            };
            series.entry(labels).or_default().push((le, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(labels, s.value);
        }
    }
    for (labels, buckets) in series {
        if !buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!("{name}{labels:?}: buckets are not cumulative"));
        }
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) || counts.get(&labels) != buckets.last().map(|b| &b.1) {
            return Err(format!("{name}{labels:?}: the +Inf bucket is not the count"));
        }
    }
    Ok(())
}

fn value(families: &BTreeMap<String, Family>, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == sample && s.labels == want)
        .map(|s| s.value)
}

#[test]
fn the_parser_is_strict() {
    assert!(parse("# TYPE x counter\nx_total 1\n# EOF\n").is_ok());
    assert!(parse("# TYPE x counter\nx_total 1\n").is_err(), "no EOF");
    assert!(parse("# TYPE x counter\ny_total 1\n# EOF\n").is_err(), "another family");
    assert!(
        parse("# TYPE x gauge\nx_total 1\n# EOF\n").is_err(),
        "a suffix a gauge has not"
    );
    assert!(
        parse("# TYPE x gauge\nx{a=\"1} 1\n# EOF\n").is_err(),
        "unterminated label"
    );
    assert!(parse("# TYPE x gauge\nx one\n# EOF\n").is_err(), "not a number");
    let bad_histogram =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n# EOF\n";
    assert!(parse(bad_histogram).is_err(), "not cumulative");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_sagas_that_ran() {
    let (_participant, base) = participant::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    let coordinator = CoordinatorProcess::start(
        db.to_str().unwrap(),
        &["--allow-host", "127.0.0.1", "--token", "secret"],
        dir.path().join("coordinator.log"),
    )
    .await;
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{}/v1/definitions", coordinator.url))
        .bearer_auth("secret")
        .json(&participant::definition(&base))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    for fail in [false, true, false, false, true, false, false] {
        let saga: Value = client
            .post(format!("{}/v1/sagas?wait_ms=20000", coordinator.url))
            .bearer_auth("secret")
            .json(&json!({"definition": "crashy", "input": {"fail": fail}}))
            .json_answer()
            .await;
        assert_eq!(saga["status"], if fail { "compensated" } else { "completed" }, "{saga}");
    }

    // Open without the token, like the probes.
    let response = client.get(format!("{}/metrics", coordinator.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let crashy = [("definition", "crashy")];
    assert_eq!(
        value(&families, "geosaga_sagas_started_total", &crashy),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        value(&families, "geosaga_sagas_completed_total", &crashy),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(&families, "geosaga_sagas_compensated_total", &crashy),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&families, "geosaga_sagas_stuck_total", &crashy), None, "{text}");
    assert_eq!(value(&families, "geosaga_sagas_in_flight", &[]), Some(0.0), "{text}");
    let attempts = |family: &str, step: &str, outcome: &str| {
        value(
            &families,
            &format!("{family}_count"),
            &[("definition", "crashy"), ("step", step), ("outcome", outcome)],
        )
    };
    assert_eq!(
        attempts("geosaga_step_duration_seconds", "a", "succeeded"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        attempts("geosaga_step_duration_seconds", "c", "succeeded"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        attempts("geosaga_step_duration_seconds", "c", "failed"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        attempts("geosaga_compensation_duration_seconds", "a", "succeeded"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        attempts("geosaga_compensation_duration_seconds", "b", "succeeded"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&families, "geosaga_lease_adoptions_total", &[]),
        Some(0.0),
        "{text}"
    );

    let commits = value(&families, "geosaga_store_commits_total", &[]).unwrap();
    let appends = value(&families, "geosaga_store_appends_total", &[]).unwrap();
    assert!(commits > 0.0 && appends >= commits, "{text}");
    // Each saga appends at least its start, its outcomes and its settling.
    assert!(
        value(&families, "geosaga_store_events_total", &[]).unwrap() >= 7.0 * 4.0,
        "{text}"
    );
    let per_commit = value(&families, "geosaga_store_appends_per_commit", &[]).unwrap();
    assert!((per_commit - appends / commits).abs() < 1e-9, "{text}");
    assert!(
        value(&families, "geosaga_store_max_batch", &[]).unwrap() >= 1.0,
        "{text}"
    );
}
