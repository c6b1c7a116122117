//! `/etc/updater/updater.toml`: parsed strictly (unknown keys and bad values
//! are errors naming the key), then resolved into a `Config` whose every
//! path derives from it, so tests and second instances run in a temp dir.
//! The reference is docs/UPDATER.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use manifest::{CohortName, HardwareId, ProductName, TrustedKeys};
use serde::{Deserialize, Deserializer};

use crate::trust::{load_key_dir, TrustConfig};
use crate::window::InstallWindow;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration like \"500ms\", \"30s\", \"1h\": {e}"
        ))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<String>,
    #[serde(default)]
    servers: Vec<String>,
    product: ProductName,
    cohort: CohortName,
    compatible: HardwareId,
    device_id: Option<String>,
    device_id_file: Option<PathBuf>,
    #[serde(default = "default_keys_dir")]
    keys_dir: PathBuf,
    #[serde(default = "default_threshold")]
    threshold: usize,
    /// Pinned root keys: when set, the store's keys.json says who signs what.
    root_keys_dir: Option<PathBuf>,
    #[serde(default = "default_threshold")]
    root_threshold: usize,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default)]
    restart: Restart,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    install: RawInstall,
    #[serde(default)]
    network: Network,
    #[serde(default)]
    daemon: Daemon,
    report: Option<RawReport>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    url: String,
    token_file: Option<PathBuf>,
    #[serde(default = "default_max_reports")]
    max_reports: usize,
    #[serde(default = "default_max_report_bytes")]
    max_bytes: u64,
    #[serde(default = "default_report_timeout", deserialize_with = "duration")]
    timeout: Duration,
}

fn default_max_reports() -> usize {
    200
}
fn default_max_report_bytes() -> u64 {
    256 * 1024
}
fn default_report_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where and how outcomes are reported (docs/REPORTS.md).
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub url: String,
    pub token: Option<String>,
    pub max_reports: usize,
    pub max_bytes: u64,
    pub timeout: Duration,
}

fn default_keys_dir() -> PathBuf {
    PathBuf::from("/etc/updater/keys")
}
fn default_threshold() -> usize {
    1
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/updater")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default = "default_restart_command")]
    pub command: Vec<String>,
    #[serde(default = "default_restart_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_restart_command() -> Vec<String> {
    vec!["systemctl".into(), "restart".into()]
}
fn default_restart_timeout() -> Duration {
    Duration::from_secs(90)
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            units: Vec::new(),
            command: default_restart_command(),
            timeout: default_restart_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub grace: Duration,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_window", deserialize_with = "duration")]
    pub window: Duration,
    #[serde(default = "default_passes")]
    pub required_passes: u32,
    #[serde(default = "default_attempts")]
    pub max_trial_attempts: u32,
    /// Orderly shutdowns (planned reboots) a trial may sit through; they do
    /// not use up `max_trial_attempts`, but a release that keeps rebooting
    /// the device must still be rolled back.
    #[serde(default = "default_shutdowns")]
    pub max_trial_shutdowns: u32,
    #[serde(default = "default_unit_command")]
    pub unit_command: Vec<String>,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
    #[serde(default = "default_command_timeout", deserialize_with = "duration")]
    pub command_timeout: Duration,
}

fn default_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_passes() -> u32 {
    3
}
fn default_attempts() -> u32 {
    3
}
fn default_shutdowns() -> u32 {
    5
}
fn default_unit_command() -> Vec<String> {
    vec!["systemctl".into(), "is-active".into(), "--quiet".into()]
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            grace: default_grace(),
            interval: default_interval(),
            window: default_window(),
            required_passes: default_passes(),
            max_trial_attempts: default_attempts(),
            max_trial_shutdowns: default_shutdowns(),
            unit_command: default_unit_command(),
            units: Vec::new(),
            http: Vec::new(),
            commands: Vec::new(),
            command_timeout: default_command_timeout(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstall {
    #[serde(default)]
    windows: Vec<String>,
    #[serde(default)]
    busy_command: Vec<String>,
    #[serde(default = "default_hook_timeout", deserialize_with = "duration")]
    hook_timeout: Duration,
    #[serde(default = "default_busy_timeout", deserialize_with = "duration")]
    busy_timeout: Duration,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_busy_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone)]
pub struct Install {
    pub windows: Vec<InstallWindow>,
    pub busy_command: Vec<String>,
    pub hook_timeout: Duration,
    /// A busy command that does not answer within this is taken as "busy".
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_stall_timeout", deserialize_with = "duration")]
    pub stall_timeout: Duration,
    /// A transfer moving fewer bytes than this in `stall_timeout` is stalled.
    #[serde(default = "default_stall_min_bytes")]
    pub stall_min_bytes: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff_initial: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_stall_min_bytes() -> u64 {
    1024
}
fn default_retries() -> u32 {
    4
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}

impl Default for Network {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            stall_timeout: default_stall_timeout(),
            stall_min_bytes: default_stall_min_bytes(),
            retries: default_retries(),
            backoff_initial: default_backoff(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll_interval: Duration,
    #[serde(default = "default_jitter", deserialize_with = "duration")]
    pub poll_jitter: Duration,
    /// How often the daemon reads `inbox/` without a notify event: the only
    /// way it sees a stick mounted on the inbox, or any file on a mount
    /// where inotify reports nothing (FUSE, NFS). At least one second.
    #[serde(default = "default_inbox_rescan", deserialize_with = "rescan")]
    pub inbox_rescan: Duration,
}

fn default_poll() -> Duration {
    Duration::from_secs(3600)
}
fn default_jitter() -> Duration {
    Duration::from_secs(600)
}
fn default_inbox_rescan() -> Duration {
    Duration::from_secs(10)
}

/// A duration of at least a second: a shorter rescan would busy-loop.
fn rescan<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let interval = duration(d)?;
    if interval < Duration::from_secs(1) {
        return Err(serde::de::Error::custom(format!(
            "{} is too short a rescan interval: at least \"1s\"",
            humantime::format_duration(interval)
        )));
    }
    Ok(interval)
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            poll_interval: default_poll(),
            poll_jitter: default_jitter(),
            inbox_rescan: default_inbox_rescan(),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    /// Base URLs of the store, without a trailing slash, tried in order.
    pub servers: Vec<String>,
    pub product: ProductName,
    pub cohort: CohortName,
    pub compatible: HardwareId,
    pub device_id: String,
    pub trust: TrustConfig,
    pub state_dir: PathBuf,
    pub restart: Restart,
    pub health: HealthConfig,
    pub install: Install,
    pub network: Network,
    pub daemon: Daemon,
    pub report: Option<ReportConfig>,
}

impl Config {
    /// The system programs this config names that cannot be found: the
    /// restart, unit and busy commands (health `commands` may name the
    /// release's own programs, which only exist once it is staged). Checked
    /// by `updater config check`, not by every run: a missing `systemctl`
    /// would otherwise only show as failed trials and rollbacks.
    pub fn missing_programs(&self) -> Vec<String> {
        let mut used: Vec<(&str, &[String])> = Vec::new();
        if !self.restart.units.is_empty() {
            used.push(("restart.command", &self.restart.command));
        }
        if !self.health.units.is_empty() {
            used.push(("health.unit_command", &self.health.unit_command));
        }
        used.push(("install.busy_command", &self.install.busy_command));
        used.into_iter()
            .filter_map(|(key, argv)| {
                let program = argv.first()?;
                (!program_exists(program))
                    .then(|| format!("{key}: {program} is not an executable program (nor found in PATH)"))
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };

        let mut servers = raw.servers;
        if let Some(s) = raw.server {
            servers.insert(0, s);
        }
        if servers.is_empty() {
            return Err(invalid(
                "server",
                "set `server` (or `servers`) to the store's base URL".into(),
            ));
        }
        for s in &mut servers {
            if !(s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file://")) {
                return Err(invalid(
                    "server",
                    format!("{s:?} must start with http://, https:// or file://"),
                ));
            }
            while s.ends_with('/') {
                s.pop();
            }
        }

        let device_id = match (raw.device_id, raw.device_id_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "device_id",
                    "set either device_id or device_id_file, not both".into(),
                ))
            }
            (Some(id), None) => id,
            (None, file) => {
                let file = file.unwrap_or_else(|| PathBuf::from("/etc/machine-id"));
                std::fs::read_to_string(&file)
                    .map_err(|e| invalid("device_id_file", format!("{}: {e}", file.display())))?
                    .trim()
                    .to_string()
            }
        };
        if device_id.is_empty() {
            return Err(invalid("device_id", "the device id is empty".into()));
        }

        let trust = match &raw.root_keys_dir {
            Some(dir) => {
                let keys = load_key_dir(dir).map_err(|m| invalid("root_keys_dir", m))?;
                TrustConfig::Root(
                    TrustedKeys::new(keys, raw.root_threshold)
                        .map_err(|e| invalid("root_threshold", e.to_string()))?,
                )
            }
            None => {
                let keys = load_key_dir(&raw.keys_dir).map_err(|m| invalid("keys_dir", m))?;
                TrustConfig::Static(
                    TrustedKeys::new(keys, raw.threshold).map_err(|e| invalid("threshold", e.to_string()))?,
                )
            }
        };

        if raw.restart.command.is_empty() {
            return Err(invalid("restart.command", "must name a program".into()));
        }
        let h = &raw.health;
        if h.required_passes == 0 {
            return Err(invalid("health.required_passes", "must be at least 1".into()));
        }
        if h.max_trial_attempts == 0 {
            return Err(invalid("health.max_trial_attempts", "must be at least 1".into()));
        }
        if h.interval.is_zero() {
            return Err(invalid("health.interval", "must be more than 0".into()));
        }
        if !h.units.is_empty() && h.unit_command.is_empty() {
            return Err(invalid(
                "health.unit_command",
                "must name a program when health.units is set".into(),
            ));
        }
        if h.commands.iter().any(|c| c.is_empty()) {
            return Err(invalid("health.commands", "every command needs a program".into()));
        }
        for c in &h.http {
            if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                return Err(invalid(
                    "health.http",
                    format!("{:?} is not an http(s) URL", c.url),
                ));
            }
        }
        let windows = raw
            .install
            .windows
            .iter()
            .map(|w| w.parse::<InstallWindow>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("install.windows", e))?;

        let report = match raw.report {
            None => None,
            Some(r) => {
                if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                    return Err(invalid(
                        "report.url",
                        format!("{:?} is not an http(s) URL", r.url),
                    ));
                }
                let token = match &r.token_file {
                    None => None,
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .map_err(|e| invalid("report.token_file", format!("{}: {e}", f.display())))?
                            .trim()
                            .to_string(),
                    ),
                };
                if r.max_reports == 0 || r.max_bytes < 4096 {
                    return Err(invalid(
                        "report.max_reports",
                        "the outbox needs room for at least one report".into(),
                    ));
                }
                Some(ReportConfig {
                    url: r.url,
                    token,
                    max_reports: r.max_reports,
                    max_bytes: r.max_bytes,
                    timeout: r.timeout,
                })
            }
        };

        Ok(Config {
            source: path.to_path_buf(),
            servers,
            product: raw.product,
            cohort: raw.cohort,
            compatible: raw.compatible,
            device_id,
            trust,
            state_dir: raw.state_dir,
            restart: raw.restart,
            health: raw.health,
            install: Install {
                windows,
                busy_command: raw.install.busy_command,
                hook_timeout: raw.install.hook_timeout,
                busy_timeout: raw.install.busy_timeout,
            },
            network: raw.network,
            daemon: raw.daemon,
            report,
        })
    }
}

/// `program` as `Command` would find it: a path when it has a `/`, else
/// a name looked up in `PATH`.
fn program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = manifest::SecretKey::generate();
        std::fs::write(dir.path().join("k.pub"), key.public_key().to_file_text()).unwrap();
        let base = format!(
            "server = \"http://127.0.0.1:1/store/\"\nproduct = \"neopro\"\ncohort = \"stable\"\ncompatible = \"rpi\"\ndevice_id = \"d1\"\nkeys_dir = \"{}\"\nstate_dir = \"/tmp/x\"\n",
            dir.path().display()
        );
        (dir, base)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let (_d, base) = with_key();
        let c = Config::parse(Path::new("u.toml"), &base).unwrap();
        assert_eq!(c.servers, vec!["http://127.0.0.1:1/store"]);
        assert_eq!(c.health.window, Duration::from_secs(60));
        assert_eq!(c.restart.command, vec!["systemctl", "restart"]);
    }

    #[test]
    fn inbox_rescan_defaults_to_10s_and_is_at_least_1s() {
        let (_d, base) = with_key();
        let c = Config::parse(Path::new("u.toml"), &base).unwrap();
        assert_eq!(c.daemon.inbox_rescan, Duration::from_secs(10));
        let c = Config::parse(
            Path::new("u.toml"),
            &format!("{base}[daemon]\ninbox_rescan = \"1h\"\n"),
        )
        .unwrap();
        assert_eq!(c.daemon.inbox_rescan, Duration::from_secs(3600));
        let err = Config::parse(
            Path::new("u.toml"),
            &format!("{base}[daemon]\ninbox_rescan = \"0s\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("inbox_rescan") && err.contains("at least"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let (_d, base) = with_key();
        let cases = [
            (format!("{base}surprise = 1\n"), "surprise"),
            (format!("{base}[health]\nwindow = \"soon\"\n"), "soon"),
            (
                format!("{base}[health]\nrequired_passes = 0\n"),
                "health.required_passes",
            ),
            (
                format!("{base}[install]\nwindows = [\"25:00-26:00\"]\n"),
                "install.windows",
            ),
            (format!("{base}threshold = 2\n"), "threshold"),
            (base.replace("http://", "ftp://"), "server"),
            (base.replace("\"stable\"", "\"../x\""), "cohort"),
        ];
        for (text, key) in cases {
            let err = Config::parse(Path::new("u.toml"), &text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn missing_system_programs_are_named_by_key() {
        let (_d, base) = with_key();
        let text = format!(
            "{base}[restart]\nunits = [\"app.service\"]\ncommand = [\"/nonexistent/systemctl\", \"restart\"]\n\
             [health]\nunits = [\"app.service\"]\nunit_command = [\"no-such-program-here\"]\n\
             [install]\nbusy_command = [\"sh\", \"-c\", \"exit 1\"]\n"
        );
        let config = Config::parse(Path::new("u.toml"), &text).unwrap();
        let missing = config.missing_programs();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(
            missing[0].starts_with("restart.command: /nonexistent/systemctl"),
            "{missing:?}"
        );
        assert!(
            missing[1].starts_with("health.unit_command: no-such-program-here"),
            "{missing:?}"
        );
        // Without units, the unit and restart commands are never run.
        let plain = Config::parse(Path::new("u.toml"), &base).unwrap();
        assert_eq!(plain.missing_programs(), Vec::<String>::new());
    }
}
