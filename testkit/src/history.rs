//! Checking recorded histories of one key for linearizability: the Wing-Gong-Lowe search
//! with memoization (the algorithm of Porcupine and Knossos) over a register. Its verdicts
//! are cross-checked against Stateright's `LinearizabilityTester` on random small histories
//! (the tests below); Stateright's own search does not memoize and cannot cope with the
//! histories of the fault tests, which have hundreds of operations per key. The black-box
//! tests record every strong read and write they send (through proxies, kills and
//! partitions) and check each key here.
//!
//! A write that failed *definitely* (a `quorum-not-reached` problem: aborted before
//! becoming visible) is left out; one whose outcome is unknown (a timeout, a dead home) is
//! kept as still in flight, so the checker may place it anywhere after its invocation or
//! nowhere. Reads without an answer tell nothing and are left out.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Write this value (values should be unique, so that a read names its write).
    Write(String),
    /// Read the value.
    Read,
}

/// What it learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write was acknowledged.
    Written,
    /// A read returned this (`None`: no value).
    Read(Option<String>),
    /// The call certainly had no effect.
    Failed,
    /// The call may or may not have taken effect.
    Unknown,
}

/// One call of one client, with its real-time interval (offsets from a common origin).
#[derive(Debug, Clone)]
pub struct Operation {
    /// Who made the call; a client makes one call at a time (shown in failures).
    pub client: usize,
    /// The call.
    pub call: Call,
    /// When it was sent.
    pub invoked: Duration,
    /// When its answer arrived.
    pub returned: Duration,
    /// The answer.
    pub outcome: Outcome,
}

/// Every strong call of a test's clients, with the key it was on, as the calls return.
pub type Ops = Mutex<Vec<(String, Operation)>>;

/// Records one strong call of `client` on `key` in `ops`: a write of `value` (`write`) or a
/// read, sent at `invoked` and answered (or given up) at `returned`.
pub fn record(
    ops: &Ops,
    key: &str,
    client: usize,
    write: bool,
    value: String,
    span: (Duration, Duration),
    outcome: Outcome,
) {
    let call = if write { Call::Write(value) } else { Call::Read };
    let (invoked, returned) = span;
    let operation = Operation {
        client,
        call,
        invoked,
        returned,
        outcome,
    };
    ops.lock().expect("lock").push((key.to_owned(), operation));
}

/// The `type` of a region's problem document, without its URL prefix (`""` for none).
pub fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://geosaga.dev/problems/")
}

/// What a region's answer to a strong write (`write`) or read says: `answer` is its status
/// and JSON body, `None` when none came. A 200 is a write acknowledged or the value read, a
/// `key-not-found` read no value, a `quorum-not-reached` write one aborted before it became
/// visible anywhere; anything else leaves the outcome unknown.
pub fn strong_outcome(write: bool, answer: Option<&(u16, Value)>) -> Outcome {
    match (answer, write) {
        (Some((200, _)), true) => Outcome::Written,
        (Some((200, body)), false) => Outcome::Read(body["value"].as_str().map(str::to_owned)),
        (Some((404, body)), false) if problem_type(body) == "key-not-found" => Outcome::Read(None),
        (Some((503, body)), true) if problem_type(body) == "quorum-not-reached" => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// The sequential specification: a register of an optional string.
fn step(state: &Option<String>, call: &Call, outcome: &Outcome) -> Option<Option<String>> {
    match (call, outcome) {
        (Call::Write(v), _) => Some(Some(v.clone())),
        (Call::Read, Outcome::Read(seen)) => (seen == state).then(|| state.clone()),
        (Call::Read, Outcome::Written | Outcome::Failed | Outcome::Unknown) => None,
    }
}

/// The operations the checker considers: definite failures and reads without an answer
/// are dropped; an unknown write returns "at infinity" (it may take effect any time after
/// its invocation, or never: linearized after everything, it changes no read).
fn relevant(ops: &[Operation]) -> Vec<&Operation> {
    ops.iter()
        .filter(|o| match (&o.outcome, &o.call) {
            (Outcome::Failed, _) | (Outcome::Unknown, Call::Read) => false,
            (Outcome::Written | Outcome::Read(_), _) | (Outcome::Unknown, Call::Write(_)) => true,
        })
        .collect()
}

/// Checks that the operations on one register (starting at `initial`) are linearizable,
/// with the Wing-Gong-Lowe search that Porcupine and Knossos use: walk the history's events
/// in time order, linearize a call whenever the register allows it (remembering each
/// (linearized set, state) pair already explored), backtrack at a return whose call could
/// not be linearized. On failure, shows the history.
pub fn check(initial: Option<String>, ops: &[Operation]) -> Result<(), String> {
    let ops = relevant(ops);
    let n = ops.len();
    // Nodes: 0 head, 1..=2n events, 2n+1 tail. Calls before returns at equal times.
    let (head, tail) = (0, 2 * n + 1);
    let mut events: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked, false, i));
        let returned = if matches!(op.outcome, Outcome::Unknown) {
            Duration::MAX
        } else {
            op.returned
        };
        events.push((returned, true, i));
    }
    events.sort();
    let mut is_call = vec![false; 2 * n + 2];
    let mut op_of = vec![0; 2 * n + 2];
    let mut return_of = vec![0; n];
    for (k, (_, is_return, i)) in events.iter().enumerate() {
        is_call[k + 1] = !is_return;
        op_of[k + 1] = *i;
        if *is_return {
            return_of[*i] = k + 1;
        }
    }
    let mut next: Vec<usize> = (1..=2 * n + 2).collect();
    let mut prev: Vec<usize> = (0..2 * n + 2).map(|k| k.saturating_sub(1)).collect();
    let unlink = |k: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[k], next[k]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |k: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[k], next[k]);
        next[p] = k;
        prev[q] = k;
    };
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut calls: Vec<(usize, Option<String>)> = Vec::new();
    let mut state = initial;
    let mut entry = next[head];
    while next[head] != tail {
        if is_call[entry] {
            let i = op_of[entry];
            if let Some(new_state) = step(&state, &ops[i].call, &ops[i].outcome) {
                let mut with = linearized.clone();
                with[i / 64] |= 1 << (i % 64);
                if cache.insert((with.clone(), new_state.clone())) {
                    calls.push((entry, std::mem::replace(&mut state, new_state)));
                    linearized = with;
                    unlink(entry, &mut next, &mut prev);
                    unlink(return_of[i], &mut next, &mut prev);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            let Some((call, old_state)) = calls.pop() else {
                return Err(format!("{n} operations are not linearizable: {ops:#?}"));
            };
            let i = op_of[call];
            state = old_state;
            linearized[i / 64] &= !(1 << (i % 64));
            relink(return_of[i], &mut next, &mut prev);
            relink(call, &mut next, &mut prev);
            entry = next[call];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
    use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

    use super::*;

    /// The reference verdict: Stateright's tester, fed the events in time order, each
    /// client a thread (a new one after an unknown outcome, which stays in flight).
    fn stateright_verdict(initial: Option<String>, ops: &[Operation]) -> bool {
        let mut by_client: BTreeMap<usize, Vec<&Operation>> = BTreeMap::new();
        for op in relevant(ops) {
            by_client.entry(op.client).or_default().push(op);
        }
        let mut events = Vec::new();
        let mut thread = 0;
        for calls in by_client.values_mut() {
            calls.sort_by_key(|o| o.invoked);
            thread += 1;
            for op in calls.iter() {
                let invoke = match &op.call {
                    Call::Write(v) => RegisterOp::Write(Some(v.clone())),
                    Call::Read => RegisterOp::Read,
                };
                events.push((op.invoked, false, thread, Some(invoke), None));
                match &op.outcome {
                    Outcome::Written => events.push((op.returned, true, thread, None, Some(RegisterRet::WriteOk))),
                    Outcome::Read(v) => {
                        events.push((op.returned, true, thread, None, Some(RegisterRet::ReadOk(v.clone()))))
                    }
                    Outcome::Unknown | Outcome::Failed => thread += 1,
                }
            }
        }
        events.sort_by_key(|e| (e.0, e.1));
        let mut tester = LinearizabilityTester::new(Register(initial));
        for (_, _, thread, invoke, ret) in events {
            match (invoke, ret) {
                (Some(op), _) => tester.on_invoke(thread, op).map(|_| ()),
                (None, Some(ret)) => tester.on_return(thread, ret).map(|_| ()),
                (None, None) => unreachable!(),
            }
            .expect("a well-formed history");
        }
        tester.is_consistent()
    }

    fn arb_history() -> impl Strategy<Value = Vec<Operation>> {
        // Up to 3 clients, each making sequential calls; values from a small set so that
        // reads often match some write, and sometimes none.
        proptest::collection::vec((0usize..3, any::<bool>(), 0u8..3, 1u64..6, 0u8..8), 1..9).prop_map(|calls| {
            let mut clock = [0u64; 3];
            calls
                .into_iter()
                .enumerate()
                .map(|(n, (client, write, value, len, fate))| {
                    let start = clock[client] + 1 + u64::from(fate % 3);
                    clock[client] = start + len;
                    let call = if write {
                        Call::Write(format!("v{n}"))
                    } else {
                        Call::Read
                    };
                    let outcome = match (write, fate) {
                        (true, 0) => Outcome::Unknown,
                        (true, 1) => Outcome::Failed,
                        (true, _) => Outcome::Written,
                        (false, _) if value == 0 => Outcome::Read(None),
                        (false, _) => Outcome::Read(Some(format!("v{}", n.saturating_sub(usize::from(value))))),
                    };
                    Operation {
                        client,
                        call,
                        invoked: Duration::from_millis(start),
                        returned: Duration::from_millis(start + len),
                        outcome,
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// The checker agrees with Stateright's on every small history.
        #[test]
        fn agrees_with_stateright(history in arb_history()) {
            prop_assert_eq!(check(None, &history).is_ok(), stateright_verdict(None, &history), "{:#?}", history);
        }
    }

    #[test]
    fn long_sequential_histories_are_checked_quickly() {
        let ops: Vec<Operation> = (0..2_000u64)
            .map(|i| {
                let (call, outcome) = if i % 2 == 0 {
                    (w(&format!("v{i}")), Outcome::Written)
                } else {
                    (Call::Read, read(Some(&format!("v{}", i - 1))))
                };
                op((i % 4) as usize, call, i * 10, i * 10 + 15, outcome)
            })
            .collect();
        assert!(check(None, &ops).is_ok());
    }

    fn op(client: usize, call: Call, from: u64, to: u64, outcome: Outcome) -> Operation {
        Operation {
            client,
            call,
            invoked: Duration::from_millis(from),
            returned: Duration::from_millis(to),
            outcome,
        }
    }

    fn w(v: &str) -> Call {
        Call::Write(v.to_owned())
    }

    fn read(v: Option<&str>) -> Outcome {
        Outcome::Read(v.map(str::to_owned))
    }

    #[test]
    fn concurrent_writes_may_be_seen_in_either_order() {
        let h = [
            op(0, w("a"), 0, 10, Outcome::Written),
            op(1, w("b"), 1, 9, Outcome::Written),
            op(2, Call::Read, 11, 12, read(Some("a"))),
            op(2, Call::Read, 13, 14, read(Some("a"))),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = [
            op(0, w("a"), 0, 10, Outcome::Written),
            op(1, Call::Read, 11, 12, read(None)),
        ];
        assert!(check(None, &h).is_err());
        let flip_flop = [
            op(0, w("a"), 0, 1, Outcome::Written),
            op(0, w("b"), 2, 3, Outcome::Written),
            op(1, Call::Read, 4, 5, read(Some("b"))),
            op(1, Call::Read, 6, 7, read(Some("a"))),
        ];
        assert!(check(None, &flip_flop).is_err());
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen_and_failed_ones_must_not() {
        let unknown = [
            op(0, w("a"), 0, 10, Outcome::Unknown),
            op(0, w("b"), 11, 12, Outcome::Written),
            op(1, Call::Read, 13, 14, read(Some("b"))),
        ];
        assert!(check(None, &unknown).is_ok());
        let seen = [
            op(0, w("a"), 0, 10, Outcome::Unknown),
            op(1, Call::Read, 20, 21, read(Some("a"))),
        ];
        assert!(check(None, &seen).is_ok());
        let failed_but_seen = [
            op(0, w("a"), 0, 10, Outcome::Failed),
            op(1, Call::Read, 20, 21, read(Some("a"))),
        ];
        assert!(check(None, &failed_but_seen).is_err());
    }
}
