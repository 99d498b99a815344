//! `geosaga check`: runs a saga against its real participants and reports, case by case,
//! what held and what did not (docs/check.md).
//!
//! The saga runs on a throwaway coordinator (a SQLite file in a temporary directory, in
//! this process) whose HTTP steps go through a recording proxy in front of each
//! participant origin ([`proxy`]); the cases ([`cases`]) are the proxy's plans, and each
//! verdict is a pure function of what the proxy recorded and what the coordinator logged.
//! Region steps run against the regions given with `--region`, their failures injected by
//! the coordinator's fault injection; Rust steps are refused (a Rust saga is checked in
//! Rust, with `coordinator::conformance`).

pub mod cases;
pub mod cli;
pub mod judge;
pub mod proxy;
mod repeats;
pub mod report;
mod unwind;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordinator::runner::region::RegionDirectory;
use coordinator::store::sqlite::SqliteStore;
use coordinator::{Coordinator, Fault, Faults, HandlerRegistry, HostPolicy, HttpRunner, Runners, StartSaga, Store};
use sagas::document::DefinitionDoc;
use sagas::{Phase, SagaDefinition, StepAction, StepError};
use serde_json::Value;

use cases::Case;
use judge::Run;
use proxy::{Fate, Proxies, Verifier};
use report::{CaseReport, Report};

/// Why a check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition or the input does not validate.
    #[error("{0}")]
    Invalid(sagas::ValidationErrors),
    /// The definition has steps `check` cannot run (said which, and why).
    #[error("{0}")]
    Unsupported(String),
    /// The throwaway coordinator or a proxy failed.
    #[error("{0}")]
    Setup(String),
}

/// What to check and how.
pub struct Options {
    /// The definition document.
    pub document: Value,
    /// The saga input every case starts with.
    pub input: Value,
    /// The regions region steps use.
    pub regions: RegionDirectory,
    /// How long one case may take to settle.
    pub case_timeout: Duration,
}

/// The coordinator of a check run, restarted by the restart cases.
struct Engine {
    store: Arc<dyn Store>,
    runners: Runners,
    options: coordinator::Options,
    coordinator: Arc<Mutex<Coordinator>>,
}

impl Engine {
    fn current(&self) -> Coordinator {
        self.coordinator.lock().expect("lock").clone()
    }

    /// Stops the coordinator (its saga tasks aborted mid-step, as a crash leaves them) and
    /// starts another on the same database, which resumes the sagas.
    async fn restart(&self) -> Result<(), Error> {
        let old = self.current();
        old.shutdown()
            .await
            .map_err(|e| Error::Setup(format!("stopping the coordinator: {e}")))?;
        let new = Coordinator::start(self.store.clone(), self.runners.clone(), self.options.clone())
            .await
            .map_err(|e| Error::Setup(format!("restarting the coordinator: {e}")))?;
        *self.coordinator.lock().expect("lock") = new;
        Ok(())
    }
}

/// Runs every case; the report says what held.
pub async fn check(options: Options) -> Result<Report, Error> {
    let started = Instant::now();
    let original = sagas::validate::validate_value(&options.document).map_err(Error::Invalid)?;
    refuse_unsupported(&original, &options.regions)?;
    sagas::validate::validate_input(&original, &options.input).map_err(Error::Invalid)?;

    let proxies = Proxies::new();
    let mut doc: DefinitionDoc = original.document.clone();
    let fronted = front_participants(&mut doc, &proxies).await?;
    let definition = Arc::new(sagas::validate::validate(doc).map_err(Error::Invalid)?);

    let dir = tempfile::tempdir().map_err(|e| Error::Setup(format!("a temporary directory: {e}")))?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("check.db"))
            .await
            .map_err(|e| Error::Setup(format!("the throwaway SQLite store: {e}")))?,
    );
    let faults = Arc::new(Faults::new());
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any).with_regions(options.regions.clone()),
        rust: HandlerRegistry::new(),
        faults: faults.clone(),
    };
    let coordinator_options = coordinator::Options {
        node_id: "check".into(),
        ..coordinator::Options::default()
    };
    let coordinator = Coordinator::start(store.clone(), runners.clone(), coordinator_options.clone())
        .await
        .map_err(|e| Error::Setup(format!("starting the coordinator: {e}")))?;
    coordinator
        .register(&definition)
        .await
        .map_err(|e| Error::Setup(format!("registering the definition: {e}")))?;
    let engine = Engine {
        store,
        runners,
        options: coordinator_options,
        coordinator: Arc::new(Mutex::new(coordinator)),
    };
    proxies.set_verifier(verifier(engine.coordinator.clone(), original.clone()));

    let mut reports = Vec::new();
    let plain = run_case(&engine, &proxies, &faults, &definition, &Case::Completes, &options).await?;
    let actions = plain.seen.iter().filter(|s| s.phase == Some(Phase::Action)).count();
    reports.push(CaseReport::new(&Case::Completes, &definition, &plain, None));
    for case in Case::all(&definition, actions).into_iter().skip(1) {
        let run = run_case(&engine, &proxies, &faults, &definition, &case, &options).await?;
        reports.push(CaseReport::new(&case, &definition, &run, Some(&plain)));
    }
    engine.current().shutdown().await.ok();
    Ok(Report {
        definition: definition.name.clone(),
        participants: fronted,
        input: options.input,
        cases: reports,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Rust steps cannot run here; region steps need regions.
fn refuse_unsupported(definition: &SagaDefinition, regions: &RegionDirectory) -> Result<(), Error> {
    let mut faults = Vec::new();
    for step in &definition.steps {
        for action in std::iter::once(&step.action).chain(step.compensation.as_ref()) {
            match action {
                StepAction::Http(_) => {}
                StepAction::Rust(call) => faults.push(format!(
                    "step `{}` runs the Rust handler `{}`: check runs JSON definitions' HTTP and region steps; check a Rust saga in Rust with coordinator::conformance",
                    step.name, call.handler
                )),
                StepAction::Region(_) | StepAction::Txn(_) if regions.is_empty() => faults.push(format!(
                    "step `{}` reads or writes the regions: pass --region NAME=URL for each region it uses",
                    step.name
                )),
                StepAction::Region(_) | StepAction::Txn(_) => {}
            }
        }
    }
    faults.dedup();
    if faults.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(faults.join("\n")))
    }
}

/// Points every HTTP action and compensation at a proxy in front of its origin; returns
/// the origins fronted. A URL whose origin is a template cannot be fronted.
async fn front_participants(doc: &mut DefinitionDoc, proxies: &Proxies) -> Result<BTreeMap<String, String>, Error> {
    let mut fronted: BTreeMap<String, String> = BTreeMap::new();
    for step in &mut doc.steps {
        for action in std::iter::once(&mut step.action).chain(step.compensation.as_mut()) {
            let Some(http) = action.http.as_mut() else { continue };
            let origin = origin(&http.url).ok_or_else(|| {
                Error::Unsupported(format!(
                    "step `{}` calls `{}`: check needs the scheme, host and port of each participant written out (no template before the path)",
                    step.name, http.url
                ))
            })?;
            if !fronted.contains_key(&origin) {
                let addr = proxies
                    .front(&origin)
                    .await
                    .map_err(|e| Error::Setup(format!("a proxy for {origin}: {e}")))?;
                fronted.insert(origin.clone(), format!("http://{addr}"));
            }
            http.url = format!("{}{}", fronted[&origin], &http.url[origin.len()..]);
        }
    }
    Ok(fronted)
}

/// `scheme://authority` of a URL without templates up to its path.
fn origin(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let origin = &url[..url.len() - rest.len() + end];
    (!origin.contains("{{") && end > 0).then(|| origin.to_owned())
}

/// Reads a step's `verify`, rendered for the saga as the coordinator sees it now.
fn verifier(coordinator: Arc<Mutex<Coordinator>>, definition: SagaDefinition) -> Verifier {
    let client = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
    let definition = Arc::new(definition);
    Arc::new(move |saga, step| {
        let (coordinator, definition, client) = (
            coordinator.lock().expect("lock").clone(),
            definition.clone(),
            client.clone(),
        );
        Box::pin(async move {
            let template = definition.steps.iter().find(|s| s.name == step)?.verify.clone()?;
            let view = coordinator.saga(saga).await.ok()?;
            let (request, shown) = {
                let id = saga.to_string();
                let output_of = |name: &str| view.state.output_of(name);
                let cx = sagas::template::RenderContext {
                    input: &view.record.input,
                    saga_id: &id,
                    output_of: &output_of,
                    budget: sagas::template::Budget::attempt(),
                };
                let url = match template.url.render_string(&cx) {
                    Ok(url) => url,
                    Err(e) => {
                        let error = match e {
                            sagas::template::RenderError::Unresolved { reference, reason } => {
                                format!("{reference}: {reason}")
                            }
                            too_large @ sagas::template::RenderError::TooLarge { .. } => too_large.to_string(),
                        };
                        return Some((format!("{step} verify"), Fate::Unreachable { error }));
                    }
                };
                let method =
                    reqwest::Method::from_bytes(template.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
                let shown = format!("{method} {url}");
                let mut request = client.request(method, &url);
                for (name, value) in &template.headers {
                    if let Ok(value) = value.render_string(&cx) {
                        request = request.header(name, value);
                    }
                }
                if let Some(body) = &template.body
                    && let Ok(body) = body.render(&cx)
                {
                    request = request.json(&body);
                }
                (request, shown)
            };
            let fate = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    Fate::Answered {
                        status,
                        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    }
                }
                Err(e) => Fate::Unreachable { error: e.to_string() },
            };
            Some((shown, fate))
        })
    })
}

/// Runs one case on a new saga and gathers what it left.
async fn run_case(
    engine: &Engine,
    proxies: &Proxies,
    faults: &Faults,
    definition: &SagaDefinition,
    case: &Case,
    options: &Options,
) -> Result<Run, Error> {
    proxies.set_plan(case.plan(definition));
    faults.clear();
    // Region steps are not proxied: the coordinator's fault injection fails and repeats them.
    for step in definition
        .steps
        .iter()
        .filter(|s| matches!(s.action, StepAction::Region(_) | StepAction::Txn(_)))
    {
        if case.failing_step(definition) == Some(step.name.as_str()) {
            let refused = StepError::permanent("refused by geosaga check: a business failure injected");
            faults.inject(None, &step.name, Phase::Action, Fault::Fail(refused), Some(1));
        } else if matches!(case, Case::Repeated { .. }) {
            faults.inject(None, &step.name, Phase::Action, Fault::Repeat, None);
            faults.inject(None, &step.name, Phase::Compensation, Fault::Repeat, None);
        }
    }
    let (started, _) = engine
        .current()
        .start_saga(StartSaga {
            definition: definition.name.clone(),
            version: None,
            input: options.input.clone(),
            idempotency_key: None,
            trace_context: None,
        })
        .await
        .map_err(|e| Error::Setup(format!("starting the saga: {e}")))?;
    let id = started.record.id;
    if let Case::Restart(_) = case {
        // The held action: restart, then let it go unforwarded.
        if let Ok(held) = tokio::time::timeout(options.case_timeout, proxies.held()).await {
            engine.restart().await?;
            drop(held);
        }
    }
    let coordinator = engine.current();
    coordinator
        .wait(id, options.case_timeout)
        .await
        .map_err(|e| Error::Setup(format!("waiting for the saga: {e}")))?;
    let view = coordinator
        .saga(id)
        .await
        .map_err(|e| Error::Setup(format!("reading the saga: {e}")))?;
    let events = coordinator
        .events(id)
        .await
        .map_err(|e| Error::Setup(format!("reading its log: {e}")))?;
    faults.clear();
    Ok(Run {
        view,
        events,
        seen: proxies.seen(id),
    })
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn an_origin_is_the_literal_scheme_host_and_port() {
        assert_eq!(
            origin("http://127.0.0.1:7380/payment/debit").as_deref(),
            Some("http://127.0.0.1:7380")
        );
        assert_eq!(
            origin("https://pay.example/x?y={{input.a}}").as_deref(),
            Some("https://pay.example")
        );
        assert_eq!(origin("http://svc:8080").as_deref(), Some("http://svc:8080"));
        assert_eq!(origin("http://{{input.host}}/x"), None);
        assert_eq!(origin("{{input.url}}"), None);
        assert_eq!(origin("http:///x"), None);
    }
}
