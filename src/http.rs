//! The HTTP listener: `/metrics`, `/healthz`, `/readyz` and a small
//! read-only JSON API (`/api/mailboxes`, `/api/sent`, `/api/audit`).
//!
//! The API authenticates gateway users with HTTP Basic. With `[http] tls =
//! true` the listener is HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and accepts
//! credentials from any address; without TLS only from loopback peers (a
//! reverse proxy terminating TLS on the same host, or a local tool), and
//! from anywhere else the API answers 403 before looking at a password.
//! The health endpoints carry no personal data and need no login;
//! `/metrics` may require `[http] metrics_auth`.
//!
//! Nothing here panics on network input: every parse failure is a 4xx.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{self, Filter};
use crate::auth::{Authenticator, Right, User};
use crate::metrics::Metrics;
use crate::store::{Audit, Change};

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an ip:port address")]
    BadAddress(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A whole request (headers and wait) must arrive within this long; slow
/// clients cannot hold connections open.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection (keep-alive included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Most records `/api/audit` returns; narrow the query for more.
const AUDIT_LIMIT: usize = 10_000;

/// What the handlers read.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authenticator>,
    /// The campaign endpoints (absent: 404).
    pub campaigns: Option<Arc<crate::campaign::api::Api>>,
    /// `/api/search` (absent: 404).
    pub search: Option<Arc<crate::fulltext::api::SearchApi>>,
    /// `/api/holds`, `/api/retention` (absent: 404).
    pub holds: Option<Arc<crate::retention::api::HoldApi>>,
    /// `POST /api/exports` (absent: 404).
    pub exports: Option<Arc<crate::export::api::ExportApi>>,
    /// The listener serves HTTPS: API credentials are accepted from any
    /// address (without TLS, from loopback only).
    pub tls: bool,
    /// What `/metrics` requires: a bearer token, or Basic credentials
    /// (`[http] metrics_auth`; neither: open).
    pub metrics_bearer: Option<String>,
    pub metrics_basic: Option<(String, String)>,
    /// API tokens (`Authorization: Bearer`; absent: none accepted).
    pub tokens: Option<Arc<crate::apitoken::Tokens>>,
    /// The mail-client setup documents (`[autoconfig]`; absent: 404).
    pub autoconfig: Option<Arc<crate::autoconfig::Offer>>,
}

/// Largest upload (a campaign's recipients list, template or attachment).
const MAX_UPLOAD: usize = 128 * 1024 * 1024;
/// Largest JSON request body (a campaign's per-recipient files map:
/// ≈ 100 bytes a row, 50,000 rows).
const MAX_JSON: usize = 64 * 1024 * 1024;

/// A whole answer, or one written as it is produced ([`stream`]).
mod stream;

type Resp = Response<BoxBody<Bytes, std::io::Error>>;

/// Bind `listen` and serve until `stop` turns true. Returns once bound, so a
/// bad address is a startup error.
pub async fn start(
    listen: &str,
    state: Arc<HttpState>,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<JoinHandle<()>, HttpError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| HttpError::BadAddress(listen.to_string()))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(%addr, tls = tls.is_some(), "HTTP listening (metrics, health, API)");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                acc = listener.accept() => {
                    let (stream, peer) = match acc {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTP accept");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let st = state.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let st = st.clone();
                            async move { Ok::<_, Infallible>(handle(&st, peer, req).await) }
                        });
                        // HTTP/1.1, or HTTP/2 (by ALPN over TLS, by its
                        // preface without).
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                        builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64);
                        let serve = async {
                            match acceptor {
                                Some(a) => match tokio::time::timeout(HEADER_TIMEOUT, a.accept(stream)).await {
                                    Ok(Ok(tls)) => {
                                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                                    }
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                                },
                                None => {
                                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                                }
                            }
                        };
                        let _ = tokio::time::timeout(CONNECTION_LIFETIME, serve).await;
                    });
                }
            }
        }
    }))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    with_body(status, content_type, Full::new(body.into()).map_err(|never| match never {}).boxed())
}

fn with_body(status: StatusCode, content_type: &'static str, body: BoxBody<Bytes, std::io::Error>) -> Resp {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    respond(status, "application/json", v.to_string())
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, &json!({ "error": msg }))
}

/// The request's body, at most `max` bytes.
async fn body(req: Request<Incoming>, max: usize) -> Result<Vec<u8>, Resp> {
    match http_body_util::Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is over {max} bytes")))
        }
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))),
    }
}

/// `/api/uploads` and `/api/campaigns…` (see `campaign::api`).
async fn campaigns(st: &HttpState, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let Some(api) = st.campaigns.clone() else { return error(StatusCode::NOT_FOUND, "campaigns are not available here") };
    let user = match authenticate(st, peer, &req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let params = parse_query(req.uri().query().unwrap_or(""));
    let source = peer.to_string();
    let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').filter(|p| !p.is_empty()).collect();
    let answer = match (method.clone(), parts.as_slice()) {
        (Method::POST, ["uploads"]) => match body(req, MAX_UPLOAD).await {
            Ok(b) => api.upload(&user, b).await,
            Err(r) => return r,
        },
        (Method::POST, ["campaigns"]) => match body(req, MAX_JSON).await {
            Ok(b) => api.create(&user, &source, &b).await,
            Err(r) => return r,
        },
        (Method::GET, ["campaigns"]) => api.list(&user),
        (Method::GET, ["campaigns", id]) => api.status(&user, id),
        (Method::GET, ["campaigns", id, "report"]) => match api.report(&user, id, &params) {
            Err(a) => a,
            // Written as the rows are read, never held whole.
            Ok(report) => {
                let ct = report.format.content_type();
                return match stream::spawn("campaign report", move |w| report.write(w)).await {
                    Ok(body) => with_body(StatusCode::OK, ct, body.boxed()),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
                };
            }
        },
        (Method::GET, ["campaigns", id, "evidence"]) => api.evidence(&user, id, &params),
        (Method::POST, ["campaigns", id, "resolve"]) => match body(req, MAX_JSON).await {
            Ok(b) => api.resolve(&user, &source, id, &b).await,
            Err(r) => return r,
        },
        (Method::POST, ["campaigns", id, order]) => match crate::campaign::model::Control::parse(order) {
            Some(c) => match api.control(&user, &source, id, c).await {
                Ok(v) => (200, "application/json", v.to_string().into_bytes()),
                Err(a) => a,
            },
            None => (404, "application/json", b"{\"error\":\"no such campaign order\"}".to_vec()),
        },
        _ => return error(StatusCode::NOT_FOUND, &format!("no endpoint {method} {path}")),
    };
    let (status, ct, b) = answer;
    respond(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ct, b)
}

/// Legal holds and the retention plan (see `retention::api`).
async fn holds(st: &HttpState, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let Some(api) = st.holds.clone() else { return error(StatusCode::NOT_FOUND, "legal holds are not available here") };
    let user = match authenticate(st, peer, &req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let params = parse_query(req.uri().query().unwrap_or(""));
    let source = peer.to_string();
    let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').filter(|p| !p.is_empty()).collect();
    let (status, ct, b) = match (method.clone(), parts.as_slice()) {
        (Method::GET, ["holds"]) => api.list(&user, &params),
        (Method::POST, ["holds"]) => match body(req, MAX_JSON).await {
            Ok(b) => api.place(&user, &source, &b).await,
            Err(r) => return r,
        },
        (Method::POST, ["holds", id, "release"]) => match body(req, MAX_JSON).await {
            Ok(b) => api.release(&user, &source, id, &b).await,
            Err(r) => return r,
        },
        (Method::GET, ["retention"]) => match tokio::task::spawn_blocking(move || api.plan(&user, &params)).await {
            Ok(a) => a,
            Err(_) => (500, "application/json", b"{\"error\":\"retention plan task failed\"}".to_vec()),
        },
        _ => return error(StatusCode::NOT_FOUND, &format!("no endpoint {method} {path}")),
    };
    respond(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ct, b)
}

/// `POST /api/exports` (see `export::api`).
async fn exports(st: &HttpState, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let Some(api) = st.exports.clone() else { return error(StatusCode::NOT_FOUND, "exports are not recorded here") };
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let user = match authenticate(st, peer, &req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let source = peer.to_string();
    let (status, ct, b) = match body(req, MAX_JSON).await {
        Ok(b) => api.post(&user, &source, &b).await,
        Err(r) => return r,
    };
    respond(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ct, b)
}

/// `GET /api/search` (see `fulltext::api`).
async fn search(st: &HttpState, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let Some(api) = st.search.clone() else { return error(StatusCode::NOT_FOUND, "full-text search is not available here") };
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let user = match authenticate(st, peer, &req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let params = parse_query(req.uri().query().unwrap_or(""));
    let (status, ct, b) = match tokio::task::spawn_blocking(move || api.search(&user, &params)).await {
        Ok(a) => a,
        Err(_) => (500, "application/json", b"{\"error\":\"search task failed\"}".to_vec()),
    };
    respond(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ct, b)
}

/// Thunderbird's, Outlook's and Apple's setup documents (no login: they
/// say where to connect, never whether an address is a user).
async fn autoconfig(offer: &crate::autoconfig::Offer, req: Request<Incoming>) -> Resp {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query: std::collections::BTreeMap<String, String> =
        parse_query(req.uri().query().unwrap_or("")).into_iter().collect();
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .map(|h| h.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map(|(h, _)| h.to_string()).unwrap_or(h));
    let raw = if req.method() == Method::POST {
        match body(req, 64 * 1024).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Vec::new()
    };
    let r = crate::autoconfig::Request { method: &method, path: &path, query: &query, host: host.as_deref(), body: &raw };
    let a = crate::autoconfig::respond(offer, &r);
    let mut resp = respond(StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), a.content_type, a.body);
    for (k, v) in a.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

async fn handle(st: &HttpState, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let p = req.uri().path();
    if let Some(offer) = st.autoconfig.as_ref().filter(|_| crate::autoconfig::is_endpoint(p)) {
        return autoconfig(offer, req).await;
    }
    if p == "/api/uploads" || p == "/api/campaigns" || p.starts_with("/api/campaigns/") {
        return campaigns(st, peer, req).await;
    }
    if p == "/api/search" {
        return search(st, peer, req).await;
    }
    if p == "/api/holds" || p.starts_with("/api/holds/") || p == "/api/retention" {
        return holds(st, peer, req).await;
    }
    if p == "/api/exports" {
        return exports(st, peer, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only");
    }
    let path = req.uri().path().to_string();
    let params = parse_query(req.uri().query().unwrap_or(""));
    match path.as_str() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => readyz(st),
        "/metrics" => {
            if let Err(r) = metrics_allowed(st, &req) {
                return r;
            }
            let m = st.metrics.clone();
            match tokio::task::spawn_blocking(move || m.render()).await {
                Ok(Ok(text)) => respond(StatusCode::OK, "text/plain; version=0.0.4", text),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "metrics task failed"),
            }
        }
        "/api/mailboxes" | "/api/sent" | "/api/audit" | "/api/handling" => {
            let user = match authenticate(st, peer, &req).await {
                Ok(u) => u,
                Err(r) => return r,
            };
            match path.as_str() {
                "/api/mailboxes" => mailboxes(st, &user),
                "/api/sent" => sent(st, &user, &params).await,
                "/api/handling" => handling(st, &user, &params).await,
                _ => audit_query(st, &user, peer, &params).await,
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// 200 when the archive is writable and every mailbox has either synced or
/// failed at least once (its state is known); 503 with the reason otherwise.
fn readyz(st: &HttpState) -> Resp {
    if let Some(f) = st.metrics.store().failure() {
        return json_resp(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "reason": format!("archive failed: {f}") }),
        );
    }
    let Some(board) = st.metrics.board() else {
        return json_resp(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "reason": "no status board" }),
        );
    };
    let waiting: Vec<String> = board
        .snapshot()
        .into_iter()
        .filter(|s| s.last_success.is_none() && s.last_error.is_none())
        .map(|s| s.alias)
        .collect();
    if waiting.is_empty() {
        json_resp(StatusCode::OK, &json!({ "ready": true }))
    } else {
        json_resp(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "reason": "mailboxes not synced yet", "mailboxes": waiting }),
        )
    }
}

fn unauthorized(msg: &str) -> Resp {
    let mut r = error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"pecgate\", charset=\"UTF-8\""),
    );
    r
}

/// HTTP Basic against the gateway users, through the shared login throttle.
/// Failed attempts are audited like IMAP ones.
async fn authenticate(
    st: &HttpState,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Result<Arc<User>, Resp> {
    if !credentials_allowed(st.tls, peer.ip()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the API accepts passwords only from loopback on this listener (no TLS): set [http] tls = true",
        ));
    }
    let header = req.headers().get(AUTHORIZATION).and_then(|h| h.to_str().ok()).unwrap_or("");
    if let Some(token) = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")) {
        return token_user(st, peer, req, token.trim()).await;
    }
    let creds = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .and_then(|b| base64_decode(b.trim()))
        .and_then(|b| String::from_utf8(b).ok());
    let Some(creds) = creds else {
        return Err(unauthorized("HTTP Basic credentials required"));
    };
    let Some((name, password)) = creds.split_once(':') else {
        return Err(unauthorized("malformed credentials"));
    };
    match st.auth.login(name, password, peer.ip()).await {
        Ok(u) => Ok(u),
        Err(e) => {
            let outcome = match &e {
                crate::auth::AuthError::Rejected => "failed".to_string(),
                other => format!("failed: {other}"),
            };
            let a = Audit::user(name, Some(peer.to_string()), "http", "login").outcome(outcome);
            if let Err(e) = st.metrics.store().commit(a, Change::None).await {
                tracing::warn!(error = %e, "cannot audit a failed HTTP login");
            }
            if let crate::auth::AuthError::Unavailable(why) = &e {
                return Err(error(StatusCode::SERVICE_UNAVAILABLE, &format!("directory unavailable: {why}")));
            }
            Err(unauthorized("unknown user or wrong password"))
        }
    }
}

/// `/metrics` with `[http] metrics_auth`: the bearer token or the Basic
/// pair it names, compared in constant time.
fn metrics_allowed(st: &HttpState, req: &Request<Incoming>) -> Result<(), Resp> {
    if st.metrics_bearer.is_none() && st.metrics_basic.is_none() {
        return Ok(());
    }
    let given = req.headers().get(AUTHORIZATION).and_then(|h| h.to_str().ok()).unwrap_or("");
    let (scheme, value) = given.split_once(' ').unwrap_or(("", ""));
    let same = |a: &[u8], b: &[u8]| {
        use sha2::Digest;
        openssl::memcmp::eq(&sha2::Sha256::digest(a), &sha2::Sha256::digest(b))
    };
    let ok = match (scheme.to_ascii_lowercase().as_str(), &st.metrics_bearer, &st.metrics_basic) {
        ("bearer", Some(t), _) => same(value.trim().as_bytes(), t.as_bytes()),
        ("basic", _, Some((u, p))) => base64_decode(value.trim())
            .is_some_and(|b| same(&b, format!("{u}:{p}").as_bytes())),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let mut r = error(StatusCode::UNAUTHORIZED, "/metrics requires the credentials of [http] metrics_auth");
    let challenge = if st.metrics_bearer.is_some() { "Bearer realm=\"pecgate metrics\"" } else { "Basic realm=\"pecgate metrics\"" };
    r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    Err(r)
}

/// Passwords and tokens cross this listener only over TLS, or from this
/// host (a local tool, a reverse proxy beside pecgate).
fn credentials_allowed(tls: bool, peer: IpAddr) -> bool {
    tls || is_loopback(peer)
}

/// An API token (`pecgate token create`): the user it acts as, each use
/// audited under the token's name (refusals too).
async fn token_user(st: &HttpState, peer: SocketAddr, req: &Request<Incoming>, token: &str) -> Result<Arc<User>, Resp> {
    let what: String = format!("api {} {}", req.method(), req.uri().path()).chars().take(120).collect();
    let checked = match &st.tokens {
        Some(t) => t.check(token),
        None => Err(crate::apitoken::TokenError::Unknown),
    };
    let audit = |actor: &str, name: Option<&str>, outcome: String| {
        Audit::user(actor, Some(peer.to_string()), "http", &what)
            .identity(name.map(|n| format!("token {n}")).as_deref())
            .outcome(outcome)
    };
    let (result, record) = match checked {
        Ok(e) => match st.auth.user_for_token(&e.user).await {
            Ok(u) => (Ok(u), audit(&e.user, Some(&e.name), "ok".into())),
            Err(err) => {
                let r = match &err {
                    crate::auth::AuthError::Unavailable(why) => {
                        error(StatusCode::SERVICE_UNAVAILABLE, &format!("directory unavailable: {why}"))
                    }
                    _ => unauthorized("the token's user no longer exists"),
                };
                (Err(r), audit(&e.user, Some(&e.name), format!("refused: {err}")))
            }
        },
        Err(e) => (Err(unauthorized(&e.to_string())), audit("-", None, format!("refused: {e}"))),
    };
    if let Err(e) = st.metrics.store().commit(record, Change::None).await {
        tracing::warn!(error = %e, "cannot audit an API token's use");
        if result.is_ok() {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, "the archive refuses writes: cannot audit"));
        }
    }
    result
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn mailboxes(st: &HttpState, user: &User) -> Resp {
    let visible = user.visible_mailboxes();
    let list: Vec<Value> = st
        .metrics
        .board()
        .map(|b| b.snapshot())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| visible.contains(&s.alias.as_str()))
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    json_resp(StatusCode::OK, &json!({ "mailboxes": list }))
}

async fn sent(st: &HttpState, user: &User, params: &HashMap<String, String>) -> Resp {
    let Some(mailbox) = params.get("mailbox") else {
        return error(StatusCode::BAD_REQUEST, "mailbox= is required");
    };
    if !user.may(mailbox, Right::Read) {
        return error(StatusCode::FORBIDDEN, "no read grant on this mailbox");
    }
    let store = st.metrics.store().clone();
    let mailbox = mailbox.clone();
    let res = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now();
        store.sent_states(&mailbox).map(|v| {
            v.iter()
                .map(|s| {
                    json!({
                        "original_message_id": s.original_message_id,
                        "identificativo": s.identificativo(),
                        "submitted_at": s.submitted_at,
                        "clock_start": s.clock_start(),
                        "overall": s.overall(),
                        "keywords": s.keywords(now),
                        "recipients": s.statuses(now),
                    })
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    match res {
        Ok(Ok(list)) => json_resp(StatusCode::OK, &json!({ "sent": list })),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "query task failed"),
    }
}

/// `/api/handling?mailbox=M[&office=O]`: the handling register of one
/// mailbox (rows and per-office summary, as `pecgate handling report`), for
/// users with the `audit` role or `triage` on the mailbox.
async fn handling(st: &HttpState, user: &User, params: &HashMap<String, String>) -> Resp {
    let Some(mailbox) = params.get("mailbox").cloned() else {
        return error(StatusCode::BAD_REQUEST, "mailbox= is required");
    };
    if !(user.roles.contains("audit") || user.may(&mailbox, Right::Triage)) {
        return error(StatusCode::FORBIDDEN, "the audit role or triage on this mailbox is required");
    }
    let office = params.get("office").cloned();
    let store = st.metrics.store().clone();
    let res = tokio::task::spawn_blocking(move || -> Result<Value, crate::store::StoreError> {
        use crate::handling::register;
        let now = crate::handling::now();
        let mut rows = Vec::new();
        for (hash, h) in store.handling_all(&mailbox)? {
            let pec = match store.find_hash(&mailbox, &hash)? {
                Some((folder, uid)) => store
                    .message(&mailbox, &folder, uid)?
                    .or(store.hidden_message(&mailbox, &folder, uid)?)
                    .and_then(|m| m.pec),
                None => None,
            };
            let meta = pec.as_ref().and_then(crate::store::StoredPec::meta);
            let row = register::Row::new(&mailbox, &hash, &h, &register::sender_subject(meta), now);
            if office.as_deref().is_none_or(|o| o == register::row_office(&row)) {
                rows.push(row);
            }
        }
        rows.sort_by_key(|r| r.received);
        let summary = register::summary(&rows);
        Ok(json!({ "messages": rows, "offices": summary }))
    })
    .await;
    match res {
        Ok(Ok(v)) => json_resp(StatusCode::OK, &v),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "query task failed"),
    }
}

/// `/api/audit`: needs the `audit` role. The query itself is audited.
async fn audit_query(
    st: &HttpState,
    user: &User,
    peer: SocketAddr,
    params: &HashMap<String, String>,
) -> Resp {
    if !user.roles.contains("audit") {
        return error(StatusCode::FORBIDDEN, "the audit role is required");
    }
    let time = |k: &str| params.get(k).map(|v| audit::parse_time(v)).transpose();
    let (since, until) = match (time("since"), time("until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let filter = Filter {
        user: params.get("user").cloned(),
        mailbox: params.get("mailbox").cloned(),
        op: params.get("op").cloned(),
        since,
        until,
    };
    let a = Audit::user(&user.name, Some(peer.to_string()), "http", "audit-query");
    if let Err(e) = st.metrics.store().commit(a, Change::None).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot audit the query: {e}"),
        );
    }
    let journal = st.metrics.store().journal();
    match tokio::task::spawn_blocking(move || audit::query(&journal, &filter, |_, _| {})).await {
        Ok(Ok(found)) => {
            let truncated = found.len() > AUDIT_LIMIT;
            let records: Vec<Value> = found
                .into_iter()
                .take(AUDIT_LIMIT)
                .map(|f| {
                    let mut v = serde_json::to_value(&f.record).unwrap_or(Value::Null);
                    v["hash"] = f.hash.into();
                    v
                })
                .collect();
            json_resp(
                StatusCode::OK,
                &json!({ "records": records, "truncated": truncated }),
            )
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "query task failed"),
    }
}

/// `a=1&b=x%40y` → map; malformed escapes are kept literally.
fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 (padding optional); `None` on any invalid character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 || s.len() > 8192 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_any_address_only_with_tls() {
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(!credentials_allowed(false, far));
        assert!(credentials_allowed(true, far));
        assert!(credentials_allowed(false, "127.0.0.1".parse().unwrap()));
        assert!(credentials_allowed(false, mapped) && credentials_allowed(false, "::1".parse().unwrap()));
    }

    #[test]
    fn base64_and_query() {
        assert_eq!(
            base64_decode("YWxpY2U6c2VjcmV0").as_deref(),
            Some(&b"alice:secret"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("Y"), None);
        assert_eq!(base64_decode("Y!=="), None);
        let q = parse_query("mailbox=a%40b&op=archive&x=%zz&y=%4");
        assert_eq!(q["mailbox"], "a@b");
        assert_eq!(q["op"], "archive");
        assert_eq!(q["x"], "%zz");
        assert_eq!(q["y"], "%4");
    }
}
