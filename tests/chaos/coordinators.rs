//! The testbed's two coordinators and the PostgreSQL database they share: a throwaway
//! server on the host (`testkit::pg`, the image is `FROM scratch` and CI has no Docker Hub),
//! listening also on the Docker bridge's gateway, which the containers reach as
//! `host.docker.internal` with a password; and the check that adoption happened: sagas
//! started on one coordinator were settled by the other (the `owner` of a saga's row is the
//! coordinator that wrote it last), so the kill and the pause of the nemesis mattered.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use sqlx::{Connection, PgConnection, Row};
use testkit::pg::PgServer;

use super::transfers::Transfer;

/// The coordinators' services, which are also their node ids (docker-compose.yml).
pub const COORDINATORS: [&str; 2] = ["coordinator", "coordinator-b"];
/// Their lease: short, so that adoption shows within the run (the nemesis pauses one for
/// longer than this, and keeps one killed about as long).
pub const LEASE_MS: u64 = 2_000;

/// The coordinators' database on a server of the test's own.
pub struct Database {
    /// The URL the containers use (`host.docker.internal`, with a password).
    pub for_containers: String,
    /// The URL the test uses (127.0.0.1, as the superuser).
    pub for_checks: String,
    /// The server; stopped and deleted when dropped.
    _server: PgServer,
}

/// The address of Docker's default bridge on this host, which `host-gateway` names: the
/// gateway of its IPAM configuration, or, where the engine leaves that out (Debian's Docker
/// 20.10 does), the IPv4 address of the bridge's interface (`docker0`), which is the same.
fn bridge_gateway() -> IpAddr {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            r#"{{range .IPAM.Config}}{{.Gateway}}{{end}}|{{index .Options "com.docker.network.bridge.name"}}"#,
        ])
        .output()
        .expect("running docker network inspect bridge");
    let text = String::from_utf8_lossy(&out.stdout);
    let (gateway, interface) = text.trim().split_once('|').unwrap_or((text.trim(), ""));
    // An engine that does not name the interface ("<no value>") uses the default one.
    let interface = if interface.is_empty() || interface.starts_with('<') {
        "docker0"
    } else {
        interface
    };
    let gateway = gateway.parse().ok();
    gateway.or_else(|| ipv4_of(interface)).unwrap_or_else(|| {
        panic!(
            "Docker's default bridge has no gateway address (docker network inspect bridge: {text:?} {}), \
             and its interface {interface:?} no IPv4 address; the containers reach PostgreSQL on the host through it",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The first IPv4 address of the network interface `name`, if it has one.
fn ipv4_of(name: &str) -> Option<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases; each
    // entry's name is a C string and an AF_INET address is a sockaddr_in.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut entry = list;
        while let Some(e) = entry.as_ref() {
            let named = !e.ifa_name.is_null() && std::ffi::CStr::from_ptr(e.ifa_name).to_bytes() == name.as_bytes();
            if named && !e.ifa_addr.is_null() && i32::from((*e.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(e.ifa_addr as *const libc::sockaddr_in);
                // s_addr holds the address in network order, as it is in memory.
                found = Some(IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())));
                break;
            }
            entry = e.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

impl Database {
    /// Starts the server (listening on 127.0.0.1 and on the bridge's gateway) and makes
    /// the coordinators' role and database.
    pub async fn start() -> Database {
        let gateway = bridge_gateway();
        let server = tokio::task::spawn_blocking(move || PgServer::dedicated_on(gateway))
            .await
            .unwrap();
        let password = format!("{:032x}", rand::random::<u128>());
        let name = server.database_for("geosaga", &password).await;
        let port = server.port();
        Database {
            for_containers: format!("postgres://geosaga:{password}@host.docker.internal:{port}/{name}"),
            for_checks: format!("postgres://postgres@127.0.0.1:{port}/{name}"),
            _server: server,
        }
    }
}

/// How many sagas each coordinator started that the other settled, as a check.
pub async fn adopted(db: &Database, started: &[Transfer]) -> (&'static str, Result<String, String>) {
    const NAME: &str = "sagas adopted across coordinators (started on one, settled by the other)";
    let mut conn = match PgConnection::connect(&db.for_checks).await {
        Ok(c) => c,
        Err(e) => return (NAME, Err(format!("cannot read the coordinators' database: {e}"))),
    };
    let rows = match sqlx::query("SELECT id::text AS id, owner, generation FROM sagas")
        .fetch_all(&mut conn)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return (NAME, Err(format!("reading the sagas: {e}"))),
    };
    let owners: BTreeMap<String, (Option<String>, i64)> = rows
        .iter()
        .map(|r| (r.get("id"), (r.get("owner"), r.get("generation"))))
        .collect();
    // (started on, settled by) -> sagas
    let mut moves: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut claimed_again = 0;
    for t in started {
        let Some((owner, generation)) = owners.get(&t.id) else {
            return (NAME, Err(format!("saga {} is not in the database", t.id)));
        };
        let owner = owner.clone().unwrap_or_else(|| "(none)".into());
        if !COORDINATORS.contains(&owner.as_str()) {
            return (NAME, Err(format!("saga {} is owned by {owner:?}", t.id)));
        }
        if *generation > 1 {
            claimed_again += 1;
        }
        *moves.entry((COORDINATORS[t.coordinator], owner)).or_insert(0) += 1;
    }
    let across: usize = moves.iter().filter(|((from, to), _)| from != to).map(|(_, n)| n).sum();
    let summary = moves
        .iter()
        .map(|((from, to), n)| format!("{from} -> {to}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if across == 0 {
        return (
            NAME,
            Err(format!(
                "no saga was settled by another coordinator than the one it started on ({summary}): the kill and the pause proved nothing"
            )),
        );
    }
    (
        NAME,
        Ok(format!(
            "{across} adopted ({summary}); {claimed_again} claimed again at least once (restart or adoption)"
        )),
    )
}
