//! The cases `geosaga check` runs, and the plan each gives the proxy. How a run of each
//! is judged is in [`super::judge`].

use sagas::{SagaDefinition, StepAction};

use super::proxy::{Plan, Repeat};

/// One way of running the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Case {
    /// Nothing done to it.
    Completes,
    /// The action of this step refused with a business 4xx.
    FailsAt(String),
    /// Every action (and, while unwinding from a failure at the last step, every
    /// compensation) delivered twice.
    Repeated {
        /// Whether the second copy follows the first one's answer or goes with it.
        repeat: Repeat,
        /// Whether the saga is made to unwind (a failure at the last step).
        unwinding: bool,
    },
    /// The first answer of this step's action lost after the participant applied it.
    AnswerLost(String),
    /// Every answer of this step's action lost: its retries run out.
    AnswersLost(String),
    /// This step's action held back until after its compensation.
    LateAction(String),
    /// The coordinator restarted when the n-th action (from 1) arrived.
    Restart(usize),
}

impl Case {
    /// Every case for `definition`; `actions` is how many action deliveries the plain run
    /// made (one restart before each).
    pub fn all(definition: &SagaDefinition, actions: usize) -> Vec<Case> {
        let names = || definition.steps.iter().map(|s| s.name.clone());
        let http = || {
            definition
                .steps
                .iter()
                .filter(|s| matches!(s.action, StepAction::Http(_)))
                .map(|s| s.name.clone())
        };
        let mut cases = vec![Case::Completes];
        cases.extend(names().map(Case::FailsAt));
        for repeat in [Repeat::Sequential, Repeat::Concurrent] {
            cases.push(Case::Repeated {
                repeat,
                unwinding: false,
            });
            if definition.steps.len() > 1 {
                cases.push(Case::Repeated {
                    repeat,
                    unwinding: true,
                });
            }
        }
        cases.extend(http().map(Case::AnswerLost));
        cases.extend(http().map(Case::AnswersLost));
        cases.extend(
            definition
                .steps
                .iter()
                .filter(|s| {
                    matches!(s.action, StepAction::Http(_)) && matches!(s.compensation, Some(StepAction::Http(_)))
                })
                .map(|s| Case::LateAction(s.name.clone())),
        );
        cases.extend((1..=actions).map(Case::Restart));
        cases
    }

    /// What the case is called in the report.
    pub fn title(&self) -> String {
        match self {
            Case::Completes => "completes as written".into(),
            Case::FailsAt(step) => format!("unwinds when `{step}` is refused"),
            Case::Repeated { repeat, unwinding } => format!(
                "every {} delivered twice, {}",
                if *unwinding {
                    "action and compensation"
                } else {
                    "action"
                },
                match (repeat, unwinding) {
                    (Repeat::Sequential, false) => "in sequence",
                    (Repeat::Concurrent, false) => "concurrently",
                    (Repeat::Sequential, true) => "in sequence, unwinding from the last step",
                    (Repeat::Concurrent, true) => "concurrently, unwinding from the last step",
                }
            ),
            Case::AnswerLost(step) => format!("the answer of `{step}` lost once after it applied"),
            Case::AnswersLost(step) => format!("every answer of `{step}` lost: its retries run out"),
            Case::LateAction(step) => format!("the action of `{step}` arrives after its compensation"),
            Case::Restart(n) => format!("the coordinator restarts when action {n} arrives"),
        }
    }

    /// The step that fails (refused at the proxy, or by the coordinator's fault injection
    /// for a region step), if the case makes one fail.
    pub fn failing_step<'d>(&self, definition: &'d SagaDefinition) -> Option<&'d str> {
        match self {
            Case::FailsAt(step) => definition
                .steps
                .iter()
                .find(|s| &s.name == step)
                .map(|s| s.name.as_str()),
            Case::Repeated { unwinding: true, .. } => definition
                .topological_order()
                .last()
                .map(|&i| definition.steps[i].name.as_str()),
            _ => None,
        }
    }

    /// What the proxy does in this case.
    pub fn plan(&self, definition: &SagaDefinition) -> Plan {
        let refuse = self.failing_step(definition).map(str::to_owned);
        match self {
            Case::Completes | Case::FailsAt(_) => Plan {
                refuse,
                ..Plan::default()
            },
            Case::Repeated { repeat, .. } => Plan {
                refuse,
                repeat: Some(*repeat),
                ..Plan::default()
            },
            Case::AnswerLost(step) => Plan {
                drop_answers: Some((step.clone(), 1)),
                ..Plan::default()
            },
            Case::AnswersLost(step) => Plan {
                drop_answers: Some((step.clone(), u32::MAX)),
                ..Plan::default()
            },
            Case::LateAction(step) => Plan {
                late: Some(step.clone()),
                ..Plan::default()
            },
            Case::Restart(n) => Plan {
                hold_action: Some(*n),
                ..Plan::default()
            },
        }
    }
}
