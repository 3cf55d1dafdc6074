//! Configuration: the YAML file the operator edits, plus the appservice registration it points to.
//!
//! Loading validates everything up front so that a broken file is rejected with a message naming
//! the key path, its line and column, and the problem (see `located`), and (on reload) the old
//! configuration stays in force.

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
    /// This daemon's name among the instances of an active/standby pair on one PostgreSQL
    /// database (`tgmx status` shows which one is active; default: the host name). When set, the
    /// encryption devices are this instance's own (see `Config::device_suffix`).
    #[serde(default)]
    pub instance: Option<String>,
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
    /// The directory of the crypto stores (relative to the config file). Default: `tgmx-crypto`
    /// beside an SQLite database; with PostgreSQL, `tgmx-crypto` beside the config file.
    #[serde(default)]
    pub store_dir: Option<PathBuf>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            allow: true,
            default: false,
            require: false,
            pickle_key: None,
            store_dir: None,
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
            .field("store_dir", &self.store_dir)
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
    /// `check` fails unless at least this many agents exist and are joined to every room, and
    /// `status` is not ready for cutover unless this many answered the last rollcall (on
    /// Matrix, or on Telegram from the account an `identities` entry maps to the agent).
    #[serde(default)]
    pub min_agents: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-server API base URL of the homeserver, e.g. `http://127.0.0.1:8008`. Required,
    /// here or as `gateway.matrix.homeserver` (filled in from there on load).
    #[serde(default)]
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

impl Platform {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Telegram => "telegram",
            Platform::Matrix => "matrix",
            Platform::None => "none",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default = "default_primary")]
    pub primary_platform: Platform,
    #[serde(default = "default_fallback")]
    pub fallback_platform: Platform,
    /// How long Telegram stays the fallback after a cutover, in hours: when the window ends the
    /// bridge puts Telegram in standby by itself (announced, pinned, recorded), unless the
    /// operator rolled back. 0: never by itself. Fractions allowed (tests use seconds).
    #[serde(default = "default_fallback_hours")]
    pub fallback_hours: f64,
    /// On a rollback from standby, what was said on Matrix meanwhile is posted to Telegram one
    /// by one (in order, at the group's pace) up to this many messages per room; above it, as one
    /// digest (who said what, when) with a link to the Matrix room. 0: always a digest.
    #[serde(default = "default_rollback_digest_over")]
    pub rollback_digest_over: usize,
    #[serde(default)]
    pub matrix: MatrixGateway,
    pub telegram: TelegramGateway,
    /// Cross-side duplicate suppression for mapped identities.
    #[serde(default)]
    pub dedupe: DedupeConfig,
    /// Texts posted (and pinned in Telegram) when the primary surface changes.
    #[serde(default)]
    pub announcements: Announcements,
    /// A room (alias or id) where operators command the bridge from a Matrix client (`!tgmx
    /// status`, ...; see `bridge::management`). The bot joins it; nothing in it is bridged.
    #[serde(default)]
    pub management_room: Option<OwnedRoomOrAliasId>,
    /// Who may command the bridge in the management room (`fleet.operator` also may).
    #[serde(default)]
    pub operators: Vec<OwnedUserId>,
}

impl GatewayConfig {
    /// Whether `user` may command the bridge in the management room: listed in `operators`,
    /// or the fleet's operator.
    pub fn is_operator(&self, fleet: &FleetConfig, user: &ruma::UserId) -> bool {
        self.operators.iter().any(|o| o == user) || fleet.operator.as_deref() == Some(user)
    }

    /// The management room is a room of its own, and someone may command there.
    fn check_management(&self, cfg: &Config) -> std::result::Result<(), Invalid> {
        let Some(room) = &self.management_room else {
            if !self.operators.is_empty() {
                return Err(invalid(
                    "gateway.operators",
                    "has no effect without gateway.management_room (the room they command the bridge in)",
                ));
            }
            return Ok(());
        };
        if let Some(i) = cfg.rooms.iter().position(|r| r.matrix == *room) {
            return Err(invalid(
                "gateway.management_room",
                format!("{room} is bridged (rooms[{i}]); the management room must be a room of its own"),
            ));
        }
        if self.operators.is_empty() && cfg.fleet.operator.is_none() {
            return Err(invalid(
                "gateway.management_room",
                "no one may command the bridge there: list their Matrix ids in gateway.operators (or set fleet.operator)",
            ));
        }
        Ok(())
    }
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
    /// Alias of `homeserver.url`, as agents' configs spell it (`gateway.matrix.homeserver`):
    /// either may be given, or both when they agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homeserver: Option<String>,
    /// The rooms agents' configs list (`gateway.matrix.rooms: ["#fleet-ops:server"]`). A bridged
    /// room needs its Telegram chat, so each must also be in `rooms`; this list adds nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<OwnedRoomOrAliasId>,
}

fn default_fallback_hours() -> f64 {
    48.0
}

/// 20 is a minute of Telegram's group rate: a longer backlog posted one by one would bury the
/// chat for minutes; a digest reads at a glance.
fn default_rollback_digest_over() -> usize {
    20
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
            homeserver: None,
            rooms: Vec::new(),
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
    /// Bot API requests per second in all (Telegram allows a bot about 30). Sends beyond it
    /// wait; 0 disables it (a local Bot API server without limits, or a bench); changed on reload.
    #[serde(default = "default_bot_rate")]
    pub per_bot_per_second: u32,
    /// Largest image sent as a photo; bigger images go as documents (cloud Bot API: 10 MB).
    #[serde(default = "default_max_photo")]
    pub max_photo_bytes: u64,
}

fn default_group_rate() -> u32 {
    20
}
fn default_bot_rate() -> u32 {
    30
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
    /// A forum topic of the chat (its `message_thread_id`): this room bridges that topic only.
    /// Unset: the room bridges the chat, and in a forum every topic without a room of its own
    /// (each message shown with its topic's name). A chat may be listed once per topic and once
    /// without one; a forum listed only with topics ignores its other topics (audited).
    #[serde(default)]
    pub telegram_topic: Option<i32>,
    /// Room name set by `bootstrap` when it creates the room.
    #[serde(default)]
    pub name: Option<String>,
    /// Room topic set by `bootstrap`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Create the room with end-to-end encryption on (`bootstrap`); unset: `encryption.default`.
    #[serde(default)]
    pub encrypted: Option<bool>,
    /// Carry the Matrix room's name, topic and avatar to the Telegram group (`setChatTitle`,
    /// `setChatDescription`, `setChatPhoto`; the bot needs the admin right to change the group's
    /// info). Off by default: Telegram -> Matrix always.
    #[serde(default)]
    pub sync_details_to_telegram: bool,
}

impl RoomMapping {
    /// Where on Telegram this room is bridged to.
    pub fn place(&self) -> crate::telegram::Place {
        crate::telegram::Place::topic(self.telegram, self.telegram_topic)
    }

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

/// A key of the file and what is wrong with it (its line is looked up where the text is known).
struct Invalid {
    key: String,
    problem: String,
}

fn invalid(key: &str, problem: impl std::fmt::Display) -> Invalid {
    Invalid {
        key: key.to_owned(),
        problem: problem.to_string(),
    }
}

/// `gateway.telegram.bot_token` when Telegram is enabled and no token is set.
const TOKEN_MISSING: &str =
    "missing: set it or the environment variable TGMX_TELEGRAM_TOKEN (or gateway.telegram.enabled: false)";

/// An error of the config file read from `path`: the file's name goes first.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// The directory relative paths of the config file at `path` start from.
fn base_dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn read_config_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
}

impl Config {
    /// Parse and validate YAML text. `base_dir` resolves relative paths (registration, database).
    /// An error names the key path and its line and column in `text`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config> {
        Self::parse_located(text, base_dir).map(|(cfg, _)| cfg)
    }

    /// [`Config::parse`], also giving the file's tree (to point at a key's line afterwards).
    fn parse_located(text: &str, base_dir: &Path) -> Result<(Config, located::Node)> {
        let tree = located::parse(text).map_err(located::Problem::into_error)?;
        let mut cfg: Config = located::read(&tree).map_err(located::Problem::into_error)?;
        cfg.resolve_aliases()
            .map_err(|bad| tree.problem(&bad.key, bad.problem).into_error())?;
        if cfg.appservice.registration.is_relative() {
            cfg.appservice.registration = base_dir.join(&cfg.appservice.registration);
        }
        if let Ok(url) = std::env::var("TGMX_DATABASE_URL")
            && !url.is_empty()
        {
            cfg.database = url;
        }
        if let Some(rest) = cfg.database.strip_prefix("sqlite://") {
            let p = Path::new(rest.split('?').next().unwrap_or(rest));
            if p.is_relative() && rest != ":memory:" {
                cfg.database = format!("sqlite://{}", base_dir.join(rest).display());
            }
        }
        cfg.encryption.store_dir = Some(match cfg.encryption.store_dir.take() {
            Some(dir) if dir.is_relative() => base_dir.join(dir),
            Some(dir) => dir,
            None if cfg.database.starts_with("sqlite:") => crate::matrix::crypto::dir_for(&cfg.database),
            None => base_dir.join("tgmx-crypto"),
        });
        if cfg.gateway.telegram.bot_token.as_deref().is_none_or(str::is_empty) {
            cfg.gateway.telegram.bot_token = std::env::var("TGMX_TELEGRAM_TOKEN").ok().filter(|t| !t.is_empty());
        }
        if cfg.encryption.pickle_key.as_deref().is_none_or(str::is_empty) {
            cfg.encryption.pickle_key = std::env::var("TGMX_PICKLE_KEY").ok().filter(|k| !k.is_empty());
        }
        cfg.check()
            .map_err(|bad| tree.problem(&bad.key, bad.problem).into_error())?;
        Ok((cfg, tree))
    }

    /// Read and validate a config file. An error starts with the file's name.
    pub fn load(path: &Path) -> Result<Config> {
        let text = read_config_file(path)?;
        Self::parse(&text, base_dir_of(path)).map_err(|e| in_file(path, e))
    }

    /// `tgmx check-config`: the file (or, without `path`, the embedded default) as `tgmx run`
    /// reads it, and what `run` needs before it starts: the bot token while Telegram is enabled,
    /// a readable and valid registration, and the database's directory. Every error names the
    /// key and its line.
    pub fn check_for_run(path: Option<&Path>) -> Result<(Config, Registration)> {
        let (text, base) = match path {
            Some(p) => (read_config_file(p)?, base_dir_of(p)),
            None => (EMBEDDED_DEFAULT.to_owned(), Path::new(".")),
        };
        let within = |e: Error| match path {
            Some(p) => in_file(p, e),
            None => in_file(Path::new("embedded default config"), e),
        };
        let (cfg, tree) = Self::parse_located(&text, base).map_err(within)?;
        let fail = |key: &str, problem: &str| within(tree.problem(key, problem).into_error());
        if cfg.gateway.telegram.enabled && cfg.telegram_token().is_err() {
            return Err(fail("gateway.telegram.bot_token", TOKEN_MISSING));
        }
        let registration =
            Registration::read(&cfg.appservice.registration).map_err(|p| fail("appservice.registration", &p))?;
        if let Some(dir) = cfg.database_dir()
            && !dir.is_dir()
        {
            let problem = format!(
                "the directory {} does not exist (the database is created in it)",
                dir.display()
            );
            return Err(fail("database", &problem));
        }
        Ok((cfg, registration))
    }

    /// This instance's name (`instance`, else the host name).
    pub fn instance_name(&self) -> String {
        if let Some(name) = &self.instance {
            return name.clone();
        }
        crate::storage::host_name().unwrap_or_else(|| "tgmx".to_owned())
    }

    /// The directory of the crypto stores (`encryption.store_dir`, see there).
    pub fn crypto_dir(&self) -> PathBuf {
        self.encryption
            .store_dir
            .clone()
            .unwrap_or_else(|| crate::matrix::crypto::dir_for(&self.database))
    }

    /// The directory of an SQLite database file (`None` for an in-memory database).
    fn database_dir(&self) -> Option<PathBuf> {
        let rest = self.database.strip_prefix("sqlite://")?;
        let file = rest.split('?').next().unwrap_or(rest);
        if file.is_empty() || file.starts_with(":memory:") {
            return None;
        }
        let dir = Path::new(file).parent()?;
        Some(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_path_buf()
        })
    }

    /// The settings in force, one line per group, for `tgmx check-config`. No secret is shown:
    /// the bot token and the pickle key only as "set" or "not set"; the appservice tokens
    /// (in the registration) not at all.
    pub fn effective_settings(&self) -> Vec<String> {
        let set = |s: &Option<String>| if s.is_some() { "set" } else { "not set" };
        let on = |b: bool| if b { "on" } else { "off" };
        let (hs, a, g) = (&self.homeserver, &self.appservice, &self.gateway);
        let (t, m) = (&g.telegram, &g.matrix);
        let mut out = vec![
            format!(
                "homeserver: url {}, server_name {}",
                without_password(&hs.url),
                hs.server_name
            ),
            format!(
                "appservice: listen {}, url {}, registration {}, id {}, bot {} ({:?}), puppets @{}<telegram id>:{}",
                a.listen,
                without_password(&self.appservice_url()),
                a.registration.display(),
                a.id,
                self.bot_user_id(),
                a.bot_displayname,
                a.puppet_prefix,
                hs.server_name
            ),
            format!(
                "database: {} ({})",
                crate::storage::redacted(&self.database),
                crate::storage::Backend::of(&self.database).map_or("?", crate::storage::Backend::name)
            ),
            format!(
                "gateway: primary {}, fallback {}, dedupe {} (window {} s)",
                g.primary_platform.as_str(),
                g.fallback_platform.as_str(),
                on(g.dedupe.enabled),
                g.dedupe.window_secs
            ),
            format!(
                "gateway.telegram: {}, api_url {}, poll_timeout {} s, bot_token {}, per_chat_per_minute {}, \
                 per_bot_per_second {}, max_download_bytes {}, max_upload_bytes {}, max_photo_bytes {}",
                if t.enabled { "enabled" } else { "disabled" },
                without_password(&t.api_url),
                t.poll_timeout,
                set(&t.bot_token),
                t.per_chat_per_minute,
                t.per_bot_per_second,
                t.max_download_bytes,
                t.max_upload_bytes,
                t.max_photo_bytes
            ),
            format!(
                "gateway.matrix: {}, catch_up_secs {}, follow_sync {}",
                if m.enabled {
                    "enabled"
                } else {
                    "disabled (nothing relayed to Matrix: Telegram messages wait in the inbox)"
                },
                m.catch_up_secs,
                m.follow_sync.map_or("unset (on unless the homeserver is Synapse)", on)
            ),
        ];
        if self.rooms.is_empty() {
            out.push("rooms: none".to_owned());
        }
        for (i, r) in self.rooms.iter().enumerate() {
            let mut line = format!("rooms[{i}]: {} <-> telegram {}", r.matrix, r.place());
            if let Some(name) = &r.name {
                line.push_str(&format!(", name {name:?}"));
            }
            line.push_str(if r.wants_encryption(&self.encryption) {
                ", created encrypted"
            } else {
                ", created unencrypted"
            });
            if r.sync_details_to_telegram {
                line.push_str(", name/topic/avatar synced to telegram");
            }
            out.push(line);
        }
        out.push(format!("identities: {} mapping(s)", self.identities.len()));
        out.push(format!(
            "fleet: operator {}, {} agent(s), min_agents {}",
            self.fleet.operator.as_ref().map_or("none", |o| o.as_str()),
            self.fleet.agents.len(),
            self.fleet.min_agents
        ));
        let e = &self.encryption;
        out.push(format!(
            "encryption: allow {}, default {}, require {}, pickle_key {}",
            on(e.allow),
            on(e.default),
            on(e.require),
            set(&e.pickle_key)
        ));
        let overridden = std::env::var("RUST_LOG").is_ok_and(|v| !v.is_empty());
        out.push(format!(
            "logging: level {:?}{}",
            self.logging.level,
            if overridden {
                " (RUST_LOG is set and overrides it)"
            } else {
                ""
            }
        ));
        out
    }

    /// Checks that serde cannot express. Every message names the key (no line: see
    /// [`Config::parse`], which has the text).
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|bad| Error::Config(format!("`{}`: {}", bad.key, bad.problem)))
    }

    /// Keys of agents' configs that mean the same as ours (see [`MatrixGateway::homeserver`]):
    /// `gateway.matrix.homeserver` fills `homeserver.url`; given both, they must agree.
    fn resolve_aliases(&mut self) -> std::result::Result<(), Invalid> {
        const ALIAS: &str = "gateway.matrix.homeserver";
        let Some(alias) = self.gateway.matrix.homeserver.clone() else {
            return Ok(());
        };
        let url = url::Url::parse(&alias).map_err(|e| invalid(ALIAS, e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(ALIAS, "must be an http(s) URL"));
        }
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        if self.homeserver.url.is_empty() {
            self.homeserver.url = alias;
        } else if !same(&self.homeserver.url, &alias) {
            return Err(invalid(
                ALIAS,
                format!(
                    "{} differs from homeserver.url ({}); it is the same setting: give one of them, or the same URL in both",
                    without_password(&alias),
                    without_password(&self.homeserver.url)
                ),
            ));
        }
        Ok(())
    }

    fn check(&self) -> std::result::Result<(), Invalid> {
        if let Some(name) = &self.instance
            && (name.is_empty()
                || name.len() > 40
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(invalid(
                "instance",
                format!("{name:?}: 1 to 40 letters, digits, '.', '_' or '-'"),
            ));
        }
        if self.homeserver.url.is_empty() {
            return Err(invalid(
                "homeserver.url",
                "required, but missing (or give it as gateway.matrix.homeserver)",
            ));
        }
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
        match crate::storage::Backend::of(&self.database) {
            Some(crate::storage::Backend::Sqlite) => {}
            Some(crate::storage::Backend::Postgres) => {
                url::Url::parse(&self.database).map_err(|e| invalid("database", e))?;
            }
            None => {
                return Err(invalid(
                    "database",
                    "must be an sqlite:// or postgres:// URL (or set TGMX_DATABASE_URL)",
                ));
            }
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
        if !self.gateway.matrix.enabled && self.gateway.primary_platform == Platform::Matrix {
            return Err(invalid(
                "gateway.matrix.enabled",
                "cannot be false while primary_platform is matrix",
            ));
        }
        for (i, room) in self.gateway.matrix.rooms.iter().enumerate() {
            if !self.rooms.iter().any(|r| r.matrix == *room) {
                return Err(invalid(
                    &format!("gateway.matrix.rooms[{i}]"),
                    format!(
                        "{room} is not bridged: a bridged room needs its Telegram chat, so list it in `rooms` \
                         too (- {{matrix: \"{room}\", telegram: <chat id>}}), spelled the same"
                    ),
                ));
            }
        }
        let hours = self.gateway.fallback_hours;
        if !hours.is_finite() || !(0.0..=24.0 * 365.0).contains(&hours) {
            return Err(invalid(
                "gateway.fallback_hours",
                "hours from 0 (never by itself) to 8760",
            ));
        }
        if self.gateway.dedupe.window_secs > 24 * 3600 {
            return Err(invalid("gateway.dedupe.window_secs", "at most 86400"));
        }
        let mut chats = std::collections::HashMap::new();
        let mut rooms = std::collections::HashMap::new();
        for (i, r) in self.rooms.iter().enumerate() {
            if r.telegram_topic.is_some_and(|t| t < 1) {
                return Err(invalid(
                    &format!("rooms[{i}].telegram_topic"),
                    "a topic's message_thread_id is a positive number",
                ));
            }
            if r.telegram_topic == Some(1) {
                return Err(invalid(
                    &format!("rooms[{i}].telegram_topic"),
                    "1 is the General topic, which has no message_thread_id: map the chat without `telegram_topic`",
                ));
            }
            if r.telegram_topic.is_some() && r.sync_details_to_telegram {
                return Err(invalid(
                    &format!("rooms[{i}].sync_details_to_telegram"),
                    "a forum topic's room cannot set the group's title, description and photo (only the chat's room can)",
                ));
            }
            if let Some(first) = chats.insert(r.place(), i) {
                return Err(invalid(
                    &format!(
                        "rooms[{i}].{}",
                        if r.telegram_topic.is_some() {
                            "telegram_topic"
                        } else {
                            "telegram"
                        }
                    ),
                    format!("{} is mapped twice (also rooms[{first}])", r.place()),
                ));
            }
            if let Some(first) = rooms.insert(r.matrix.clone(), i) {
                return Err(invalid(
                    &format!("rooms[{i}].matrix"),
                    format!("{} is mapped twice (also rooms[{first}])", r.matrix),
                ));
            }
        }
        let mut tg_ids = std::collections::HashMap::new();
        for (i, id) in self.identities.iter().enumerate() {
            if id.matrix.server_name() != self.homeserver.server_name {
                return Err(invalid(
                    &format!("identities[{i}].matrix"),
                    format!("{} is not on {}", id.matrix, self.homeserver.server_name),
                ));
            }
            if let Some(first) = tg_ids.insert(id.telegram, i) {
                return Err(invalid(
                    &format!("identities[{i}].telegram"),
                    format!("{} is mapped twice (also identities[{first}])", id.telegram),
                ));
            }
        }
        self.gateway.check_management(self)?;
        tracing_subscriber::EnvFilter::try_new(&self.logging.level).map_err(|e| invalid("logging.level", e))?;
        Ok(())
    }

    /// The bot token, required to run with Telegram enabled.
    pub fn telegram_token(&self) -> Result<&str> {
        self.gateway
            .telegram
            .bot_token
            .as_deref()
            .ok_or_else(|| Error::Config(format!("`gateway.telegram.bot_token`: {TOKEN_MISSING}")))
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
    /// Read and check the registration file; an error names `appservice.registration`.
    pub fn load(path: &Path) -> Result<Registration> {
        Self::read(path).map_err(|p| Error::Config(format!("`appservice.registration`: {p}")))
    }

    /// [`Registration::load`] with the problem as text, for the caller to place at the key of
    /// the config that names the file. A problem inside the file names its key and line there.
    fn read(path: &Path) -> std::result::Result<Registration, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e} (run `tgmx generate-registration`)", path.display()))?;
        let within = |p: located::Problem| format!("{}: {p}", path.display());
        let tree = located::parse(&text).map_err(within)?;
        let reg: Registration = located::read(&tree).map_err(within)?;
        for (key, token) in [("as_token", &reg.as_token), ("hs_token", &reg.hs_token)] {
            if token.starts_with("REPLACE_ME") {
                let fix = "placeholder tokens; run `tgmx generate-registration --force`";
                return Err(within(tree.problem(key, fix)));
            }
        }
        for (key, token) in [("as_token", &reg.as_token), ("hs_token", &reg.hs_token)] {
            if token.len() < 16 {
                return Err(within(tree.problem(key, "tokens must be at least 16 characters")));
            }
        }
        Ok(reg)
    }

    /// One line for `tgmx check-config`, without the tokens.
    pub fn summary(&self) -> String {
        let n = &self.namespaces;
        format!(
            "registration: id {}, url {}, sender_localpart {}, namespaces {} user / {} alias / {} room, as_token and hs_token set",
            self.id,
            self.url.as_deref().map_or_else(|| "none".to_owned(), without_password),
            self.sender_localpart,
            n.users.len(),
            n.aliases.len(),
            n.rooms.len()
        )
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

/// The URL with a password in it (`https://user:secret@host`) shown as `<redacted>`.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Reading YAML with positions: the text becomes a tree whose nodes know their line and column,
/// and the typed value (`Config`, `Registration`) is read from that tree by a deserializer that
/// knows the key path it is at. So every error, whether from the YAML syntax, a type (a room
/// alias, a socket address), an unknown or a missing key, or a later check, names the key path
/// and its line and column, once.
mod located {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::value::BorrowedStrDeserializer;
    use serde::de::{self, DeserializeOwned, DeserializeSeed, Expected, Unexpected, Visitor};
    use serde_saphyr::{DuplicateKeyPolicy, Location, Spanned};

    use crate::error::Error;

    /// A line and column in the text, both from 1.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Pos {
        pub line: u64,
        pub column: u64,
    }

    impl fmt::Display for Pos {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "line {}, column {}", self.line, self.column)
        }
    }

    fn pos_of(l: &Location) -> Pos {
        Pos {
            line: l.line().max(1),
            column: l.column().max(1),
        }
    }

    /// What is wrong, at which key (`rooms[1].matrix`; empty: the document itself) and where.
    #[derive(Debug)]
    pub struct Problem {
        pub key: String,
        pub pos: Pos,
        pub problem: String,
    }

    impl fmt::Display for Problem {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.key.is_empty() {
                write!(f, "{}: {}", self.pos, self.problem)
            } else {
                write!(f, "`{}` ({}): {}", self.key, self.pos, self.problem)
            }
        }
    }

    impl Problem {
        pub fn into_error(self) -> Error {
            Error::Config(self.to_string())
        }
    }

    /// A YAML node and where it starts.
    #[derive(Debug)]
    pub struct Node {
        pub pos: Pos,
        pub kind: Kind,
    }

    /// Scalars other than strings keep their spelling, for a string-typed key (`name: 1.50`).
    #[derive(Debug)]
    pub enum Kind {
        Null,
        Bool(bool, String),
        Int(i128, String),
        Float(f64, String),
        Str(String),
        Seq(Vec<Node>),
        Map(Vec<Entry>),
    }

    #[derive(Debug)]
    pub struct Entry {
        pub key: String,
        /// Where the key stands.
        pub pos: Pos,
        pub value: Node,
    }

    impl Node {
        /// Where to point for this node as the value of a key standing at `key_pos`: a scalar
        /// at itself, anything else (an empty value, a nested map or list) at its key.
        fn pos_under(&self, key_pos: Pos) -> Pos {
            match self.kind {
                Kind::Bool(..) | Kind::Int(..) | Kind::Float(..) | Kind::Str(_) => self.pos,
                Kind::Null | Kind::Seq(_) | Kind::Map(_) => key_pos,
            }
        }

        /// Where `key` (`gateway.telegram.api_url`, `rooms[1].matrix`) stands; a key that is
        /// not in the text (a default) at the nearest enclosing key that is.
        pub fn locate(&self, key: &str) -> Pos {
            let (mut node, mut pos) = (self, self.pos);
            for seg in segments(key) {
                let next = match (&seg, &node.kind) {
                    (Seg::Key(k), Kind::Map(entries)) => entries
                        .iter()
                        .find(|e| e.key == *k)
                        .map(|e| (&e.value, e.value.pos_under(e.pos))),
                    (Seg::Index(i), Kind::Seq(items)) => items.get(*i).map(|n| (n, n.pos)),
                    _ => None,
                };
                let Some((n, p)) = next else { break };
                (node, pos) = (n, p);
            }
            pos
        }

        /// `problem` at `key`, placed by [`Node::locate`].
        pub fn problem(&self, key: &str, problem: impl Into<String>) -> Problem {
            Problem {
                key: key.to_owned(),
                pos: self.locate(key),
                problem: problem.into(),
            }
        }
    }

    enum Seg {
        Key(String),
        Index(usize),
    }

    /// `rooms[1].matrix` -> `rooms`, 1, `matrix`.
    fn segments(key: &str) -> Vec<Seg> {
        let mut out = Vec::new();
        for part in key.split('.') {
            let mut pieces = part.split('[');
            if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
                out.push(Seg::Key(name.to_owned()));
            }
            for index in pieces {
                if let Ok(i) = index.trim_end_matches(']').parse() {
                    out.push(Seg::Index(i));
                }
            }
        }
        out
    }

    fn child(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    }

    fn item(path: &str, i: usize) -> String {
        format!("{path}[{i}]")
    }

    /// Parse `text` into a tree. A syntax error is placed where the parser found it, with the
    /// key path of that line (found by indentation); a key given twice in a map at its second
    /// appearance.
    pub fn parse(text: &str) -> Result<Node, Problem> {
        // The parser's positions are those of the text without a byte order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let options = serde_saphyr::Options {
            // Told apart below, with the key path.
            duplicate_keys: DuplicateKeyPolicy::LastWins,
            with_snippet: false,
            ..Default::default()
        };
        let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let e = e.without_snippet();
            let pos = e.location().map_or(Pos { line: 1, column: 1 }, |l| pos_of(&l));
            let message = e.to_string();
            // Its own "at line L, column C" would say the place a second time.
            let suffix = format!(" at line {}, column {}", pos.line, pos.column);
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            Problem {
                key: key_path_at(text, pos.line),
                pos,
                problem: format!("YAML: {message}"),
            }
        })?;
        let chars: Vec<char> = text.chars().collect();
        let mut root = convert(raw, &chars, "")?;
        if matches!(root.kind, Kind::Null) {
            // An empty file (or comments only): the parser stands at its end.
            root.pos = Pos { line: 1, column: 1 };
        }
        Ok(root)
    }

    /// The text a scalar was written as (an alias: its anchored value), if known.
    fn spelling(chars: &[char], at: &Location) -> Option<String> {
        let span = at.span();
        if span.is_empty() {
            return None;
        }
        let end = span.offset().checked_add(span.len())?;
        chars.get(span.offset()..end).map(|c| c.iter().collect())
    }

    fn convert(raw: Spanned<Raw>, chars: &[char], path: &str) -> Result<Node, Problem> {
        let pos = pos_of(&raw.referenced);
        let spelled = |fallback: String| spelling(chars, &raw.defined).unwrap_or(fallback);
        let kind = match raw.value {
            Raw::Null => Kind::Null,
            Raw::Bool(b) => Kind::Bool(b, spelled(b.to_string())),
            Raw::Int(i) => Kind::Int(i, spelled(i.to_string())),
            Raw::Float(f) => Kind::Float(f, spelled(f.to_string())),
            Raw::Str(s) => Kind::Str(s),
            Raw::Seq(items) => Kind::Seq(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| convert(n, chars, &item(path, i)))
                    .collect::<Result<_, _>>()?,
            ),
            Raw::Map(pairs) => {
                let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
                for (key, value) in pairs {
                    let key_path = child(path, &key.value);
                    let key_pos = pos_of(&key.referenced);
                    if let Some(first) = entries.iter().find(|e| e.key == key.value) {
                        return Err(Problem {
                            key: key_path,
                            pos: key_pos,
                            problem: format!("given twice (first on {})", first.pos),
                        });
                    }
                    let value = convert(value, chars, &key_path)?;
                    entries.push(Entry {
                        key: key.value,
                        pos: key_pos,
                        value,
                    });
                }
                Kind::Map(entries)
            }
        };
        Ok(Node { pos, kind })
    }

    /// The YAML as the parser gives it, with positions.
    enum Raw {
        Null,
        Bool(bool),
        Int(i128),
        Float(f64),
        Str(String),
        Seq(Vec<Spanned<Raw>>),
        /// Keys are read as strings (`y:` is the key "y", not YAML 1.1's `true`).
        Map(Vec<(Spanned<String>, Spanned<Raw>)>),
    }

    impl<'de> Deserialize<'de> for Raw {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
            struct RawVisitor;
            impl<'de> Visitor<'de> for RawVisitor {
                type Value = Raw;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any YAML value")
                }
                fn visit_unit<E>(self) -> Result<Raw, E> {
                    Ok(Raw::Null)
                }
                fn visit_none<E>(self) -> Result<Raw, E> {
                    Ok(Raw::Null)
                }
                fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                    Raw::deserialize(d)
                }
                fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                    Raw::deserialize(d)
                }
                fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                    Ok(Raw::Bool(v))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                    Ok(Raw::Int(v.into()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                    Ok(Raw::Int(v.into()))
                }
                fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                    Ok(Raw::Int(v))
                }
                fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
                    i128::try_from(v)
                        .map(Raw::Int)
                        .map_err(|_| E::custom(format!("{v} is too large")))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                    Ok(Raw::Float(v))
                }
                fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                    Ok(Raw::Str(v.to_owned()))
                }
                fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                    Ok(Raw::Str(v))
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
                    Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
                }
                fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                    let mut items = Vec::new();
                    while let Some(n) = a.next_element()? {
                        items.push(n);
                    }
                    Ok(Raw::Seq(items))
                }
                fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                    let mut pairs = Vec::new();
                    while let Some(pair) = a.next_entry()? {
                        pairs.push(pair);
                    }
                    Ok(Raw::Map(pairs))
                }
            }
            d.deserialize_any(RawVisitor)
        }
    }

    /// Read a `T` from the tree; an error names the key path and its position.
    pub fn read<T: DeserializeOwned>(root: &Node) -> Result<T, Problem> {
        T::deserialize(De {
            node: root,
            path: String::new(),
        })
        .map_err(|e| {
            let e = e.placed("", root.pos, root.pos);
            let (key, pos) = e.at.unwrap_or((String::new(), root.pos));
            Problem {
                key,
                pos,
                problem: e.problem,
            }
        })
    }

    /// An error while reading the tree; placed (key path, position) by the innermost map or
    /// list entry it passes through.
    #[derive(Debug)]
    pub struct DeError {
        problem: String,
        at: Option<(String, Pos)>,
        /// A required key missing from the map being read: placed at that map's key.
        missing: Option<&'static str>,
    }

    impl DeError {
        fn new(problem: String) -> DeError {
            DeError {
                problem,
                at: None,
                missing: None,
            }
        }

        /// Place an error from the value at `path` (pointed at `pos`; a missing key in it at
        /// `key_pos`, where its map's key stands) unless a deeper entry placed it.
        fn placed(mut self, path: &str, pos: Pos, key_pos: Pos) -> DeError {
            if self.at.is_none() {
                self.at = Some(match self.missing.take() {
                    Some(field) => (child(path, field), key_pos),
                    None => (path.to_owned(), pos),
                });
            }
            self
        }
    }

    impl fmt::Display for DeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.problem)
        }
    }

    impl std::error::Error for DeError {}

    impl de::Error for DeError {
        fn custom<T: fmt::Display>(msg: T) -> DeError {
            DeError::new(msg.to_string())
        }

        fn missing_field(field: &'static str) -> DeError {
            DeError {
                missing: Some(field),
                ..DeError::new("required, but missing".to_owned())
            }
        }

        fn unknown_field(_field: &str, expected: &'static [&'static str]) -> DeError {
            DeError::new(if expected.is_empty() {
                "unknown key (none is allowed here)".to_owned()
            } else {
                format!("unknown key; the keys here are {}", expected.join(", "))
            })
        }
    }

    /// Reads one node of the tree, knowing its key path.
    struct De<'a> {
        node: &'a Node,
        path: String,
    }

    impl<'a> De<'a> {
        fn unexpected(&self) -> Unexpected<'_> {
            match &self.node.kind {
                Kind::Null => Unexpected::Other("an empty value"),
                Kind::Bool(b, _) => Unexpected::Bool(*b),
                Kind::Int(i, _) => match i64::try_from(*i) {
                    Ok(i) => Unexpected::Signed(i),
                    Err(_) => Unexpected::Other("a large integer"),
                },
                Kind::Float(f, _) => Unexpected::Float(*f),
                Kind::Str(s) => Unexpected::Str(s),
                Kind::Seq(_) => Unexpected::Seq,
                Kind::Map(_) => Unexpected::Map,
            }
        }

        fn wrong(&self, expected: &dyn Expected) -> DeError {
            de::Error::invalid_type(self.unexpected(), expected)
        }

        /// The node as written, if it is a scalar.
        fn scalar_text(&self) -> Option<&'a str> {
            let node: &'a Node = self.node;
            match &node.kind {
                Kind::Str(s) | Kind::Bool(_, s) | Kind::Int(_, s) | Kind::Float(_, s) => Some(s),
                Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
            }
        }

        fn integer(&self) -> Option<i128> {
            match &self.node.kind {
                Kind::Int(i, _) => Some(*i),
                Kind::Str(s) => parse_int(s.trim()),
                _ => None,
            }
        }
    }

    /// A quoted integer (`"30"`, `"0x1f"`), as serde-saphyr takes it.
    fn parse_int(s: &str) -> Option<i128> {
        let (negative, digits) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let digits = digits.replace('_', "");
        let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
            i128::from_str_radix(hex, 16).ok()?
        } else if let Some(oct) = digits.strip_prefix("0o") {
            i128::from_str_radix(oct, 8).ok()?
        } else {
            digits.parse::<u64>().ok()?.into()
        };
        Some(if negative { -magnitude } else { magnitude })
    }

    fn visit_int<'de, V: Visitor<'de>>(i: i128, v: V) -> Result<V::Value, DeError> {
        if let Ok(i) = i64::try_from(i) {
            v.visit_i64(i)
        } else if let Ok(u) = u64::try_from(i) {
            v.visit_u64(u)
        } else {
            v.visit_i128(i)
        }
    }

    macro_rules! integers {
        ($($method:ident)*) => {$(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
                match self.integer() {
                    Some(i) => visit_int(i, v),
                    None => Err(self.wrong(&v)),
                }
            }
        )*};
    }

    macro_rules! strings {
        ($($method:ident)*) => {$(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
                match self.scalar_text() {
                    Some(s) => v.visit_borrowed_str(s),
                    None => Err(self.wrong(&v)),
                }
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for De<'de> {
        type Error = DeError;

        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            let node: &'de Node = self.node;
            match &node.kind {
                Kind::Null => v.visit_unit(),
                Kind::Bool(b, _) => v.visit_bool(*b),
                Kind::Int(i, _) => visit_int(*i, v),
                Kind::Float(f, _) => v.visit_f64(*f),
                Kind::Str(s) => v.visit_borrowed_str(s),
                Kind::Seq(_) => self.deserialize_seq(v),
                Kind::Map(_) => self.deserialize_map(v),
            }
        }

        fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match &self.node.kind {
                Kind::Bool(b, _) => v.visit_bool(*b),
                Kind::Str(s) if s == "true" || s == "false" => v.visit_bool(s == "true"),
                _ => Err(self.wrong(&v)),
            }
        }

        integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
            deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128);

        fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.deserialize_f64(v)
        }

        fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match &self.node.kind {
                Kind::Float(f, _) => v.visit_f64(*f),
                Kind::Int(i, _) => v.visit_f64(*i as f64),
                Kind::Str(s) => match s.trim().parse() {
                    Ok(f) => v.visit_f64(f),
                    Err(_) => Err(self.wrong(&v)),
                },
                _ => Err(self.wrong(&v)),
            }
        }

        strings!(deserialize_char deserialize_str deserialize_string deserialize_bytes
            deserialize_byte_buf deserialize_identifier);

        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match self.node.kind {
                Kind::Null => v.visit_none(),
                _ => v.visit_some(self),
            }
        }

        fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match self.node.kind {
                Kind::Null => v.visit_unit(),
                _ => Err(self.wrong(&v)),
            }
        }

        fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
            self.deserialize_unit(v)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
            v.visit_newtype_struct(self)
        }

        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            let node: &'de Node = self.node;
            match &node.kind {
                Kind::Seq(items) => v.visit_seq(Items {
                    items: items.iter().enumerate(),
                    path: &self.path,
                }),
                // `rooms:` with nothing under it: an empty list, as before.
                Kind::Null => v.visit_seq(Items {
                    items: [].iter().enumerate(),
                    path: &self.path,
                }),
                _ => Err(self.wrong(&v)),
            }
        }

        fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
            self.deserialize_seq(v)
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: usize,
            v: V,
        ) -> Result<V::Value, DeError> {
            self.deserialize_seq(v)
        }

        fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            let node: &'de Node = self.node;
            let entries: &'de [Entry] = match &node.kind {
                Kind::Map(entries) => entries,
                // `logging:` with nothing under it: the defaults.
                Kind::Null => &[],
                _ => return Err(self.wrong(&v)),
            };
            v.visit_map(Entries {
                entries: entries.iter(),
                current: None,
                path: &self.path,
            })
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, DeError> {
            self.deserialize_map(v)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, DeError> {
            match self.scalar_text() {
                Some(s) => v.visit_enum(BorrowedStrDeserializer::<DeError>::new(s)),
                None => Err(self.wrong(&v)),
            }
        }

        fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            v.visit_unit()
        }
    }

    struct Items<'a, 'p> {
        items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
        path: &'p str,
    }

    impl<'de> de::SeqAccess<'de> for Items<'de, '_> {
        type Error = DeError;

        fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
            let Some((i, node)) = self.items.next() else {
                return Ok(None);
            };
            let path = item(self.path, i);
            seed.deserialize(De {
                node,
                path: path.clone(),
            })
            .map(Some)
            .map_err(|e| e.placed(&path, node.pos, node.pos))
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.items.len())
        }
    }

    struct Entries<'a, 'p> {
        entries: std::slice::Iter<'a, Entry>,
        current: Option<&'a Entry>,
        path: &'p str,
    }

    impl<'de> de::MapAccess<'de> for Entries<'de, '_> {
        type Error = DeError;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
            let Some(entry) = self.entries.next() else {
                return Ok(None);
            };
            self.current = Some(entry);
            seed.deserialize(BorrowedStrDeserializer::<DeError>::new(&entry.key))
                .map(Some)
                .map_err(|e| e.placed(&child(self.path, &entry.key), entry.pos, entry.pos))
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
            let entry = self
                .current
                .take()
                .ok_or_else(|| DeError::new("a value without its key".to_owned()))?;
            let path = child(self.path, &entry.key);
            seed.deserialize(De {
                node: &entry.value,
                path: path.clone(),
            })
            .map_err(|e| e.placed(&path, entry.value.pos_under(entry.pos), entry.pos))
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.entries.len())
        }
    }

    /// The key path of `line` in block-style YAML, by indentation (`key:` lines and `- ` list
    /// items up to that line; the inside of a quoted or block scalar is no key): for a syntax
    /// error, where there is no tree to ask. Empty if the line is at the top level.
    pub fn key_path_at(text: &str, line: u64) -> String {
        struct Level {
            indent: usize,
            segment: Seg,
            is_item: bool,
            /// Items of the list under this key (or item) seen so far.
            items: usize,
        }
        /// Lines that belong to the value of an earlier one.
        enum Inside {
            Nothing,
            /// A quoted scalar not closed yet.
            Quote(char),
            /// A `|` or `>` scalar: its lines are indented deeper than this.
            Block(usize),
        }
        let mut stack: Vec<Level> = Vec::new();
        let mut inside = Inside::Nothing;
        for l in text.lines().take(usize::try_from(line).unwrap_or(usize::MAX)) {
            let content = l.trim_start_matches([' ', '\t']);
            let lead = &l[..l.len() - content.len()];
            // Tabs cannot indent YAML: such a line is taken as a sibling of the one above.
            let mut indent = match lead.contains('\t') {
                true => stack.last().map_or(0, |t| t.indent),
                false => lead.len(),
            };
            match inside {
                Inside::Quote(q) => {
                    if closes(l, q) {
                        inside = Inside::Nothing;
                    }
                    continue;
                }
                Inside::Block(deeper_than) if content.is_empty() || indent > deeper_than => continue,
                _ => inside = Inside::Nothing,
            }
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut rest = content;
            while rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|t| t.indent > indent || (t.indent == indent && t.is_item))
                {
                    stack.pop();
                }
                let index = stack.last_mut().map_or(0, |parent| {
                    parent.items += 1;
                    parent.items - 1
                });
                stack.push(Level {
                    indent,
                    segment: Seg::Index(index),
                    is_item: true,
                    items: 0,
                });
                let after = rest[1..].trim_start_matches(' ');
                indent += rest.len() - after.len();
                rest = after;
            }
            let value = match block_key(rest) {
                Some((key, value)) => {
                    while stack.last().is_some_and(|t| t.indent >= indent) {
                        stack.pop();
                    }
                    stack.push(Level {
                        indent,
                        segment: Seg::Key(key),
                        is_item: false,
                        items: 0,
                    });
                    value
                }
                None => rest,
            };
            inside = match value.chars().next() {
                Some(q @ ('"' | '\'')) if !closes(&value[1..], q) => Inside::Quote(q),
                Some('|' | '>') => Inside::Block(indent),
                _ => Inside::Nothing,
            };
        }
        let mut path = String::new();
        for level in &stack {
            path = match &level.segment {
                Seg::Key(k) => child(&path, k),
                Seg::Index(i) => item(&path, *i),
            };
        }
        path
    }

    /// Whether `s`, inside a scalar quoted with `q`, has its closing quote (`\"` and `''` are
    /// escaped quotes).
    fn closes(s: &str, q: char) -> bool {
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if q == '"' => {
                    chars.next();
                }
                '\'' if q == '\'' && chars.peek() == Some(&'\'') => {
                    chars.next();
                }
                c if c == q => return true,
                _ => {}
            }
        }
        false
    }

    /// The key of a `key: value` (or `key:`) line and what follows it, if it is one.
    fn block_key(s: &str) -> Option<(String, &str)> {
        let (key, after) = match s.chars().next()? {
            q @ ('"' | '\'') => {
                let end = s[1..].find(q)? + 1;
                (s[1..end].to_owned(), &s[end + 1..])
            }
            '{' | '[' | '&' | '*' | '!' | '|' | '>' | '%' | '@' | '`' | '#' => return None,
            _ => {
                let end = s.find(": ").or_else(|| s.strip_suffix(':').map(str::len))?;
                (s[..end].trim_end().to_owned(), &s[end..])
            }
        };
        let value = after.strip_prefix(':')?;
        (value.is_empty() || value.starts_with(' ')).then(|| (key, value.trim_start_matches(' ')))
    }
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
    fn a_forum_chat_maps_once_per_topic() {
        let topics = MIN.replace(
            "-100123}",
            "-100123}\n  - {matrix: \"#b:localhost\", telegram: -100123, telegram_topic: 7}\n  - {matrix: \"#c:localhost\", telegram: -100123, telegram_topic: 8}",
        );
        let c = Config::parse(&topics, Path::new(".")).unwrap();
        assert_eq!(c.rooms[1].place(), crate::telegram::Place::topic(-100123, Some(7)));
        assert_eq!(c.rooms[0].place(), crate::telegram::Place::chat(-100123));
        let twice = topics.replace("telegram_topic: 8", "telegram_topic: 7");
        let e = Config::parse(&twice, Path::new(".")).unwrap_err().to_string();
        assert!(
            e.contains("rooms[2].telegram_topic") && e.contains("chat -100123 topic 7 is mapped twice"),
            "{e}"
        );
        let zero = topics.replace("telegram_topic: 8", "telegram_topic: 0");
        let e = Config::parse(&zero, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("rooms[2].telegram_topic") && e.contains("positive"), "{e}");
        let general = topics.replace("telegram_topic: 8", "telegram_topic: 1");
        let e = Config::parse(&general, Path::new(".")).unwrap_err().to_string();
        assert!(
            e.contains("rooms[2].telegram_topic") && e.contains("General topic"),
            "{e}"
        );
        let details = topics.replace(
            "telegram_topic: 8}",
            "telegram_topic: 8, sync_details_to_telegram: true}",
        );
        let e = Config::parse(&details, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("rooms[2].sync_details_to_telegram"), "{e}");
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
        assert_eq!(c.gateway.telegram.per_bot_per_second, 30);
        assert_eq!(c.gateway.dedupe.window_secs, 120);
        assert!(c.rooms.is_empty() && c.fleet.agents.is_empty());
    }

    #[test]
    fn the_example_registration_parses_but_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("registration.example.yaml");
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
        let example: Registration = serde_saphyr::from_str(include_str!("../registration.example.yaml")).unwrap();
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

/// Every config error names the key path and the line (and column) of the offending value or
/// key, once (issue 15).
#[cfg(test)]
mod error_location_tests {
    use super::*;

    /// Valid; numbered lines, for the table below.
    const BASE: &str = r##"homeserver:
  url: "http://127.0.0.1:8008"
  server_name: localhost
appservice:
  listen: "127.0.0.1:29317"
gateway:
  primary_platform: telegram
  telegram:
    bot_token: "123:abc"
    poll_timeout: 30
rooms:
  - matrix: "#fleet-ops:localhost"
    telegram: -100123
  - {matrix: "#fleet-dev:localhost", telegram: -100124}
identities:
  - matrix: "@alexander:localhost"
    telegram: 42
fleet:
  agents: ["@a:localhost"]
logging:
  level: info
"##;

    fn error_of(text: &str) -> String {
        match Config::parse(text, Path::new("/etc/tgmx")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// The location is said once (the parser's own "at line L, column C" is not repeated), on
    /// one line.
    fn assert_located_once(e: &str, line: u64, column: u64) {
        assert_eq!(e.matches(&format!("line {line}, column {column}")).count(), 1, "{e}");
        assert_eq!(e.matches(&format!("line {line}")).count(), 1, "{e}");
        assert_eq!(e.matches(" (line ").count(), 1, "{e}");
        assert!(!e.contains(" at line"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    /// `gateway.management_room` and `gateway.operators`: checked, and errors name the key.
    #[test]
    fn management_room_keys_are_checked() {
        let with = |extra: &str| BASE.replace("    poll_timeout: 30\n", &format!("    poll_timeout: 30\n{extra}"));
        let c = Config::parse(
            &with("  management_room: \"#admin:localhost\"\n  operators: [\"@op:elsewhere\"]\n"),
            Path::new("/etc/tgmx"),
        )
        .unwrap();
        let op = ruma::UserId::parse("@op:elsewhere").unwrap();
        let fleet_op = ruma::UserId::parse("@alexander:localhost").unwrap();
        assert!(c.gateway.is_operator(&c.fleet, &op));
        assert!(!c.gateway.is_operator(&c.fleet, &fleet_op));
        // Default: no management room, no operators.
        let c = Config::parse(BASE, Path::new("/etc/tgmx")).unwrap();
        assert!(c.gateway.management_room.is_none() && c.gateway.operators.is_empty());
        // `fleet.operator` alone may command.
        let text = with("  management_room: \"!room:localhost\"\n")
            .replace("fleet:\n", "fleet:\n  operator: \"@alexander:localhost\"\n");
        let c = Config::parse(&text, Path::new("/etc/tgmx")).unwrap();
        assert!(c.gateway.is_operator(&c.fleet, &fleet_op));

        // (the lines added to `gateway`, what the error must say)
        #[rustfmt::skip]
        let table: &[(&str, &[&str])] = &[
            ("  management_room: \"#admin:localhost\"\n  operators: [\"alexander\"]\n", &["gateway.operators[0]"]),
            ("  management_room: \"admin\"\n  operators: [\"@op:localhost\"]\n", &["gateway.management_room"]),
            ("  operators: [\"@op:localhost\"]\n", &["gateway.operators", "without gateway.management_room"]),
            ("  management_room: \"#admin:localhost\"\n", &["gateway.management_room", "gateway.operators"]),
            ("  management_room: \"#fleet-dev:localhost\"\n  operators: [\"@op:localhost\"]\n",
                &["gateway.management_room", "rooms[1]"]),
            ("  management_rooom: \"#admin:localhost\"\n", &["gateway.management_rooom", "unknown key"]),
        ];
        for (extra, says) in table {
            let e = error_of(&with(extra));
            assert!(says.iter().all(|s| e.contains(s)), "{extra}: {e}");
        }
    }

    #[test]
    fn the_base_is_valid() {
        let c = Config::parse(BASE, Path::new("/etc/tgmx")).unwrap();
        assert_eq!(c.rooms.len(), 2);
        assert_eq!(c.fleet.agents.len(), 1);
        assert_eq!(c.gateway.telegram.poll_timeout, 30);
    }

    #[test]
    fn config_errors_name_the_key_and_line() {
        // (what breaks, replace this, by this, key path, line, column, a word of the problem)
        #[rustfmt::skip]
        let table: &[(&str, &str, &str, &str, u64, u64, &str)] = &[
            ("invalid room alias", "\"#fleet-dev:localhost\"", "\"fleet-dev:localhost\"",
                "rooms[1].matrix", 14, 14, "sigil"),
            ("invalid user id in identities", "\"@alexander:localhost\"", "\"alexander\"",
                "identities[0].matrix", 16, 13, "sigil"),
            ("identity on another server", "@alexander:localhost", "@alexander:elsewhere",
                "identities[0].matrix", 16, 13, "is not on localhost"),
            ("invalid agent id in a flow list", "[\"@a:localhost\"]", "[\"@a\"]",
                "fleet.agents[0]", 19, 12, "colon"),
            ("invalid server name", "server_name: localhost", "server_name: \"local host\"",
                "homeserver.server_name", 3, 16, "server name"),
            ("invalid listen address", "listen: \"127.0.0.1:29317\"", "listen: \"localhost\"",
                "appservice.listen", 5, 11, "socket address"),
            ("unknown top-level key", "logging:", "loging:",
                "loging", 20, 1, "unknown key"),
            ("unknown nested key", "    poll_timeout: 30", "    poll_timout: 30",
                "gateway.telegram.poll_timout", 10, 5, "unknown key"),
            ("unknown key in a list item", "    telegram: 42", "    telegram: 42\n    nick: al",
                "identities[0].nick", 18, 5, "unknown key"),
            ("wrong type of a value", "poll_timeout: 30", "poll_timeout: soon",
                "gateway.telegram.poll_timeout", 10, 19, "expected u32"),
            ("negative where unsigned", "poll_timeout: 30", "poll_timeout: -5",
                "gateway.telegram.poll_timeout", 10, 19, "expected u32"),
            ("a list where a string goes", "level: info", "level: [info]",
                "logging.level", 21, 3, "sequence"),
            ("unknown platform", "primary_platform: telegram", "primary_platform: telegrm",
                "gateway.primary_platform", 7, 21, "unknown variant"),
            ("missing required key", "  server_name: localhost\n", "",
                "homeserver.server_name", 1, 1, "missing"),
            ("missing required key in a list item", "    telegram: -100123\n", "",
                "rooms[0].telegram", 12, 5, "missing"),
            ("missing required section", "appservice:\n  listen: \"127.0.0.1:29317\"\n", "",
                "appservice", 1, 1, "missing"),
            ("duplicate room", "\"#fleet-dev:localhost\"", "\"#fleet-ops:localhost\"",
                "rooms[1].matrix", 14, 14, "mapped twice (also rooms[0])"),
            ("duplicate chat", "-100124}", "-100123}",
                "rooms[1].telegram", 14, 48, "mapped twice"),
            ("a room switch that is not a boolean", "-100124}", "-100124, sync_details_to_telegram: maybe}",
                "rooms[1].sync_details_to_telegram", 14, 83, "expected a boolean"),
            ("key given twice", "  server_name: localhost\n", "  server_name: localhost\n  server_name: other\n",
                "homeserver.server_name", 4, 3, "given twice (first on line 3, column 3)"),
            ("invalid URL", "url: \"http://127.0.0.1:8008\"", "url: \"ftp://h\"",
                "homeserver.url", 2, 8, "http(s)"),
            ("invalid log filter", "level: info", "level: \"tgmx=[\"",
                "logging.level", 21, 10, ""),
            ("a check on a key left at its default", "primary_platform: telegram", "primary_platform: matrix",
                "gateway.fallback_platform", 6, 1, "must differ"),
            ("YAML syntax: an unclosed quote", "bot_token: \"123:abc\"", "bot_token: \"123:abc",
                "gateway.telegram.bot_token", 10, 5, "YAML"),
            ("YAML syntax: a tab", "    poll_timeout: 30", "\tpoll_timeout: 30",
                "gateway.telegram.poll_timeout", 10, 2, "YAML: tabs"),
        ];
        assert!(table.len() >= 10);
        for &(what, from, to, key, line, column, word) in table {
            assert_eq!(BASE.matches(from).count(), 1, "{what}: {from:?} must occur once");
            let e = error_of(&BASE.replacen(from, to, 1));
            let place = format!("`{key}` (line {line}, column {column}): ");
            assert!(
                e.starts_with(&format!("config: {place}")),
                "{what}: expected {place:?} in\n{e}"
            );
            assert!(e.contains(word), "{what}: expected {word:?} in\n{e}");
            assert_eq!(e.matches(key).count(), 1, "{what}: the key once\n{e}");
            assert_located_once(&e, line, column);
        }
    }

    #[test]
    fn a_syntax_error_names_the_key_of_its_line() {
        let text =
            "a:\n  b:\n    - c: 1\n    - d: 2\n      e: 3\n  f: 4\nrooms:\n- {matrix: x}\n- matrix: y\n  telegram: 1\n";
        let at = |line| located::key_path_at(text, line);
        assert_eq!(at(1), "a");
        assert_eq!(at(3), "a.b[0].c");
        assert_eq!(at(4), "a.b[1].d");
        assert_eq!(at(5), "a.b[1].e");
        assert_eq!(at(6), "a.f");
        assert_eq!(at(8), "rooms[0]");
        assert_eq!(at(10), "rooms[1].telegram");
    }

    #[test]
    fn an_empty_file_misses_the_first_required_key() {
        let e = error_of("# nothing yet\n");
        assert!(
            e.starts_with("config: `homeserver` (line 1, column 1): required"),
            "{e}"
        );
    }

    #[test]
    fn load_puts_the_file_name_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, BASE.replace("-100124}", "-100124, colour: red}")).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config: {}: `rooms[1].colour` (line 14, column 57): unknown key; the keys here are matrix, telegram, telegram_topic, name, topic, encrypted, sync_details_to_telegram",
                path.display()
            )
        );
    }

    /// `check-config` checks what `run` needs: the bot token (while Telegram is enabled) and the
    /// registration; it names the key and its line, and shows no secret.
    #[test]
    fn check_for_run_needs_the_token_and_the_registration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, BASE).unwrap();
        let e = Config::check_for_run(Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("`appservice.registration` (line 4, column 1): cannot read"),
            "{e}"
        );
        let cfg = Config::load(&path).unwrap();
        let registration = Registration::generate(&cfg);
        std::fs::write(dir.path().join("registration.yaml"), registration.to_yaml()).unwrap();
        let (cfg, reg) = Config::check_for_run(Some(&path)).unwrap();
        let mut shown = cfg.effective_settings().join("\n");
        shown.push_str(&reg.summary());
        assert!(
            shown.contains("homeserver: url http://127.0.0.1:8008, server_name localhost"),
            "{shown}"
        );
        assert!(
            shown.contains("rooms[1]: #fleet-dev:localhost <-> telegram chat -100124"),
            "{shown}"
        );
        assert!(shown.contains("identities: 1 mapping(s)"), "{shown}");
        assert!(shown.contains("bot_token set"), "{shown}");
        for secret in ["123:abc", &reg.as_token, &reg.hs_token] {
            assert!(!shown.contains(secret), "{shown}");
        }

        // A placeholder token in the registration: named there, with its line.
        let placeholder = registration.to_yaml().replace(&registration.as_token, "REPLACE_ME_AS");
        std::fs::write(dir.path().join("registration.yaml"), placeholder).unwrap();
        let e = Config::check_for_run(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("`appservice.registration` (line 4, column 1): "), "{e}");
        assert!(e.contains("`as_token` (line "), "{e}");
        assert!(e.contains("placeholder tokens"), "{e}");

        std::fs::write(dir.path().join("registration.yaml"), registration.to_yaml()).unwrap();
        // No token: only when TGMX_TELEGRAM_TOKEN is not set for the test run.
        if std::env::var("TGMX_TELEGRAM_TOKEN").is_ok_and(|t| !t.is_empty()) {
            return;
        }
        std::fs::write(&path, BASE.replace("    bot_token: \"123:abc\"\n", "")).unwrap();
        let e = Config::check_for_run(Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("`gateway.telegram.bot_token` (line 8, column 3): missing: set it or the environment variable TGMX_TELEGRAM_TOKEN"),
            "{e}"
        );
        // With Telegram disabled (standby), no token is needed.
        let standby = BASE
            .replace("    bot_token: \"123:abc\"\n", "    enabled: false\n")
            .replace(
                "primary_platform: telegram",
                "primary_platform: matrix\n  fallback_platform: none",
            );
        std::fs::write(&path, standby).unwrap();
        let (cfg, _) = Config::check_for_run(Some(&path)).unwrap();
        assert!(
            cfg.effective_settings()
                .iter()
                .any(|l| l.starts_with("gateway: primary matrix, fallback none"))
        );
    }
}

/// The `gateway:` block of the agents' configs (issue 18): its keys are accepted where they mean
/// the same as ours, anything else is refused naming the key.
#[cfg(test)]
mod alias_tests {
    use super::*;

    /// A config whose `gateway:` block is copied from an agent's config.
    const SEED: &str = r##"homeserver:
  server_name: localhost
appservice:
  listen: "127.0.0.1:29317"
gateway:
  primary_platform: telegram
  fallback_platform: matrix
  matrix:
    enabled: true
    homeserver: "http://127.0.0.1:8008"
    rooms: ["#fleet-ops:localhost"]
  telegram:
    enabled: true
    bot_token: "123:abc"
rooms:
  - {matrix: "#fleet-ops:localhost", telegram: -100123}
  - {matrix: "#fleet-dev:localhost", telegram: -100124}
"##;

    fn error_of(text: &str) -> String {
        match Config::parse(text, Path::new("/etc/tgmx")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_seeds_gateway_block_is_accepted() {
        let c = Config::parse(SEED, Path::new("/etc/tgmx")).unwrap();
        assert_eq!(c.homeserver.url, "http://127.0.0.1:8008");
        assert_eq!(c.gateway.matrix.rooms.len(), 1);
        assert!(c.gateway.matrix.enabled && c.gateway.telegram.enabled);
        assert_eq!(c.gateway.primary_platform, Platform::Telegram);
        assert_eq!(c.gateway.fallback_platform, Platform::Matrix);
        // Given in both places, the same URL (a trailing slash aside) is fine.
        let both = SEED.replace(
            "  server_name: localhost",
            "  url: \"http://127.0.0.1:8008/\"\n  server_name: localhost",
        );
        let c = Config::parse(&both, Path::new("/etc/tgmx")).unwrap();
        assert_eq!(c.homeserver.url, "http://127.0.0.1:8008/");
        // `matrix.enabled: false` while Telegram is primary: parsed and shown.
        let off = SEED.replace(
            "    enabled: true\n    homeserver",
            "    enabled: false\n    homeserver",
        );
        let c = Config::parse(&off, Path::new("/etc/tgmx")).unwrap();
        assert!(!c.gateway.matrix.enabled);
        assert!(
            c.effective_settings()
                .iter()
                .any(|l| l.starts_with("gateway.matrix: disabled (nothing relayed to Matrix"))
        );
    }

    #[test]
    fn wrong_alias_values_name_the_key() {
        #[rustfmt::skip]
        let table: &[(&str, &str, &str, &str, &str)] = &[
            ("the two homeserver URLs disagree", "  server_name: localhost",
                "  url: \"http://10.0.0.1:8008\"\n  server_name: localhost",
                "`gateway.matrix.homeserver` (line 11, column 17)", "differs from homeserver.url (http://10.0.0.1:8008)"),
            ("no homeserver URL at all", "    homeserver: \"http://127.0.0.1:8008\"\n", "",
                "`homeserver.url` (line 1, column 1)", "required, but missing (or give it as gateway.matrix.homeserver)"),
            ("the alias is no URL", "homeserver: \"http://127.0.0.1:8008\"", "homeserver: \"nope\"",
                "`gateway.matrix.homeserver` (line 10, column 17)", "relative URL"),
            ("the alias is not http(s)", "homeserver: \"http://127.0.0.1:8008\"", "homeserver: \"ftp://h\"",
                "`gateway.matrix.homeserver` (line 10, column 17)", "http(s)"),
            ("a listed room without a Telegram chat", "[\"#fleet-ops:localhost\"]",
                "[\"#fleet-ops:localhost\", \"#fleet-intel:localhost\"]",
                "`gateway.matrix.rooms[1]` (line 11, column 37)", "#fleet-intel:localhost is not bridged"),
            ("a listed room that is no room", "[\"#fleet-ops:localhost\"]", "[\"fleet-ops\"]",
                "`gateway.matrix.rooms[0]` (line 11, column 13)", "sigil"),
            ("matrix off while it is primary", "primary_platform: telegram\n  fallback_platform: matrix",
                "primary_platform: matrix\n  fallback_platform: telegram",
                "`gateway.matrix.enabled`", "cannot be false while primary_platform is matrix"),
            ("a key of the seed's that is not ours", "    enabled: true\n    homeserver",
                "    enabled: true\n    user_id: \"@scout:localhost\"\n    homeserver",
                "`gateway.matrix.user_id` (line 10, column 5)", "unknown key; the keys here are enabled, catch_up_secs, follow_sync, homeserver, rooms"),
            ("a misspelt alias", "    rooms: [", "    room: [",
                "`gateway.matrix.room` (line 11, column 5)", "unknown key"),
            ("a list where the URL goes", "homeserver: \"http://127.0.0.1:8008\"", "homeserver: [a]",
                "`gateway.matrix.homeserver` (line 10, column 5)", "sequence"),
        ];
        for &(what, from, to, place, words) in table {
            assert_eq!(SEED.matches(from).count(), 1, "{what}: {from:?} must occur once");
            let mut text = SEED.replacen(from, to, 1);
            if what == "matrix off while it is primary" {
                text = text.replace(
                    "    enabled: true\n    homeserver",
                    "    enabled: false\n    homeserver",
                );
            }
            let e = error_of(&text);
            assert!(
                e.starts_with(&format!("config: {place}")),
                "{what}: expected {place} in\n{e}"
            );
            assert!(e.contains(words), "{what}: expected {words:?} in\n{e}");
        }
    }
}
