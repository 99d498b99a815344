//! The second pass: the meaning of a well-formed document. Names and the dependency graph
//! first (so that dependencies resolve whatever their order), then each step: its kind and
//! templates ([`super::templates`]), its retry policies and time limit ([`super::limits`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::limits::{retry_policy, timeout};
use super::shape::too_many_steps;
use super::templates::{RefCheck, http_template, step_action};
use super::{Collector, DEFAULT_TIMEOUT, MAX_NAME_LEN, ValidationErrors, content_hash};
use crate::definition::{SagaDefinition, Step, StepAction};
use crate::document::{DefinitionDoc, StepDoc};
use crate::graph;
use crate::retry::RetryPolicy;

/// Checks the meaning of a well-formed document and builds the definition.
pub fn validate(doc: DefinitionDoc) -> Result<SagaDefinition, ValidationErrors> {
    if let Some(errors) = too_many_steps(doc.steps.len()) {
        return Err(errors);
    }
    let mut errors = Collector::default();
    check_name(&doc.name, "/name", &mut errors);
    if doc.steps.is_empty() {
        errors.push("/steps", "a saga needs at least one step");
    }
    let input_validator = match &doc.input_schema {
        Some(schema) => match jsonschema::validator_for(schema) {
            Ok(validator) => Some(Arc::new(validator)),
            Err(e) => {
                errors.push("/input_schema", format!("not a valid JSON Schema: {e}"));
                None
            }
        },
        None => None,
    };

    let defaults = doc.defaults.clone().unwrap_or_default();
    let default_retry = retry_policy(
        defaults.retry.as_ref(),
        None,
        RetryPolicy::ACTION_DEFAULT,
        "/defaults/retry",
        &mut errors,
    );
    let default_comp_retry = retry_policy(
        defaults.compensation_retry.as_ref(),
        None,
        RetryPolicy::COMPENSATION_DEFAULT,
        "/defaults/compensation_retry",
        &mut errors,
    );
    let default_timeout = timeout(
        defaults.timeout_ms,
        DEFAULT_TIMEOUT,
        "/defaults/timeout_ms",
        &mut errors,
    );

    // Names first, so that dependencies can be resolved whatever their order.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, step) in doc.steps.iter().enumerate() {
        let path = format!("/steps/{i}/name");
        check_name(&step.name, &path, &mut errors);
        if let Some(first) = by_name.insert(&step.name, i) {
            by_name.insert(&step.name, first);
            errors.push(
                path,
                format!("duplicate step name `{}` (first used by /steps/{first})", step.name),
            );
        }
    }

    let deps: Vec<Vec<usize>> = doc
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| dependencies(i, step, &by_name, &mut errors))
        .collect();
    let upstream = match graph::topological_order(&deps) {
        Ok(order) => Some(graph::ancestors(&deps, &order)),
        Err(cycle) => {
            let names: Vec<&str> = cycle.iter().map(|&i| doc.steps[i].name.as_str()).collect();
            errors.push(
                format!("/steps/{}/depends_on", cycle[0]),
                format!("dependency cycle: {}", names.join(" -> ")),
            );
            None
        }
    };

    let mut steps = Vec::with_capacity(doc.steps.len());
    for (i, step) in doc.steps.iter().enumerate() {
        let base = format!("/steps/{i}");
        let refs = RefCheck {
            upstream: upstream.as_ref().map(|u| u[i].as_slice()),
            by_name: &by_name,
            step: i,
        };
        let action = step_action(&step.action, &format!("{base}/action"), &refs, false, &mut errors);
        let compensation = match (&step.compensation, &action) {
            (Some(c), _) => {
                let mut compensation = step_action(c, &format!("{base}/compensation"), &refs, true, &mut errors);
                // A transaction undoing a transaction applies only if that one committed.
                if let (Some(StepAction::Txn(undo)), Some(StepAction::Txn(_))) = (&mut compensation, &action) {
                    undo.undoes_action = true;
                }
                compensation
            }
            // A region write undoes itself unless the step says how.
            (None, Some(StepAction::Region(call))) if call.writes() => Some(StepAction::Region(call.undo())),
            // So does a transaction of additions; one that puts or deletes must say how.
            (None, Some(StepAction::Txn(call))) if !call.writes.is_empty() => match call.undo() {
                Some(undo) => Some(StepAction::Txn(undo)),
                None => {
                    errors.push(
                        format!("{base}/compensation"),
                        "a `txn` step that puts or deletes needs a compensation (a `txn` restoring what it \
                         wrote); only one whose writes are all `add`s undoes itself",
                    );
                    None
                }
            },
            (None, _) => None,
        };
        let retry = retry_policy(
            step.retry.as_ref(),
            defaults.retry.as_ref(),
            default_retry,
            &format!("{base}/retry"),
            &mut errors,
        );
        let compensation_retry = retry_policy(
            step.compensation_retry.as_ref(),
            defaults.compensation_retry.as_ref(),
            default_comp_retry,
            &format!("{base}/compensation_retry"),
            &mut errors,
        );
        let timeout = timeout(
            step.timeout_ms,
            default_timeout,
            &format!("{base}/timeout_ms"),
            &mut errors,
        );
        let verify = step
            .verify
            .as_ref()
            .and_then(|v| http_template(v, &format!("{base}/verify"), &refs, false, &mut errors));
        if let Some(action) = action {
            steps.push(Step {
                name: step.name.clone(),
                depends_on: deps[i].clone(),
                dependents: Vec::new(),
                action,
                compensation,
                retry,
                compensation_retry,
                timeout,
                verify,
            });
        }
    }
    if !errors.0.is_empty() {
        return Err(ValidationErrors(errors.0));
    }
    for i in 0..steps.len() {
        for d in steps[i].depends_on.clone() {
            steps[d].dependents.push(i);
        }
    }
    let hash = content_hash(&doc);
    let mut definition = SagaDefinition::new(doc, steps, hash, errors.1);
    definition.input_validator = input_validator;
    Ok(definition)
}

fn check_name(name: &str, path: &str, errors: &mut Collector) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars {
        errors.push(
            path,
            format!("`{name}` is not a valid name: 1 to {MAX_NAME_LEN} letters, digits, `_`, `-` or `.`"),
        );
    }
}

fn dependencies(i: usize, step: &StepDoc, by_name: &HashMap<&str, usize>, errors: &mut Collector) -> Vec<usize> {
    let Some(names) = &step.depends_on else {
        return if i == 0 { Vec::new() } else { vec![i - 1] };
    };
    let mut deps = Vec::new();
    let mut listed = HashSet::new();
    for (k, name) in names.iter().enumerate() {
        let path = format!("/steps/{i}/depends_on/{k}");
        match by_name.get(name.as_str()) {
            None => errors.push(path, format!("no step is named `{name}`")),
            Some(&d) if d == i => errors.push(path, "a step cannot depend on itself"),
            Some(&d) if !listed.insert(d) => errors.push(path, format!("`{name}` is listed twice")),
            Some(&d) => deps.push(d),
        }
    }
    deps
}
