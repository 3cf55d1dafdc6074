//! Matrix side: the appservice HTTP API, a client-server client, and HTML conversion.
pub mod appservice;
pub mod client;
pub mod crypto;
pub mod html;
