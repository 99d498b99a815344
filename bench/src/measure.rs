//! Result rows and the CPU and memory probes taken around each run.

use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::workload::RunStats;

/// Thread-name prefix of the client runtime.
pub const CLIENT_THREADS: &str = "bench-client";
/// Thread-name prefix of the participant runtime.
pub const PARTICIPANT_THREADS: &str = "bench-particip";

/// Where CPU time of one role is read from.
#[derive(Debug, Clone, Copy)]
pub enum Cpu {
    /// This process, less the client and participant threads (the in-process engine).
    SelfEngine,
    /// This process's client threads.
    SelfClient,
    /// This process's participant threads.
    SelfParticipant,
    /// Another process.
    Pid(u32),
    /// A PostgreSQL server (postmaster and its backends).
    PgTree(u32),
}

impl Cpu {
    /// CPU seconds so far.
    pub fn read(self) -> f64 {
        match self {
            Cpu::SelfEngine => {
                procfs::cpu_self()
                    - procfs::cpu_self_threads(CLIENT_THREADS)
                    - procfs::cpu_self_threads(PARTICIPANT_THREADS)
            }
            Cpu::SelfClient => procfs::cpu_self_threads(CLIENT_THREADS),
            Cpu::SelfParticipant => procfs::cpu_self_threads(PARTICIPANT_THREADS),
            Cpu::Pid(pid) => procfs::cpu_of_pid(pid),
            Cpu::PgTree(pid) => procfs::cpu_of_tree(pid),
        }
    }
}

/// The CPU sources of a run, by role (`None`: not measured).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuRoles {
    /// The engine (server).
    pub engine: Option<Cpu>,
    /// The participant service (the Restate Node service; the HTTP variant's participant).
    pub participant: Option<Cpu>,
    /// The load client.
    pub client: Option<Cpu>,
    /// The database server.
    pub database: Option<Cpu>,
}

/// CPU seconds per role at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot([Option<f64>; 4]);

impl CpuRoles {
    /// Reads every role.
    pub fn snapshot(&self) -> CpuSnapshot {
        let read = |c: Option<Cpu>| c.map(Cpu::read);
        CpuSnapshot([
            read(self.engine),
            read(self.participant),
            read(self.client),
            read(self.database),
        ])
    }
}

impl CpuSnapshot {
    /// Milliseconds of CPU per saga by role between `self` and `later`.
    pub fn per_saga_ms(&self, later: &CpuSnapshot, n: u64) -> [Option<f64>; 4] {
        let mut out = [None; 4];
        for (slot, (a, b)) in out.iter_mut().zip(self.0.iter().zip(later.0.iter())) {
            if let (Some(a), Some(b)) = (a, b) {
                *slot = Some((b - a).max(0.0) * 1000.0 / n.max(1) as f64);
            }
        }
        out
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Row {
    /// Engine: geosaga, Restate, DBOS.
    pub engine: String,
    /// Where it keeps its state.
    pub backend: String,
    /// How steps run and how the client waits.
    pub variant: String,
    /// Saga steps.
    pub steps: usize,
    /// Closed-loop clients.
    pub concurrency: usize,
    /// Sagas.
    pub n: u64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
    /// Neither.
    pub other: u64,
    /// Whether the 90/10 check passed.
    pub ok: bool,
    /// Sagas per second.
    pub sagas_per_s: f64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// Peak RSS of the engine during the run (MB).
    pub peak_rss_mb: Option<f64>,
    /// What the peak RSS is of.
    pub rss_note: String,
    /// For geosaga in-process: the process's whole peak (MB), of which `peak_rss_mb` is the
    /// growth during the run.
    pub peak_rss_abs_mb: Option<f64>,
    /// Engine CPU per saga (ms).
    pub cpu_engine_ms: Option<f64>,
    /// Participant service CPU per saga (ms).
    pub cpu_participant_ms: Option<f64>,
    /// Client CPU per saga (ms).
    pub cpu_client_ms: Option<f64>,
    /// Database server CPU per saga (ms).
    pub cpu_db_ms: Option<f64>,
    /// Store commits per saga (geosaga).
    pub commits_per_saga: Option<f64>,
    /// Events per saga (geosaga).
    pub events_per_saga: Option<f64>,
    /// The largest group commit (geosaga).
    pub max_batch: Option<u64>,
    /// Unexpected outcomes, if any.
    pub errors: Vec<String>,
}

impl Row {
    /// A row from a run's stats and CPU figures.
    pub fn new(
        engine: &str,
        backend: &str,
        variant: &str,
        steps: usize,
        concurrency: usize,
        stats: &RunStats,
        cpu: [Option<f64>; 4],
    ) -> Row {
        Row {
            engine: engine.into(),
            backend: backend.into(),
            variant: variant.into(),
            steps,
            concurrency,
            n: stats.n,
            completed: stats.completed,
            compensated: stats.compensated,
            other: stats.other,
            ok: stats.check().is_ok(),
            sagas_per_s: stats.rate(),
            p50_ms: stats.quantile_ms(0.50),
            p99_ms: stats.quantile_ms(0.99),
            cpu_engine_ms: cpu[0],
            cpu_participant_ms: cpu[1],
            cpu_client_ms: cpu[2],
            cpu_db_ms: cpu[3],
            errors: stats.errors.clone(),
            ..Row::default()
        }
    }

    /// The engine's CPU per saga with its database's, in ms.
    pub fn cpu_total_ms(&self) -> f64 {
        [
            self.cpu_engine_ms,
            self.cpu_participant_ms,
            self.cpu_client_ms,
            self.cpu_db_ms,
        ]
        .iter()
        .flatten()
        .sum()
    }

    /// "engine / backend / variant".
    pub fn label(&self) -> String {
        format!("{} on {} ({})", self.engine, self.backend, self.variant)
    }
}

/// Peak RSS of this process during a run: reset the peak before, read it after.
pub struct SelfPeak {
    before_kb: u64,
}

impl SelfPeak {
    /// Resets the peak and remembers the current RSS.
    pub fn start() -> SelfPeak {
        procfs::reset_peak("self");
        SelfPeak {
            before_kb: procfs::status_kb("self", "VmRSS").unwrap_or(0),
        }
    }

    /// `(peak MB, peak minus RSS before MB)`.
    pub fn finish(&self) -> (f64, f64) {
        let hwm = procfs::status_kb("self", "VmHWM").unwrap_or(0);
        (hwm as f64 / 1024.0, hwm.saturating_sub(self.before_kb) as f64 / 1024.0)
    }
}
