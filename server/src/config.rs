//! Typed configuration: a TOML file, then environment variables and command-line flags
//! (applied by `main.rs`) on top.
//!
//! Every section refuses unknown keys, so a typo is an error naming the key rather than
//! a setting silently ignored. Defaults are written here, in code.

mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use converge_api::Role;
use serde::Deserialize;

pub use validate::{ConfigError, MAX_PASSWORD_MEMORY_KIB};

/// Everything the server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener and the dashboard files.
    #[serde(default)]
    pub server: ServerConfig,
    /// The database: sessions, migration history, audit log, kiosk links.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Session cookie and lifetimes.
    #[serde(default)]
    pub session: SessionConfig,
    /// Limits on failed sign-in attempts.
    #[serde(default)]
    pub login_throttle: LoginThrottleConfig,
    /// The accounts that may sign in.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The libvirt hosts Converge watches and migrates between.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// How often job statistics are read.
    #[serde(default)]
    pub sampler: SamplerConfig,
    /// `[dirty_rate]`: measuring guests' dirty rates in the background.
    #[serde(default)]
    pub dirty_rate: DirtyRateConfig,
    /// The live event stream.
    #[serde(default)]
    pub events: EventsConfig,
    /// Defaults for starting migrations.
    #[serde(default)]
    pub migrations: MigrationsConfig,
    /// Presets added to (or replacing) the built-in ones, by name.
    #[serde(default)]
    pub presets: Vec<converge_api::Preset>,
    /// Which VMs belong to which project (VMs with Nova metadata need no entry).
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// Prometheus metrics on a listener of their own; none without this section.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`: Prometheus metrics (`GET /metrics`) on their own listener, for a bearer
/// token only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port of the metrics listener, e.g. `127.0.0.1:9184`; not the
    /// dashboard's.
    pub listen: SocketAddr,
    /// SHA-256 of the bearer token scrapers send, as 64 hex digits (`printf %s "$TOKEN" |
    /// sha256sum`). In Prometheus: `authorization: { credentials_file: … }`.
    pub token_sha256: String,
}

/// `[[projects]]`: a project and the VMs it owns. A VM's project is, first, the one that
/// lists its UUID here; else the one in OpenStack Nova's metadata in its domain XML
/// (`<nova:project uuid="…">`); else the one that lists it as `host/name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project's name, as listed in tenants' `projects`.
    pub name: String,
    /// Its VMs, each by UUID or as `host/domain-name` (a name is only unique per host).
    pub vms: Vec<String>,
}

/// One entry of `[[projects]] vms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectVm<'a> {
    /// A domain UUID, lower-case as libvirt reports it.
    Uuid(&'a str),
    /// A domain name on one host.
    OnHost {
        /// The host's `[[hosts]] name`.
        host: &'a str,
        /// The domain's name there.
        name: &'a str,
    },
}

impl<'a> ProjectVm<'a> {
    /// Reads an entry: a UUID (8-4-4-4-12 hex digits) or `host/name`; `None` otherwise.
    pub fn parse(entry: &'a str) -> Option<Self> {
        let entry = entry.trim();
        let is_uuid = entry.len() == 36
            && entry.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if is_uuid {
            return Some(Self::Uuid(entry));
        }
        let (host, name) = entry.split_once('/')?;
        (!host.is_empty() && !name.is_empty() && !name.contains('/'))
            .then_some(Self::OnHost { host, name })
    }
}

/// `[migrations]`: defaults for starting migrations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationsConfig {
    /// The preset used when a start request names none.
    pub default_preset: String,
    /// The longest any migration may run, seconds, whatever its settings say — including
    /// migrations Converge finds running that someone else started. Default 3400: below a
    /// one-hour identity token, so whatever waits on the migration learns how it ended.
    pub max_duration_s: u64,
    /// What happens at the ceiling: `abort` (the VM stays on its source), `pause` (the
    /// last pass completes with the guest paused) or `post_copy` (where allowed at start;
    /// otherwise abort).
    pub max_duration_action: converge_api::TimeoutAction,
}

/// Shortest and longest ceiling accepted, seconds.
pub const MAX_DURATION_RANGE_S: std::ops::RangeInclusive<u64> = 10..=7 * 24 * 3600;

impl Default for MigrationsConfig {
    fn default() -> Self {
        Self {
            default_preset: crate::presets::DEFAULT_PRESET.into(),
            max_duration_s: 3400,
            max_duration_action: converge_api::TimeoutAction::Abort,
        }
    }
}

/// `[[hosts]]`: one libvirt host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Short name shown in the dashboard and used in the API, e.g. `compute-07`.
    pub name: String,
    /// libvirt connection URI, e.g. `qemu+tcp://10.0.0.7/system` or `qemu+ssh://…`.
    pub uri: String,
    /// Migration URI other hosts use to send a VM here (`VIR_MIGRATE_PARAM_URI`), e.g.
    /// `tcp://10.1.0.7` for a dedicated migration network; libvirt chooses when unset.
    #[serde(default)]
    pub migration_uri: Option<String>,
    /// Address this host's QEMU listens on for incoming migrations
    /// (`VIR_MIGRATE_PARAM_LISTEN_ADDRESS`); libvirt chooses when unset.
    #[serde(default)]
    pub listen_address: Option<String>,
    /// Let Converge start migrations of VMs that Nova manages (their domain XML carries
    /// Nova's metadata). Off by default: libvirt moving a Nova instance leaves Nova's
    /// database pointing at the old host, so the move must go through Nova. Turn it on
    /// only for hosts where no Nova runs.
    #[serde(default)]
    pub start_nova_managed: bool,
    /// Memory a drain keeps free on this host when it places VMs here, MiB (for the host
    /// itself, QEMU's overhead, page cache). Default 1024.
    #[serde(default = "default_reserve_mib")]
    pub reserve_mib: u64,
    /// The most guest memory this host may hold, MiB; a drain places nothing here past
    /// it (whatever libvirt reports free). None: no limit but free memory.
    #[serde(default)]
    pub max_guest_memory_mib: Option<u64>,
}

fn default_reserve_mib() -> u64 {
    1024
}

/// `[sampler]`: reading job statistics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Interval between job-statistics readings of each running migration, ms (50–10000).
    pub interval_ms: u64,
    /// Interval between refreshes of each host's VM list, ms (lifecycle events also
    /// trigger one), 200–60000.
    pub vm_refresh_ms: u64,
    /// Longest wait between reconnection attempts to a host that went away, seconds.
    pub max_reconnect_backoff_s: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            interval_ms: 500,
            vm_refresh_ms: 2000,
            max_reconnect_backoff_s: 30,
        }
    }
}

/// `[dirty_rate]`: each running VM that is not migrating has its dirty rate measured by
/// libvirt (`virDomainStartDirtyRateCalc`, page sampling) now and then, one VM at a time
/// per host. Forecasts, the adaptive preset and the VM list use the readings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirtyRateConfig {
    /// Measure at all.
    pub enabled: bool,
    /// Each VM is measured again after this many seconds (10–3600).
    pub every_s: u64,
    /// Length of one measurement, seconds (1–10; QEMU samples pages over it).
    pub period_s: u32,
    /// Rest between two measurements on one host, seconds (0–600): with `period_s`, the
    /// duty cycle.
    pub gap_s: u64,
}

impl Default for DirtyRateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every_s: 300,
            period_s: 1,
            gap_s: 5,
        }
    }
}

/// `[events]`: the live event stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept for viewers that reconnect with `Last-Event-ID`; a viewer further
    /// behind gets a `resync` event and refetches.
    pub replay_buffer: usize,
    /// Seconds between keep-alive comments on an idle stream.
    pub keepalive_s: u64,
    /// Live streams one account (or one kiosk link) may have open at once; one more is
    /// refused with 429 (the streams already open keep going).
    pub max_streams_per_principal: usize,
    /// Seconds between checks for streams whose session expired (sign-outs and revoked
    /// kiosk links end their streams at once).
    pub session_check_s: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            replay_buffer: 4096,
            keepalive_s: 15,
            max_streams_per_principal: 8,
            session_check_s: 10,
        }
    }
}

/// `[server]`: the HTTP listener and the dashboard files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port of the HTTP listener, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Folder of the built dashboard (Trunk's `dist/`); relative to the config file.
    pub dist_dir: PathBuf,
    /// Replaced by `trusted_proxies`; refused when set to true, with a message saying so.
    pub trust_forwarded_for: bool,
    /// Addresses or networks (`10.0.0.5`, `10.0.0.0/24`, `fd00::/8`) of reverse proxies
    /// whose `X-Forwarded-For` is believed: the client is the rightmost address in it
    /// that is not one of these. From any other peer the header is ignored.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Host names (`converge.example.org`, or `name:port` to pin the port) this server
    /// answers to besides its listen address, `localhost`, `127.0.0.1` and `[::1]`. A
    /// request for any other `Host` is refused before anything else (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://converge.example.org`) that may send state-changing requests
    /// besides the one the browser asked for (its `Host`). Needed only behind a reverse
    /// proxy that rewrites `Host`; everything else from another site is refused (CSRF).
    pub allowed_origins: Vec<String>,
    /// Seconds a connection may take to send a whole request header, counted from when it
    /// connects or its last answer ended: this is also how long an idle keep-alive
    /// connection is kept.
    pub header_timeout_s: u64,
    /// Seconds a request body may take to arrive.
    pub body_timeout_s: u64,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold at once; trusted proxies
    /// are exempt.
    pub max_connections_per_address: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dist_dir: PathBuf::from("dist"),
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            header_timeout_s: 10,
            body_timeout_s: 10,
            max_connections: 1024,
            max_connections_per_address: 128,
        }
    }
}

/// An address or a network in CIDR notation, as `server.trusted_proxies` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    network: IpAddr,
    prefix: u8,
}

impl ProxyNet {
    /// Whether `addr` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = unmap(addr);
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

impl std::str::FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("\"{text}\" is not an address or a network like 10.0.0.0/24");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network = unmap(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl<'de> Deserialize<'de> for ProxyNet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[database]`: the SQLite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Path of the SQLite database file, created if missing; relative to the config file.
    pub path: PathBuf,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("converge.db"),
        }
    }
}

/// `[session]`: the session cookie and how long a session lasts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Name of the session cookie.
    pub cookie_name: String,
    /// Mark the cookie `Secure` (sent over HTTPS only). Turn on whenever users reach
    /// Converge over TLS, e.g. through a reverse proxy.
    pub secure_cookie: bool,
    /// A session unused for this many minutes ends.
    pub idle_timeout_minutes: u32,
    /// A session ends this many hours after sign-in, however active it is.
    pub absolute_lifetime_hours: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "converge_session".into(),
            secure_cookie: false,
            idle_timeout_minutes: 30,
            absolute_lifetime_hours: 12,
        }
    }
}

/// `[login_throttle]`: failed sign-ins allowed before further attempts are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginThrottleConfig {
    /// Length of the sliding window in which failures are counted, in seconds.
    pub window_seconds: u32,
    /// Failures allowed per username within the window.
    pub max_failures_per_user: u32,
    /// Failures allowed per client address within the window (higher: offices share one).
    pub max_failures_per_address: u32,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            window_seconds: 300,
            max_failures_per_user: 5,
            max_failures_per_address: 20,
        }
    }
}

/// `[[users]]`: one account.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name typed at sign-in; case-sensitive.
    pub username: String,
    /// Argon2 PHC string, as printed by `converge hash-password`.
    pub password_hash: String,
    /// `admin`, `operator`, `tenant` or `kiosk`.
    pub role: Role,
    /// Projects whose VMs a tenant may see; required for tenants, refused for other roles.
    #[serde(default)]
    pub projects: Vec<String>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("projects", &self.projects)
            .finish()
    }
}

impl Config {
    /// Reads, parses and checks a configuration file; relative paths in it are taken
    /// from the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|err| err.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and checks configuration text; relative paths stay as written.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(ConfigError::from_toml)?;
        config.validate()?;
        Ok(config)
    }

    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.server.dist_dir, &mut self.database.path] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}
