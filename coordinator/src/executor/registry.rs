//! The sagas this node runs a task for: spawning a task, the queue of commands to it, the
//! waiters of its end, and its end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sagas::Work;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use uuid::Uuid;

use super::folded::Folded;
use super::saga_task;
use super::{Inner, SagaView};
use crate::Result;
use crate::store::SagaRecord;

/// A command for a saga's task.
pub(crate) enum Command {
    /// Stop starting steps and compensate; `reply` once the cancel is durable.
    Cancel {
        reason: String,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// What a saga's task starts from.
pub(crate) struct Spawn {
    /// The saga's row, owned by this node (its fence is the task's).
    pub(crate) record: SagaRecord,
    /// Its state, folded once by whoever hands it over.
    pub(crate) folded: Folded,
    /// Attempts whose "started" events were written with the saga, to launch as they are.
    pub(crate) fresh: Vec<Work>,
    pub(crate) permit: OwnedSemaphorePermit,
    /// Who waits for the saga to settle.
    pub(crate) waiter: Option<oneshot::Sender<SagaView>>,
}

impl Spawn {
    /// A saga resumed from its log (adopted, retried, found without a task, or started
    /// without an acknowledgement): no attempt to launch as is, nobody waiting.
    pub(crate) fn resumed(record: SagaRecord, folded: Folded, permit: OwnedSemaphorePermit) -> Spawn {
        Spawn {
            record,
            folded,
            fresh: Vec::new(),
            permit,
            waiter: None,
        }
    }
}

struct RunningSaga {
    commands: Arc<Commands>,
    abort: tokio::task::AbortHandle,
    generation: i64,
    /// Who waits for the saga to settle: the task hands them its final view, built from
    /// what it committed, so that answering them costs no read.
    waiters: Vec<oneshot::Sender<SagaView>>,
}

/// The running sagas, by id.
#[derive(Default)]
pub(crate) struct Registry {
    running: Mutex<HashMap<Uuid, RunningSaga>>,
}

impl Registry {
    /// How many sagas run now.
    pub(crate) fn len(&self) -> usize {
        self.running.lock().expect("lock").len()
    }

    /// Whether a task runs saga `id`.
    pub(crate) fn contains(&self, id: Uuid) -> bool {
        self.running.lock().expect("lock").contains_key(&id)
    }

    /// Spawns the task of a saga. A task still registered for it (re-adopted after this
    /// node's own lease lapsed: the old task is fenced) is stopped, and its waiters wait for
    /// the new one.
    pub(crate) fn spawn(&self, inner: &Arc<Inner>, task: Spawn) {
        let task = prepare(inner, task);
        let mut running = self.running.lock().expect("lock");
        task.spawn_in(&mut running);
    }

    /// Spawns the task unless one runs for the saga already (a start, an adoption, a retry
    /// or the periodic check got there first); returns whether it did. `why` goes to the
    /// log.
    pub(crate) fn spawn_unless_running(&self, inner: &Arc<Inner>, task: Spawn, why: &str) -> bool {
        let task = prepare(inner, task);
        let mut running = self.running.lock().expect("lock");
        if running.contains_key(&task.id) {
            return false;
        }
        tracing::info!(saga_id = %task.id, generation = task.generation, why, "running saga");
        task.spawn_in(&mut running);
        true
    }

    /// The sagas of `ids` no task runs.
    pub(crate) fn not_running(&self, ids: &[Uuid]) -> HashSet<Uuid> {
        let running = self.running.lock().expect("lock");
        ids.iter().filter(|id| !running.contains_key(id)).copied().collect()
    }

    /// The command queue of the task of saga `id`, if one runs it.
    pub(crate) fn commands(&self, id: Uuid) -> Option<Arc<Commands>> {
        self.running.lock().expect("lock").get(&id).map(|r| r.commands.clone())
    }

    /// Passes on a cancel requested through the store (on another node) to the task of
    /// saga `id`, if one runs here.
    pub(crate) fn forward_cancel(&self, id: Uuid) {
        if let Some(commands) = self.commands(id) {
            let (reply, _) = oneshot::channel();
            let _ = commands.send(Command::Cancel {
                reason: "cancel requested".into(),
                reply,
            });
        }
    }

    /// The task of saga `id` at `generation` ended: hands `view` (the saga settled) to its
    /// waiters.
    pub(crate) fn finished(&self, id: Uuid, generation: i64, view: Option<SagaView>) {
        let mut running = self.running.lock().expect("lock");
        let ended = if running.get(&id).is_some_and(|r| r.generation == generation) {
            running.remove(&id)
        } else {
            None
        };
        drop(running);
        if let (Some(ended), Some(view)) = (ended, view) {
            for waiter in ended.waiters {
                let _ = waiter.send(view.clone());
            }
        }
    }

    /// Stops every task.
    pub(crate) fn abort_all(&self) {
        let running: Vec<RunningSaga> = self.running.lock().expect("lock").drain().map(|(_, r)| r).collect();
        for r in running {
            r.abort.abort();
        }
    }
}

/// A saga's task, built and not yet spawned.
struct Prepared<F> {
    id: Uuid,
    generation: i64,
    commands: Arc<Commands>,
    waiter: Option<oneshot::Sender<SagaView>>,
    future: F,
}

/// Builds the task of `task` (outside the registry's lock).
fn prepare(inner: &Arc<Inner>, task: Spawn) -> Prepared<impl Future<Output = ()> + Send + 'static> {
    let Spawn {
        record,
        folded,
        fresh,
        permit,
        waiter,
    } = task;
    let commands = Arc::new(Commands::open());
    Prepared {
        id: record.id,
        generation: record.generation,
        commands: commands.clone(),
        waiter,
        future: saga_task::drive(inner.clone(), record, folded, fresh, commands, permit),
    }
}

impl<F: Future<Output = ()> + Send + 'static> Prepared<F> {
    /// Spawns the task and registers it, under the registry's lock: the task cannot end (and
    /// look itself up) before it is registered.
    fn spawn_in(self, running: &mut HashMap<Uuid, RunningSaga>) {
        let task = tokio::spawn(self.future);
        let previous = running.insert(
            self.id,
            RunningSaga {
                commands: self.commands,
                abort: task.abort_handle(),
                generation: self.generation,
                waiters: self.waiter.into_iter().collect(),
            },
        );
        if let Some(previous) = previous {
            previous.abort.abort();
            if let Some(current) = running.get_mut(&self.id) {
                current.waiters.extend(previous.waiters);
            }
        }
    }
}

/// The commands for one saga's task: a queue that allocates only when a command comes (a
/// cancel, rarely), and a wake-up. A per-saga channel cost a kilobyte up front.
pub(crate) struct Commands {
    /// `None` once the task has ended: commands are refused, and the queued ones dropped.
    queue: Mutex<Option<Vec<Command>>>,
    wake: tokio::sync::Notify,
}

impl Commands {
    fn open() -> Commands {
        Commands {
            queue: Mutex::new(Some(Vec::new())),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Queues a command for the task; gives it back if the task has ended.
    pub(crate) fn send(&self, command: Command) -> std::result::Result<(), Command> {
        match self.queue.lock().expect("lock").as_mut() {
            Some(queue) => queue.push(command),
            None => return Err(command),
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The next command (for the task).
    pub(crate) async fn recv(&self) -> Command {
        loop {
            if let Some(command) = self.queue.lock().expect("lock").as_mut().and_then(|q| q.pop()) {
                return command;
            }
            self.wake.notified().await;
        }
    }

    /// The task has ended: later commands are refused and queued ones dropped (their
    /// senders see the reply channel close).
    pub(crate) fn close(&self) {
        self.queue.lock().expect("lock").take();
    }
}
