//! Signing in and out, and the extractors every page builds on: `Signed` (a live session, else
//! a redirect to sign-in), `ConsoleTenant` (the `{slug}` of the path, within the operator's
//! scope, else 404) and `CsrfForm` (a form whose CSRF token matches the session's, else 403).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::de::DeserializeOwned;

use super::layout::{self, error_page};
use crate::admin::Operator;
use crate::http::AppState;
use crate::store::Tenant;

pub use super::session::Signed;

/// The session cookie's name.
pub const COOKIE: &str = "mbconsole";

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where to go back to after signing in: a console path of this origin only (printable, so
/// it makes a valid `Location`).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/console",
    }
}

/// Whether a browser said the request comes from a page of another site: its `Origin` names
/// another host than the one this service answers as (`--public-url`, or the `Host` — from a
/// trusted proxy, its `X-Forwarded-Host`). `null` (a sandboxed or opaque page) counts as
/// foreign when `null_is_foreign`. No `Origin` at all (not a browser): not foreign.
fn foreign_origin(state: &AppState, parts: &Parts, null_is_foreign: bool) -> bool {
    let Some(origin) = parts.headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null")) else {
        return false;
    };
    if origin == "null" {
        return null_is_foreign;
    }
    let ours = crate::http::base_url_of(state, &parts.headers, &parts.uri, &parts.extensions);
    let host =
        |url: &str| url.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or("").to_ascii_lowercase());
    host(origin).is_none_or(|h| Some(h) != host(&ours))
}

/// The client's address for the sign-in limit: the peer, or — when the peer is a trusted
/// proxy — the last address of `X-Forwarded-For` it wrote. IPv6 addresses count by their /64
/// (one client holds a whole /64).
fn client_key(state: &AppState, parts: &Parts) -> IpAddr {
    let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_canonical());
    let trusted = peer.is_some_and(|p| state.opts.trusted_proxies.iter().any(|n| n.contains(&p)));
    let forwarded = trusted
        .then(|| parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse::<IpAddr>().ok())
        .map(|a| a.to_canonical());
    match forwarded.or(peer).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The sign-in page's URL, coming back to `path` (with its query) after.
fn to_sign_in(parts: &Parts) -> Response {
    // (The nested router sees the path without `/console`; the original has it.)
    let uri = parts.extensions.get::<axum::extract::OriginalUri>().map_or(&parts.uri, |o| &o.0);
    let back = uri.path_and_query().map_or("/console", |p| p.as_str());
    let url = format!("/console/sign-in?next={}", layout::urlenc(back));
    Redirect::to(&url).into_response()
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<Signed>() {
            return Ok(s.clone());
        }
        let Some(value) = cookie(&parts.headers, COOKIE) else {
            return Err(to_sign_in(parts));
        };
        let session = match state.store.console_session(value).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(to_sign_in(parts)),
            Err(e) => return Err(layout::store_error(&e)),
        };
        let signed = Signed { op: Operator::named(&session.operator), session };
        parts.extensions.insert(signed.clone());
        Ok(signed)
    }
}

/// The tenant the path's `{slug}` names, if the signed-in operator may see it (else 404, as an
/// unknown tenant).
#[derive(Debug, Clone)]
pub struct ConsoleTenant(pub Tenant);

impl FromRequestParts<AppState> for ConsoleTenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let signed = Signed::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let slug = params.iter().find(|(k, _)| *k == "slug").map(|(_, v)| v.to_string()).unwrap_or_default();
        let unknown =
            || error_page(Some(&signed), StatusCode::NOT_FOUND, "No such tenant", "There is no tenant by that name.");
        match state.store.tenant(&slug).await {
            Ok(t) if signed.op.sees(&t) => Ok(ConsoleTenant(t)),
            Ok(_) | Err(crate::store::StoreError::NotFound) => Err(unknown()),
            Err(e) => Err(layout::store_error(&e)),
        }
    }
}

/// A submitted form (`application/x-www-form-urlencoded`) of a signed-in operator, whose
/// `csrf` field matches the session's token. Anything else is refused (403) before the
/// handler runs, and changes nothing.
pub struct CsrfForm<T>(pub Signed, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let refuse = |why: &str| {
            error_page(
                Some(&signed),
                StatusCode::FORBIDDEN,
                "Form refused",
                &format!("{why}. Nothing was changed. Go back, reload the page and try again."),
            )
        };
        // A browser names the page a form came from; another site's page is refused outright.
        if foreign_origin(state, &parts, false) {
            return Err(refuse("The form came from another site"));
        }
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| refuse("The form is too large"))?;
        let fields: HashMap<String, String> =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| refuse("The form could not be read"))?;
        let sent = fields.get("csrf").map_or("", String::as_str);
        let expected = signed.session.csrf.as_str();
        if sent.is_empty() || !crate::http::metrics::token_matches(sent, expected) {
            return Err(refuse("The form's security token is missing or out of date"));
        }
        let form: T = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| error_page(Some(&signed), StatusCode::BAD_REQUEST, "Form not understood", &e.to_string()))?;
        Ok(CsrfForm(signed, form))
    }
}

/// Query parameters; a malformed query is a 400 page.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Q<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Q(v)),
            Err(e) => {
                let signed = parts.extensions.get::<Signed>().cloned();
                Err(error_page(signed.as_ref(), StatusCode::BAD_REQUEST, "Bad address", &e.body_text()))
            }
        }
    }
}

/// `GET /console/sign-in[?next=]` query.
#[derive(Debug, serde::Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn sign_in_form(next: &str, message: Option<&str>) -> maud::Markup {
    let body = html! {
        section.signin {
            h1 { "Sign in to Moonborn SCIM" }
            @if let Some(m) = message { p.alert.bad role="alert" { (m) } }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Operator token" }
                input #token type="password" name="token" autocomplete="current-password" required
                    placeholder="mbop_…" autofocus;
                button type="submit" { "Sign in" }
            }
            p.hint { "Operators get a token from " code { "moonborn-scim operator create NAME [--tenant SLUG]" } "." }
        }
    };
    layout::page(None, None, "Sign in", body)
}

/// `GET /console/sign-in`: the sign-in form (already signed in: the console).
pub async fn sign_in_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if let Some(v) = cookie(&headers, COOKIE) {
        if let Ok(Some(_)) = s.store.console_session(v).await {
            return Redirect::to(next).into_response();
        }
    }
    sign_in_form(next, None).into_response()
}

/// `POST /console/sign-in` form.
#[derive(Debug, serde::Deserialize)]
pub struct SignInForm {
    token: String,
    next: Option<String>,
}

/// `POST /console/sign-in` (`token`): 303 to the console with the session cookie; a wrong token
/// is answered 401 with the form again; too many attempts from one address, 429.
pub async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let secure = crate::http::base_url_of(&s, &parts.headers, &parts.uri, &parts.extensions).starts_with("https:");
    // No CSRF token before a session exists: the origin is what keeps another site from
    // signing a browser in as someone else.
    if foreign_origin(&s, &parts, true) {
        return (StatusCode::FORBIDDEN, sign_in_form("/console", Some("Sign in from this console's own page.")))
            .into_response();
    }
    let key = client_key(&s, &parts);
    let bytes = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, sign_in_form("/console", Some("The form is too large.")))
                .into_response()
        }
    };
    let form: SignInForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(_) => {
            return (StatusCode::BAD_REQUEST, sign_in_form("/console", Some("Enter your operator token.")))
                .into_response()
        }
    };
    let next = safe_next(form.next.as_deref()).to_string();
    if s.sign_in_limiter.len() > 100_000 {
        s.sign_in_limiter.retain_recent();
    }
    if s.sign_in_limiter.check_key(&key).is_err() {
        let mut res = (
            StatusCode::TOO_MANY_REQUESTS,
            sign_in_form(&next, Some("Too many sign-in attempts from this address. Wait a minute and try again.")),
        )
            .into_response();
        res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        return res;
    }
    let op = match s.store.authenticate_operator(form.token.trim()).await {
        Ok(Some(op)) => op,
        Ok(None) => {
            tracing::info!(client = %key, "console sign-in refused: not a live operator token");
            return (StatusCode::UNAUTHORIZED, sign_in_form(&next, Some("That is not a live operator token.")))
                .into_response();
        }
        Err(e) => return layout::store_error(&e),
    };
    let (value, session) = match s.store.create_session(&op).await {
        Ok(x) => x,
        Err(e) => return layout::store_error(&e),
    };
    tracing::info!(operator = %op.name, "console sign-in");
    let max_age = crate::store::SESSION_TTL.num_seconds();
    let cookie = format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    drop(session);
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /console/sign-out`: ends the session, clears the cookie, back to sign-in.
pub async fn sign_out(
    State(s): State<AppState>,
    headers: HeaderMap,
    CsrfForm(_, _): CsrfForm<HashMap<String, String>>,
) -> Response {
    if let Some(v) = cookie(&headers, COOKIE) {
        if let Err(e) = s.store.end_session(v).await {
            return layout::store_error(&e);
        }
    }
    let mut res = Redirect::to("/console/sign-in").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static("mbconsole=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}
