//! The containerised testbed (`deploy/testbed`) as the chaos suite drives it: its own
//! compose project on free host ports, with its own certificates (made by `testbed up`) and
//! tokens (chosen here), brought up and hurt with the same `testbed` script a user runs
//! (`up`, `cut`, `heal`, `kill`, `start`, `pause`, `unpause`, `latency`, `slow`), and taken
//! down at the end. It runs two coordinators on a PostgreSQL database on the host
//! ([`Database`], `up --database URL --coordinators 2`) and one region's clock ahead of the
//! others' ([`CLOCK_OFFSET`], `up --clock-offset`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::coordinators::{COORDINATORS, Database, LEASE_MS};

/// The regions, as named in the testbed.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// The key prefix homed in each region (the testbed's placement rules).
pub const PREFIXES: [&str; 3] = ["us/", "eu/", "ap/"];
/// The region whose clock runs ahead of the others', and by how much (ms): within the
/// testbed's `max_clock_offset_ms` ([`MAX_CLOCK_OFFSET_MS`]), so that every promise still
/// holds, on clocks that disagree.
pub const CLOCK_OFFSET: (&str, i64) = ("eu-west", 40);
/// `max_clock_offset_ms` of `deploy/testbed/config/*.toml`.
pub const MAX_CLOCK_OFFSET_MS: i64 = 50;
/// The round-trip times of the testbed's table (`deploy/testbed/testbed`), in ms.
pub const TABLE_RTT: [(&str, &str, u64); 3] = [
    ("us-east", "eu-west", 80),
    ("us-east", "ap-south", 220),
    ("eu-west", "ap-south", 160),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails the test, saying how to get Docker, unless the engine and docker-compose answer.
pub fn require_docker() {
    let works = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        works("docker", &["info"]) && works("docker-compose", &["version"]),
        "the chaos suite needs Docker's engine and docker-compose: run scripts/test as root (it installs \
         Debian's docker.io and docker-compose and starts dockerd), or `sudo apt-get install -y docker.io \
         docker-compose && sudo systemctl start docker`"
    );
}

/// The testbed's tokens (each a random hex string) and where its certificates are.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The directory `testbed up` writes the cluster CA and the certificates into.
    pub certs: PathBuf,
    /// The coordinator's API token.
    pub api: String,
    /// The regions' `admin` token.
    pub admin: String,
    /// The regions' `write` token.
    pub write: String,
    /// The regions' `read` token.
    pub read: String,
}

impl Secrets {
    fn new(project: &str) -> Secrets {
        let token = || format!("{:032x}", rand::random::<u128>());
        Secrets {
            certs: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{project}-certs")),
            api: token(),
            admin: token(),
            write: token(),
            read: token(),
        }
    }

    /// A client of the regions (trusting the testbed's CA only, so also of the plain-HTTP
    /// coordinator) that sends `token`, if any, as `Authorization: Bearer`.
    pub fn client(&self, token: Option<&str>) -> reqwest::Client {
        let ca = std::fs::read(self.certs.join("ca.pem")).expect("testbed up wrote the cluster CA");
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .default_headers(headers)
            .timeout(Duration::from_secs(6))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }
}

/// A running testbed; taken down when dropped (unless `GEOSAGA_CHAOS_KEEP=1`).
pub struct Testbed {
    project: String,
    env: Vec<(String, String)>,
    /// The first coordinator's base URL.
    pub coordinator: String,
    /// Every coordinator's base URL, in the order of [`COORDINATORS`].
    pub coordinators: Vec<String>,
    /// Their database.
    pub database: Database,
    /// Each region's base URL (`https://`), in the order of [`REGIONS`].
    pub regions: Vec<String>,
    /// The netem API's base URL.
    pub netem: String,
    /// Its tokens and certificates.
    pub secrets: Secrets,
}

/// What a script printed.
pub struct Ran {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its standard output and error.
    pub output: String,
}

impl Testbed {
    /// Builds the image (`deploy/build-image`: incremental, quick when nothing changed),
    /// starts the coordinators' database and the testbed under the compose project
    /// `project`, on free ports, with new tokens and certificates.
    pub async fn up(project: &str) -> Testbed {
        let build = run_script(root().join("deploy/build-image"), &[], &[]).await;
        assert!(build.ok, "deploy/build-image failed:\n{}", build.output);
        let database = Database::start().await;
        let ports: Vec<u16> = (0..6).map(|_| testkit::free_port()).collect();
        let secrets = Secrets::new(project);
        let env: Vec<(String, String)> = [
            ("GEOSAGA_TESTBED_PROJECT", project.to_owned()),
            ("GEOSAGA_TESTBED_COORDINATOR_PORT", ports[0].to_string()),
            ("GEOSAGA_TESTBED_US_EAST_PORT", ports[1].to_string()),
            ("GEOSAGA_TESTBED_EU_WEST_PORT", ports[2].to_string()),
            ("GEOSAGA_TESTBED_AP_SOUTH_PORT", ports[3].to_string()),
            ("GEOSAGA_TESTBED_NETEM_PORT", ports[4].to_string()),
            ("GEOSAGA_TESTBED_COORDINATOR_B_PORT", ports[5].to_string()),
            ("GEOSAGA_TESTBED_LEASE_MS", LEASE_MS.to_string()),
            ("GEOSAGA_TESTBED_CERTS", secrets.certs.display().to_string()),
            ("GEOSAGA_TESTBED_TOKEN", secrets.api.clone()),
            ("GEOSAGA_TESTBED_ADMIN_TOKEN", secrets.admin.clone()),
            ("GEOSAGA_TESTBED_WRITE_TOKEN", secrets.write.clone()),
            ("GEOSAGA_TESTBED_READ_TOKEN", secrets.read.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let testbed = Testbed {
            project: project.to_owned(),
            env,
            coordinator: format!("http://127.0.0.1:{}", ports[0]),
            coordinators: [ports[0], ports[5]]
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}"))
                .collect(),
            regions: ports[1..4].iter().map(|p| format!("https://127.0.0.1:{p}")).collect(),
            netem: format!("http://127.0.0.1:{}", ports[4]),
            secrets,
            database,
        };
        // A testbed left over by an interrupted run of the same project goes first (with
        // its certificates: `up` makes new ones).
        testbed.run(&["down"]).await;
        let offset = format!("{}={}", CLOCK_OFFSET.0, CLOCK_OFFSET.1);
        let coordinators = COORDINATORS.len().to_string();
        let database = testbed.database.for_containers.clone();
        let up = testbed
            .run(&[
                "up",
                "--database",
                &database,
                "--coordinators",
                &coordinators,
                "--clock-offset",
                &offset,
            ])
            .await;
        assert!(up.ok, "testbed up failed:\n{}\n{}", up.output, testbed.logs().await);
        testbed
    }

    /// Runs `deploy/testbed/testbed ARGS` for this testbed.
    pub async fn run(&self, args: &[&str]) -> Ran {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_script(root().join("deploy/testbed/testbed"), args, &env).await
    }

    /// Runs `testbed ARGS` and fails the test if it fails.
    pub async fn must(&self, args: &[&str]) {
        let ran = self.run(args).await;
        assert!(ran.ok, "testbed {} failed:\n{}", args.join(" "), ran.output);
    }

    /// The last lines of every container's log.
    pub async fn logs(&self) -> String {
        self.run(&["logs", "--tail", "200"]).await.output
    }

    /// The compose project's name.
    pub fn project(&self) -> &str {
        &self.project
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::env::var("GEOSAGA_CHAOS_KEEP").is_ok_and(|v| v == "1") {
            eprintln!(
                "GEOSAGA_CHAOS_KEEP=1: the testbed {} is still up (GEOSAGA_TESTBED_PROJECT={} deploy/testbed/testbed down)",
                self.project, self.project
            );
            return;
        }
        let _ = std::process::Command::new(root().join("deploy/testbed/testbed"))
            .arg("down")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn run_script(path: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = tokio::process::Command::new(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    Ran {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
