//! Tenant → SSO → SCIM: the SCIM base URL to paste into the IdP, per-IdP hints, the tenant's
//! SCIM tokens (generate — named, shown once —, list, revoke) and its group bindings (edit,
//! preview who gains or loses which role, then save).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{ConsoleTenant, CsrfForm, Signed};
use super::layout::{self, csrf, page, tenant_url, time, Tab};
use crate::controller::Trigger;
use crate::domain::{Binding, Bindings, BindingsChange, ROLES};
use crate::http::AppState;
use crate::store::{StoreError, Tenant};

/// Bindings as the editor shows them: one `Group name = role` per line.
fn bindings_text(b: &Bindings) -> String {
    b.bindings.iter().map(|x| format!("{} = {}\n", x.group, x.role)).collect()
}

/// Parses the editor's text: one `Group name = role` per line (blank lines ignored).
fn parse_bindings(text: &str, default_role: &str) -> Result<BindingsChange, String> {
    let mut bindings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((group, role)) = line.rsplit_once('=') else {
            return Err(format!("line {}: write it as `Group name = role`", i + 1));
        };
        bindings.push(Binding { group: group.trim().to_string(), role: role.trim().to_string() });
    }
    let default_role = match default_role.trim() {
        "" => None,
        r => Some(r.to_string()),
    };
    Ok(BindingsChange { bindings, default_role: Some(default_role) })
}

/// The bindings editor, filled with `text` and `default_role`.
fn bindings_form(signed: &Signed, t: &Tenant, text: &str, default_role: Option<&str>) -> Markup {
    html! {
        form.bindings method="post" action=(tenant_url(&t.slug, "/scim/bindings/preview")) {
            (csrf(signed))
            label for="bindings" { "Bindings, one per line: " code { "IdP group name = role" } }
            textarea #bindings name="bindings" rows="8" spellcheck="false" { (text) }
            label for="default_role" { "Role of a user in no bound group" }
            select #default_role name="default_role" {
                option value="" selected[default_role.is_none()] { "no role" }
                @for r in ROLES {
                    option value=(r) selected[default_role == Some(*r)] { (r) }
                }
            }
            p.hint { "Roles: " (ROLES.join(", ")) ". Group names match ignoring case." }
            button type="submit" { "Preview" }
        }
    }
}

/// IdP set-up hints, with the URL to paste.
fn idp_hints(base: &str) -> Markup {
    html! {
        details open {
            summary { "Okta" }
            ol {
                li { "Applications → Moonborn → Provisioning → Configure API Integration (or, for an app integration of your own: SCIM connector base URL " code { (base) } ", unique identifier field " code { "userName" } ")." }
                li { "Authentication mode: HTTP Header. Paste a token from below. Test API Credentials." }
                li { "To App: enable Create Users, Update User Attributes, Deactivate Users. Push Groups for role bindings." }
            }
        }
        details {
            summary { "Microsoft Entra ID (Azure AD)" }
            ol {
                li { "Enterprise applications → Moonborn → Provisioning → Provisioning Mode: Automatic." }
                li { "Tenant URL: " code { (base) } ". Secret Token: a token from below. Test Connection." }
                li { "Mappings: userName ← userPrincipalName (or mail); set Provisioning Status On." }
            }
        }
        details {
            summary { "Google Workspace" }
            ol {
                li { "Admin console → Apps → Web and mobile apps → Moonborn → Automatic provisioning." }
                li { "Endpoint URL " code { (base) } " and a token from below; map Primary email to userName." }
            }
        }
        details {
            summary { "OneLogin" }
            ol {
                li { "Applications → Moonborn (SCIM Provisioner with SAML, SCIM v2 Core) → Configuration." }
                li { "SCIM Base URL: " code { (base) } "; SCIM Bearer Token: a token from below. Enable the API connection." }
                li { "Provisioning → Enable provisioning; Rules map OneLogin roles or groups to the group names bound below." }
            }
        }
    }
}

/// `GET …/scim`: the settings page.
pub async fn page_get(
    signed: Signed,
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    parts: axum::http::request::Parts,
) -> Response {
    let saved = parts.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "saved=1"));
    let shown = saved.then(|| {
        html! { p.alert.good role="status" { "Bindings saved. A whole-tenant run applies them now; the audit trail names you." } }
    });
    settings(&signed, &t, &s, &parts, shown, StatusCode::OK).await
}

async fn settings(
    signed: &Signed,
    t: &Tenant,
    s: &AppState,
    parts: &axum::http::request::Parts,
    shown: Option<Markup>,
    status: StatusCode,
) -> Response {
    let tokens = match s.store.list_tokens(&t.slug).await {
        Ok(x) => x,
        Err(e) => return layout::store_error(&e),
    };
    let c = match s.store.controller_state(t.id).await {
        Ok(c) => c,
        Err(e) => return layout::store_error(&e),
    };
    let base = crate::http::base_url_of(s, &parts.headers, &parts.uri, &parts.extensions);
    let body = html! {
        h1 { "SSO → SCIM" }
        @if let Some(m) = shown { (m) }
        section {
            h2 { "1. The SCIM base URL" }
            p { "Paste it into your identity provider:" }
            p.copyline { code #base-url { (base) } " " button.copy type="button" data-copy="#base-url" { "Copy" } }
            (idp_hints(&base))
        }
        section {
            h2 { "2. Tokens" }
            form.inline method="post" action=(tenant_url(&t.slug, "/scim/tokens")) {
                (csrf(signed))
                label for="token-name" { "Name (which IdP connection)" }
                input #token-name type="text" name="name" maxlength="100" placeholder="Okta production";
                button type="submit" { "Generate token" }
            }
            @if tokens.is_empty() {
                p.muted { "No tokens yet." }
            } @else {
                div.scroll {
                    table.tokens {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Created" }
                            th scope="col" { "Last used" } th scope="col" { "State" } th scope="col" { span.sr { "Actions" } } } }
                        tbody {
                            @for tok in &tokens {
                                tr data-token=(tok.id) {
                                    td { (tok.name.as_deref().unwrap_or("—")) }
                                    td { code { (tok.prefix) "…" } }
                                    td { (time(Some(&tok.created_at))) }
                                    td { (time(tok.last_used_at.as_deref())) }
                                    td { @if let Some(r) = &tok.revoked_at { span.badge.muted title=(r) { "revoked" } } @else { span.badge.good { "live" } } }
                                    td {
                                        @if tok.revoked_at.is_none() {
                                            form.inline method="post" action=(tenant_url(&t.slug, &format!("/scim/tokens/{}/revoke", tok.id)))
                                                data-confirm={ "Revoke token " (tok.prefix) "…? The IdP using it stops provisioning." } {
                                                (csrf(signed))
                                                button.danger type="submit" aria-label={ "Revoke token " (tok.prefix) } { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #group-bindings {
            h2 { "3. Group bindings" }
            p { "IdP groups map onto Moonborn roles. Edit, preview who gains or loses which role, then save." }
            (bindings_form(signed, t, &bindings_text(&c.bindings), c.bindings.default_role.as_deref()))
        }
    };
    (status, page(Some(signed), Some((t, Tab::Scim)), "SSO → SCIM", body)).into_response()
}

/// `POST …/scim/tokens` form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    name: String,
}

/// `POST …/scim/tokens`: a new token, shown once on the settings page.
pub async fn generate_token(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    parts: axum::http::request::Parts,
    CsrfForm(signed, f): CsrfForm<TokenForm>,
) -> Response {
    let name = Some(f.name.as_str()).filter(|n| !n.trim().is_empty());
    match s.store.issue_token(&t.slug, name, &signed.op.actor()).await {
        Ok((info, secret)) => {
            let shown = html! {
                div.alert.good role="status" {
                    p { strong { "Token " (info.name.as_deref().unwrap_or("")) " generated. " } "Copy it now: it is shown only once." }
                    p.copyline { code #new-token { (secret) } " " button.copy type="button" data-copy="#new-token" { "Copy" } }
                }
            };
            settings(&signed, &t, &s, &parts, Some(shown), StatusCode::CREATED).await
        }
        Err(crate::store::StoreError::Invalid(m)) => {
            layout::error_page(Some(&signed), StatusCode::BAD_REQUEST, "Token not generated", &m)
        }
        Err(e) => layout::store_error(&e),
    }
}

/// `POST …/scim/tokens/{id}/revoke`.
pub async fn revoke_token(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
    CsrfForm(signed, _): CsrfForm<std::collections::HashMap<String, String>>,
) -> Response {
    match s.store.revoke_tenant_token(t.id, &id, &signed.op.actor()).await {
        Ok(true) => Redirect::to(&tenant_url(&t.slug, "/scim")).into_response(),
        Ok(false) => {
            layout::error_page(Some(&signed), StatusCode::NOT_FOUND, "No such token", "This tenant has no such token.")
        }
        Err(e) => layout::store_error(&e),
    }
}

/// The bindings editor's form.
#[derive(Debug, Deserialize)]
pub struct BindingsForm {
    #[serde(default)]
    bindings: String,
    #[serde(default)]
    default_role: String,
}

/// The bindings a form asks for, checked: `Err` says what is wrong with them.
async fn edited_bindings(s: &AppState, t: &Tenant, f: &BindingsForm) -> Result<Result<Bindings, String>, StoreError> {
    let current = s.store.controller_state(t.id).await?.bindings;
    Ok(parse_bindings(&f.bindings, &f.default_role).and_then(|c| c.apply_to(&current)))
}

/// Who gains or loses which role under new bindings: the plan's changes whose roles differ.
fn role_changes(p: &crate::controller::ComputedPlan) -> Vec<&crate::domain::Change> {
    p.changes.iter().filter(|c| c.before.as_ref().is_some_and(|b| b.roles != c.after.roles)).collect()
}

/// `POST …/scim/bindings/preview`: the plan the edited bindings would cause, and a Save button
/// carrying exactly what was previewed. Nothing is stored.
pub async fn preview_bindings(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    CsrfForm(signed, f): CsrfForm<BindingsForm>,
) -> Response {
    let invalid = |m: &str| {
        let body = html! {
            h1 { "Group bindings" }
            p.alert.bad role="alert" { "Not valid: " (m) ". Nothing was saved." }
            (bindings_form(&signed, &t, &f.bindings, Some(f.default_role.as_str()).filter(|r| !r.is_empty())))
        };
        (StatusCode::BAD_REQUEST, page(Some(&signed), Some((&t, Tab::Scim)), "Group bindings", body)).into_response()
    };
    let new = match edited_bindings(&s, &t, &f).await {
        Ok(Ok(b)) => b,
        Ok(Err(m)) => return invalid(&m),
        Err(e) => return layout::store_error(&e),
    };
    let p = match s.controller.preview_bindings(&t, &new).await {
        Ok(p) => p,
        Err(e) => return super::plan::controller_error(&signed, &e),
    };
    let changed = role_changes(&p);
    let body = html! {
        h1 { "Preview: group bindings" }
        p { "With these bindings, " strong { (changed.len()) " user(s)" } " would gain or lose roles. Nothing is saved until you save." }
        pre.bindings-preview { (bindings_text(&new)) "(no group) = " (new.default_role.as_deref().unwrap_or("no role")) }
        (super::plan::changes_tables(&t.slug, &changed))
        div.actions {
            form method="post" action=(tenant_url(&t.slug, "/scim/bindings"))
                data-confirm={ "Save these bindings? " (changed.len()) " user(s) gain or lose roles." } {
                (csrf(&signed))
                input type="hidden" name="bindings" value=(f.bindings);
                input type="hidden" name="default_role" value=(f.default_role);
                button.danger type="submit" { "Save bindings" }
            }
            a href=(tenant_url(&t.slug, "/scim#group-bindings")) { "Cancel" }
        }
        h2 { "Edit again" }
        (bindings_form(&signed, &t, &f.bindings, Some(f.default_role.as_str()).filter(|r| !r.is_empty())))
    };
    drop(p);
    s.store.release_memory().await;
    page(Some(&signed), Some((&t, Tab::Scim)), "Preview bindings", body).into_response()
}

/// `POST …/scim/bindings`: stores the bindings (audited in the operator's name) and wakes a
/// whole-tenant run; back to the settings.
pub async fn save_bindings(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    CsrfForm(signed, f): CsrfForm<BindingsForm>,
) -> Response {
    let new = match edited_bindings(&s, &t, &f).await {
        Ok(Ok(b)) => b,
        Ok(Err(m)) => return layout::error_page(Some(&signed), StatusCode::BAD_REQUEST, "Bindings not saved", &m),
        Err(e) => return layout::store_error(&e),
    };
    if let Err(e) = s.store.set_bindings(t.id, &new, &signed.op.actor()).await {
        return layout::store_error(&e);
    }
    s.controller.wake(t.id, Trigger::Bindings, true);
    Redirect::to(&tenant_url(&t.slug, "/scim?saved=1#group-bindings")).into_response()
}
