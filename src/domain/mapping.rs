//! The SCIM → Moonborn mapping: a stored SCIM User document and its groups' bindings become a
//! `DesiredUser` (docs/architecture.md, Mapping).

use serde::Deserialize;
use serde_json::Value;

use super::{Bindings, DesiredUser};

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The fields of a stored SCIM User document the mapping reads (each string as stored, not yet
/// trimmed).
#[derive(Default)]
struct Fields<'a> {
    user_name: Option<&'a str>,
    external_id: Option<&'a str>,
    display_name: Option<&'a str>,
    given_name: Option<&'a str>,
    family_name: Option<&'a str>,
    formatted: Option<&'a str>,
    /// Each email's `primary` and `value`.
    emails: Vec<(Option<bool>, Option<&'a str>)>,
    active: Option<bool>,
}

impl<'a> Fields<'a> {
    fn of(doc: &'a Value) -> Fields<'a> {
        let name = doc.get("name");
        let in_name = |k: &str| name.and_then(|n| s(n, k));
        Fields {
            user_name: s(doc, "userName"),
            external_id: s(doc, "externalId"),
            display_name: s(doc, "displayName"),
            given_name: in_name("givenName"),
            family_name: in_name("familyName"),
            formatted: in_name("formatted"),
            emails: doc
                .get("emails")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|e| (e.get("primary").and_then(Value::as_bool), s(e, "value"))).collect())
                .unwrap_or_default(),
            active: doc.get("active").and_then(Value::as_bool),
        }
    }

    fn desired(self, scim_id: &str, groups: &[String], bindings: &Bindings) -> DesiredUser {
        let t = |v: Option<&'a str>| v.map(str::trim).filter(|x| !x.is_empty());
        let user_name = t(self.user_name).unwrap_or_default().to_string();
        let joined = [t(self.given_name), t(self.family_name)].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let display_name = Some(joined)
            .filter(|j| !j.is_empty())
            .or_else(|| t(self.formatted).map(str::to_string))
            .or_else(|| t(self.display_name).map(str::to_string))
            .unwrap_or_else(|| user_name.clone());
        let contact_email = self
            .emails
            .iter()
            .find(|(primary, _)| *primary == Some(true))
            .and_then(|(_, v)| t(*v))
            .or_else(|| self.emails.iter().find_map(|(_, v)| t(*v)))
            .unwrap_or(&user_name)
            .to_string();
        DesiredUser {
            scim_id: scim_id.to_string(),
            external_id: t(self.external_id).map(str::to_string),
            display_name,
            contact_email,
            active: self.active.unwrap_or(true),
            roles: bindings.roles_for(groups),
            user_name,
        }
    }
}

/// Maps a stored SCIM User document onto Moonborn's fields (docs/architecture.md, Mapping). `groups` are the
/// displayNames of the user's groups; `bindings` maps a lower-cased group name to its roles.
pub fn desired_user(scim_id: &str, doc: &Value, groups: &[String], bindings: &Bindings) -> DesiredUser {
    Fields::of(doc).desired(scim_id, groups, bindings)
}

/// A JSON object only (a derived struct also reads an array, positionally).
pub(super) struct MapOnly<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

/// The fields `desired_user` reads, deserialized straight from the stored text (every other
/// member of the document is skipped, not built). Strict: any other type (an array for an
/// object too), an escaped string or a repeated member fails, and `desired_user_from_str`
/// falls back to the `Value` path.
#[derive(Deserialize)]
struct TypedDoc<'a> {
    #[serde(rename = "userName", borrow, default)]
    user_name: Option<&'a str>,
    #[serde(rename = "externalId", borrow, default)]
    external_id: Option<&'a str>,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Option<&'a str>,
    #[serde(borrow, default)]
    name: Option<MapOnly<TypedName<'a>>>,
    #[serde(borrow, default)]
    emails: Option<Vec<MapOnly<TypedEmail<'a>>>>,
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Deserialize)]
struct TypedName<'a> {
    #[serde(rename = "givenName", borrow, default)]
    given_name: Option<&'a str>,
    #[serde(rename = "familyName", borrow, default)]
    family_name: Option<&'a str>,
    #[serde(borrow, default)]
    formatted: Option<&'a str>,
}

#[derive(Deserialize)]
struct TypedEmail<'a> {
    #[serde(default)]
    primary: Option<bool>,
    #[serde(borrow, default)]
    value: Option<&'a str>,
}

/// `desired_user` of a document as stored (JSON text), without building the whole document.
///
/// # Errors
/// When the text is not JSON.
pub fn desired_user_from_str(
    scim_id: &str,
    doc: &str,
    groups: &[String],
    bindings: &Bindings,
) -> Result<DesiredUser, serde_json::Error> {
    match serde_json::from_str::<MapOnly<TypedDoc<'_>>>(doc) {
        Ok(MapOnly(d)) => {
            let name = d.name.map_or(TypedName { given_name: None, family_name: None, formatted: None }, |n| n.0);
            let f = Fields {
                user_name: d.user_name,
                external_id: d.external_id,
                display_name: d.display_name,
                given_name: name.given_name,
                family_name: name.family_name,
                formatted: name.formatted,
                emails: d.emails.unwrap_or_default().into_iter().map(|MapOnly(e)| (e.primary, e.value)).collect(),
                active: d.active,
            };
            Ok(f.desired(scim_id, groups, bindings))
        }
        Err(_) => {
            let v: Value = serde_json::from_str(doc)?;
            Ok(desired_user(scim_id, &v, groups, bindings))
        }
    }
}

/// Reads a SCIM ListResponse snapshot (users and groups, as an IdP holds them) into desired
/// users, with roles from `bindings`.
///
/// # Errors
/// A message when the snapshot is not a ListResponse of valid Users and Groups.
pub fn desired_from_snapshot(snapshot: &Value, bindings: &Bindings) -> Result<Vec<DesiredUser>, String> {
    use crate::scim::schema::{normalize, Kind, GROUP_URN};
    let resources = snapshot
        .get("Resources")
        .and_then(Value::as_array)
        .ok_or("the snapshot must be a SCIM ListResponse with a Resources array")?;
    let is_group = |r: &Value| {
        r.get("schemas").and_then(Value::as_array).is_some_and(|s| s.iter().any(|u| u.as_str() == Some(GROUP_URN)))
            || (r.get("members").is_some() && r.get("userName").is_none())
    };
    let mut groups_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    for g in resources.iter().filter(|r| is_group(r)) {
        let name = g.get("displayName").and_then(Value::as_str).ok_or("a group without displayName")?;
        for m in g.get("members").and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = m.get("value").and_then(Value::as_str) {
                groups_of.entry(id.to_string()).or_default().push(name.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for u in resources.iter().filter(|r| !is_group(r)) {
        let id = u.get("id").and_then(Value::as_str).ok_or("a user without id")?.to_string();
        let doc = normalize(Kind::User, u.clone()).map_err(|e| format!("user {id}: {}", e.detail))?;
        let groups = groups_of.remove(&id).unwrap_or_default();
        out.push(desired_user(&id, &doc, &groups, bindings));
    }
    out.sort_by(|a, b| a.scim_id.cmp(&b.scim_id));
    Ok(out)
}
