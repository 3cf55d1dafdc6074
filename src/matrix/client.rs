//! A small client-server API client acting as the appservice (as_token), optionally masquerading
//! as a user in its namespace (`?user_id=`). It only transports; the bridge core decides.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use ruma::{OwnedEventId, OwnedRoomId, UserId};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Characters left as-is in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A path segment, percent-encoded.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[derive(Clone)]
pub struct MatrixClient {
    http: reqwest::Client,
    /// Homeserver base URL without a trailing slash.
    base: String,
    /// The appservice token; never logged.
    as_token: String,
    /// Requests that name no user act as this one (`?user_id=`): the bridge bot, which is not
    /// the appservice's sender. `None`: as the sender.
    default_user: Option<ruma::OwnedUserId>,
}

impl MatrixClient {
    pub fn new(base: &str, as_token: &str) -> MatrixClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
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
    pub fn acting_as(mut self, user: ruma::OwnedUserId) -> MatrixClient {
        self.default_user = Some(user);
        self
    }

    /// Send a request as `as_user` (masquerading), else as the default user. Matrix errors
    /// become `Error::Matrix`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        as_user: Option<&UserId>,
        body: Option<&Value>,
    ) -> Result<Value> {
        self.send_request(method, path, as_user.or(self.default_user.as_deref()), body)
            .await
    }

    /// Send a request as the appservice itself (registering and logging in users).
    pub async fn request_as_appservice(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.send_request(method, path, None, body).await
    }

    /// Send a request with a device's access token (a user's own session, not the appservice).
    pub async fn request_with_token(&self, token: &str, method: Method, path: &str) -> Result<Value> {
        let url =
            url::Url::parse(&format!("{}{}", self.base, path)).map_err(|e| Error::MatrixTransport(e.to_string()))?;
        self.execute(
            self.http.request(method.clone(), url).bearer_auth(token),
            &method,
            path,
            None,
        )
        .await
    }

    async fn send_request(
        &self,
        method: Method,
        path: &str,
        as_user: Option<&UserId>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut url =
            url::Url::parse(&format!("{}{}", self.base, path)).map_err(|e| Error::MatrixTransport(e.to_string()))?;
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

    /// Synapse's version, if the homeserver is Synapse (its admin API answers this unauthenticated
    /// on the client port); `None` for any other server.
    pub async fn synapse_version(&self) -> Result<Option<String>> {
        match self
            .request_as_appservice(Method::GET, "/_synapse/admin/v1/server_version", None)
            .await
        {
            Ok(v) => Ok(v["server_version"].as_str().map(str::to_owned)),
            Err(Error::Matrix { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn versions(&self) -> Result<Value> {
        self.request(Method::GET, "/_matrix/client/versions", None, None).await
    }

    /// Register a user in the appservice namespace; an existing user is fine (Conduit does not
    /// create the bot, Synapse does).
    pub async fn register(&self, localpart: &str) -> Result<()> {
        let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
        match self
            .request_as_appservice(Method::POST, "/_matrix/client/v3/register", Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Matrix { errcode, .. }) if errcode == "M_USER_IN_USE" => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn set_displayname(&self, user: &UserId, name: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", seg(user.as_str()));
        self.request(Method::PUT, &path, Some(user), Some(&json!({"displayname": name})))
            .await?;
        Ok(())
    }

    pub async fn displayname(&self, user: &UserId) -> Result<Option<String>> {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", seg(user.as_str()));
        match self.request(Method::GET, &path, None, None).await {
            Ok(v) => Ok(v["displayname"].as_str().map(str::to_owned)),
            Err(Error::Matrix { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn resolve_alias(&self, alias: &str) -> Result<OwnedRoomId> {
        let v = self
            .request(
                Method::GET,
                &format!("/_matrix/client/v3/directory/room/{}", seg(alias)),
                None,
                None,
            )
            .await?;
        parse_room_id(&v)
    }

    /// Join a room (id or alias) as `user`.
    pub async fn join(&self, room: &str, user: &UserId) -> Result<OwnedRoomId> {
        let v = self
            .request(
                Method::POST,
                &format!("/_matrix/client/v3/join/{}", seg(room)),
                Some(user),
                Some(&json!({})),
            )
            .await?;
        parse_room_id(&v)
    }

    pub async fn leave(&self, room: &str, user: &UserId) -> Result<()> {
        self.request(
            Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/leave", seg(room)),
            Some(user),
            Some(&json!({})),
        )
        .await?;
        Ok(())
    }

    pub async fn invite(&self, room: &str, by: &UserId, invitee: &UserId) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", seg(room));
        self.request(Method::POST, &path, Some(by), Some(&json!({"user_id": invitee})))
            .await?;
        Ok(())
    }

    /// Send an event with a transaction id; the same txn id from the same user is deduplicated
    /// by the homeserver, which makes retries after a crash safe.
    pub async fn send(
        &self,
        room: &str,
        user: &UserId,
        event_type: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{}/{}",
            seg(room),
            seg(event_type),
            seg(txn_id)
        );
        let v = self.request(Method::PUT, &path, Some(user), Some(content)).await?;
        v["event_id"]
            .as_str()
            .and_then(|e| OwnedEventId::try_from(e).ok())
            .ok_or_else(|| Error::MatrixTransport("send: no event_id in response".into()))
    }

    /// Membership of `user` in `room` as `as_user` sees it ("join", "invite", "leave", …), if any.
    pub async fn membership(&self, room: &str, user: &UserId, as_user: &UserId) -> Option<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            seg(room),
            seg(user.as_str())
        );
        self.request(Method::GET, &path, Some(as_user), None).await.ok()?["membership"]
            .as_str()
            .map(str::to_owned)
    }

    /// The display name a user has in a room (member state), if any.
    pub async fn member_displayname(&self, room: &str, user: &UserId, as_user: &UserId) -> Result<Option<String>> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            seg(room),
            seg(user.as_str())
        );
        match self.request(Method::GET, &path, Some(as_user), None).await {
            Ok(v) => Ok(v["displayname"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)),
            Err(Error::Matrix { status: 404 | 403, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl MatrixClient {
    /// The homeserver's upload limit (`m.upload.size`), if it states one.
    pub async fn upload_limit(&self) -> Result<Option<u64>> {
        let v = match self
            .request(Method::GET, "/_matrix/client/v1/media/config", None, None)
            .await
        {
            Ok(v) => v,
            // Older servers only have the legacy endpoint.
            Err(Error::Matrix { status: 404, .. }) => {
                self.request(Method::GET, "/_matrix/media/v3/config", None, None)
                    .await?
            }
            Err(e) => return Err(e),
        };
        Ok(v["m.upload.size"].as_u64())
    }

    /// Upload bytes to the media repository as `user`; returns the `mxc://` URI.
    pub async fn upload(&self, user: &UserId, bytes: Vec<u8>, mime: &str, filename: &str) -> Result<String> {
        let mut url = url::Url::parse(&format!("{}/_matrix/media/v3/upload", self.base))
            .map_err(|e| Error::MatrixTransport(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("filename", filename)
            .append_pair("user_id", user.as_str());
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
            .map(str::to_owned)
            .ok_or_else(|| Error::MatrixTransport("upload: no content_uri".into()))
    }

    /// Download an `mxc://` URI through the authenticated media API (Synapse 404s the legacy
    /// path). Refuses bodies larger than `max` bytes; returns (bytes, content type).
    pub async fn download(&self, mxc: &str, max: u64) -> Result<(Vec<u8>, Option<String>)> {
        let rest = mxc.strip_prefix("mxc://").ok_or_else(|| Error::Matrix {
            status: 400,
            errcode: "M_INVALID_PARAM".into(),
            message: format!("not an mxc URI: {mxc}"),
        })?;
        let (server, media) = rest.split_once('/').unwrap_or((rest, ""));
        let mut url = url::Url::parse(&format!(
            "{}/_matrix/client/v1/media/download/{}/{}",
            self.base,
            seg(server),
            seg(media)
        ))
        .map_err(|e| Error::MatrixTransport(e.to_string()))?;
        // As the bot: an appservice request naming no user acts as the registration's sender,
        // which Conduit never creates ("User does not exist").
        if let Some(u) = &self.default_user {
            url.query_pairs_mut().append_pair("user_id", u.as_str());
        }
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

    pub async fn set_avatar_url(&self, user: &UserId, mxc: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/profile/{}/avatar_url", seg(user.as_str()));
        self.request(Method::PUT, &path, Some(user), Some(&json!({"avatar_url": mxc})))
            .await?;
        Ok(())
    }

    /// Redact an event as `user`, idempotently (txn id).
    pub async fn redact(&self, room: &str, user: &UserId, event_id: &str, txn_id: &str) -> Result<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{}",
            seg(room),
            seg(event_id),
            seg(txn_id)
        );
        self.request(Method::PUT, &path, Some(user), Some(&json!({}))).await?;
        Ok(())
    }
}

fn parse_room_id(v: &Value) -> Result<OwnedRoomId> {
    v["room_id"]
        .as_str()
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| Error::MatrixTransport("response without room_id".into()))
}
