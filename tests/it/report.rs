//! The operator's view of a plan: the text report (headers, unified diff with unchanged fields
//! collapsed, the summary line, colour only when asked), the stable JSON shape, and the HTML
//! page (escaped).

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use moonborn_scim::controller::plan::{plan, Scope};
use moonborn_scim::controller::report::{self, DiffLine};
use moonborn_scim::controller::{ComputedPlan, Hold};
use moonborn_scim::domain::{fingerprint, fmt_time, Change, ChangeKind, Summary};
use moonborn_scim::domain::{user_id_for, ActualUser, DesiredUser, ManagedBy, Record, Status};
use serde_json::Value;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).single().expect("a valid time")
}

fn roles(rs: &[&str]) -> BTreeSet<String> {
    rs.iter().map(|r| r.to_string()).collect()
}

fn desired(scim: &str, user_name: &str, display: &str, active: bool, rs: &[&str]) -> DesiredUser {
    DesiredUser {
        scim_id: scim.into(),
        user_name: user_name.into(),
        external_id: None,
        display_name: display.into(),
        contact_email: user_name.into(),
        active,
        roles: roles(rs),
    }
}

/// The actual user exactly as `d` wants it.
fn synced(d: &DesiredUser) -> ActualUser {
    ActualUser {
        id: user_id_for(&d.scim_id),
        email: d.user_name.clone(),
        display_name: Some(d.display_name.clone()),
        contact_email: Some(d.contact_email.clone()),
        status: if d.active { Status::Active } else { Status::Disabled },
        managed_by: ManagedBy::Scim,
        scim_id: Some(d.scim_id.clone()),
        external_id: d.external_id.clone(),
        roles: d.roles.clone(),
        purge_after: None,
        version: 2,
        hand_edited: false,
    }
}

fn computed(changes: Vec<Change>, held: Option<Hold>) -> ComputedPlan {
    ComputedPlan {
        tenant: "acme".into(),
        fingerprint: fingerprint("acme", &changes, 0),
        summary: Summary::of(&changes),
        changes,
        conflicts: Vec::new(),
        journal_head: 0,
        journal_from: 0,
        truncated: false,
        held,
        waiting: 0,
        judged_by: None,
        kind: Default::default(),
    }
}

/// One user of each of create, update, deactivate, delete, computed by `plan()`.
fn four_kinds() -> ComputedPlan {
    let alice = desired("s-alice", "alice@acme.com", "Alice Liddell", true, &["viewer"]);
    let bob = desired("s-bob", "bob@acme.com", "Bob Builder", true, &["editor"]);
    let carol = desired("s-carol", "carol@acme.com", "Carol Danvers", true, &["viewer"]);
    let dave = desired("s-dave", "dave@acme.com", "Dave Lister", true, &["viewer"]);
    // alice is deactivated; bob changes name and roles; carol is new; dave is gone.
    let want = vec![
        DesiredUser { active: false, ..alice.clone() },
        DesiredUser { display_name: "Robert Builder".into(), roles: roles(&["admin", "editor"]), ..bob.clone() },
        carol,
    ];
    let actual = vec![synced(&alice), synced(&bob), synced(&dave)];
    let changes = plan(&want, &actual, &HashSet::new(), now(), Scope::Full);
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    // Changes that take no new sign-in email run first; the create takes one.
    assert_eq!(kinds, vec![ChangeKind::Deactivate, ChangeKind::Update, ChangeKind::Delete, ChangeKind::Create]);
    computed(changes, None)
}

fn section<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| *l == header).unwrap_or_else(|| panic!("no header {header:?} in\n{text}"));
    lines[start + 1..].iter().take_while(|l| !l.is_empty()).copied().collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn text_report_headers_diffs_and_summary() {
    let p = four_kinds();
    let text = report::text(&p, false);
    assert!(text.starts_with(&format!("Tenant acme — plan {}\n", p.fingerprint)), "{text}");

    assert_eq!(
        section(&text, "user alice@acme.com will be deactivated (signed out, sessions revoked)"),
        vec![
            "--- before",
            "+++ after",
            " … 3 unchanged fields",
            "-status: active",
            "+status: disabled",
            " … 5 unchanged fields"
        ],
        "{text}"
    );
    assert_eq!(
        section(&text, "user bob@acme.com will be updated"),
        vec![
            "--- before",
            "+++ after",
            " … 1 unchanged field",
            "-display_name: Bob Builder",
            "+display_name: Robert Builder",
            " … 2 unchanged fields",
            "-roles: editor",
            "+roles: admin, editor",
            " … 4 unchanged fields",
        ],
        "{text}"
    );
    let purge_at = fmt_time(now() + Duration::days(30));
    assert_eq!(
        section(&text, "user carol@acme.com will be created (welcome email queued)"),
        vec![
            "--- before",
            "+++ after",
            "+email: carol@acme.com",
            "+display_name: Carol Danvers",
            "+contact_email: carol@acme.com",
            "+status: active",
            "+roles: viewer",
            "+managed_by: scim",
            "+scim_id: s-carol",
            "+external_id: -",
            "+purge_after: -",
        ],
        "{text}"
    );
    assert_eq!(
        section(&text, &format!("user dave@acme.com will be deleted (soft; purge after {purge_at})")),
        vec![
            "--- before",
            "+++ after",
            " … 3 unchanged fields",
            "-status: active",
            "+status: deleted",
            " … 4 unchanged fields",
            "-purge_after: -",
            &format!("+purge_after: {purge_at}"),
        ],
        "{text}"
    );
    assert!(text.ends_with("\nPlan: 1 to create, 1 to update, 1 to deactivate, 1 to delete, 0 to purge.\n"), "{text}");
    assert!(!text.contains('\x1b'), "no ANSI escapes without colour");
}

#[test]
fn seven_unchanged_fields_collapse_into_one_line() {
    // A deactivation that also drops a role: two of nine fields change.
    let alice = desired("s-alice", "alice@acme.com", "Alice", true, &["admin", "viewer"]);
    let want = DesiredUser { active: false, roles: roles(&["admin", "viewer"]), ..alice.clone() };
    let mut actual = synced(&alice);
    actual.roles = roles(&["viewer"]);
    let p = computed(plan(&[want], &[actual], &HashSet::new(), now(), Scope::Full), None);
    let lines = report::diff_lines(&p.changes[0]);
    let unchanged: usize = lines.iter().map(|l| if let DiffLine::Unchanged(n) = l { *n } else { 0 }).sum();
    assert_eq!(unchanged, 7, "{lines:?}");
    // Every unchanged run is collapsed: never two Unchanged in a row.
    assert!(lines.windows(2).all(|w| !matches!(w, [DiffLine::Unchanged(_), DiffLine::Unchanged(_)])));

    // Only a status change with everything else equal, fields in the fixed order.
    let c = Change {
        kind: ChangeKind::Update,
        user_id: "u1".into(),
        before: Some(Record {
            email: "x@acme.com".into(),
            display_name: None,
            contact_email: None,
            status: Status::Active,
            roles: BTreeSet::new(),
            managed_by: ManagedBy::Scim,
            scim_id: None,
            external_id: None,
            purge_after: None,
        }),
        before_version: Some(1),
        after: Record {
            email: "x@acme.com".into(),
            display_name: None,
            contact_email: None,
            status: Status::Active,
            roles: BTreeSet::new(),
            managed_by: ManagedBy::Scim,
            scim_id: None,
            external_id: None,
            purge_after: Some("2024-07-01T00:00:00.000Z".into()),
        },
        drift: false,
    };
    let text = report::diff_text(&c);
    assert_eq!(
        text,
        "--- before\n+++ after\n … 8 unchanged fields\n-purge_after: -\n+purge_after: 2024-07-01T00:00:00.000Z\n"
    );
}

#[test]
fn colour_only_when_asked_and_same_text_underneath() {
    let p = four_kinds();
    let plain = report::text(&p, false);
    let coloured = report::text(&p, true);
    assert!(coloured.contains("\x1b[31m-status: active\x1b[0m"), "{coloured:?}");
    assert!(coloured.contains("\x1b[32m+status: disabled\x1b[0m"), "{coloured:?}");
    assert!(coloured.contains("\x1b[1muser alice@acme.com will be deactivated"), "{coloured:?}");
    assert!(!plain.contains('\x1b'));
    assert_eq!(strip_ansi(&coloured), plain);
}

#[test]
fn summary_lines() {
    let empty = computed(Vec::new(), None);
    let text = report::text(&empty, false);
    assert!(text.contains("No changes: Moonborn matches the desired state."), "{text}");
    assert!(text.ends_with("Plan: 0 to create, 0 to update, 0 to deactivate, 0 to delete, 0 to purge.\n"), "{text}");

    let s = Summary { create: 3, update: 2, deactivate: 1, reactivate: 1, restore: 2, adopt: 1, purge: 4, delete: 0 };
    assert_eq!(
        s.line(),
        "Plan: 3 to create, 6 to update, 1 to deactivate, 0 to delete, 4 to purge \
         (of the updates: 1 to reactivate, 2 to restore, 1 to adopt)."
    );
}

#[test]
fn every_kind_has_its_header() {
    let n = now();
    let base = desired("s1", "eve@acme.com", "Eve", true, &["viewer"]);
    let u = synced(&base);
    let mut deleted = u.clone();
    deleted.status = Status::Deleted;
    deleted.purge_after = Some(fmt_time(n - Duration::days(1)));
    let mut manual = u.clone();
    manual.managed_by = ManagedBy::Manual;
    manual.scim_id = None;
    manual.id = "m1".into();
    let off = DesiredUser { active: false, ..base.clone() };
    let cases: Vec<(Vec<DesiredUser>, Vec<ActualUser>, &str)> = vec![
        (vec![base.clone()], vec![synced(&off)], "user eve@acme.com will be reactivated"),
        (vec![base.clone()], vec![deleted.clone()], "user eve@acme.com will be restored"),
        (vec![base.clone()], vec![manual], "user eve@acme.com will be adopted (manual invite → SCIM-managed)"),
        (vec![], vec![deleted], "user eve@acme.com will be purged (personal data removed)"),
    ];
    for (d, a, want) in cases {
        let changes = plan(&d, &a, &HashSet::new(), n, Scope::Full);
        assert_eq!(changes.len(), 1);
        assert_eq!(report::header(&changes[0]), want);
    }
}

#[test]
fn a_create_says_whether_a_welcome_email_is_queued() {
    // `apply` queues `user.provisioned` for an active user only.
    let on = desired("s1", "eve@acme.com", "Eve", true, &["viewer"]);
    let off = DesiredUser { active: false, ..on.clone() };
    let header = |d: &DesiredUser| {
        let changes = plan(std::slice::from_ref(d), &[], &HashSet::new(), now(), Scope::Full);
        assert_eq!(changes.iter().map(|c| c.kind).collect::<Vec<_>>(), vec![ChangeKind::Create]);
        report::header(&changes[0])
    };
    assert_eq!(header(&on), "user eve@acme.com will be created (welcome email queued)");
    assert_eq!(header(&off), "user eve@acme.com will be created disabled (no welcome email)");
}

#[test]
fn reverting_a_hand_edit_is_labelled_drift_repair() {
    let n = now();
    let eve = desired("s1", "eve@acme.com", "Eve", true, &["viewer"]);
    let hand = |mut a: ActualUser| {
        a.hand_edited = true;
        a
    };
    // Hand-edited in Moonborn: a new name, a role, enabled again, disabled.
    let mut renamed = synced(&eve);
    renamed.display_name = Some("Eve by hand".into());
    let mut promoted = synced(&eve);
    promoted.roles = roles(&["admin"]);
    let off = DesiredUser { active: false, ..eve.clone() };
    let mut deleted = synced(&eve);
    deleted.status = Status::Deleted;
    deleted.purge_after = Some(fmt_time(n + Duration::days(1)));
    let cases: Vec<(DesiredUser, ActualUser, ChangeKind, bool)> = vec![
        (eve.clone(), hand(renamed.clone()), ChangeKind::Update, true),
        (eve.clone(), hand(promoted), ChangeKind::Update, true),
        (off.clone(), hand(synced(&eve)), ChangeKind::Deactivate, true),
        (eve.clone(), hand(synced(&off)), ChangeKind::Reactivate, true),
        // Not hand-edited: the IdP's change.
        (eve.clone(), renamed, ChangeKind::Update, false),
        (off, synced(&eve), ChangeKind::Deactivate, false),
        // A restore is the IdP's create, whatever was edited by hand before.
        (eve.clone(), hand(deleted), ChangeKind::Restore, false),
    ];
    for (d, a, kind, drift) in cases {
        let changes = plan(&[d], &[a], &HashSet::new(), n, Scope::Full);
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!((c.kind, c.drift), (kind, drift), "{c:?}");
        let p = computed(changes.clone(), None);
        let header = report::header(c);
        assert_eq!(header.ends_with(" — drift repair (reverts a hand edit made in Moonborn)"), drift, "{header}");
        assert!(report::text(&p, false).contains(&header));
        assert_eq!(report::json(&p)["changes"][0]["cause"], if drift { "drift" } else { "idp" });
        let class = format!("<h2 class=\"{} {}\">", kind.as_str(), if drift { "drift" } else { "idp" });
        assert!(report::html(&p).contains(&class), "{class}");
    }
    // A deletion of a hand-edited user is the IdP's.
    let c = plan(&[], &[hand(synced(&eve))], &HashSet::new(), n, Scope::Full);
    assert_eq!((c[0].kind, c[0].drift), (ChangeKind::Delete, false));
    let purge_at = fmt_time(n + Duration::days(30));
    assert_eq!(report::header(&c[0]), format!("user eve@acme.com will be deleted (soft; purge after {purge_at})"));
    // The whole header of a drift repair.
    let mut renamed = hand(synced(&eve));
    renamed.display_name = None;
    let c = plan(&[eve], &[renamed], &HashSet::new(), n, Scope::Full);
    assert_eq!(
        report::header(&c[0]),
        "user eve@acme.com will be updated — drift repair (reverts a hand edit made in Moonborn)"
    );
}

#[test]
fn held_plan_says_so() {
    let p = four_kinds();
    let held = computed(
        p.changes.clone(),
        Some(Hold {
            judgement: None,
            reason: "this run would deactivate or delete 2 of 3 SCIM users".into(),
            fingerprint: p.fingerprint,
        }),
    );
    let text = report::text(&held, false);
    assert!(
        text.contains(&format!(
            "HELD: this run would deactivate or delete 2 of 3 SCIM users. Deactivations and deletions wait for an \
             operator: approve this plan (moonborn-scim approve --tenant acme {}) or release the hold.",
            held.fingerprint
        )),
        "{text}"
    );
    assert!(!text.contains("WAITING"), "{text}");
    let j = report::json(&held);
    assert_eq!(j["held"]["reason"], "this run would deactivate or delete 2 of 3 SCIM users");
    assert_eq!(j["held"]["fingerprint"], held.fingerprint.as_str());
    assert!(report::html(&held).contains("class=\"held\""));
}

#[test]
fn waiting_changes_say_when_they_are_judged() {
    let p = four_kinds();
    let mut w = computed(p.changes.clone(), None);
    w.waiting = 2;
    w.judged_by = Some("2026-12-06T20:00:10.000Z".into());
    let line = "WAITING: 2 deactivations and deletions wait for the tenant's burst of destructive pushes to settle; \
                they are judged together by 2026-12-06T20:00:10.000Z.";
    assert!(report::text(&w, false).contains(line), "{}", report::text(&w, false));
    let j = report::json(&w);
    assert_eq!(j["waiting"], serde_json::json!({"destructive": 2, "judged_by": "2026-12-06T20:00:10.000Z"}));
    assert!(report::html(&w).contains("<strong>Waiting:</strong> 2 deactivations"));
    assert_eq!(report::json(&p)["waiting"], Value::Null);
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn json_report_has_a_stable_shape() {
    let p = four_kinds();
    let j = report::json(&p);
    assert_eq!(
        keys(&j),
        vec!["changes", "conflicts", "fingerprint", "held", "schema", "summary", "summary_line", "tenant", "waiting"]
    );
    assert_eq!(j["schema"], "moonborn-scim/plan/v1");
    assert_eq!(j["tenant"], "acme");
    assert_eq!(j["fingerprint"], p.fingerprint.as_str());
    assert_eq!(j["held"], Value::Null);
    assert_eq!(j["summary_line"], "Plan: 1 to create, 1 to update, 1 to deactivate, 1 to delete, 0 to purge.");
    assert_eq!(
        keys(&j["summary"]),
        vec!["adopt", "create", "deactivate", "delete", "purge", "reactivate", "restore", "update"]
    );
    assert_eq!(j["summary"]["create"], 1);
    let changes = j["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 4);
    let record_keys = vec![
        "contact_email",
        "display_name",
        "email",
        "external_id",
        "managed_by",
        "purge_after",
        "roles",
        "scim_id",
        "status",
    ];
    for (c, orig) in changes.iter().zip(&p.changes) {
        assert_eq!(keys(c), vec!["after", "before", "before_version", "cause", "diff", "header", "kind", "user_id"]);
        assert_eq!(c["kind"], orig.kind.as_str());
        assert_eq!(c["cause"], "idp");
        assert_eq!(c["user_id"], orig.user_id.as_str());
        assert_eq!(c["header"], report::header(orig).as_str());
        assert_eq!(c["diff"], report::diff_text(orig).as_str());
        assert!(c["diff"].as_str().unwrap_or_default().starts_with("--- before\n+++ after\n"));
        assert_eq!(keys(&c["after"]), record_keys);
        if orig.kind == ChangeKind::Create {
            assert_eq!(c["before"], Value::Null);
            assert_eq!(c["before_version"], Value::Null);
        } else {
            assert_eq!(keys(&c["before"]), record_keys);
            assert_eq!(c["before_version"], 2);
        }
    }
    let deact = &changes[0];
    assert_eq!(deact["header"], "user alice@acme.com will be deactivated (signed out, sessions revoked)");
    assert_eq!(deact["before"]["status"], "active");
    assert_eq!(deact["after"]["status"], "disabled");
    assert_eq!(deact["after"]["roles"], serde_json::json!(["viewer"]));
    assert_eq!(deact["after"]["managed_by"], "scim");
    assert_eq!(
        deact["diff"],
        "--- before\n+++ after\n … 3 unchanged fields\n-status: active\n+status: disabled\n … 5 unchanged fields\n"
    );
    // The same plan renders to the same bytes.
    assert_eq!(report::json(&p).to_string(), j.to_string());
    assert_eq!(report::json(&four_kinds()).to_string(), j.to_string());
}

#[test]
fn html_escapes_what_the_idp_sent() {
    let evil = desired("s-x", "x@acme.com", "<script>alert('pwned')</script> & \"Co\"", true, &["viewer"]);
    let mut p = computed(plan(&[evil], &[], &HashSet::new(), now(), Scope::Full), None);
    p.tenant = "<b>acme</b>".into();
    let html = report::html(&p);
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<b>acme"), "{html}");
    assert!(html.contains("+display_name: &lt;script&gt;alert('pwned')&lt;/script&gt; &amp; &quot;Co&quot;"), "{html}");
    assert!(html.contains("<title>Plan for &lt;b&gt;acme&lt;/b&gt;</title>"), "{html}");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("Plan: 1 to create, 0 to update, 0 to deactivate, 0 to delete, 0 to purge."));
    assert!(
        html.contains("<h2 class=\"create idp\">user x@acme.com will be created (welcome email queued)</h2>"),
        "{html}"
    );
    // The text report is not HTML: it shows the name as sent.
    assert!(report::text(&p, false).contains("+display_name: <script>alert('pwned')</script> & \"Co\""));
    // An email with markup in the header is escaped too.
    let evil_mail = desired("s-y", "<img src=x onerror=alert(1)>@acme.com", "Y", true, &[]);
    let html = report::html(&computed(plan(&[evil_mail], &[], &HashSet::new(), now(), Scope::Full), None));
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("user &lt;img src=x onerror=alert(1)&gt;@acme.com will be created"), "{html}");
    // The empty plan page.
    assert!(
        report::html(&computed(Vec::new(), None)).contains("<p>No changes: Moonborn matches the desired state.</p>")
    );
}

#[test]
fn fingerprints_name_the_tenant_and_an_empty_plan_its_journal_head() {
    // An empty plan: specific to the tenant and to the journal position it was computed at.
    let empty = fingerprint("acme", &[], 41);
    assert_eq!(empty.len(), 32);
    assert_eq!(empty, fingerprint("acme", &[], 41), "deterministic");
    assert_ne!(empty, fingerprint("globex", &[], 41), "another tenant");
    assert_ne!(empty, fingerprint("acme", &[], 42), "a later journal head");
    // A plan with changes: specific to the tenant, not to the journal (an unrelated push keeps an
    // approval of the same changes valid).
    let p = four_kinds();
    let fp = fingerprint("acme", &p.changes, 41);
    assert_eq!(fp, fingerprint("acme", &p.changes, 42));
    assert_ne!(fp, fingerprint("globex", &p.changes, 41));
    assert_ne!(fp, empty);
}
