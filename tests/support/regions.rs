//! A three-region cluster of `geosaga region` processes on loopback, with a TCP proxy on
//! every directed link between two regions: latency is injected on the network path, and a
//! region can be cut off (its links drop every connection) and reconnected.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use testkit::process::GeosagaProcess;
pub use testkit::proxy::Proxy;

/// The regions of the test cluster; keys starting with `PREFIXES[i]` live in `NAMES[i]`.
pub const NAMES: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// The prefix rules' prefixes.
pub const PREFIXES: [&str; 3] = ["us/", "eu/", "ap/"];

/// A free port for a process to bind later, outside the kernel's ephemeral range (32768 and
/// up on Linux): a port from `bind(0)`, once released, can be handed to another test's
/// proxy (which binds port 0) before the region binds it, and the two clusters would then
/// talk to each other. Each test process walks its own sequence (seeded by its pid).
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7_919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(101)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A client trusting the cluster CA in `certs`, presenting `NAME.pem` as its certificate
/// when `identity` names one.
pub fn tls_client(certs: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca);
    if let Some(name) = identity {
        let mut pem = std::fs::read(certs.join(format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(certs.join(format!("{name}.key"))).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Waits until a TLS region's `/readyz` answers 200 (at most 30 s).
pub async fn wait_ready_tls(region: &RegionProcess, client: &reqwest::Client) {
    let start = std::time::Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", region.url)).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} not ready over TLS; log: {}",
            region.name,
            region.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `geosaga region` process.
pub struct RegionProcess {
    /// Its name.
    pub name: String,
    /// The process; its `url` is the region's direct URL (clients use it; peers go through
    /// proxies).
    pub process: GeosagaProcess,
}

impl std::ops::Deref for RegionProcess {
    type Target = GeosagaProcess;
    fn deref(&self) -> &GeosagaProcess {
        &self.process
    }
}

impl std::ops::DerefMut for RegionProcess {
    fn deref_mut(&mut self) -> &mut GeosagaProcess {
        &mut self.process
    }
}

/// Where a test region stores its data.
#[derive(Debug, Clone)]
pub enum RegionStore {
    /// A SQLite file in the test's directory (the default).
    Sqlite,
    /// PostgreSQL, named by `database = URL` in the region's entry of the file.
    PostgresInFile(String),
    /// PostgreSQL, named by `geosaga region --database URL`.
    PostgresFlag(String),
    /// PostgreSQL, named by the `GEOSAGA_REGION_DATABASE` environment variable.
    PostgresEnv(String),
}

/// Every region on its SQLite file.
pub const ALL_SQLITE: [RegionStore; 3] = [RegionStore::Sqlite, RegionStore::Sqlite, RegionStore::Sqlite];

/// Three regions and the six proxies between them.
pub struct Cluster {
    /// The regions, in the order of [`NAMES`].
    pub regions: Vec<RegionProcess>,
    /// `links[i][j]`: the proxy region `i` uses to reach region `j` (`None` on the diagonal).
    pub links: Vec<Vec<Option<Proxy>>>,
}

fn config_text(
    settings: &str,
    addresses: &[String],
    listens: &[u16],
    data: &Path,
    rules: &str,
    stores: &[RegionStore],
    clock_offsets: &[i64],
) -> String {
    let mut text = format!("{settings}\n");
    for (i, name) in NAMES.iter().enumerate() {
        text.push_str(&format!(
            "[[regions]]\nname = \"{name}\"\naddress = \"{}\"\nlisten = \"127.0.0.1:{}\"\ndata = \"{}\"\n",
            addresses[i],
            listens[i],
            data.join(format!("{name}.db")).display()
        ));
        if let RegionStore::PostgresInFile(url) = &stores[i] {
            text.push_str(&format!("database = \"{url}\"\n"));
        }
        if clock_offsets[i] != 0 {
            text.push_str(&format!("clock_offset_ms = {}\n", clock_offsets[i]));
        }
        text.push('\n');
    }
    for (prefix, name) in PREFIXES.iter().zip(NAMES) {
        text.push_str(&format!("[[rules]]\nprefix = \"{prefix}\"\nregion = \"{name}\"\n\n"));
    }
    text.push_str(rules);
    text
}

impl Cluster {
    /// Starts three regions in `dir` with the replication `settings` (TOML lines), every
    /// link with `latency_ms` one way.
    pub async fn start(dir: &Path, settings: &str, latency_ms: u64) -> Cluster {
        Cluster::start_with_rules(dir, settings, "", latency_ms).await
    }

    /// [`Cluster::start`] with `rules` (TOML `[[rules]]` tables) after the three prefix rules.
    pub async fn start_with_rules(dir: &Path, settings: &str, rules: &str, latency_ms: u64) -> Cluster {
        Cluster::launch(dir, settings, rules, latency_ms, None, &ALL_SQLITE, &[0; 3]).await
    }

    /// [`Cluster::start`] with each region's clock moved by `clock_offsets` (in the order of
    /// [`NAMES`]; the test-only `clock_offset_ms` of a region's configuration).
    pub async fn start_skewed(dir: &Path, settings: &str, latency_ms: u64, clock_offsets: [i64; 3]) -> Cluster {
        Cluster::launch(dir, settings, "", latency_ms, None, &ALL_SQLITE, &clock_offsets).await
    }

    /// [`Cluster::start`] with each region's store as `stores` says (in the order of
    /// [`NAMES`]).
    pub async fn start_with_stores(dir: &Path, settings: &str, latency_ms: u64, stores: &[RegionStore; 3]) -> Cluster {
        Cluster::launch(dir, settings, "", latency_ms, None, stores, &[0; 3]).await
    }

    /// [`Cluster::start`] with mutual TLS between the regions: `certs` holds `ca.pem` and
    /// `NAME.pem`/`NAME.key` per region (as `geosaga region certs` writes them); the
    /// regions' URLs are `https://`.
    pub async fn start_tls(dir: &Path, settings: &str, latency_ms: u64, certs: &Path) -> Cluster {
        Cluster::launch(dir, settings, "", latency_ms, Some(certs), &ALL_SQLITE, &[0; 3]).await
    }

    async fn launch(
        dir: &Path,
        settings: &str,
        rules: &str,
        latency_ms: u64,
        certs: Option<&Path>,
        stores: &[RegionStore],
        clock_offsets: &[i64],
    ) -> Cluster {
        let scheme = if certs.is_some() { "https" } else { "http" };
        let listens: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
        let mut links = Vec::new();
        for i in 0..NAMES.len() {
            let mut row = Vec::new();
            for (j, port) in listens.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    let proxy = Proxy::start(*port).await;
                    proxy.set_latency(latency_ms);
                    Some(proxy)
                });
            }
            links.push(row);
        }
        let mut regions = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let addresses: Vec<String> = (0..NAMES.len())
                .map(|j| match &links[i][j] {
                    Some(proxy) => format!("{scheme}://127.0.0.1:{}", proxy.port),
                    None => format!("{scheme}://127.0.0.1:{}", listens[j]),
                })
                .collect();
            let config = dir.join(format!("{name}.toml"));
            let settings = match certs {
                // The [tls] table follows the top-level settings, before the [[regions]];
                // `{name}` stands for the region's name.
                Some(certs) => format!(
                    "{settings}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    certs.join("ca.pem").display(),
                    certs.join("{name}.pem").display(),
                    certs.join("{name}.key").display()
                ),
                None => settings.to_owned(),
            };
            let text = config_text(&settings, &addresses, &listens, dir, rules, stores, clock_offsets);
            std::fs::write(&config, text).unwrap();
            let mut args = ["region", "--config", config.to_str().unwrap(), "--name", name]
                .map(String::from)
                .to_vec();
            let mut env = Vec::new();
            match &stores[i] {
                RegionStore::PostgresFlag(url) => args.extend(["--database".to_owned(), url.clone()]),
                RegionStore::PostgresEnv(url) => env.push(("GEOSAGA_REGION_DATABASE".to_owned(), url.clone())),
                RegionStore::Sqlite | RegionStore::PostgresInFile(_) => {}
            }
            let url = format!("{scheme}://127.0.0.1:{}", listens[i]);
            let process = GeosagaProcess::launch(args, env, dir.join(format!("{name}.log")), url);
            regions.push(RegionProcess {
                name: (*name).to_owned(),
                process,
            });
        }
        for region in &regions {
            match certs {
                None => region.wait_ready().await,
                Some(certs) => wait_ready_tls(region, &tls_client(certs, None)).await,
            }
        }
        Cluster { regions, links }
    }

    /// Sets the one-way latency of both links between regions `a` and `b`.
    pub fn set_latency(&self, a: usize, b: usize, ms: u64) {
        for (x, y) in [(a, b), (b, a)] {
            self.links[x][y].as_ref().unwrap().set_latency(ms);
        }
    }

    /// Cuts region `i` off from the others (`true`) or reconnects it (`false`).
    pub fn set_cut(&self, i: usize, cut: bool) {
        for j in 0..NAMES.len() {
            if let (Some(a), Some(b)) = (&self.links[i][j], &self.links[j][i]) {
                a.set_cut(cut);
                b.set_cut(cut);
            }
        }
    }

    /// Every region's log, for failure messages.
    pub fn logs(&self) -> String {
        self.regions
            .iter()
            .map(|r| format!("==== {}\n{}", r.name, r.log_text()))
            .collect()
    }
}

/// Runs the `geosaga` CLI (a region's backup or restore) and returns what it printed; the
/// test fails if the command does.
pub fn geosaga_cli(args: &[&str]) -> String {
    let done = std::process::Command::new(testkit::process::geosaga_binary())
        .args(args)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "geosaga {args:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    String::from_utf8_lossy(&done.stdout).into_owned()
}
