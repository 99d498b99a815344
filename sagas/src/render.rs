//! Rendering a definition's plan for people: as text, and as Graphviz dot.

use std::fmt::Write;

use crate::definition::{SagaDefinition, StepAction};
use crate::graph;

/// What an action does, in a few words (`POST http://...`, a handler, a region operation).
pub fn describe(action: &StepAction) -> String {
    match action {
        StepAction::Http(h) => {
            let url = match &h.url {
                crate::Template::Literal(serde_json::Value::String(s)) => s.clone(),
                crate::Template::Literal(_)
                | crate::Template::Value(_)
                | crate::Template::Text(_)
                | crate::Template::Array(_)
                | crate::Template::Object(_) => "(templated URL)".to_owned(),
            };
            format!("{} {url}", h.method.as_str())
        }
        StepAction::Rust(r) => format!("rust handler `{}`", r.handler),
        StepAction::Region(r) => r.describe(),
        StepAction::Txn(t) => t.describe(),
    }
}

/// The forward stages: each step at its depth in the DAG (steps of one stage may run in
/// parallel), by index; unwinding visits them in reverse.
pub fn stages(def: &SagaDefinition) -> Vec<Vec<usize>> {
    let deps: Vec<Vec<usize>> = def.steps.iter().map(|s| s.depends_on.clone()).collect();
    let levels = graph::levels(&deps, def.topological_order());
    let depth = levels.iter().copied().max().map_or(0, |m| m + 1);
    let mut stages = vec![Vec::new(); depth];
    for (i, &l) in levels.iter().enumerate() {
        stages[l].push(i);
    }
    stages
}

/// The plan as text: forward stages (steps in one stage may run in parallel), then the order
/// in which compensations would run if the last stage failed.
pub fn plan_text(def: &SagaDefinition) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "saga {} ({} steps)", def.name, def.steps.len());
    if let Some(d) = &def.description {
        let _ = writeln!(out, "  {d}");
    }
    let stages = stages(def);
    let _ = writeln!(out, "\nforward:");
    for (n, stage) in stages.iter().enumerate() {
        for &i in stage {
            let s = &def.steps[i];
            let after = if s.depends_on.is_empty() {
                "start".to_owned()
            } else {
                s.depends_on
                    .iter()
                    .map(|&d| def.steps[d].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let parallel = if stage.len() > 1 { " [parallel]" } else { "" };
            let _ = writeln!(
                out,
                "  {}. {} after {after}{parallel}: {}",
                n + 1,
                s.name,
                describe(&s.action)
            );
        }
    }
    let _ = writeln!(out, "\nunwind (reverse of the dependency graph):");
    let mut any = false;
    for (n, stage) in stages.iter().rev().enumerate() {
        for &i in stage {
            let s = &def.steps[i];
            match &s.compensation {
                Some(c) => {
                    any = true;
                    let _ = writeln!(out, "  {}. undo {}: {}", n + 1, s.name, describe(c));
                }
                None => {
                    let _ = writeln!(out, "  {}. {} has no compensation (skipped)", n + 1, s.name);
                }
            }
        }
    }
    if !any {
        let _ = writeln!(out, "  (no step has a compensation)");
    }
    out
}

/// The plan as a Graphviz digraph: solid edges forward, dashed red edges for the unwind.
pub fn plan_dot(def: &SagaDefinition) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    // Labels break lines with DOT's `\n` escape, not a raw newline.
    let q_label = |s: &str| q(s).replace('\n', "\\n");
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", q(&def.name));
    let _ = writeln!(out, "  rankdir=LR;\n  node [shape=box, style=rounded];");
    for s in &def.steps {
        let _ = writeln!(
            out,
            "  {} [label={}];",
            q(&s.name),
            q_label(&format!("{}\n{}", s.name, describe(&s.action)))
        );
        if let Some(c) = &s.compensation {
            let _ = writeln!(
                out,
                "  {} [label={}, color=red, fontcolor=red];",
                q(&format!("undo {}", s.name)),
                q_label(&format!("undo {}\n{}", s.name, describe(c)))
            );
        }
    }
    for s in &def.steps {
        for &d in &s.depends_on {
            let _ = writeln!(out, "  {} -> {};", q(&def.steps[d].name), q(&s.name));
        }
    }
    // Unwind edges: the compensation of a step runs after those of the steps that depend on it.
    for s in &def.steps {
        let Some(_) = &s.compensation else { continue };
        for &d in &s.dependents {
            if def.steps[d].compensation.is_some() {
                let _ = writeln!(
                    out,
                    "  {} -> {} [style=dashed, color=red];",
                    q(&format!("undo {}", def.steps[d].name)),
                    q(&format!("undo {}", s.name))
                );
            }
        }
    }
    out.push_str("}\n");
    out
}
