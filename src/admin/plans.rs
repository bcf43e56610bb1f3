//! The operator's view of the controller: the plan for a tenant (JSON report; text or an HTML
//! page by `Accept`), a reconcile now (or a dry run), and approving a held plan by fingerprint.
//! A binding preview (`bindings.rs`) answers its plan the same way (`negotiate`, `answer`).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::AdminError;
use super::extract::{MaybeBody, Operator, TenantCtx, P, Q};
use crate::controller::{report, Approval, ComputedPlan, ControllerError, RunOutcome, RunStatus, Target, Trigger};
use crate::http::AppState;

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Json,
    Text,
    Html,
}

/// Picks the format from `?format=` if given, else from `Accept`: the acceptable type with the
/// highest quality (ties: the first listed); JSON when nothing else matches.
pub(super) fn negotiate(format: Option<&str>, headers: &HeaderMap) -> Result<Format, AdminError> {
    if let Some(f) = format {
        return match f {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "html" => Ok(Format::Html),
            other => Err(AdminError::bad_request(format!("unknown format {other:?}; formats are json, text, html"))),
        };
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts.filter_map(|p| p.strip_prefix("q=")).find_map(|v| v.parse::<f32>().ok()).unwrap_or(1.0);
        let f = match media.as_str() {
            "application/json" | "application/*" => Format::Json,
            "text/plain" => Format::Text,
            "text/html" => Format::Html,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, f));
        }
    }
    Ok(best.map_or(Format::Json, |(_, f)| f))
}

/// `GET /tenants/{slug}/plan` query.
#[derive(Debug, Deserialize)]
pub struct PlanQuery {
    /// `json`, `text` or `html`; overrides `Accept`.
    format: Option<String>,
}

/// `GET /tenants/{slug}/plan` → the JSON report of a full plan; `Accept: text/plain` gives the
/// text report (no colour), `Accept: text/html` a readable page.
pub async fn plan(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Q(q): Q<PlanQuery>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let format = negotiate(q.format.as_deref(), &headers)?;
    let p = s.controller.plan(&t, Target::Full).await?;
    Ok(answer(&s, p, format).await)
}

/// Answers with a whole-tenant plan's report in `format`, then gives back the memory it used.
pub(super) async fn answer(s: &AppState, p: ComputedPlan, format: Format) -> Response {
    let res = match format {
        Format::Json => Json(report::JsonReport(&p)).into_response(),
        Format::Text => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], report::text(&p, false)).into_response()
        }
        Format::Html => Html(report::html(&p)).into_response(),
    };
    drop(p);
    // A whole-tenant plan read every user: give that memory back, as after a full run.
    s.store.release_memory().await;
    res
}

/// `POST /tenants/{slug}/reconcile` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileBody {
    #[serde(default)]
    dry_run: bool,
}

/// The body of a run's (or dry run's) answer; its report is written straight from the plan.
#[derive(Serialize)]
struct OutcomeBody<'a> {
    run_id: Option<&'a str>,
    status: &'a str,
    applied: u64,
    held: u64,
    /// Destructive changes waiting for a burst of pushes to settle.
    waiting: u64,
    stale: u64,
    report: report::JsonReport<'a>,
}

/// Answers with a run's outcome, then gives back the memory its whole-tenant plan used.
async fn outcome(s: &AppState, o: RunOutcome) -> Response {
    // A dry run, or a run with nothing to do, records no run row: it has no id to look up.
    let run_id = o.status.recorded().then_some(o.run_id.as_str());
    let (held, waiting) = o.held_and_waiting();
    let body = OutcomeBody {
        run_id,
        status: o.status.as_str(),
        applied: o.applied,
        held,
        waiting,
        stale: o.stale,
        report: report::JsonReport(&o.plan),
    };
    let res = Json(&body).into_response();
    drop(o);
    s.store.release_memory().await;
    res
}

/// `POST /tenants/{slug}/reconcile` (optional `{"dry_run": true}`) → `{"run_id","status",
/// "applied","held","stale","report"}`. A dry run only plans (`status` "dry_run", `run_id` null,
/// `held` the destructive changes the safety valve would hold). 409 when another process is
/// reconciling the tenant.
pub async fn reconcile(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    MaybeBody(b): MaybeBody<ReconcileBody>,
) -> Result<Response, AdminError> {
    if b.unwrap_or_default().dry_run {
        let p = s.controller.plan(&t, Target::Full).await?;
        let held = if p.held.is_some() || p.waiting > 0 { p.summary.destructive() } else { 0 };
        let o = RunOutcome {
            run_id: String::new(),
            status: RunStatus::DryRun,
            applied: 0,
            applied_destructive: 0,
            skipped_held: held,
            stale: 0,
            plan: p,
            requeue: Default::default(),
        };
        return Ok(outcome(&s, o).await);
    }
    let o = s.controller.reconcile(&t, Trigger::Operator, Target::Full, Approval::None).await?;
    Ok(outcome(&s, o).await)
}

/// `POST /tenants/{slug}/plan/{fingerprint}/approve` → the run, applied whole (held changes
/// included); 409 when the plan changed since it was shown; 200 with `status`
/// "already_applied" (and the run that applied it) when it was applied before.
pub async fn approve(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, fingerprint)): P<(String, String)>,
) -> Result<Response, AdminError> {
    if fingerprint.is_empty() || fingerprint.len() > 128 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError::bad_request(format!("{fingerprint:?} is not a plan fingerprint")));
    }
    let fp = fingerprint.to_ascii_lowercase();
    match s.controller.reconcile(&t, Trigger::Operator, Target::Full, Approval::Fingerprint(&fp, &op.actor())).await {
        Ok(o) => Ok(outcome(&s, o).await),
        Err(ControllerError::AlreadyApplied { fingerprint, run_id, at }) => Ok(Json(serde_json::json!({
            "run_id": run_id,
            "status": "already_applied",
            "fingerprint": fingerprint,
            "applied_at": at,
            "applied": 0,
            "message": format!("plan {fingerprint} was already applied by run {run_id} at {at}; nothing more to approve"),
        }))
        .into_response()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /tenants/{slug}/hold/release` → the run that let the held changes through once
/// (`applied` says how many changes it applied, `released` how many held ones); with nothing
/// held, nothing runs (`status` "nothing_held") and the release is audited.
pub async fn release(TenantCtx(t): TenantCtx, op: Operator, State(s): State<AppState>) -> Result<Response, AdminError> {
    let Some(o) = s.controller.release(&t, &op.actor()).await? else {
        return Ok(Json(serde_json::json!({
            "run_id": null, "status": "nothing_held", "applied": 0, "released": 0, "held": null,
            "message": format!("tenant {} holds nothing; nothing was run", t.slug),
        }))
        .into_response());
    };
    let released = o.applied_destructive;
    let body = serde_json::json!({
        "run_id": o.run_id,
        "status": o.status,
        "applied": o.applied,
        "released": released,
        "held": null,
        "message": o.release_line(&t.slug),
        "report": report::JsonReport(&o.plan),
    });
    drop(o);
    s.store.release_memory().await;
    Ok(Json(body).into_response())
}
