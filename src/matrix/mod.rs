//! Matrix side: the appservice HTTP API, a client-server client, and the
//! devices for encrypted rooms (`crypto`: matrix-sdk with the `e2ee` feature, a stand-in without).
pub mod appservice;
pub mod client;
#[cfg(feature = "e2ee")]
pub mod crypto;
#[cfg(not(feature = "e2ee"))]
#[path = "crypto_off.rs"]
pub mod crypto;
mod crypto_files;
pub mod device;
