//! Configuration: the YAML file the operator edits, plus the appservice registration it points to.
//!
//! Loading validates everything up front so that a broken file is rejected with a message naming
//! the key and the problem, and (on reload) the old configuration stays in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ruma::{OwnedRoomOrAliasId, OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default configuration compiled into the binary (`tgmx run` without `-c`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../config.example.yaml");

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: HomeserverConfig,
    pub appservice: AppserviceConfig,
    #[serde(default = "default_database")]
    pub database: String,
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub rooms: Vec<RoomMapping>,
    #[serde(default)]
    pub identities: Vec<IdentityMapping>,
    #[serde(default)]
    pub fleet: FleetConfig,
    /// End-to-end encrypted rooms (see `src/matrix/crypto.rs`).
    #[serde(default)]
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
}

#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Bridge encrypted rooms (the bot and the puppets get devices of their own).
    #[serde(default = "yes")]
    pub allow: bool,
    /// `bootstrap` creates rooms encrypted unless a room says `encrypted: false`.
    #[serde(default)]
    pub default: bool,
    /// Refuse to bridge a room that is not encrypted.
    #[serde(default)]
    pub require: bool,
    /// Key the crypto stores are encrypted with; prefer the environment variable
    /// `TGMX_PICKLE_KEY`. Required once a bridged room is encrypted.
    #[serde(default)]
    pub pickle_key: Option<String>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            allow: true,
            default: false,
            require: false,
            pickle_key: None,
        }
    }
}

impl std::fmt::Debug for EncryptionConfig {
    // Hand-written so that the pickle key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("allow", &self.allow)
            .field("default", &self.default)
            .field("require", &self.require)
            .field("pickle_key", &self.pickle_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Who is expected in the rooms: used by `bootstrap` (invites, power), `check`, `status` and
/// `rollcall`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The operator: room admin (power 100) in every bootstrapped room.
    #[serde(default)]
    pub operator: Option<OwnedUserId>,
    /// Agents' Matrix accounts (invited by `bootstrap`, expected by `check` and `rollcall`).
    #[serde(default)]
    pub agents: Vec<OwnedUserId>,
    /// `check` fails unless at least this many agents exist and are joined to every room.
    #[serde(default)]
    pub min_agents: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-server API base URL of the homeserver, e.g. `http://127.0.0.1:8008`.
    pub url: String,
    /// The server name in user ids (`@user:<server_name>`).
    pub server_name: OwnedServerName,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    /// Address the appservice HTTP server binds to.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL the homeserver uses to reach us (written into the registration). Default: from `listen`.
    #[serde(default)]
    pub url: Option<String>,
    /// Path of the registration file holding the tokens (relative to the config file).
    #[serde(default = "default_registration")]
    pub registration: PathBuf,
    /// Appservice id in the registration.
    #[serde(default = "default_as_id")]
    pub id: String,
    /// Localpart of the bridge bot user.
    #[serde(default = "default_bot_localpart")]
    pub bot_localpart: String,
    /// Localpart prefix of Telegram puppets: `@<prefix><telegram id>:server`.
    #[serde(default = "default_puppet_prefix")]
    pub puppet_prefix: String,
    /// Display name of the bridge bot.
    #[serde(default = "default_bot_displayname")]
    pub bot_displayname: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Telegram,
    Matrix,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default = "default_primary")]
    pub primary_platform: Platform,
    #[serde(default = "default_fallback")]
    pub fallback_platform: Platform,
    #[serde(default)]
    pub matrix: MatrixGateway,
    pub telegram: TelegramGateway,
    /// Cross-side duplicate suppression for mapped identities.
    #[serde(default)]
    pub dedupe: DedupeConfig,
    /// Texts posted (and pinned in Telegram) when the primary surface changes.
    #[serde(default)]
    pub announcements: Announcements,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A copy posted on the other platform within this many seconds is not mirrored again.
    #[serde(default = "default_dedupe_window")]
    pub window_secs: u64,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: default_dedupe_window(),
        }
    }
}

fn default_dedupe_window() -> u64 {
    120
}

/// Announcement texts. `{link}` becomes the matrix.to link of the room.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Announcements {
    pub cutover_telegram: String,
    pub cutover_matrix: String,
    pub standby_telegram: String,
    pub standby_matrix: String,
    pub rollback_telegram: String,
    pub rollback_matrix: String,
}

impl Default for Announcements {
    fn default() -> Self {
        Self {
            cutover_telegram: "PRIMARY SURFACE CHANGE: Matrix is now the command channel. Telegram remains as fallback for 48 hours. Join: {link}".into(),
            cutover_matrix: "PRIMARY SURFACE CHANGE: Matrix is now the command channel. Telegram stays mirrored as fallback for 48 hours.".into(),
            standby_telegram: "Fallback mode only. Active surface is Matrix. Join: {link}".into(),
            standby_matrix: "Telegram is in standby: the bridge no longer reads from or relays to Telegram.".into(),
            rollback_telegram: "PRIMARY SURFACE CHANGE (rollback): Telegram is the command channel again. Matrix stays mirrored.".into(),
            rollback_matrix: "PRIMARY SURFACE CHANGE (rollback): Telegram is the command channel again. Messages sent on Telegram meanwhile are bridged below, in order.".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatrixGateway {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often each portal's recent timeline is compared with what the homeserver delivered,
    /// to bridge an event it left unsent (0: never). See `src/bridge/catch_up.rs`.
    #[serde(default = "default_catch_up_secs")]
    pub catch_up_secs: u64,
    /// Follow the bridged rooms with `/sync` as the bot's device, and bridge an event the
    /// homeserver has not pushed a few seconds after it appeared there (Conduit, after a failed
    /// delivery, pushes nothing until a later event and a 30 s × tries² backoff). Unset: on for
    /// any homeserver but Synapse, which retries by itself.
    #[serde(default)]
    pub follow_sync: Option<bool>,
}

fn default_catch_up_secs() -> u64 {
    60
}

impl Default for MatrixGateway {
    fn default() -> Self {
        Self {
            enabled: true,
            catch_up_secs: default_catch_up_secs(),
            follow_sync: None,
        }
    }
}

#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelegramGateway {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Bot token; prefer the environment variable `TGMX_TELEGRAM_TOKEN`.
    #[serde(default)]
    pub bot_token: Option<String>,
    /// Bot API base URL (a self-hosted Bot API server, or a test server).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Long-polling timeout in seconds.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout: u32,
    /// Largest file the bot may download (cloud Bot API: 20 MB; a self-hosted server: up to 2000 MB).
    #[serde(default = "default_max_download")]
    pub max_download_bytes: u64,
    /// Largest file the bot may upload (cloud Bot API: 50 MB).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Messages per minute the bot sends into one chat (Telegram allows about 20 in groups).
    /// Sends beyond it wait; 0 disables pacing.
    #[serde(default = "default_group_rate")]
    pub per_chat_per_minute: u32,
    /// Largest image sent as a photo; bigger images go as documents (cloud Bot API: 10 MB).
    #[serde(default = "default_max_photo")]
    pub max_photo_bytes: u64,
}

fn default_group_rate() -> u32 {
    20
}
fn default_max_download() -> u64 {
    20 * 1024 * 1024
}
fn default_max_upload() -> u64 {
    50 * 1024 * 1024
}
fn default_max_photo() -> u64 {
    10 * 1024 * 1024
}

impl std::fmt::Debug for TelegramGateway {
    // Hand-written so that the token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramGateway")
            .field("enabled", &self.enabled)
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<redacted>"))
            .field("api_url", &self.api_url)
            .field("poll_timeout", &self.poll_timeout)
            .field("max_download_bytes", &self.max_download_bytes)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomMapping {
    /// Room alias (`#fleet-ops:server`) or room id (`!abc:server`).
    pub matrix: OwnedRoomOrAliasId,
    /// Telegram chat id (negative for groups and supergroups).
    pub telegram: i64,
    /// Room name set by `bootstrap` when it creates the room.
    #[serde(default)]
    pub name: Option<String>,
    /// Room topic set by `bootstrap`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Create the room with end-to-end encryption on (`bootstrap`); unset: `encryption.default`.
    #[serde(default)]
    pub encrypted: Option<bool>,
}

impl RoomMapping {
    /// Whether `bootstrap` creates this room encrypted.
    pub fn wants_encryption(&self, enc: &EncryptionConfig) -> bool {
        self.encrypted.unwrap_or(enc.default)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityMapping {
    /// The person's own Matrix account (must be in the appservice's user namespace, non-exclusive).
    pub matrix: OwnedUserId,
    /// The person's Telegram user id.
    pub telegram: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `tracing` filter, e.g. `info,tgmx=debug`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_database() -> String {
    "sqlite://tgmx.db".into()
}
fn default_listen() -> SocketAddr {
    "127.0.0.1:29317".parse().expect("valid literal")
}
fn default_registration() -> PathBuf {
    "registration.yaml".into()
}
fn default_as_id() -> String {
    "telegram".into()
}
fn default_bot_localpart() -> String {
    "telegrambot".into()
}
fn default_puppet_prefix() -> String {
    "telegram_".into()
}
fn default_bot_displayname() -> String {
    "Telegram bridge".into()
}
fn default_primary() -> Platform {
    Platform::Telegram
}
fn default_fallback() -> Platform {
    Platform::Matrix
}
fn default_api_url() -> String {
    "https://api.telegram.org".into()
}
fn default_poll_timeout() -> u32 {
    30
}
fn default_log_level() -> String {
    "info".into()
}

fn invalid(key: &str, problem: impl std::fmt::Display) -> Error {
    Error::Config(format!("`{key}`: {problem}"))
}

impl Config {
    /// Parse and validate YAML text. `base_dir` resolves relative paths (registration, database).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config> {
        let mut cfg: Config = serde_saphyr::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        if cfg.appservice.registration.is_relative() {
            cfg.appservice.registration = base_dir.join(&cfg.appservice.registration);
        }
        if let Some(rest) = cfg.database.strip_prefix("sqlite://") {
            let p = Path::new(rest.split('?').next().unwrap_or(rest));
            if p.is_relative() && rest != ":memory:" {
                cfg.database = format!("sqlite://{}", base_dir.join(rest).display());
            }
        }
        if cfg.gateway.telegram.bot_token.as_deref().is_none_or(str::is_empty) {
            cfg.gateway.telegram.bot_token = std::env::var("TGMX_TELEGRAM_TOKEN").ok().filter(|t| !t.is_empty());
        }
        if cfg.encryption.pickle_key.as_deref().is_none_or(str::is_empty) {
            cfg.encryption.pickle_key = std::env::var("TGMX_PICKLE_KEY").ok().filter(|k| !k.is_empty());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Checks that serde cannot express. Every message names the key.
    pub fn validate(&self) -> Result<()> {
        let url = url::Url::parse(&self.homeserver.url).map_err(|e| invalid("homeserver.url", e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("homeserver.url", "must be an http(s) URL"));
        }
        for (key, lp) in [("appservice.bot_localpart", &self.appservice.bot_localpart)] {
            if lp.is_empty() || !lp.chars().all(is_localpart_char) {
                return Err(invalid(key, format!("{lp:?} is not a valid Matrix localpart")));
            }
        }
        let prefix = &self.appservice.puppet_prefix;
        if prefix.is_empty() || !prefix.chars().all(is_localpart_char) {
            return Err(invalid(
                "appservice.puppet_prefix",
                format!("{prefix:?} is not a valid localpart prefix"),
            ));
        }
        if self.appservice.bot_localpart.starts_with(prefix.as_str()) {
            return Err(invalid(
                "appservice.bot_localpart",
                "must not start with the puppet prefix",
            ));
        }
        if !self.database.starts_with("sqlite:") {
            return Err(invalid("database", "only sqlite:// URLs are supported"));
        }
        url::Url::parse(&self.gateway.telegram.api_url).map_err(|e| invalid("gateway.telegram.api_url", e))?;
        if self.gateway.primary_platform == Platform::None {
            return Err(invalid("gateway.primary_platform", "must be `telegram` or `matrix`"));
        }
        if self.gateway.primary_platform == self.gateway.fallback_platform {
            return Err(invalid(
                "gateway.fallback_platform",
                "must differ from primary_platform (or be `none`)",
            ));
        }
        if !self.gateway.telegram.enabled && self.gateway.primary_platform == Platform::Telegram {
            return Err(invalid(
                "gateway.telegram.enabled",
                "cannot be false while primary_platform is telegram",
            ));
        }
        if self.gateway.dedupe.window_secs > 24 * 3600 {
            return Err(invalid("gateway.dedupe.window_secs", "at most 86400"));
        }
        let mut chats = std::collections::HashSet::new();
        let mut rooms = std::collections::HashSet::new();
        for (i, r) in self.rooms.iter().enumerate() {
            if !chats.insert(r.telegram) {
                return Err(invalid(
                    &format!("rooms[{i}].telegram"),
                    format!("chat {} is mapped twice", r.telegram),
                ));
            }
            if !rooms.insert(r.matrix.clone()) {
                return Err(invalid(
                    &format!("rooms[{i}].matrix"),
                    format!("{} is mapped twice", r.matrix),
                ));
            }
        }
        let mut tg_ids = std::collections::HashSet::new();
        for (i, id) in self.identities.iter().enumerate() {
            if id.matrix.server_name() != self.homeserver.server_name {
                return Err(invalid(
                    &format!("identities[{i}].matrix"),
                    format!("{} is not on {}", id.matrix, self.homeserver.server_name),
                ));
            }
            if !tg_ids.insert(id.telegram) {
                return Err(invalid(&format!("identities[{i}].telegram"), "mapped twice"));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.logging.level).map_err(|e| invalid("logging.level", e))?;
        Ok(())
    }

    /// The bot token, required to run with Telegram enabled.
    pub fn telegram_token(&self) -> Result<&str> {
        self.gateway.telegram.bot_token.as_deref().ok_or_else(|| {
            invalid(
                "gateway.telegram.bot_token",
                "missing: set it or the environment variable TGMX_TELEGRAM_TOKEN (or gateway.telegram.enabled: false)",
            )
        })
    }

    /// The URL the homeserver should use to reach the appservice.
    pub fn appservice_url(&self) -> String {
        self.appservice
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.appservice.listen))
    }

    /// The appservice's own user (`sender_localpart`). It is not the bot: Synapse refuses
    /// `/sync` to the sender, and the bot needs a syncing device for encrypted rooms. The
    /// bridge acts as the bot (`?user_id=`) and never as the sender.
    pub fn sender_localpart(&self) -> String {
        format!("{}-appservice", self.appservice.bot_localpart)
    }

    pub fn bot_user_id(&self) -> OwnedUserId {
        OwnedUserId::try_from(format!(
            "@{}:{}",
            self.appservice.bot_localpart, self.homeserver.server_name
        ))
        .expect("validated localpart")
    }
}

fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/')
}

/// The appservice registration file (the same YAML the homeserver reads).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
pub struct Registration {
    pub id: String,
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    #[serde(default)]
    pub rate_limited: bool,
    pub namespaces: Namespaces,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_ephemeral: Option<bool>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

impl Registration {
    pub fn load(path: &Path) -> Result<Registration> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "`appservice.registration`: cannot read {}: {e} (run `tgmx generate-registration`)",
                path.display()
            ))
        })?;
        let reg: Registration = serde_saphyr::from_str(&text)
            .map_err(|e| Error::Config(format!("registration {}: {e}", path.display())))?;
        if reg.as_token.starts_with("REPLACE_ME") || reg.hs_token.starts_with("REPLACE_ME") {
            return Err(Error::Config(format!(
                "registration {}: placeholder tokens; run `tgmx generate-registration --force`",
                path.display()
            )));
        }
        if reg.as_token.len() < 16 || reg.hs_token.len() < 16 {
            return Err(Error::Config(format!(
                "registration {}: tokens must be at least 16 characters",
                path.display()
            )));
        }
        Ok(reg)
    }

    /// A fresh registration for `cfg`, with new random tokens.
    pub fn generate(cfg: &Config) -> Registration {
        let server = regex_escape(cfg.homeserver.server_name.as_str());
        let mut users = vec![
            Namespace {
                exclusive: true,
                regex: format!("^@{}[0-9]+:{server}$", regex_escape(&cfg.appservice.puppet_prefix)),
            },
            Namespace {
                exclusive: true,
                regex: format!("^@{}:{server}$", regex_escape(&cfg.appservice.bot_localpart)),
            },
        ];
        // Double puppeting: the operator's own account, shared (non-exclusive).
        for id in &cfg.identities {
            users.push(Namespace {
                exclusive: false,
                regex: format!("^{}$", regex_escape(id.matrix.as_str())),
            });
        }
        let mut aliases = vec![Namespace {
            exclusive: true,
            regex: format!("^#{}.+:{server}$", regex_escape(&cfg.appservice.puppet_prefix)),
        }];
        // The configured room aliases, so that `bootstrap` may create them (shared, non-exclusive).
        for r in cfg.rooms.iter().filter(|r| r.matrix.is_room_alias_id()) {
            aliases.push(Namespace {
                exclusive: false,
                regex: format!("^{}$", regex_escape(r.matrix.as_str())),
            });
        }
        Registration {
            id: cfg.appservice.id.clone(),
            url: Some(cfg.appservice_url()),
            as_token: random_token(),
            hs_token: random_token(),
            sender_localpart: cfg.sender_localpart(),
            rate_limited: false,
            namespaces: Namespaces {
                users,
                aliases,
                rooms: vec![],
            },
            receive_ephemeral: None,
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("registration serialises")
    }
}

/// 64 hex characters from the OS RNG.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r##"
homeserver: {url: "http://127.0.0.1:8008", server_name: localhost}
appservice: {listen: "127.0.0.1:29317"}
gateway:
  telegram: {bot_token: "123:abc"}
rooms:
  - {matrix: "#fleet-ops:localhost", telegram: -100123}
identities:
  - {matrix: "@alexander:localhost", telegram: 42}
"##;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MIN, Path::new("/etc/tgmx")).unwrap();
        assert_eq!(c.appservice.puppet_prefix, "telegram_");
        assert_eq!(c.database, "sqlite:///etc/tgmx/tgmx.db");
        assert_eq!(c.appservice.registration, Path::new("/etc/tgmx/registration.yaml"));
        assert_eq!(c.gateway.primary_platform, Platform::Telegram);
        assert_eq!(c.rooms[0].telegram, -100123);
        assert_eq!(c.bot_user_id().as_str(), "@telegrambot:localhost");
    }

    #[test]
    fn errors_name_the_key() {
        let bad = MIN.replace(
            "-100123}",
            "-100123}\n  - {matrix: \"#b:localhost\", telegram: -100123}",
        );
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("rooms[1].telegram"), "{e}");
        let bad = MIN.replace("@alexander:localhost", "@alexander:elsewhere");
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("identities[0].matrix"), "{e}");
        let bad = MIN.replace("url: \"http://127.0.0.1:8008\"", "url: \"nope\"");
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("homeserver.url"), "{e}");
        let bad = MIN.replace(
            "gateway:",
            "gateway:\n  primary_platform: matrix\n  fallback_platform: matrix",
        );
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("fallback_platform"), "{e}");
        let bad = MIN.replace("gateway:", "gatway: 1\ngateway:");
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("gatway"), "{e}");
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let c = Config::parse(EMBEDDED_DEFAULT, Path::new("/srv")).unwrap();
        assert_eq!(c.homeserver.url, "http://127.0.0.1:8008");
        assert_eq!(c.gateway.telegram.per_chat_per_minute, 20);
        assert_eq!(c.gateway.dedupe.window_secs, 120);
        assert!(c.rooms.is_empty() && c.fleet.agents.is_empty());
    }

    #[test]
    fn the_example_registration_parses_but_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("registration.yaml");
        let e = Registration::load(&path).unwrap_err().to_string();
        assert!(e.contains("placeholder tokens"), "{e}");
        let text = std::fs::read_to_string(path).unwrap();
        let reg: Registration = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(reg.namespaces.users[0].regex, "^@telegram_[0-9]+:localhost$");
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let c = Config::parse(MIN, Path::new(".")).unwrap();
        assert!(!format!("{c:?}").contains("123:abc"));
    }

    /// The committed example registration is what `generate-registration` writes for the
    /// example config, tokens aside (it once named the bot as sender, which tgmx no longer does).
    #[test]
    fn example_registration_matches_the_generator() {
        let c = Config::parse(include_str!("../config.example.yaml"), Path::new(".")).unwrap();
        let mut generated = Registration::generate(&c);
        let example: Registration = serde_saphyr::from_str(include_str!("../registration.yaml")).unwrap();
        generated.as_token = example.as_token.clone();
        generated.hs_token = example.hs_token.clone();
        assert_eq!(example.to_yaml(), generated.to_yaml());
    }

    #[test]
    fn generated_registration_is_anchored_and_roundtrips() {
        let c = Config::parse(MIN, Path::new(".")).unwrap();
        let r = Registration::generate(&c);
        assert_eq!(r.namespaces.users[0].regex, "^@telegram_[0-9]+:localhost$");
        assert!(
            r.namespaces
                .users
                .iter()
                .all(|n| n.regex.starts_with('^') && n.regex.ends_with('$'))
        );
        assert_ne!(r.as_token, r.hs_token);
        assert_eq!(r.namespaces.aliases[1].regex, "^\\#fleet\\-ops:localhost$");
        assert!(!r.namespaces.aliases[1].exclusive);
        let back: Registration = serde_saphyr::from_str(&r.to_yaml()).unwrap();
        assert_eq!(back, r);
    }
}
