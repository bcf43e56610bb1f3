//! Distinct JSON values in linear time: multi-valued attributes drop repeated values, and a
//! request of many values must not cost a comparison of every pair (100,000 emails in one PATCH
//! took 110 s that way). Values are hashed consistently with `serde_json::Value`'s equality
//! (object keys in any order, `0.0` and `-0.0` alike); equal hashes are confirmed by comparison.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

/// A hash of `v` that equal values share.
pub fn value_hash(v: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}

fn feed(v: &Value, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            // Floats equal as numbers (0.0 and -0.0) hash alike.
            let zero = n.is_f64() && n.as_f64() == Some(0.0);
            if zero {
                "0.0".hash(h);
            } else {
                n.to_string().hash(h);
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(a) => {
            (4u8, a.len()).hash(h);
            for x in a {
                feed(x, h);
            }
        }
        Value::Object(m) => {
            // Order-independent: the entries' hashes are summed.
            let mut sum = 0u64;
            for (k, x) in m {
                let mut e = DefaultHasher::new();
                k.hash(&mut e);
                feed(x, &mut e);
                sum = sum.wrapping_add(e.finish());
            }
            (5u8, m.len(), sum).hash(h);
        }
    }
}

/// The values of a list seen so far, by hash (indexes into that list).
#[derive(Debug, Default)]
pub struct Seen {
    by_hash: HashMap<u64, Vec<usize>>,
}

impl Seen {
    /// Seen knowing `list`'s values.
    pub fn of(list: &[Value]) -> Seen {
        let mut s = Seen::default();
        for (i, v) in list.iter().enumerate() {
            s.by_hash.entry(value_hash(v)).or_default().push(i);
        }
        s
    }

    /// Whether `list` (the list this tracks) holds a value equal to `v`.
    pub fn contains(&self, list: &[Value], v: &Value) -> bool {
        self.by_hash.get(&value_hash(v)).is_some_and(|ix| ix.iter().any(|&i| list.get(i) == Some(v)))
    }

    /// Appends `v` to `list` unless it holds an equal value; answers whether it did.
    pub fn push(&mut self, list: &mut Vec<Value>, v: Value) -> bool {
        let h = value_hash(&v);
        if self.by_hash.get(&h).is_some_and(|ix| ix.iter().any(|&i| list[i] == v)) {
            return false;
        }
        self.by_hash.entry(h).or_default().push(list.len());
        list.push(v);
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_values_hash_alike_whatever_their_key_order() {
        let a: Value = serde_json::from_str(r#"{"value":"a@x","type":"work","primary":true}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"primary":true,"type":"work","value":"a@x"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(value_hash(&a), value_hash(&b));
        assert_eq!(value_hash(&json!(0.0)), value_hash(&json!(-0.0)));
        assert_eq!(json!(0.0), json!(-0.0));
        assert_ne!(value_hash(&json!({"a": 1})), value_hash(&json!({"a": 2})));
        assert_ne!(value_hash(&json!([1, 2])), value_hash(&json!([2, 1])));
    }

    #[test]
    fn push_keeps_the_first_of_equal_values_in_order() {
        let mut list = vec![json!({"value": "a"}), json!("b")];
        let mut seen = Seen::of(&list);
        assert!(!seen.push(&mut list, json!({"value": "a"})));
        assert!(seen.push(&mut list, json!({"value": "c"})));
        assert!(!seen.push(&mut list, json!("b")));
        assert!(seen.push(&mut list, json!(1)));
        assert!(seen.push(&mut list, json!(1.0)), "1 and 1.0 are different JSON values");
        assert_eq!(list, vec![json!({"value": "a"}), json!("b"), json!({"value": "c"}), json!(1), json!(1.0)]);
        assert!(seen.contains(&list, &json!({"value": "c"})));
        assert!(!seen.contains(&list, &json!({"value": "d"})));
    }

    #[test]
    fn a_hundred_thousand_values_with_repeats_keep_each_once() {
        let mut list = Vec::new();
        let mut seen = Seen::default();
        for i in 0..100_000 {
            seen.push(&mut list, json!({"value": format!("u{i}@x.example"), "type": "work"}));
        }
        for i in (0..100_000).step_by(7) {
            assert!(!seen.push(&mut list, json!({"type": "work", "value": format!("u{i}@x.example")})));
        }
        assert_eq!(list.len(), 100_000);
    }
}
