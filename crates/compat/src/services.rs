//! Servers some suites need (Redis, PostgreSQL, memcached): installed from Debian packages and
//! started on 127.0.0.1 only. A service that cannot be had skips its entries, with the reason.

use crate::process::output_of;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ServiceSpec {
    pub name: &'static str,
    pub port: u16,
    /// Debian packages providing it.
    pub packages: &'static [&'static str],
    /// Shell script starting it on 127.0.0.1 (idempotent).
    pub start: &'static str,
    /// Environment the suites get so they find it.
    pub env: &'static [(&'static str, &'static str)],
}

pub const SERVICES: &[ServiceSpec] = &[
    ServiceSpec {
        name: "redis",
        port: 6379,
        packages: &["redis-server"],
        start: "redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no",
        env: &[],
    },
    ServiceSpec {
        name: "memcached",
        port: 11211,
        packages: &["memcached"],
        start: "memcached -u memcache -l 127.0.0.1 -p 11211 -d || memcached -u root -l 127.0.0.1 -p 11211 -d",
        env: &[],
    },
    ServiceSpec {
        name: "postgres",
        port: 5432,
        packages: &["postgresql"],
        // Debian's cluster, reachable on 127.0.0.1 only, trusting local connections (test data only).
        start: r#"set -e
CONF=$(ls -d /etc/postgresql/*/main | sort -V | tail -1)
VER=$(basename $(dirname $CONF))
sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" $CONF/postgresql.conf
sed -i -E 's/^(host\s+all\s+all\s+127.0.0.1\/32\s+)\S+/\1trust/; s/^(local\s+all\s+\S+\s+)\S+/\1trust/' $CONF/pg_hba.conf
pg_ctlcluster $VER main restart || pg_ctlcluster $VER main start"#,
        env: &[("PGHOST", "127.0.0.1"), ("PGPORT", "5432"), ("PGUSER", "postgres")],
    },
];

pub fn spec(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES.iter().find(|s| s.name == name)
}

fn listening(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// Starts services once per tool run and remembers the outcome (an error is the skip reason).
pub struct Services {
    state: Mutex<BTreeMap<&'static str, Result<(), String>>>,
    apt_updated: Mutex<bool>,
    /// When false, nothing is installed or started: entries needing services are skipped.
    pub allowed: bool,
}

impl Services {
    pub fn new(allowed: bool) -> Services {
        Services {
            state: Mutex::new(BTreeMap::new()),
            apt_updated: Mutex::new(false),
            allowed,
        }
    }

    /// Ensures every named service runs; returns the environment the suite needs.
    pub fn ensure(&self, names: &[String]) -> Result<BTreeMap<String, String>, String> {
        let mut env = BTreeMap::new();
        for name in names {
            let spec = spec(name).ok_or_else(|| format!("unknown service {name}"))?;
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let outcome = state
                .entry(spec.name)
                .or_insert_with(|| self.start(spec))
                .clone();
            drop(state);
            outcome?;
            for (key, value) in spec.env {
                env.insert(key.to_string(), value.to_string());
            }
        }
        Ok(env)
    }

    fn start(&self, spec: &ServiceSpec) -> Result<(), String> {
        if listening(spec.port) {
            return Ok(());
        }
        if !self.allowed {
            return Err(format!(
                "needs {} (services disabled by --no-services)",
                spec.name
            ));
        }
        let binary = match spec.name {
            "postgres" => "pg_ctlcluster",
            "memcached" => "memcached",
            _ => "redis-server",
        };
        if output_of(Command::new("sh").args(["-c", &format!("command -v {binary}")])).is_err() {
            self.apt_install(spec.packages)
                .map_err(|err| format!("needs {}; installing it failed: {err}", spec.name))?;
        }
        eprintln!(
            "asyncbis-compat: starting {} on 127.0.0.1:{}",
            spec.name, spec.port
        );
        output_of(Command::new("sh").args(["-c", spec.start]))
            .map_err(|err| format!("needs {}; starting it failed: {err}", spec.name))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if listening(spec.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!(
            "needs {}; it did not listen on 127.0.0.1:{} within 30 s",
            spec.name, spec.port
        ))
    }

    fn apt_install(&self, packages: &[&str]) -> Result<(), String> {
        let mut updated = self
            .apt_updated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !*updated {
            output_of(Command::new("apt-get").args(["update", "-q"]))?;
            *updated = true;
        }
        output_of(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_service_has_a_spec() {
        for name in crate::manifest::KNOWN_SERVICES {
            assert!(spec(name).is_some(), "{name}");
        }
        let services = Services::new(false);
        let err = services.ensure(&["nope".to_string()]).unwrap_err();
        assert!(err.contains("unknown service"));
    }
}
