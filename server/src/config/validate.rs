//! Checks that serde cannot express, each error naming the offending field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use converge_api::Role;
use password_hash::PasswordHash;

use super::{Config, ProjectVm};

/// Largest argon2 memory cost a configured hash may ask for, in KiB (256 MiB): the server
/// holds this much per password-check slot.
pub const MAX_PASSWORD_MEMORY_KIB: u32 = 256 * 1024;

/// Why a configuration could not be used; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{context}{message}")]
    Syntax {
        /// `"in FILE: "` once the file is known.
        context: String,
        /// The parser's message, which quotes the offending line and key.
        message: String,
    },
    /// A value of the right type that cannot be used.
    #[error("{context}{field}: {problem}")]
    Invalid {
        /// `"in FILE: "` once the file is known.
        context: String,
        /// Dotted path of the field, e.g. `users[2].password_hash`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl ConfigError {
    pub(super) fn from_toml(err: toml::de::Error) -> Self {
        Self::Syntax {
            context: String::new(),
            message: err.to_string().trim_end().to_owned(),
        }
    }

    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            context: String::new(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn in_file(self, path: &Path) -> Self {
        let context = format!("in {}: ", path.display());
        match self {
            Self::Syntax { message, .. } => Self::Syntax { context, message },
            Self::Invalid { field, problem, .. } => Self::Invalid {
                context,
                field,
                problem,
            },
            read @ Self::Read { .. } => read,
        }
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let session = &self.session;
        if session.cookie_name.is_empty()
            || !session
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::invalid(
                "session.cookie_name",
                "use letters, digits, '-' or '_' only",
            ));
        }
        positive("session.idle_timeout_minutes", session.idle_timeout_minutes)?;
        positive(
            "session.absolute_lifetime_hours",
            session.absolute_lifetime_hours,
        )?;
        let throttle = &self.login_throttle;
        positive("login_throttle.window_seconds", throttle.window_seconds)?;
        positive(
            "login_throttle.max_failures_per_user",
            throttle.max_failures_per_user,
        )?;
        positive(
            "login_throttle.max_failures_per_address",
            throttle.max_failures_per_address,
        )?;
        let dirty = &self.dirty_rate;
        in_range("dirty_rate.every_s", dirty.every_s, 10, 3600)?;
        in_range("dirty_rate.period_s", u64::from(dirty.period_s), 1, 10)?;
        in_range("dirty_rate.gap_s", dirty.gap_s, 0, 600)?;
        let sampler = &self.sampler;
        in_range("sampler.interval_ms", sampler.interval_ms, 50, 10_000)?;
        in_range("sampler.vm_refresh_ms", sampler.vm_refresh_ms, 200, 60_000)?;
        in_range(
            "sampler.max_reconnect_backoff_s",
            sampler.max_reconnect_backoff_s,
            1,
            3600,
        )?;
        in_range(
            "events.replay_buffer",
            self.events.replay_buffer as u64,
            16,
            1_000_000,
        )?;
        in_range("events.keepalive_s", self.events.keepalive_s, 1, 300)?;
        in_range(
            "events.max_streams_per_principal",
            self.events.max_streams_per_principal as u64,
            1,
            10_000,
        )?;
        in_range(
            "events.session_check_s",
            self.events.session_check_s,
            1,
            300,
        )?;
        self.validate_server()?;
        for (i, origin) in self.server.allowed_origins.iter().enumerate() {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.contains(['/', '?', '#', ' '])) {
                return Err(ConfigError::invalid(
                    format!("server.allowed_origins[{i}]"),
                    "give an origin as scheme://host[:port], e.g. \"https://converge.example.org\", without a path",
                ));
            }
        }
        self.validate_metrics()?;
        self.validate_users()?;
        self.validate_hosts()?;
        self.validate_projects()?;
        self.validate_presets()
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.trust_forwarded_for {
            return Err(ConfigError::invalid(
                "server.trust_forwarded_for",
                "replaced by server.trusted_proxies: list your reverse proxies' addresses, \
                 e.g. trusted_proxies = [\"10.0.0.5\"], and remove this setting",
            ));
        }
        in_range("server.header_timeout_s", server.header_timeout_s, 1, 300)?;
        in_range("server.body_timeout_s", server.body_timeout_s, 1, 300)?;
        in_range(
            "server.max_connections",
            server.max_connections as u64,
            16,
            1_000_000,
        )?;
        in_range(
            "server.max_connections_per_address",
            server.max_connections_per_address as u64,
            1,
            server.max_connections as u64,
        )?;
        for (i, host) in server.allowed_hosts.iter().enumerate() {
            let valid = !host.is_empty()
                && host.len() <= 255
                && !host.contains("://")
                && !host.contains(['/', '?', '#', ' ', '@']);
            if !valid {
                return Err(ConfigError::invalid(
                    format!("server.allowed_hosts[{i}]"),
                    "give a host name as the browser sends it, e.g. \"converge.example.org\" \
                     or \"converge.example.org:8443\", without a scheme or path",
                ));
            }
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), ConfigError> {
        /// SHA-256 of the empty string: a token nobody has to know.
        const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let Some(metrics) = &self.metrics else {
            return Ok(());
        };
        let hash = &metrics.token_sha256;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ConfigError::invalid(
                "metrics.token_sha256",
                "give the SHA-256 of the scrapers' bearer token as 64 lower-case hex digits, e.g. from `printf %s \"$TOKEN\" | sha256sum`",
            ));
        }
        if hash == EMPTY {
            return Err(ConfigError::invalid(
                "metrics.token_sha256",
                "this is the SHA-256 of an empty token; make a long random one, e.g. `openssl rand -hex 32`",
            ));
        }
        if metrics.listen == self.server.listen {
            return Err(ConfigError::invalid(
                "metrics.listen",
                "must differ from server.listen: metrics have a listener of their own",
            ));
        }
        Ok(())
    }

    fn validate_projects(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut owner = std::collections::HashMap::new();
        for (i, project) in self.projects.iter().enumerate() {
            let name = project.name.trim();
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("projects[{i}].name"),
                    "a project needs a name",
                ));
            }
            if !names.insert(name) {
                return Err(ConfigError::invalid(
                    format!("projects[{i}].name"),
                    format!("\"{name}\" is already an earlier project; list all its VMs there"),
                ));
            }
            for (j, vm) in project.vms.iter().enumerate() {
                let vm = vm.trim();
                let field = format!("projects[{i}].vms[{j}]");
                match ProjectVm::parse(vm) {
                    Some(ProjectVm::Uuid(_)) => {}
                    Some(ProjectVm::OnHost { host, .. }) => {
                        if !self.hosts.iter().any(|h| h.name == host) {
                            return Err(ConfigError::invalid(
                                field,
                                format!("there is no host \"{host}\" in [[hosts]]"),
                            ));
                        }
                    }
                    None => {
                        return Err(ConfigError::invalid(
                            field,
                            format!(
                                "give a VM's UUID, or its domain name with its host as \
                                 \"host/name\" (a name alone would match a VM of that \
                                 name on every host): not \"{vm}\""
                            ),
                        ));
                    }
                }
                if let Some(first) = owner.insert(vm, name) {
                    return Err(ConfigError::invalid(
                        format!("projects[{i}].vms[{j}]"),
                        format!(
                            "\"{vm}\" already belongs to project \"{first}\"; a VM has one project"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_presets(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (i, preset) in self.presets.iter().enumerate() {
            let name = preset.name.as_str();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if !valid {
                return Err(ConfigError::invalid(
                    format!("presets[{i}].name"),
                    "use 1 to 64 letters, digits, '-' or '_'",
                ));
            }
            if !seen.insert(name) {
                return Err(ConfigError::invalid(
                    format!("presets[{i}].name"),
                    format!("\"{name}\" is already used by an earlier preset"),
                ));
            }
            // Guest memory is unknown here; the cache-size rule is checked at start.
            let findings = converge_api::lint(&preset.settings, 0);
            if let Some(finding) = findings
                .iter()
                .find(|f| f.severity == converge_api::Severity::Refused)
            {
                return Err(ConfigError::invalid(
                    format!("presets[{i}].settings.{}", finding.field),
                    finding.message.clone(),
                ));
            }
        }
        if !super::MAX_DURATION_RANGE_S.contains(&self.migrations.max_duration_s) {
            return Err(ConfigError::invalid(
                "migrations.max_duration_s",
                format!(
                    "{} s is outside {}–{} s",
                    self.migrations.max_duration_s,
                    super::MAX_DURATION_RANGE_S.start(),
                    super::MAX_DURATION_RANGE_S.end()
                ),
            ));
        }
        let known = crate::presets::all(&self.presets);
        if !known
            .iter()
            .any(|p| p.name == self.migrations.default_preset)
        {
            let names: Vec<&str> = known.iter().map(|p| p.name.as_str()).collect();
            return Err(ConfigError::invalid(
                "migrations.default_preset",
                format!(
                    "no preset called \"{}\"; presets are: {}",
                    self.migrations.default_preset,
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn validate_hosts(&self) -> Result<(), ConfigError> {
        /// 16 TiB: more than any host has.
        const MAX_HOST_MEMORY_MIB: u64 = 16 << 20;
        let mut seen = HashSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let name = host.name.as_str();
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_name {
                return Err(ConfigError::invalid(
                    format!("hosts[{i}].name"),
                    "use 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if !seen.insert(name) {
                return Err(ConfigError::invalid(
                    format!("hosts[{i}].name"),
                    format!("\"{name}\" is already used by an earlier host"),
                ));
            }
            if !host.uri.contains(':') || host.uri.trim() != host.uri {
                return Err(ConfigError::invalid(
                    format!("hosts[{i}].uri"),
                    "not a libvirt URI; e.g. qemu+tcp://10.0.0.7/system",
                ));
            }
            if host.reserve_mib > MAX_HOST_MEMORY_MIB {
                return Err(ConfigError::invalid(
                    format!("hosts[{i}].reserve_mib"),
                    format!("at most {MAX_HOST_MEMORY_MIB} MiB (16 TiB)"),
                ));
            }
            if host
                .max_guest_memory_mib
                .is_some_and(|m| m == 0 || m > MAX_HOST_MEMORY_MIB)
            {
                return Err(ConfigError::invalid(
                    format!("hosts[{i}].max_guest_memory_mib"),
                    format!("give 1 to {MAX_HOST_MEMORY_MIB} MiB, or leave it out for no limit"),
                ));
            }
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let field = |name: &str| format!("users[{i}].{name}");
            let name = user.username.as_str();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    field("username"),
                    "give 1 to 128 printable characters",
                ));
            }
            if !seen.insert(name) {
                return Err(ConfigError::invalid(
                    field("username"),
                    format!("\"{name}\" is already used by an earlier user"),
                ));
            }
            let is_argon2 = PasswordHash::new(&user.password_hash)
                .map(|hash| hash.algorithm.as_str().starts_with("argon2"))
                .unwrap_or(false);
            if !is_argon2 {
                return Err(ConfigError::invalid(
                    field("password_hash"),
                    "not an argon2 PHC string; make one with `converge hash-password`",
                ));
            }
            // Each password check holds this much memory (auth::PasswordChecks).
            let memory_kib = PasswordHash::new(&user.password_hash)
                .ok()
                .and_then(|hash| hash.params.get_decimal("m"));
            if memory_kib.is_none_or(|m| m > MAX_PASSWORD_MEMORY_KIB) {
                return Err(ConfigError::invalid(
                    field("password_hash"),
                    format!(
                        "its argon2 memory cost (m=) must be given and at most {MAX_PASSWORD_MEMORY_KIB} KiB; \
                         make one with `converge hash-password`"
                    ),
                ));
            }
            match (user.role, user.projects.is_empty()) {
                (Role::Tenant, true) => {
                    return Err(ConfigError::invalid(
                        field("projects"),
                        "a tenant needs at least one project",
                    ));
                }
                (Role::Admin | Role::Operator | Role::Kiosk, false) => {
                    return Err(ConfigError::invalid(
                        field("projects"),
                        format!("only tenants have projects; remove it for a {}", user.role),
                    ));
                }
                _ => {}
            }
            if let Some(j) = user.projects.iter().position(|p| p.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    format!("users[{i}].projects[{j}]"),
                    "a project name cannot be empty",
                ));
            }
        }
        Ok(())
    }
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("must be between {min} and {max}"),
        ))
    }
}

fn positive(field: &str, value: u32) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}
