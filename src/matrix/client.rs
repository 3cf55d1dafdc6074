//! The client-server API client: every request the bridge, `ops` and `check` make to the
//! homeserver is a typed method here. It acts as the appservice (as_token), optionally
//! masquerading as a user in its namespace (`?user_id=`); [`crate::matrix::device`] reads
//! timelines with a device's own token through it. It only transports; the bridge core decides,
//! and [`crate::matrix::intent`] chooses plain or encrypted sending.
//!
//! Paths are built in one place, [`path`], from ruma's path templates and ruma's path
//! percent-encoder (the crate has no other); query strings go through `url`'s form encoding.

use std::fmt::Display;
use std::time::Duration;

use reqwest::Method;
use ruma::api::path_builder::{PathBuilder, SinglePath};
use ruma::{
    EventId, MxcUri, OwnedDeviceId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomOrAliasId, TransactionId, UserId,
};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Client-server endpoints, as ruma path templates (checked when compiled).
pub(super) mod endpoint {
    use ruma::api::path_builder::SinglePath;

    pub const VERSIONS: SinglePath = SinglePath::new("/_matrix/client/versions");
    pub const SYNAPSE_VERSION: SinglePath = SinglePath::new("/_synapse/admin/v1/server_version");
    pub const REGISTER: SinglePath = SinglePath::new("/_matrix/client/v3/register");
    pub const LOGIN: SinglePath = SinglePath::new("/_matrix/client/v3/login");
    pub const CAPABILITIES: SinglePath = SinglePath::new("/_matrix/client/v3/capabilities");
    pub const CREATE_ROOM: SinglePath = SinglePath::new("/_matrix/client/v3/createRoom");
    pub const APPSERVICE_PING: SinglePath = SinglePath::new("/_matrix/client/v1/appservice/{appserviceId}/ping");
    pub const PROFILE: SinglePath = SinglePath::new("/_matrix/client/v3/profile/{userId}");
    pub const DISPLAYNAME: SinglePath = SinglePath::new("/_matrix/client/v3/profile/{userId}/displayname");
    pub const AVATAR_URL: SinglePath = SinglePath::new("/_matrix/client/v3/profile/{userId}/avatar_url");
    pub const DIRECTORY_ROOM: SinglePath = SinglePath::new("/_matrix/client/v3/directory/room/{roomAlias}");
    pub const JOIN: SinglePath = SinglePath::new("/_matrix/client/v3/join/{roomIdOrAlias}");
    pub const LEAVE: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/leave");
    pub const INVITE: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/invite");
    pub const SEND: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}");
    pub const REDACT: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}");
    pub const STATE: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}");
    pub const JOINED_MEMBERS: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/joined_members");
    pub const MESSAGES: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/messages");
    pub const CONTEXT: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/context/{eventId}");
    pub const SYNC: SinglePath = SinglePath::new("/_matrix/client/v3/sync");
    pub const MEDIA_CONFIG: SinglePath = SinglePath::new("/_matrix/client/v1/media/config");
    pub const MEDIA_CONFIG_LEGACY: SinglePath = SinglePath::new("/_matrix/media/v3/config");
    pub const UPLOAD: SinglePath = SinglePath::new("/_matrix/media/v3/upload");
    pub const DOWNLOAD: SinglePath = SinglePath::new("/_matrix/client/v1/media/download/{serverName}/{mediaId}");
    pub const KICK: SinglePath = SinglePath::new("/_matrix/client/v3/rooms/{roomId}/kick");
}

/// The request path of `endpoint` with its variables filled in, percent-encoded by ruma. The
/// crate's only path encoder. (`Sync`: callers build paths inside `Send` futures.)
pub(super) fn path(endpoint: &SinglePath, args: &[&(dyn Display + Sync)]) -> String {
    let args: Vec<&dyn Display> = args.iter().map(|a| *a as &dyn Display).collect();
    endpoint
        .make_endpoint_url((), "", &args, "")
        .expect("a single path always applies")
}

/// Query parameters of a request, in order.
type Query<'a> = &'a [(&'a str, &'a str)];

#[derive(Clone)]
pub struct MatrixClient {
    http: reqwest::Client,
    /// Homeserver base URL without a trailing slash.
    base: String,
    /// The appservice token; never logged.
    as_token: String,
    /// Requests that name no user act as this one (`?user_id=`): the bridge bot, which is not
    /// the appservice's sender. `None`: as the sender.
    default_user: Option<OwnedUserId>,
}

/// How many idle connections to the homeserver are kept for reuse (see [`MatrixClient::new`]).
const IDLE_CONNECTIONS: usize = 16;

impl MatrixClient {
    pub fn new(base: &str, as_token: &str) -> MatrixClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            // Idle connections kept for reuse hold their buffers. Unbounded (reqwest's default),
            // 500 new puppets over 50 portals left 89 open for the next 90 s; with 16 the idle
            // daemon's anonymous memory after that burst fell from 7.6 to 5.0 MB (bench
            // `portals`, Conduit). 16 cover the lanes of a typical fleet without reconnecting.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build()
            .expect("reqwest client");
        MatrixClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            as_token: as_token.to_owned(),
            default_user: None,
        }
    }

    /// Act as `user` in requests that name no user.
    pub fn acting_as(mut self, user: OwnedUserId) -> MatrixClient {
        self.default_user = Some(user);
        self
    }

    /// The URL of `path` with `query`.
    fn url(&self, path: &str, query: Query<'_>) -> Result<url::Url> {
        let mut url =
            url::Url::parse(&format!("{}{}", self.base, path)).map_err(|e| Error::MatrixTransport(e.to_string()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Send a request as `as_user` (masquerading), else as the default user. Matrix errors
    /// become `Error::Matrix`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        as_user: Option<&UserId>,
        body: Option<&Value>,
    ) -> Result<Value> {
        self.send_request(method, path, &[], as_user.or(self.default_user.as_deref()), body)
            .await
    }

    /// Send a request as the appservice itself (registering and logging in users).
    async fn request_as_appservice(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.send_request(method, path, &[], None, body).await
    }

    /// `GET path?query` with a device's access token (a user's own session, not the appservice).
    pub(super) async fn get_with_token(&self, token: &str, path: &str, query: Query<'_>) -> Result<Value> {
        let url = self.url(path, query)?;
        self.execute(self.http.get(url).bearer_auth(token), &Method::GET, path, None)
            .await
    }

    async fn send_request(
        &self,
        method: Method,
        path: &str,
        query: Query<'_>,
        as_user: Option<&UserId>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut url = self.url(path, query)?;
        if let Some(u) = as_user {
            url.query_pairs_mut().append_pair("user_id", u.as_str());
        }
        let req = self.http.request(method.clone(), url).bearer_auth(&self.as_token);
        self.execute(req, &method, path, body).await
    }

    async fn execute(
        &self,
        mut req: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::MatrixTransport(e.without_url().to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::MatrixTransport(e.without_url().to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let errcode = value["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned();
        let message = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        tracing::debug!(method = %method, path, status = status.as_u16(), %errcode, "matrix request failed");
        Err(Error::Matrix {
            status: status.as_u16(),
            errcode,
            message,
        })
    }
}

/// The homeserver and the appservice.
impl MatrixClient {
    /// Synapse's version, if the homeserver is Synapse (its admin API answers this unauthenticated
    /// on the client port); `None` for any other server.
    pub async fn synapse_version(&self) -> Result<Option<String>> {
        match self
            .request_as_appservice(Method::GET, &path(&endpoint::SYNAPSE_VERSION, &[]), None)
            .await
        {
            Ok(v) => Ok(v["server_version"].as_str().map(str::to_owned)),
            Err(Error::Matrix { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn versions(&self) -> Result<Value> {
        self.request(Method::GET, &path(&endpoint::VERSIONS, &[]), None, None)
            .await
    }

    /// Ask the homeserver to ping the appservice (`POST /appservice/{id}/ping`).
    pub async fn appservice_ping(&self, appservice_id: &str, transaction_id: &str) -> Result<()> {
        self.request(
            Method::POST,
            &path(&endpoint::APPSERVICE_PING, &[&appservice_id]),
            None,
            Some(&json!({"transaction_id": transaction_id})),
        )
        .await?;
        Ok(())
    }

    /// The room version the homeserver creates rooms with (`m.room_versions.default`), as `user`.
    pub async fn default_room_version(&self, user: &UserId) -> Result<Option<String>> {
        let caps = self
            .request(Method::GET, &path(&endpoint::CAPABILITIES, &[]), Some(user), None)
            .await?;
        Ok(caps["capabilities"]["m.room_versions"]["default"]
            .as_str()
            .map(str::to_owned))
    }

    /// Register a user in the appservice namespace; an existing user is fine (Conduit does not
    /// create the bot, Synapse does).
    pub async fn register(&self, localpart: &str) -> Result<()> {
        let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
        match self
            .request_as_appservice(Method::POST, &path(&endpoint::REGISTER, &[]), Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Matrix { errcode, .. }) if errcode == "M_USER_IN_USE" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Log `user` in with `m.login.application_service`: a new device. Returns (device id,
    /// access token).
    pub async fn login_appservice(&self, user: &UserId, device_display_name: &str) -> Result<(OwnedDeviceId, String)> {
        let v = self
            .request_as_appservice(
                Method::POST,
                &path(&endpoint::LOGIN, &[]),
                Some(&json!({
                    "type": "m.login.application_service",
                    "identifier": {"type": "m.id.user", "user": user.as_str()},
                    "initial_device_display_name": device_display_name,
                })),
            )
            .await?;
        let (Some(device), Some(token)) = (v["device_id"].as_str(), v["access_token"].as_str()) else {
            return Err(Error::MatrixTransport(
                "login answered without a device or token".into(),
            ));
        };
        Ok((device.into(), token.to_owned()))
    }
}

/// Profiles.
impl MatrixClient {
    /// A user's profile (an error when the user does not exist).
    pub async fn profile(&self, user: &UserId) -> Result<Value> {
        self.request(Method::GET, &path(&endpoint::PROFILE, &[&user]), None, None)
            .await
    }

    pub async fn set_displayname(&self, user: &UserId, name: &str) -> Result<()> {
        let path = path(&endpoint::DISPLAYNAME, &[&user]);
        self.request(Method::PUT, &path, Some(user), Some(&json!({"displayname": name})))
            .await?;
        Ok(())
    }

    pub async fn displayname(&self, user: &UserId) -> Result<Option<String>> {
        let path = path(&endpoint::DISPLAYNAME, &[&user]);
        match self.request(Method::GET, &path, None, None).await {
            Ok(v) => Ok(v["displayname"].as_str().map(str::to_owned)),
            Err(Error::Matrix { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn set_avatar_url(&self, user: &UserId, mxc: &MxcUri) -> Result<()> {
        let path = path(&endpoint::AVATAR_URL, &[&user]);
        self.request(Method::PUT, &path, Some(user), Some(&json!({"avatar_url": mxc})))
            .await?;
        Ok(())
    }
}

/// Rooms and membership.
impl MatrixClient {
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        let v = self
            .request(Method::GET, &path(&endpoint::DIRECTORY_ROOM, &[&alias]), None, None)
            .await?;
        parse_room_id(&v)
    }

    /// Create a room as `user` with the `createRoom` body `body`.
    pub async fn create_room(&self, user: &UserId, body: &Value) -> Result<OwnedRoomId> {
        let v = self
            .request(Method::POST, &path(&endpoint::CREATE_ROOM, &[]), Some(user), Some(body))
            .await?;
        v["room_id"]
            .as_str()
            .and_then(|id| OwnedRoomId::try_from(id).ok())
            .ok_or_else(|| Error::MatrixTransport("createRoom: no room_id".into()))
    }

    /// Join a room (id or alias) as `user`.
    pub async fn join(&self, room: &RoomOrAliasId, user: &UserId) -> Result<OwnedRoomId> {
        let v = self
            .request(
                Method::POST,
                &path(&endpoint::JOIN, &[&room]),
                Some(user),
                Some(&json!({})),
            )
            .await?;
        parse_room_id(&v)
    }

    pub async fn leave(&self, room: &RoomId, user: &UserId) -> Result<()> {
        self.request(
            Method::POST,
            &path(&endpoint::LEAVE, &[&room]),
            Some(user),
            Some(&json!({})),
        )
        .await?;
        Ok(())
    }

    pub async fn invite(&self, room: &RoomId, by: &UserId, invitee: &UserId) -> Result<()> {
        let path = path(&endpoint::INVITE, &[&room]);
        self.request(Method::POST, &path, Some(by), Some(&json!({"user_id": invitee})))
            .await?;
        Ok(())
    }

    /// The members joined to `room`, as `as_user` sees them.
    pub async fn joined_members(&self, room: &RoomId, as_user: &UserId) -> Result<Vec<OwnedUserId>> {
        let v = self
            .request(
                Method::GET,
                &path(&endpoint::JOINED_MEMBERS, &[&room]),
                Some(as_user),
                None,
            )
            .await?;
        Ok(v["joined"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(u, _)| OwnedUserId::try_from(u.as_str()).ok())
            .collect())
    }

    /// The content of a state event of `room`, as `as_user` sees it.
    pub async fn state_event(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        as_user: &UserId,
    ) -> Result<Value> {
        let path = path(&endpoint::STATE, &[&room, &event_type, &state_key]);
        self.request(Method::GET, &path, Some(as_user), None).await
    }

    /// Membership of `user` in `room` as `as_user` sees it ("join", "invite", "leave", …), if any.
    pub async fn membership(&self, room: &RoomId, user: &UserId, as_user: &UserId) -> Option<String> {
        self.state_event(room, "m.room.member", user.as_str(), as_user)
            .await
            .ok()?["membership"]
            .as_str()
            .map(str::to_owned)
    }

    /// The display name a user has in a room (member state), if any.
    pub async fn member_displayname(&self, room: &RoomId, user: &UserId, as_user: &UserId) -> Result<Option<String>> {
        match self.state_event(room, "m.room.member", user.as_str(), as_user).await {
            Ok(v) => Ok(v["displayname"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)),
            Err(Error::Matrix { status: 404 | 403, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `room` has encryption on (an `m.room.encryption` state event with an algorithm),
    /// as `as_user` sees it. No such state (404) is "no".
    pub async fn room_encrypted(&self, room: &RoomId, as_user: &UserId) -> Result<bool> {
        match self.state_event(room, "m.room.encryption", "", as_user).await {
            Ok(v) => Ok(v["algorithm"].is_string()),
            Err(Error::Matrix { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Events.
impl MatrixClient {
    /// Send an event with a transaction id, in cleartext; the same txn id from the same user is
    /// deduplicated by the homeserver, which makes retries after a crash safe. (Sends that may go
    /// to an encrypted room go through [`crate::matrix::intent::Intent::send`].)
    pub async fn send(
        &self,
        room: &RoomId,
        user: &UserId,
        event_type: &str,
        txn_id: &TransactionId,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let path = path(&endpoint::SEND, &[&room, &event_type, &txn_id]);
        let v = self.request(Method::PUT, &path, Some(user), Some(content)).await?;
        v["event_id"]
            .as_str()
            .and_then(|e| OwnedEventId::try_from(e).ok())
            .ok_or_else(|| Error::MatrixTransport("send: no event_id in response".into()))
    }

    /// Redact an event as `user`, idempotently (txn id).
    pub async fn redact(&self, room: &RoomId, user: &UserId, event_id: &EventId, txn_id: &TransactionId) -> Result<()> {
        let path = path(&endpoint::REDACT, &[&room, &event_id, &txn_id]);
        self.request(Method::PUT, &path, Some(user), Some(&json!({}))).await?;
        Ok(())
    }
}

/// Media.
impl MatrixClient {
    /// The homeserver's upload limit (`m.upload.size`), if it states one.
    pub async fn upload_limit(&self) -> Result<Option<u64>> {
        let v = match self
            .request(Method::GET, &path(&endpoint::MEDIA_CONFIG, &[]), None, None)
            .await
        {
            Ok(v) => v,
            // Older servers only have the legacy endpoint.
            Err(Error::Matrix { status: 404, .. }) => {
                self.request(Method::GET, &path(&endpoint::MEDIA_CONFIG_LEGACY, &[]), None, None)
                    .await?
            }
            Err(e) => return Err(e),
        };
        Ok(v["m.upload.size"].as_u64())
    }

    /// Upload bytes to the media repository as `user`, in cleartext; returns the `mxc://` URI.
    pub async fn upload(&self, user: &UserId, bytes: Vec<u8>, mime: &str, filename: &str) -> Result<OwnedMxcUri> {
        let url = self.url(
            &path(&endpoint::UPLOAD, &[]),
            &[("filename", filename), ("user_id", user.as_str())],
        )?;
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.as_token)
            .header(reqwest::header::CONTENT_TYPE, mime)
            .body(bytes)
            .send()
            .await
            .map_err(|e| Error::MatrixTransport(e.without_url().to_string()))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Error::Matrix {
                status: status.as_u16(),
                errcode: v["errcode"].as_str().unwrap_or("M_UNKNOWN").into(),
                message: v["error"].as_str().unwrap_or_default().into(),
            });
        }
        v["content_uri"]
            .as_str()
            .map(OwnedMxcUri::from)
            .ok_or_else(|| Error::MatrixTransport("upload: no content_uri".into()))
    }

    /// Download an `mxc://` URI through the authenticated media API (Synapse 404s the legacy
    /// path). Refuses bodies larger than `max` bytes; returns (bytes, content type).
    pub async fn download(&self, mxc: &MxcUri, max: u64) -> Result<(Vec<u8>, Option<String>)> {
        let (server, media) = mxc.parts().map_err(|e| Error::Matrix {
            status: 400,
            errcode: "M_INVALID_PARAM".into(),
            message: format!("not an mxc URI: {mxc} ({e})"),
        })?;
        // As the bot: an appservice request naming no user acts as the registration's sender,
        // which Conduit never creates ("User does not exist").
        let user = self.default_user.as_ref().map(|u| ("user_id", u.as_str()));
        let url = self.url(&path(&endpoint::DOWNLOAD, &[&server, &media]), user.as_slice())?;
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&self.as_token)
            .send()
            .await
            .map_err(|e| Error::MatrixTransport(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Matrix {
                status: status.as_u16(),
                errcode: "M_UNKNOWN".into(),
                message: format!("media download failed ({status})"),
            });
        }
        let mime = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::MatrixTransport(e.without_url().to_string()))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > max {
                return Err(Error::TooLarge {
                    size: bytes.len() as u64,
                    limit: max,
                });
            }
        }
        Ok((bytes, mime))
    }
}

/// Room state and membership changes with a reason (room details, puppets leaving).
impl MatrixClient {
    /// Set a state event of `room` as `user`; returns the event id.
    pub async fn set_state(
        &self,
        room: &RoomId,
        user: &UserId,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let path = path(&endpoint::STATE, &[&room, &event_type, &state_key]);
        let v = self.request(Method::PUT, &path, Some(user), Some(content)).await?;
        v["event_id"]
            .as_str()
            .and_then(|e| OwnedEventId::try_from(e).ok())
            .ok_or_else(|| Error::MatrixTransport("state: no event_id in response".into()))
    }

    /// Remove `user` from `room` as `by`, with a reason (needs the kick power level).
    pub async fn kick(&self, room: &RoomId, by: &UserId, user: &UserId, reason: &str) -> Result<()> {
        let path = path(&endpoint::KICK, &[&room]);
        let body = json!({"user_id": user, "reason": reason});
        self.request(Method::POST, &path, Some(by), Some(&body)).await?;
        Ok(())
    }

    /// Leave `room` as `user`, with a reason.
    pub async fn leave_because(&self, room: &RoomId, user: &UserId, reason: &str) -> Result<()> {
        let path = path(&endpoint::LEAVE, &[&room]);
        self.request(Method::POST, &path, Some(user), Some(&json!({"reason": reason})))
            .await?;
        Ok(())
    }
}

fn parse_room_id(v: &Value) -> Result<OwnedRoomId> {
    v["room_id"]
        .as_str()
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| Error::MatrixTransport("response without room_id".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_by_segment() {
        let room = <&RoomId>::try_from("!abc:example.org").unwrap();
        let txn = <&TransactionId>::from("tg-100_5");
        assert_eq!(
            path(&endpoint::SEND, &[&room, &"m.room.message", &txn]),
            "/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/tg-100_5"
        );
        let alias = <&RoomAliasId>::try_from("#a/b?c:example.org").unwrap();
        assert_eq!(
            path(&endpoint::DIRECTORY_ROOM, &[&alias]),
            "/_matrix/client/v3/directory/room/%23a%2Fb%3Fc:example.org"
        );
        // An empty state key keeps its (empty) segment.
        assert_eq!(
            path(&endpoint::STATE, &[&room, &"m.room.encryption", &""]),
            "/_matrix/client/v3/rooms/!abc:example.org/state/m.room.encryption/"
        );
    }
}
