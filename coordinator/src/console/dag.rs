//! A definition's DAG as SVG: one column per stage (steps of a column may run in
//! parallel), an arrow from each step to the steps that depend on it, and each node in the
//! tone of its step's status. Laid out here, without a graph layout engine: stages are
//! what the planner computes (`sagas::render::stages`).

use maud::{Markup, html};
use sagas::SagaDefinition;

use super::tone::Shown;

/// What a node shows besides the step's name.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its status; `None` on a definition's own page (no saga, no status).
    pub shown: Option<Shown>,
    /// A short second line (attempts, the compensation's state, what the action does).
    pub detail: String,
}

const WIDTH: i32 = 190;
const HEIGHT: i32 = 66;
const GAP_X: i32 = 56;
const GAP_Y: i32 = 18;
const PAD: i32 = 12;
/// Longest text on a node line, in characters.
const FIT: usize = 26;

fn fit(text: &str) -> String {
    if text.chars().count() <= FIT {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(FIT - 1).collect();
        short.push('…');
        short
    }
}

/// The DAG of `def`, each step with its `nodes` entry (same order as `def.steps`).
pub fn render(def: &SagaDefinition, nodes: &[Node]) -> Markup {
    let stages = sagas::render::stages(def);
    let mut at = vec![(0, 0); def.steps.len()];
    for (c, stage) in stages.iter().enumerate() {
        for (r, &i) in stage.iter().enumerate() {
            at[i] = (PAD + c as i32 * (WIDTH + GAP_X), PAD + r as i32 * (HEIGHT + GAP_Y));
        }
    }
    let columns = stages.len().max(1) as i32;
    let rows = stages.iter().map(Vec::len).max().unwrap_or(1).max(1) as i32;
    let width = 2 * PAD + columns * WIDTH + (columns - 1) * GAP_X;
    let height = 2 * PAD + rows * HEIGHT + (rows - 1) * GAP_Y;
    let summary: Vec<String> = def
        .steps
        .iter()
        .zip(nodes)
        .map(|(s, n)| match &n.shown {
            Some(shown) => format!("{}: {}", s.name, shown.label),
            None => s.name.clone(),
        })
        .collect();
    let title = format!("The steps of {}: {}", def.name, summary.join("; "));
    html! {
        div.dag {
            svg xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) }
                role="img" aria-label=(title) {
                title { (title) }
                defs {
                    marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                        path.arrow d="M 0 0 L 10 5 L 0 10 z" {}
                    }
                }
                @for (i, step) in def.steps.iter().enumerate() {
                    @for &d in &step.depends_on {
                        @let (x1, y1) = (at[d].0 + WIDTH, at[d].1 + HEIGHT / 2);
                        @let (x2, y2) = (at[i].0, at[i].1 + HEIGHT / 2);
                        @let mid = (x1 + x2) / 2;
                        path.edge d={ "M " (x1) " " (y1) " C " (mid) " " (y1) ", " (mid) " " (y2) ", " (x2 - 2) " " (y2) }
                            marker-end="url(#arrow)" {}
                    }
                }
                @for (i, step) in def.steps.iter().enumerate() {
                    @let (x, y) = at[i];
                    @let node = &nodes[i];
                    @let class = node.shown.map_or("t-pending", |s| s.tone.class());
                    g class={ "node " (class) } data-step=(step.name) data-status=[node.shown.map(|s| s.label)] {
                        title { (step.name) }
                        rect x=(x) y=(y) width=(WIDTH) height=(HEIGHT) rx="8" {}
                        text.name x=(x + 10) y=(y + 20) { (fit(&step.name)) }
                        @if let Some(shown) = node.shown {
                            text.state x=(x + 10) y=(y + 38) { (shown.label) }
                        }
                        text.detail x=(x + 10) y=(y + if node.shown.is_some() { 55 } else { 40 }) { (fit(&node.detail)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::tone::{Tone, step};

    fn definition() -> SagaDefinition {
        let doc = serde_json::json!({
            "name": "trip",
            "steps": [
                {"name": "hotel", "action": {"rust": {"handler": "h"}}},
                {"name": "car", "depends_on": [], "action": {"rust": {"handler": "h"}}},
                {"name": "pay", "depends_on": ["hotel", "car"], "action": {"rust": {"handler": "h"}}}
            ]
        });
        sagas::validate::validate_value(&doc).expect("a valid definition")
    }

    #[test]
    fn stages_are_columns_and_text_is_escaped() {
        let def = definition();
        let nodes: Vec<Node> = [
            sagas::StepStatus::Succeeded,
            sagas::StepStatus::Failed,
            sagas::StepStatus::NotRun,
        ]
        .into_iter()
        .map(|s| Node {
            shown: Some(step(s)),
            detail: "<script>alert(1)</script>".into(),
        })
        .collect();
        let svg = render(&def, &nodes).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("class=\"edge\"").count(), 2, "pay depends on two steps");
        assert!(svg.contains(&format!("node {}", Tone::Failed.class())));
        // Two columns: hotel and car side by side first, pay after them.
        assert!(svg.contains(&format!("x=\"{}\"", PAD + WIDTH + GAP_X)));
    }
}
