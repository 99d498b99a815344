//! A fresh, empty PostgreSQL database for each test.
//!
//! Call [`fresh_database`].
//!
//! Where the server comes from:
//! - When `GEOSAGA_TEST_POSTGRES_URL` is set (say `postgres://postgres@127.0.0.1:5432/postgres`),
//!   that server is used: each test gets a `CREATE DATABASE` of its own there, dropped again
//!   when the test's [`TestDb`] is dropped. The user needs the `CREATEDB` privilege.
//! - Otherwise the first test of the process starts a throwaway server from the installed
//!   binaries (`/usr/lib/postgresql/<highest version>/bin`, else `initdb` and `pg_ctl` on
//!   `PATH`): `initdb` into a new temporary directory, `pg_ctl start` on a free port,
//!   listening on 127.0.0.1 only (trust authentication, user `postgres`), with `fsync=on`.
//!   PostgreSQL refuses to run as root, so as root the binaries run through
//!   `runuser -u postgres --` (or `nobody` when there is no `postgres` user) on a directory
//!   owned by that user. Every test of the process shares that server, one database each.
//! - With neither, the helper panics with how to get one: tests never skip silently.
//!
//! Cleaning up: a `Drop` on a static never runs, so the server is stopped twice over:
//! an `atexit` handler runs `pg_ctl stop -m immediate` when the test process exits normally
//! (tests failing included), and a watchdog shell started beside the server waits for the end
//! of a pipe held by the test process; the pipe closes however the process ends (even on
//! `SIGKILL`), and the watchdog then stops the server and deletes its directory. A leftover
//! server, should one survive anyway, cannot disturb later runs: each run uses a new
//! directory and a new port.
//!
//! [`PgServer::stop`], [`PgServer::start`] and [`PgServer::restart`] take a server down and
//! up again (same port, same data), for tests of a database that goes away under load. Use
//! them on a server of the test's own, [`PgServer::dedicated`] (the shared one serves every
//! other test of the process). They block; call them from `spawn_blocking`.
//!
//! [`PgServer::dedicated_on`] starts a server of the test's own that also listens on another
//! address of the host (say the Docker bridge's gateway, for containers), where it wants a
//! password (`scram-sha-256`) from every client; 127.0.0.1 keeps trusting the tests.
//!
//! Under `cargo nextest` every test is its own process, hence its own server (initdb takes
//! about a second and a half); set `GEOSAGA_TEST_POSTGRES_URL` to share one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

use crate::free_port;

/// The variable naming an existing server to test against.
pub const URL_VAR: &str = "GEOSAGA_TEST_POSTGRES_URL";

const NOT_FOUND: &str = "PostgreSQL not found: install it with `apt-get install -y postgresql` or set GEOSAGA_TEST_POSTGRES_URL=postgres://user@host/db";

const DEDICATED_NOT_FOUND: &str = "PostgreSQL not found: this test runs a server of its own, which needs the server binaries: install them with `apt-get install -y postgresql` (GEOSAGA_TEST_POSTGRES_URL does not help here)";

/// A database made for one test; dropped (best effort) when this value is dropped.
pub struct TestDb {
    url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// The URL of the test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // The test's runtime may be the caller; drop from a runtime of our own.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                let drop_it = async {
                    let mut conn = PgConnection::connect(&admin).await?;
                    conn.execute(sql.as_str()).await?;
                    conn.close().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), drop_it).await;
            });
        });
        let _ = dropper.join();
    }
}

/// Creates an empty database for one test (starting the throwaway server first if needed).
pub async fn fresh_database() -> TestDb {
    create_database(&admin_url()).await
}

/// Creates an empty database on the server of `admin_url` (a URL of any database there).
pub async fn create_database(admin_url: &str) -> TestDb {
    let admin_url = admin_url.to_owned();
    let name = unique_name();
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server at {admin_url}: {e}"));
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} at {admin_url}: {e}"));
    let _ = conn.close().await;
    TestDb {
        url: with_database(&admin_url, &name),
        admin_url,
        name,
    }
}

/// The URL to create test databases from: `GEOSAGA_TEST_POSTGRES_URL`, else the throwaway
/// server's `postgres` database.
pub fn admin_url() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => server().admin_url(),
    }
}

/// The throwaway server, or `None` when the tests use `GEOSAGA_TEST_POSTGRES_URL`.
pub fn local_server() -> Option<&'static PgServer> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => None,
        _ => Some(server()),
    }
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!(
        "geosaga_test_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database (path) replaced by `db`, query kept.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{db}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

static SERVER: OnceLock<PgServer> = OnceLock::new();

/// The process's throwaway server, started on first use.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| {
        let server = PgServer::launch(NOT_FOUND, None);
        // SAFETY: registers a plain function; `atexit` has no other preconditions.
        unsafe { atexit(stop_at_exit) };
        server
    })
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn stop_at_exit() {
    // No panics here: unwinding out of an `extern "C"` function aborts.
    if let Some(server) = SERVER.get() {
        let _ = server.try_pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }
}

/// A PostgreSQL server started by the tests, in a temporary directory.
pub struct PgServer {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    /// The addresses it listens on (`listen_addresses`).
    listen: String,
    /// The user the binaries run as (when the tests run as root).
    user: Option<String>,
    /// The watchdog; its stdin (the write end of its pipe) closes when the process ends.
    watchdog: Child,
}

impl PgServer {
    /// Starts a server of the caller's own, not shared with other tests: for tests that stop
    /// or restart it. Dropping it stops it and deletes its directory. Needs the binaries
    /// (`GEOSAGA_TEST_POSTGRES_URL` does not help here).
    pub fn dedicated() -> PgServer {
        PgServer::launch(DEDICATED_NOT_FOUND, None)
    }

    /// Like [`PgServer::dedicated`], also listening on `address` (an IP address of this
    /// host), where any client must log in with a password (`scram-sha-256`): for clients
    /// outside the test process, such as containers reaching the host through Docker's
    /// bridge. Make them a role with [`PgServer::database_for`].
    pub fn dedicated_on(address: std::net::IpAddr) -> PgServer {
        PgServer::launch(DEDICATED_NOT_FOUND, Some(address))
    }

    /// Creates a role `user` with `password` and an empty database it owns; returns the
    /// database's name.
    pub async fn database_for(&self, user: &str, password: &str) -> String {
        let name = unique_name();
        let mut conn = PgConnection::connect(&self.admin_url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
        // Neither can be a bind parameter; both come from the test, quoted as literals.
        let quoted = password.replace('\'', "''");
        for sql in [
            format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{quoted}'"),
            format!("CREATE DATABASE \"{name}\" OWNER \"{user}\""),
        ] {
            conn.execute(sql.as_str())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let _ = conn.close().await;
        name
    }

    /// Creates an empty database on this server.
    pub async fn fresh_database(&self) -> TestDb {
        create_database(&self.admin_url()).await
    }

    fn launch(not_found: &str, also_on: Option<std::net::IpAddr>) -> PgServer {
        let bin = find_bindir().unwrap_or_else(|| panic!("{not_found}"));
        let user = run_as();
        let root = tempfile::Builder::new()
            .prefix("geosaga-pg-")
            .tempdir()
            .expect("creating a temporary directory for PostgreSQL")
            .keep();
        if let Some(user) = &user {
            let uid = id_of(user, "-u");
            let gid = id_of(user, "-g");
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .expect("handing the directory to the PostgreSQL user");
        }
        let watchdog = watchdog(&bin, &root, user.as_deref());
        let mut server = PgServer {
            bin,
            root,
            port: 0,
            listen: match also_on {
                Some(address) => format!("127.0.0.1,{address}"),
                None => "127.0.0.1".to_owned(),
            },
            user,
            watchdog,
        };
        let data = server.data();
        let init = server
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "-D"])
            .arg(&data)
            .output()
            .expect("running initdb");
        check(&init, "initdb", None);
        if also_on.is_some() {
            // initdb trusts local connections only; clients on the other address need a password.
            let hba = data.join("pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
            rules.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
            std::fs::write(&hba, rules).expect("writing pg_hba.conf");
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = free_port();
            match server.try_start() {
                Ok(()) => return server,
                Err(message) if attempts >= 5 => panic!("{message}"),
                Err(_) => {} // most likely the port was taken meanwhile: try another one
            }
        }
    }

    /// The port the server listens on (on 127.0.0.1, and on the address of
    /// [`PgServer::dedicated_on`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the server's `postgres` database, as the superuser `postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A client program of the server's installation (`pg_dump`, `psql`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The server's data directory.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: as if it crashed).
    pub fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        check(&out, "pg_ctl stop", None);
    }

    /// Starts the server again on the same port.
    pub fn start(&self) {
        if let Err(message) = self.try_start() {
            panic!("{message}");
        }
    }

    /// Stops the server at once and starts it again (it recovers from its WAL).
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses={} -p {} -c unix_socket_directories={} -c fsync=on -c max_connections=300",
            self.listen,
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        let log_arg = log.to_string_lossy().into_owned();
        let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log_arg, "-o", &options]);
        if out.status.success() {
            Ok(())
        } else {
            Err(failure(&out, "pg_ctl start", Some(&log)))
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.try_pg_ctl(args).expect("running pg_ctl")
    }

    fn try_pg_ctl(&self, args: &[&str]) -> std::io::Result<Output> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(args).output()
    }

    /// A command running one of the server's binaries, as the right user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.current_dir(&self.root).stdin(Stdio::null());
        command
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.try_pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.root);
        drop(self.watchdog.stdin.take()); // the watchdog finds nothing left to do, and ends
        let _ = self.watchdog.wait();
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bindir() -> Option<PathBuf> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.join("pg_ctl").is_file())
        .filter_map(|dir| {
            std::fs::canonicalize(dir.join("pg_ctl"))
                .ok()?
                .parent()
                .map(Path::to_path_buf)
        })
        .find(|dir| complete(dir))
}

/// The user to run PostgreSQL as: `None` unless the tests run as root.
fn run_as() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().expect("running `id -u`");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let user = ["postgres", "nobody"]
        .into_iter()
        .find(|u| Command::new("id").arg(u).output().is_ok_and(|o| o.status.success()))
        .expect("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL");
    Some(user.to_owned())
}

fn id_of(user: &str, which: &str) -> u32 {
    let out = Command::new("id").args([which, user]).output().expect("running `id`");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no id {which} for user {user}"))
}

/// Starts a shell that waits for its stdin to close (the test process ended), then stops
/// the server and deletes its directory.
fn watchdog(bin: &Path, root: &Path, user: Option<&str>) -> Child {
    const SCRIPT: &str = r#"
        while read -r _; do :; done
        if [ -n "$4" ]; then runuser -u "$4" -- "$1" stop -D "$2" -m immediate -w
        else "$1" stop -D "$2" -m immediate -w; fi
        rm -rf "$3"
    "#;
    let mut child = Command::new("sh");
    child
        .args(["-c", SCRIPT, "geosaga-pg-watchdog"])
        .arg(bin.join("pg_ctl"))
        .arg(root.join("data"))
        .arg(root)
        .arg(user.unwrap_or(""))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    child.spawn().expect("starting the PostgreSQL watchdog (sh)")
}

fn failure(out: &Output, what: &str, log: Option<&Path>) -> String {
    let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
    format!(
        "{what} failed ({}):\n{}{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(out: &Output, what: &str, log: Option<&Path>) {
    if !out.status.success() {
        panic!("{}", failure(out, what, log));
    }
}
