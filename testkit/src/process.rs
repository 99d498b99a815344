//! `geosaga` child processes (a coordinator, a region) that tests can kill with SIGKILL and
//! restart, or pause with SIGSTOP and resume.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `geosaga serve` process.
pub type CoordinatorProcess = GeosagaProcess;

/// A `geosaga` process serving HTTP at `url`, ready once its `/readyz` answers 200.
pub struct GeosagaProcess {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The base URL it serves.
    pub url: String,
}

/// The `geosaga` binary beside the running test: cargo builds a package's binaries before
/// its integration tests, into the directory above the tests' own (`target/debug/deps/..`).
pub fn geosaga_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = dir.join("geosaga");
    assert!(
        binary.is_file(),
        "{} not found: run the test through cargo in geosaga's root package (cargo test --test NAME), which builds it",
        binary.display()
    );
    binary
}

impl GeosagaProcess {
    /// Starts `geosaga serve --database DATABASE` with `extra` arguments on a free port;
    /// its output goes to `log`.
    pub async fn start(database: &str, extra: &[&str], log: PathBuf) -> CoordinatorProcess {
        CoordinatorProcess::start_with_env(database, extra, &[], log).await
    }

    /// [`CoordinatorProcess::start`] with extra environment variables.
    pub async fn start_with_env(
        database: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> CoordinatorProcess {
        let program = geosaga_binary();
        CoordinatorProcess::start_program(&program, database, extra, env, log).await
    }

    /// [`CoordinatorProcess::start_with_env`] with another `geosaga` binary (an older
    /// version, for upgrade tests).
    pub async fn start_program(
        program: &std::path::Path,
        database: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> CoordinatorProcess {
        let port = crate::free_port();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--database".into(),
            database.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut p = GeosagaProcess {
            program: program.to_owned(),
            args,
            env,
            log,
            child: None,
            url: format!("http://127.0.0.1:{port}"),
        };
        p.spawn();
        p.wait_ready().await;
        p
    }

    /// Starts `geosaga ARGS` (output to `log`) without waiting for it to be ready.
    pub fn launch(args: Vec<String>, env: Vec<(String, String)>, log: PathBuf, url: String) -> GeosagaProcess {
        let mut p = GeosagaProcess {
            program: geosaga_binary(),
            args,
            env,
            log,
            child: None,
            url,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("geosaga starts");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200 (at most 30 s).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "`geosaga {}` not ready; log: {}",
                self.args.join(" "),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process with SIGTERM (a clean shutdown: it hands its sagas over) and reaps it.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            child.wait().unwrap();
        }
    }

    /// Stops the process with SIGSTOP, sent to its PID: it stays stopped (its sockets
    /// open, its timers and threads frozen) until [`GeosagaProcess::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process run again (SIGCONT to its PID).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
        }
    }

    /// Sets (or, with `None`, removes) an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// Sends the process `signal` (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_some(),
            None => true,
        }
    }

    /// Starts the process again with the same arguments.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GeosagaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
