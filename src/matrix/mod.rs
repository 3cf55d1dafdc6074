//! Matrix side: everything that talks to the homeserver.
//!
//! - [`appservice`]: the appservice HTTP API the homeserver pushes to (axum).
//! - [`client`]: the client-server API client. Every request the bridge, `ops` and `check` make
//!   is a typed method of [`client::MatrixClient`] taking ruma ids; paths are built by ruma's
//!   path encoder in one place. It transports and decides nothing.
//! - [`intent`]: acting users. [`intent::Intents`] knows which rooms are encrypted;
//!   `intents.user(u).send(..)` / `.upload(..)` encrypt with `u`'s device in an encrypted room
//!   and go plain elsewhere, so the core never branches on encryption (it still decides, with
//!   `encryption.allow` / `require`, whether to act at all).
//! - [`crypto`]: the devices for encrypted rooms (matrix-sdk with the `e2ee` feature, a stand-in
//!   that refuses without it).
//! - [`device`]: devices of the bridge's users, and reading timelines as the bot's reader device
//!   (Conduit refuses `/messages`, `/context` and `/sync` to an appservice token).
//! - [`txn`]: the transaction ids of everything the bridge sends (stable across restarts).
pub mod appservice;
pub mod client;
#[cfg(feature = "e2ee")]
pub mod crypto;
#[cfg(not(feature = "e2ee"))]
#[path = "crypto_off.rs"]
pub mod crypto;
mod crypto_files;
pub mod device;
pub mod intent;
pub mod txn;
