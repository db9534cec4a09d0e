//! A JSON object read by serde_json, with the checks serde_json does not make.
//!
//! serde_json reads the text (RFC 8259 syntax, UTF-8, escapes, lone surrogates, numbers
//! beyond f64's range); [`StrictObject`] only builds the value, and refuses three things
//! serde_json's own `Value` lets through:
//!
//! - anything but an object at the top level;
//! - a member name repeated at the top level (compared decoded, so `"\u0069ss"` repeats
//!   `"iss"`): parsers disagree on which one wins, and the claims are read at the top;
//! - nesting deeper than 32 levels ([`MAX_DEPTH`]), far below serde_json's own limit of 128:
//!   real tokens nest two or three levels, and deep nesting only serves to exhaust a
//!   downstream parser's stack.
//!
//! Its errors are its own words and serde_json's syntax messages, never a value from
//! the input, so they can go into a rejection's detail (which may end up in logs).

use std::fmt;

use denylist_proto::pb::Reason;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::{Rejection, truncate};

/// Deepest nesting accepted, counting the top-level object as level 1.
const MAX_DEPTH: usize = 32;

/// The error for anything but an object at the top level.
const NOT_OBJECT: &str = "not a JSON object";

/// A JSON object without repeated top-level names, nested at most 32 levels deep.
/// Deserialize it with `serde_json::from_slice`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrictObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevel).map(StrictObject)
    }
}

/// The top level: an object, and nothing else.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = members.next_key::<String>()? {
            let value = members.next_value_seed(Nested { depth: 2 })?;
            match object.entry(name) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format_args!(
                        "duplicate member {:?}",
                        truncate(slot.key(), 24)
                    )));
                }
            }
        }
        Ok(object)
    }

    // Every other top-level value is refused in our words: serde's default message
    // would quote a string value.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(NOT_OBJECT))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_OBJECT))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_OBJECT))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_OBJECT))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(NOT_OBJECT))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(NOT_OBJECT))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(NOT_OBJECT))
    }
}

/// A value inside the top-level object; `depth` is the level a container here would
/// have. Repeated names inside nested objects are not refused (the last one is kept,
/// as serde_json does): only the top level is read for claims.
#[derive(Clone, Copy)]
struct Nested {
    depth: usize,
}

impl Nested {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Nested {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json refuses numbers beyond f64's range, so `v` is finite.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut array = Vec::with_capacity(elements.size_hint().unwrap_or(0).min(16));
        while let Some(value) = elements.next_element_seed(inner)? {
            array.push(value);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut object = Map::new();
        while let Some(name) = members.next_key::<String>()? {
            let value = members.next_value_seed(inner)?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses `json` (the decoded header or payload, named by `what`) as a
/// [`StrictObject`]; every failure is [`Reason::Malformed`]. The detail never quotes
/// the input: syntax errors are serde_json's fixed texts, data errors
/// [`StrictObject`]'s own.
pub(super) fn parse(json: &[u8], what: &'static str) -> Result<Map<String, Value>, Rejection> {
    serde_json::from_slice::<StrictObject>(json)
        .map(|object| object.0)
        .map_err(|e| Rejection::with(Reason::Malformed, format!("{what} is not valid JSON: {e}")))
}
