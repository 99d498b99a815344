//! What `geosaga check` prints: a table per case (its checks, then the requests seen in
//! order), or the same as JSON; and the exit code.

use std::collections::BTreeMap;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use sagas::SagaDefinition;
use serde::Serialize;
use serde_json::Value;

use super::cases::Case;
use super::judge::{self, Check, Run, Verdict};
use super::proxy::{Fate, Seen};

/// Exit code when every case held.
pub const EXIT_PASSED: u8 = 0;
/// Exit code when a check did not hold.
pub const EXIT_FAILED: u8 = 20;

/// One case: its checks and its evidence.
#[derive(Debug, Serialize)]
pub struct CaseReport {
    /// What was done.
    pub case: String,
    /// Whether every check held.
    pub passed: bool,
    /// The saga it ran.
    pub saga: String,
    /// How the saga ended.
    pub status: String,
    /// Each property judged.
    pub checks: Vec<Check>,
    /// The requests the proxies saw, and the verify reads, in order.
    pub evidence: Vec<Seen>,
}

impl CaseReport {
    /// Judges `run` of `case`.
    pub fn new(case: &Case, definition: &SagaDefinition, run: &Run, reference: Option<&Run>) -> CaseReport {
        let checks = judge::judge(case, definition, run, reference);
        CaseReport {
            case: case.title(),
            passed: checks.iter().all(|c| c.verdict != Verdict::Fail),
            saga: run.view.record.id.to_string(),
            status: run.view.state.status().as_str().to_owned(),
            checks,
            evidence: run.seen.clone(),
        }
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The definition's name.
    pub definition: String,
    /// Each participant origin and the proxy in front of it.
    pub participants: BTreeMap<String, String>,
    /// The input of every case.
    pub input: Value,
    /// Every case, in the order run.
    pub cases: Vec<CaseReport>,
    /// How long the run took.
    pub elapsed_ms: u64,
}

impl Report {
    /// Whether every case held.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|c| c.passed)
    }

    /// [`EXIT_PASSED`] or [`EXIT_FAILED`].
    pub fn exit_code(&self) -> u8 {
        if self.passed() { EXIT_PASSED } else { EXIT_FAILED }
    }

    /// The report for people: a table per case, then a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let participants: Vec<&str> = self.participants.keys().map(String::as_str).collect();
        out.push_str(&format!(
            "geosaga check: `{}` against {} with input {}\n\n",
            self.definition,
            participants.join(", "),
            self.input
        ));
        for case in &self.cases {
            out.push_str(&format!(
                "{} {}  (saga {}, {})\n",
                if case.passed { "PASS" } else { "FAIL" },
                case.case,
                case.saga,
                case.status
            ));
            let mut checks = Table::new();
            checks
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(120)
                .set_header(["", "check", "seen"]);
            for check in &case.checks {
                let mark = match check.verdict {
                    Verdict::Pass => "ok",
                    Verdict::Fail => "FAIL",
                    Verdict::Note => "-",
                };
                checks.add_row([mark, &check.name, &check.detail]);
            }
            out.push_str(&format!("{checks}\n"));
            let mut evidence = Table::new();
            evidence
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(120)
                .set_header(["#", "step", "request", "answer", "note"]);
            for (n, seen) in case.evidence.iter().enumerate() {
                let what = match seen.phase {
                    Some(phase) => format!("{} {}", seen.step, phase.as_str()),
                    None => format!("{} verify", seen.step),
                };
                evidence.add_row([
                    (n + 1).to_string(),
                    what,
                    seen.request.clone(),
                    answer(&seen.fate),
                    seen.note.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&format!("{evidence}\n\n"));
        }
        let failed: Vec<&str> = self
            .cases
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.case.as_str())
            .collect();
        out.push_str(&format!(
            "{} of {} cases held in {:.1} s{}\n",
            self.cases.len() - failed.len(),
            self.cases.len(),
            self.elapsed_ms as f64 / 1000.0,
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join("; "))
            }
        ));
        out
    }
}

fn answer(fate: &Fate) -> String {
    let cut = |body: &Value| {
        let text = body.to_string();
        if text.chars().count() > 60 {
            format!("{}…", text.chars().take(60).collect::<String>())
        } else {
            text
        }
    };
    match fate {
        Fate::Answered { status, body } => format!("{status} {}", cut(body)),
        Fate::AnswerDropped { status, body } => format!("{status} {} (dropped)", cut(body)),
        Fate::Injected { status } => format!("{status} (injected)"),
        Fate::Withheld => "(not forwarded)".into(),
        Fate::Unreachable { error } => format!("unreachable: {error}"),
    }
}
