//! Definitions as the executor uses them: checked once per version and cached, and checked
//! against this coordinator (Rust handlers registered, hosts and regions allowed) before
//! they are stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sagas::{RegionOperation, SagaDefinition, StepAction, Template, ValidationError, ValidationErrors};
use serde_json::Value;

use crate::runner::Runners;
use crate::store::{DefinitionRecord, Store};
use crate::{Error, Result};

/// A definition version, as stored and as checked.
pub(crate) type CachedDefinition = (DefinitionRecord, Arc<SagaDefinition>);

/// How long a start that names no version trusts the latest version it last read. Versions
/// registered through this coordinator are seen at once; those registered through another
/// one sharing the database, within this long.
const LATEST_DEFINITION_TTL: Duration = Duration::from_secs(1);

/// The two caches of definitions.
#[derive(Default)]
pub(crate) struct Definitions {
    /// Definition versions by `(name, version)`: a stored version never changes.
    versions: Mutex<HashMap<(String, i64), CachedDefinition>>,
    /// The latest version of each name, as last read (see [`LATEST_DEFINITION_TTL`]).
    latest: Mutex<HashMap<String, (Instant, CachedDefinition)>>,
}

impl Definitions {
    /// The definition `name` at `version`, from the cache or else the store.
    pub(crate) async fn version(&self, store: &dyn Store, name: &str, version: i64) -> Result<CachedDefinition> {
        let cached = self
            .versions
            .lock()
            .expect("lock")
            .get(&(name.to_owned(), version))
            .cloned();
        if let Some(cached) = cached {
            return Ok(cached);
        }
        self.read(store, name, Some(version)).await
    }

    /// The latest version of `name`, read from the store.
    pub(crate) async fn latest(&self, store: &dyn Store, name: &str) -> Result<CachedDefinition> {
        let cached = self.read(store, name, None).await?;
        self.latest
            .lock()
            .expect("lock")
            .insert(name.to_owned(), (Instant::now(), cached.clone()));
        Ok(cached)
    }

    /// The latest version of `name` as read at most [`LATEST_DEFINITION_TTL`] ago.
    pub(crate) async fn latest_cached(&self, store: &dyn Store, name: &str) -> Result<CachedDefinition> {
        let cached = self.latest.lock().expect("lock").get(name).cloned();
        match cached {
            Some((read_at, cached)) if read_at.elapsed() < LATEST_DEFINITION_TTL => Ok(cached),
            _ => self.latest(store, name).await,
        }
    }

    /// A new version of `name` was stored: starts that name no version see it from now on.
    pub(crate) fn forget_latest(&self, name: &str) {
        self.latest.lock().expect("lock").remove(name);
    }

    /// Checks a stored definition (once per version) and caches it.
    fn checked(&self, record: &DefinitionRecord) -> Result<Arc<SagaDefinition>> {
        let key = (record.name.clone(), record.version);
        if let Some((_, def)) = self.versions.lock().expect("lock").get(&key) {
            return Ok(def.clone());
        }
        let def = Arc::new(sagas::validate::validate_value(&record.document)?);
        self.versions
            .lock()
            .expect("lock")
            .insert(key, (record.clone(), def.clone()));
        Ok(def)
    }

    async fn read(&self, store: &dyn Store, name: &str, version: Option<i64>) -> Result<CachedDefinition> {
        let record = store
            .get_definition(name, version)
            .await?
            .ok_or_else(|| Error::DefinitionNotFound {
                name: name.to_owned(),
                version,
            })?;
        let def = self.checked(&record)?;
        Ok((record, def))
    }
}

/// Checks that this coordinator can run `definition`: every Rust handler it names is
/// registered, every literal URL is on the host allow-list, every region step names a region
/// this coordinator knows. Reports every fault with its JSON Pointer.
pub(crate) fn check_runnable(definition: &SagaDefinition, runners: &Runners) -> Result<()> {
    let mut errors = Vec::new();
    for (i, step) in definition.steps.iter().enumerate() {
        let parts =
            std::iter::once(("action", &step.action)).chain(step.compensation.as_ref().map(|c| ("compensation", c)));
        for (part, action) in parts {
            let fault = match action {
                StepAction::Rust(call) => (!runners.rust.contains(&call.handler)).then(|| {
                    (
                        "/rust/handler",
                        format!("no Rust handler is registered as `{}`", call.handler),
                    )
                }),
                // The automatic undo goes where its action does: checked once, there.
                StepAction::Region(region) if matches!(region.operation, RegionOperation::Undo { .. }) => None,
                StepAction::Region(region) => {
                    let at = if region.via.is_some() { "/region/via" } else { "/region" };
                    let regions = runners.http.regions().directory();
                    regions.check(region.via.as_deref()).err().map(|message| (at, message))
                }
                StepAction::Txn(txn) => {
                    let at = if txn.via.is_some() { "/txn/via" } else { "/txn" };
                    let regions = runners.http.regions().directory();
                    regions.check(txn.via.as_deref()).err().map(|message| (at, message))
                }
                StepAction::Http(http) => match &http.url {
                    Template::Literal(Value::String(url)) => {
                        runners.http.hosts().check(url).err().map(|m| ("/http/url", m))
                    }
                    // A URL rendered from a template is checked when the step runs.
                    Template::Literal(_)
                    | Template::Value(_)
                    | Template::Text(_)
                    | Template::Array(_)
                    | Template::Object(_) => None,
                },
            };
            if let Some((at, message)) = fault {
                errors.push(ValidationError {
                    path: format!("/steps/{i}/{part}{at}"),
                    message,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors).into())
    }
}
