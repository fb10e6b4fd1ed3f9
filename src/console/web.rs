//! The console's HTTP side: the page (embedded HTML/JS/CSS), `/events` (Server-Sent Events:
//! a snapshot, then every change the agent may see) and `POST /api/feedback`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::auth::{self, Auth, Identity};
use super::feedback::{self, FeedbackRequest};
use super::state::{Request, Snapshot, Update};

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub struct App {
    pub auth: Auth,
    pub allowed_origins: Vec<String>,
    pub secure_cookie: bool,
    pub requests: mpsc::Sender<Request>,
    pub updates: broadcast::Sender<Update>,
    pub feedback: feedback::Sender,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/api/me", get(me))
        .route("/events", get(events))
        .route("/api/feedback", post(post_feedback))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> std::io::Result<()> {
    axum::serve(listener, router(app)).await
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "sign in first (/login)")
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.auth.identify(&headers).is_none() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    }
    html(INDEX)
}

async fn login_page() -> Response {
    html(LOGIN)
}

/// `token=<token>` (form-encoded) → the `HttpOnly; SameSite=Strict` cookie.
async fn login(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if auth::same_origin(&Method::POST, &headers, true, &app.allowed_origins).is_err() {
        return error(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let token = String::from_utf8_lossy(&body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("token=").map(percent_decode))
        .unwrap_or_default();
    if app.auth.token_identity(&token).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain")],
            "unknown token\n",
        )
            .into_response();
    }
    let secure = if app.secure_cookie { "; Secure" } else { "" };
    set_cookie_and_go(format!("{token}{secure}"), "/")
}

/// Sets the sign-in cookie to `value` (with its attributes appended) and redirects.
fn set_cookie_and_go(value: String, location: &'static str) -> Response {
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict",
        auth::COOKIE
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, location.to_string()),
        ],
    )
        .into_response()
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if auth::same_origin(&Method::POST, &headers, true, &app.allowed_origins).is_err() {
        return error(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    set_cookie_and_go("; Max-Age=0".to_string(), "/login")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.auth.identify(&headers) {
        Some(id) => {
            let body = serde_json::json!({
                "agent_id": id.agent_id,
                "signed_in": matches!(app.auth, Auth::Tokens(_)),
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        None => unauthorized(),
    }
}

/// The snapshot restricted to the agent's tenants.
fn scoped(snapshot: Snapshot, id: &Identity) -> Snapshot {
    Snapshot {
        conversations: snapshot
            .conversations
            .into_iter()
            .filter(|c| id.tenants.allows(&c.tenant))
            .collect(),
        series: snapshot
            .series
            .into_iter()
            .filter(|s| id.tenants.allows(&s.tenant))
            .collect(),
    }
}

async fn snapshot_event(app: &App, id: &Identity) -> Option<Event> {
    let (tx, rx) = oneshot::channel();
    app.requests.send(Request::Snapshot(tx)).await.ok()?;
    let snap = scoped(rx.await.ok()?, id);
    Some(
        Event::default()
            .event("snapshot")
            .data(serde_json::to_string(&snap).ok()?),
    )
}

async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(id) = app.auth.identify(&headers) else {
        return unauthorized();
    };
    // Subscribe before the snapshot is taken, so no change falls between the two.
    let rx = app.updates.subscribe();
    Sse::new(stream(app, id, rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn stream(
    app: Arc<App>,
    id: Identity,
    rx: broadcast::Receiver<Update>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((app, id, rx, true), |(app, id, mut rx, first)| async move {
        if first {
            let ev = snapshot_event(&app, &id).await?;
            return Some((Ok(ev), (app, id, rx, false)));
        }
        loop {
            match rx.recv().await {
                Ok(u) if id.tenants.allows(&u.tenant) => {
                    let ev = Event::default().event(u.kind).data(&*u.json);
                    return Some((Ok(ev), (app, id, rx, false)));
                }
                Ok(_) => continue,
                // Fell behind: start over from a fresh snapshot.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let ev = snapshot_event(&app, &id).await?;
                    return Some((Ok(ev), (app, id, rx, false)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn post_feedback(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(id) = app.auth.identify(&headers) else {
        return unauthorized();
    };
    if let Err(why) =
        auth::same_origin(&Method::POST, &headers, id.via_cookie, &app.allowed_origins)
    {
        tracing::warn!(agent = %id.agent_id, ?why, "console refused a cross-site feedback request");
        return error(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json");
    }
    let req: FeedbackRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return error(StatusCode::BAD_REQUEST, "malformed feedback request"),
    };
    let (tx, rx) = oneshot::channel();
    if app
        .requests
        .send(Request::Facts(req.message_id.clone(), tx))
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "console is stopping");
    }
    // Unknown and out-of-scope messages look the same: no hint that another tenant's exists.
    let facts = match rx.await {
        Ok(Some(f)) if id.tenants.allows(&f.tenant) => f,
        _ => return error(StatusCode::NOT_FOUND, "no such message"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let event = match feedback::build(req, facts, &id.agent_id, now) {
        Ok(e) => e,
        Err(e @ feedback::Invalid::NoDraft(_)) => {
            return error(StatusCode::CONFLICT, e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Err(e) = app.feedback.send(&event).await {
        tracing::error!(agent = %id.agent_id, action = event.action.as_str(), event_id = %event.event_id, error = %e, "feedback send failed");
        return error(StatusCode::BAD_GATEWAY, e);
    }
    tracing::info!(agent = %id.agent_id, action = event.action.as_str(), event_id = %event.event_id, "feedback delivered");
    let _ = app
        .requests
        .send(Request::Acted(Box::new(event.clone())))
        .await;
    let body = serde_json::json!({ "event_id": event.event_id, "action": event.action.as_str() });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_form_values_are_percent_decoded() {
        assert_eq!(percent_decode("abc%2Bdef+g"), "abc+def g");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
