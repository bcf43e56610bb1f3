//! Which member changes the controller re-plans: the roles a group grants come from its name's
//! bindings, so a member change of a group whose name binds no role changes nobody's roles, and
//! on SQLite it is not journaled per member (the group's own journal row is). These tests check
//! the outcome — the Moonborn roles after incremental runs, the controller's push-triggered kind
//! — on both backends, through the real store and controller, and on SQLite that the journal
//! rows are skipped where they can be and written where they must be: a bound name, an
//! operator's bindings, a rename that waits for the controller.

use moonborn_scim::controller::{Controller, Target, Trigger};
use moonborn_scim::domain::{Binding, Bindings};
use moonborn_scim::scim::schema::{normalize, Kind, GROUP_URN};
use moonborn_scim::store::{Intent, MemberChange, MemberRef, Tenant};
use moonborn_scim::Store;
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::backend_test;
use crate::common::fresh_db::{Backend, FreshDb};

struct Db {
    store: Store,
    tenant: Tenant,
    backend: Backend,
    _db: FreshDb,
}

impl Db {
    async fn open(backend: Backend) -> Db {
        let (db, store, tenant) = FreshDb::with_tenant(backend, "journal").await;
        Db { store, tenant, backend, _db: db }
    }

    fn intent<'a>(&self, now: &'a str) -> Intent<'a> {
        Intent { tenant_id: self.tenant.id, request_id: "test", now }
    }

    /// A provisioned SCIM user (pushed, then reconciled); its SCIM id.
    async fn user(&self, user_name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = moonborn_scim::domain::now();
        let doc = normalize(
            Kind::User,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name,
                   "emails": [{"value": user_name, "primary": true}], "active": true}),
        )
        .expect("a valid user");
        self.store.insert_user(&self.intent(&now), &id, &doc).await.expect("insert user");
        self.run().await;
        id
    }

    /// An empty group; its id.
    async fn group(&self, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = moonborn_scim::domain::now();
        self.store.insert_group(&self.intent(&now), &id, &group_doc(name), &[]).await.expect("insert group");
        id
    }

    /// A membership PATCH (the IdPs' kind: adds or removes only).
    async fn members(&self, group_id: &str, change: MemberChange) {
        let now = moonborn_scim::domain::now();
        self.store
            .update_group(&self.intent(&now), group_id, None, None, &[change], "patch")
            .await
            .expect("member change");
    }

    async fn add(&self, group_id: &str, user: &str) {
        let m = MemberRef { value: user.to_string(), member_type: None, display: None };
        self.members(group_id, MemberChange::Add(vec![m])).await;
    }

    async fn remove(&self, group_id: &str, user: &str) {
        self.members(group_id, MemberChange::Remove(vec![user.to_string()])).await;
    }

    /// A displayName change (journaled as a rename; its members are re-planned when the
    /// controller gets to it).
    async fn rename(&self, group_id: &str, name: &str) {
        let cur = self.store.get_group(self.tenant.id, group_id).await.expect("group");
        let now = moonborn_scim::domain::now();
        self.store
            .update_group(&self.intent(&now), group_id, Some(&group_doc(name)), Some(cur.version), &[], "replace")
            .await
            .expect("rename");
    }

    /// An incremental run, as a push triggers.
    async fn run(&self) {
        Controller::new(self.store.clone())
            .reconcile(&self.tenant, Trigger::Push, Target::Incremental, moonborn_scim::controller::Approval::None)
            .await
            .expect("incremental run");
    }

    /// An operator's bindings, then the whole-tenant run a binding change wakes.
    async fn bind(&self, b: &Bindings) {
        self.store.set_bindings(self.tenant.id, b, "test").await.expect("bindings");
        Controller::new(self.store.clone())
            .reconcile(&self.tenant, Trigger::Bindings, Target::Full, moonborn_scim::controller::Approval::None)
            .await
            .expect("full run");
    }

    async fn roles(&self, email: &str) -> Vec<String> {
        let users = self.store.admin_list_users(self.tenant.id, Some(email), None, 1000, false).await.expect("users");
        assert_eq!(users.len(), 1, "one user {email}: {users:?}");
        users[0].roles.clone()
    }

    /// Membership rows in the journal (per member).
    async fn member_rows(&self) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM intent_journal WHERE tenant_id = $1 AND op = 'membership'")
            .bind(self.tenant.id)
            .fetch_one(self.store.pool())
            .await
            .expect("count")
            .try_get("n")
            .expect("n")
    }

    /// On SQLite, the membership rows written since `before` are `want`; on PostgreSQL every
    /// member change is journaled (one per member).
    async fn expect_member_rows(&self, before: i64, want: i64, all: i64) {
        let got = self.member_rows().await - before;
        match self.backend {
            Backend::Sqlite => assert_eq!(got, want, "membership journal rows on SQLite"),
            Backend::Postgres => assert_eq!(got, all, "membership journal rows on PostgreSQL"),
        }
    }
}

fn group_doc(name: &str) -> Value {
    normalize(Kind::Group, json!({"schemas": [GROUP_URN], "displayName": name})).expect("a valid group")
}

backend_test!(
    async fn member_changes_of_an_unbound_group_are_not_journaled_and_change_no_roles(db = Db::open) {
        let u = db.user("ann@acme.com").await;
        assert_eq!(db.roles("ann@acme.com").await, ["viewer"]);
        let g = db.group("engineering").await;
        let before = db.member_rows().await;
        db.add(&g, &u).await;
        db.expect_member_rows(before, 0, 1).await;
        db.run().await;
        assert_eq!(db.roles("ann@acme.com").await, ["viewer"]);
        db.remove(&g, &u).await;
        db.expect_member_rows(before, 0, 2).await;
        db.run().await;
        assert_eq!(db.roles("ann@acme.com").await, ["viewer"]);
        // The PATCHes themselves are in the journal, as the group's rows.
        let group_rows: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM intent_journal WHERE tenant_id = $1 AND resource_type = 'Group' AND resource_id = $2",
        )
        .bind(db.tenant.id)
        .bind(&g)
        .fetch_one(db.store.pool())
        .await
        .expect("count")
        .try_get("n")
        .expect("n");
        assert_eq!(group_rows, 3, "create, add, remove");
    }
);

backend_test!(
    async fn member_changes_of_a_bound_group_are_journaled_and_grant_and_revoke_roles(db = Db::open) {
        let u = db.user("bob@acme.com").await;
        // Bound by the bundled bindings (no operator has set any), case-insensitively.
        let g = db.group("Moonborn-Admin").await;
        let before = db.member_rows().await;
        db.add(&g, &u).await;
        db.expect_member_rows(before, 1, 1).await;
        db.run().await;
        assert_eq!(db.roles("bob@acme.com").await, ["admin"]);
        db.remove(&g, &u).await;
        db.expect_member_rows(before, 2, 2).await;
        db.run().await;
        assert_eq!(db.roles("bob@acme.com").await, ["viewer"]);
    }
);

backend_test!(
    async fn an_operators_bindings_decide_which_groups_matter(db = Db::open) {
        let u = db.user("cy@acme.com").await;
        let b = Bindings {
            bindings: vec![Binding { group: "engineering".into(), role: "editor".into() }],
            default_role: Some("viewer".into()),
        };
        db.bind(&b).await;
        let eng = db.group("ENGINEERING").await;
        let admins = db.group("moonborn-admin").await;
        let before = db.member_rows().await;
        // Not bound any more: the bundled bindings no longer apply.
        db.add(&admins, &u).await;
        db.expect_member_rows(before, 0, 1).await;
        db.add(&eng, &u).await;
        db.expect_member_rows(before, 1, 2).await;
        db.run().await;
        assert_eq!(db.roles("cy@acme.com").await, ["editor"]);
    }
);

backend_test!(
    async fn members_added_while_unbound_get_their_roles_when_a_binding_or_a_rename_names_the_group(db = Db::open) {
        let u = db.user("dee@acme.com").await;
        let v = db.user("eve@acme.com").await;
        let ops = db.group("ops").await;
        let eng = db.group("eng").await;
        db.add(&ops, &u).await;
        db.add(&eng, &v).await;
        db.run().await;
        assert_eq!(db.roles("dee@acme.com").await, ["viewer"]);
        // A rename onto a bound name re-plans the group's members.
        db.rename(&ops, "moonborn-editor").await;
        db.run().await;
        assert_eq!(db.roles("dee@acme.com").await, ["editor"]);
        // A binding change runs the whole tenant.
        let mut b = Bindings::default();
        b.bindings.push(Binding { group: "eng".into(), role: "billing".into() });
        db.bind(&b).await;
        assert_eq!(db.roles("eve@acme.com").await, ["billing"]);
    }
);

backend_test!(
    /// The controller re-plans a renamed group's members as they are when it gets to the
    /// rename, so a member removed before then is not among them: its removal must be
    /// journaled itself although the group's name (now) binds nothing.
    async fn a_member_removed_while_a_rename_to_an_unbound_name_waits_loses_the_role(db = Db::open) {
        let u = db.user("fay@acme.com").await;
        let g = db.group("moonborn-admin").await;
        db.add(&g, &u).await;
        db.run().await;
        assert_eq!(db.roles("fay@acme.com").await, ["admin"]);
        db.rename(&g, "former-admins").await;
        let before = db.member_rows().await;
        db.remove(&g, &u).await;
        db.expect_member_rows(before, 1, 1).await;
        db.run().await;
        assert_eq!(db.roles("fay@acme.com").await, ["viewer"]);
        // Once the controller has applied the rename, the group's member changes are
        // skipped again.
        let before = db.member_rows().await;
        db.add(&g, &u).await;
        db.expect_member_rows(before, 0, 1).await;
        db.run().await;
        assert_eq!(db.roles("fay@acme.com").await, ["viewer"]);
    }
);

backend_test!(
    /// Binding names compare ignoring ASCII case only, so a change of a non-ASCII letter's case
    /// is a rename to them: journaled as one, it re-plans the members, and a member removed
    /// afterwards is journaled while it waits.
    async fn a_case_change_of_a_non_ascii_letter_is_a_rename(db = Db::open) {
        let u = db.user("gus@acme.com").await;
        let b = Bindings {
            bindings: vec![Binding { group: "Équipe-admin".into(), role: "admin".into() }],
            default_role: Some("viewer".into()),
        };
        db.bind(&b).await;
        let g = db.group("Équipe-admin").await;
        db.add(&g, &u).await;
        db.run().await;
        assert_eq!(db.roles("gus@acme.com").await, ["admin"]);
        db.rename(&g, "équipe-admin").await;
        db.run().await;
        assert_eq!(db.roles("gus@acme.com").await, ["viewer"]);
        db.rename(&g, "Équipe-admin").await;
        let before = db.member_rows().await;
        db.remove(&g, &u).await;
        db.expect_member_rows(before, 1, 1).await;
        db.run().await;
        assert_eq!(db.roles("gus@acme.com").await, ["viewer"]);
    }
);
