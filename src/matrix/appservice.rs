//! The appservice HTTP API the homeserver calls (axum).
//!
//! A transaction is stored in SQLite (its id and every event) before it is answered with 200, so
//! a crash after the answer loses nothing; a repeated transaction id is answered 200 and ignored.
//! Bridging happens later, in the Matrix inbox worker.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::storage::{MxEvent, Store};

/// Largest transaction body accepted.
pub const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;

/// Most connections served at once. Further connections wait in the listen backlog until one
/// closes, so a flood of idle connections cannot exhaust the daemon's file descriptors.
pub const MAX_CONNECTIONS: usize = 256;

/// A connection that has not sent a complete request head this long after it opened, or after
/// its last answer (an idle keep-alive connection), is closed.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a transaction body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve `app` on `listener` until `stop` turns true, then let requests in flight finish (up to
/// 10 s). HTTP/1.1 with [`HEADER_TIMEOUT`] and at most [`MAX_CONNECTIONS`] connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut warned = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned {
                    warned = true;
                    tracing::warn!(
                        "{MAX_CONNECTIONS} connections open at the appservice port; new ones wait until one closes"
                    );
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                    _ = stopped(&mut stop) => break,
                }
            }
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped(&mut stop) => break,
        };
        let sock = match accepted {
            Ok((sock, _)) => sock,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(sock), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

#[derive(Clone)]
pub struct AsState {
    pub store: Store,
    /// Token the homeserver presents; compared in constant time, never logged.
    pub hs_token: Arc<str>,
    /// Wakes the Matrix inbox worker after a transaction is stored.
    pub wake: Arc<Notify>,
    /// Told of every accepted transaction's events (the catch-up watches their timestamps).
    pub delivered: Delivered,
    /// Whether an event is the bridge's own coming back (decided by the bridge core): such
    /// events are answered but never stored, as there is nothing to bridge.
    pub own_echo: Arc<dyn Fn(&Value) -> bool + Send + Sync>,
    /// The bridge's state for `/metrics` and `/ready`.
    pub probe: Arc<dyn Fn() -> Probe + Send + Sync>,
    /// Decides whether a user id in our namespace exists (user query).
    pub user_exists: UserExists,
}

/// What `/ready` reports besides storage.
pub struct Probe {
    /// The bridge mode (`parallel`, `cutover`, `standby`...).
    pub mode: &'static str,
    /// The bot exists and every configured room is set up.
    pub setup_done: bool,
    /// Why the Telegram Bot API cannot be reached, while it cannot (`None` while it can, or
    /// while the bridge does not read Telegram).
    pub telegram: Option<String>,
    /// This instance's name (`instance`, see `app`).
    pub instance: String,
    /// While this instance is the standby of an active/standby pair: who holds the lease. It
    /// stores what the homeserver delivers but bridges nothing, so it is not ready.
    pub standby: Option<String>,
}

/// Told of every accepted transaction's events.
pub type Delivered = Arc<dyn Fn(&[MxEvent]) + Send + Sync>;
/// Answers a user query, asynchronously.
pub type UserExists = Arc<dyn Fn(&str) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

pub fn router(state: AsState) -> Router {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .route("/transactions/{txn_id}", put(transaction))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user_id}", get(query_user))
        .route("/users/{user_id}", get(query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(query_room))
        .route("/rooms/{alias}", get(query_room))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/lease", get(lease))
        .route("/metrics", get(metrics))
        .fallback(|| async { matrix_error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request") })
        .with_state(state)
}

pub fn matrix_error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": message}))).into_response()
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// Check the hs_token from the Authorization header or the legacy `access_token` query parameter.
fn authorize(state: &AsState, req_headers: &axum::http::HeaderMap, query: &TokenQuery) -> Result<(), Box<Response>> {
    let bearer = req_headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        // The scheme is case-insensitive (RFC 9110).
        .and_then(|h| {
            h.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &h[7..])
        })
        .map(str::trim);
    let Some(token) = bearer.or(query.access_token.as_deref()) else {
        return Err(Box::new(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )));
    };
    if bool::from(token.as_bytes().ct_eq(state.hs_token.as_bytes())) {
        Ok(())
    } else {
        tracing::warn!("rejected appservice request with a wrong hs_token");
        Err(Box::new(matrix_error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid hs_token",
        )))
    }
}

async fn transaction(
    State(state): State<AsState>,
    Path(txn_id): Path<String>,
    Query(query): Query<TokenQuery>,
    req: Request,
) -> Response {
    if let Err(r) = authorize(&state, req.headers(), &query) {
        return *r;
    }
    if let Some(why) = state.store.write_fault() {
        // Nothing is acknowledged that cannot be saved: the homeserver keeps it and retries.
        tracing::debug!(%txn_id, "transaction refused while database writes fail: {why}");
        return matrix_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "The bridge cannot save events now (database writes fail); retry later",
        );
    }
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(req.into_body(), MAX_TRANSACTION_BYTES),
    );
    let bytes = match body.await {
        Ok(Ok(b)) => b,
        Err(_) => {
            tracing::warn!(%txn_id, "transaction body not complete in {BODY_TIMEOUT:?}");
            return matrix_error(StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN", "Transaction body too slow");
        }
        Ok(Err(_)) => {
            tracing::warn!(%txn_id, "transaction body too large");
            return matrix_error(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", "Transaction too large");
        }
    };
    let events = match parse_transaction(&bytes, &*state.own_echo) {
        Ok(ev) => ev,
        Err(msg) => {
            tracing::warn!(%txn_id, "malformed transaction: {msg}");
            return matrix_error(StatusCode::BAD_REQUEST, "M_BAD_JSON", &msg);
        }
    };
    tracing::trace!(%txn_id, body = %String::from_utf8_lossy(&bytes), "transaction received");
    let echoes = events.iter().filter(|e| e.echo).count();
    if echoes == events.len() {
        // Only the bridge's own events: nothing to store, and a repeat is as harmless.
        (state.delivered)(&events);
        tracing::debug!(%txn_id, echoes, "transaction of own echoes");
        return Json(json!({})).into_response();
    }
    match state.store.accept_transaction(txn_id.as_str().into(), &events).await {
        Ok(true) => {
            (state.delivered)(&events);
            tracing::debug!(%txn_id, events = events.len() - echoes, echoes, "transaction stored");
            state.wake.notify_one();
            Json(json!({})).into_response()
        }
        Ok(false) => {
            tracing::debug!(%txn_id, "duplicate transaction ignored");
            Json(json!({})).into_response()
        }
        Err(e) => {
            tracing::error!(%txn_id, "cannot store transaction: {e}");
            // Not acknowledged: the homeserver retries it.
            matrix_error(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Storage failure")
        }
    }
}

/// Validate a transaction body and return its events re-serialised one by one, each with its
/// room id (the lane it is bridged in; empty when it has none), event id, and whether `own_echo`
/// calls it the bridge's own.
pub fn parse_transaction(bytes: &[u8], own_echo: &dyn Fn(&Value) -> bool) -> Result<Vec<MxEvent>, String> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = body.as_object().ok_or("transaction must be a JSON object")?;
    let events = match obj.get("events") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err("`events` must be an array".into()),
        None => return Err("missing `events`".into()),
    };
    let mut out = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let o = ev.as_object().ok_or_else(|| format!("events[{i}] is not an object"))?;
        for key in ["type", "sender"] {
            if !o.get(key).is_some_and(Value::is_string) {
                return Err(format!("events[{i}].{key} missing or not a string"));
            }
        }
        out.push(MxEvent {
            room: o.get("room_id").and_then(Value::as_str).and_then(|r| r.try_into().ok()),
            event_id: o
                .get("event_id")
                .and_then(Value::as_str)
                .and_then(|e| e.try_into().ok()),
            ts: o.get("origin_server_ts").and_then(Value::as_i64),
            json: ev.to_string(),
            echo: own_echo(ev),
        });
    }
    Ok(out)
}

/// 200 once the bot exists and every configured room is joined, while the database takes
/// writes and Telegram can be reached; 503 otherwise, with `storage` and `telegram` saying why
/// (and `role: standby` on the standby instance of an active/standby pair, `standby` naming
/// the lease's holder).
async fn ready(State(state): State<AsState>) -> Response {
    let probe = (state.probe)();
    let fault = state.store.write_fault();
    let ready = probe.standby.is_none() && probe.setup_done && fault.is_none() && probe.telegram.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let storage = match &fault {
        Some(why) => format!("writes fail: {why}"),
        None => "ok".to_owned(),
    };
    let telegram = probe.telegram.as_deref().unwrap_or("ok");
    (
        status,
        Json(json!({
            "ready": ready,
            "instance": probe.instance,
            "role": if probe.standby.is_some() { "standby" } else { "active" },
            "standby": probe.standby,
            "mode": probe.mode,
            "setup": probe.setup_done,
            "storage": storage,
            "telegram": telegram,
        })),
    )
        .into_response()
}

/// 200 while this instance holds the lease (the active one of an active/standby pair, or a
/// single daemon), 503 on a standby: for a floating address (keepalived) that must follow the
/// active instance whatever `/ready` says about Telegram or the rooms.
async fn lease(State(state): State<AsState>) -> Response {
    let probe = (state.probe)();
    let status = if probe.standby.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "instance": probe.instance,
            "role": if probe.standby.is_some() { "standby" } else { "active" },
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<AsState>) -> Response {
    let mode = (state.probe)().mode;
    let crate::storage::Pending { tg, mx, .. } = state.store.pending().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::METRICS.render((tg, mx), mode),
    )
        .into_response()
}

async fn ping(State(state): State<AsState>, Query(query): Query<TokenQuery>, req: Request<Body>) -> Response {
    if let Err(r) = authorize(&state, req.headers(), &query) {
        return *r;
    }
    Json(json!({})).into_response()
}

async fn query_user(
    State(state): State<AsState>,
    Path(user_id): Path<String>,
    Query(query): Query<TokenQuery>,
    req: Request<Body>,
) -> Response {
    if let Err(r) = authorize(&state, req.headers(), &query) {
        return *r;
    }
    if (state.user_exists)(&user_id).await {
        Json(json!({})).into_response()
    } else {
        matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such user")
    }
}

async fn query_room(State(state): State<AsState>, Query(query): Query<TokenQuery>, req: Request<Body>) -> Response {
    if let Err(r) = authorize(&state, req.headers(), &query) {
        return *r;
    }
    // Portals are configured, never created on demand from an alias.
    matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such room")
}

#[cfg(test)]
mod tests {
    use super::parse_transaction;

    #[test]
    fn transaction_parser_accepts_events_and_rejects_junk() {
        let parse_transaction = |b: &[u8]| parse_transaction(b, &|ev| ev["sender"] == "@bot:b");
        let ok = br#"{"events":[{"type":"m.room.message","sender":"@a:b","content":{}},
            {"type":"m.room.message","sender":"@bot:b","content":{}}],"ephemeral":[]}"#;
        let events = parse_transaction(ok).unwrap();
        assert_eq!(events.iter().map(|e| e.echo).collect::<Vec<_>>(), [false, true]);
        assert!(parse_transaction(b"{").unwrap_err().contains("invalid JSON"));
        assert!(parse_transaction(b"[]").unwrap_err().contains("object"));
        assert!(parse_transaction(br#"{"events":{}}"#).unwrap_err().contains("array"));
        assert!(
            parse_transaction(br#"{"events":[1]}"#)
                .unwrap_err()
                .contains("events[0]")
        );
        assert!(
            parse_transaction(br#"{"events":[{"type":"x"}]}"#)
                .unwrap_err()
                .contains("sender")
        );
    }
}
