//! A throwaway PostgreSQL server for the benchmark, started from the installed binaries
//! (`/usr/lib/postgresql/*/bin`) as the `postgres` user, since the harness runs as root.
//! Its settings are initdb's defaults (fsync on, synchronous_commit on) except the
//! listen address, the port and max_connections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::Connection;

/// The newest installed PostgreSQL's `bin` directory, installing the Debian package when
/// none is there and we are root.
pub fn bin_dir(install: bool) -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, bin)| bin)
    };
    if let Some(bin) = find() {
        return Ok(bin);
    }
    // SAFETY: geteuid has no preconditions.
    if !install || unsafe { libc::geteuid() } != 0 {
        bail!("PostgreSQL is not installed (apt-get install -y postgresql)");
    }
    eprintln!("== installing PostgreSQL from Debian's packages");
    let ok = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null",
        ])
        .status()?
        .success();
    if !ok {
        bail!("apt-get install postgresql failed");
    }
    find().context("PostgreSQL installed but no initdb found")
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running throwaway server.
pub struct Pg {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The postmaster's pid.
    pub postmaster: u32,
    /// The `bin` directory it runs from.
    pub bin: PathBuf,
    /// `SHOW server_version`.
    pub version: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

impl Pg {
    /// Creates a cluster in a temporary directory and starts it.
    pub async fn start(install: bool) -> Result<Pg> {
        let bin = bin_dir(install)?;
        let dir = tempfile::Builder::new().prefix("geosaga-bench-pg").tempdir()?;
        let data = dir.path().join("data");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()?;
        if !chown.success() {
            bail!("chown of {} to postgres failed", dir.path().display());
        }
        let out = as_postgres(&bin, "initdb")
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        let child = as_postgres(&bin, "postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting postgres")?;
        let mut pg = Pg {
            port,
            postmaster: 0,
            bin,
            version: String::new(),
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match sqlx::PgConnection::connect(&pg.url("postgres")).await {
                Ok(mut conn) => {
                    let (v,): (String,) = sqlx::query_as("SHOW server_version").fetch_one(&mut conn).await?;
                    pg.version = v;
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(pg._dir.path().join("postgres.log")).unwrap_or_default();
                    bail!("postgres did not start: {e}\n{log}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))?;
        pg.postmaster = pid
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .parse()
            .context("postmaster.pid")?;
        Ok(pg)
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_db(&self, db: &str) -> Result<String> {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await?;
        Ok(self.url(db))
    }

    /// Drops a database (closing its connections).
    pub async fn drop_db(&self, db: &str) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.postmaster > 0 {
                // SAFETY: signalling the postmaster we started.
                unsafe { libc::kill(self.postmaster as i32, libc::SIGINT) };
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}
