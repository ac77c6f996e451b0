//! Query strings: [`Query`] reads the parameters into a serde type, with the contract's
//! value types ([`Flag`], [`Count`], [`QueryId`], [`Cursor`]) and its 400s.

use std::collections::HashSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned};

use crate::error::{ApiError, Code};

/// Decoded query parameters, in order, as sent.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// This query with `updates` applied (`None` removes), encoded.
    pub fn with(&self, updates: &[(&str, Option<String>)]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            if !updates.iter().any(|(name, _)| name == k) {
                out.append_pair(k, v);
            }
        }
        for (name, value) in updates {
            if let Some(value) = value {
                out.append_pair(name, value);
            }
        }
        out.finish()
    }
}

/// The query string read into `T` (its fields: the parameters; unknown ones are ignored, a
/// repeated one counts once, by its first value). A missing required parameter or a value of
/// the wrong form is 400 `invalid_query`, naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut seen = HashSet::new();
        let pairs: Vec<(String, Values)> = Params::parse(parts.uri.query())
            .0
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, v)| (k, Values::query(v)))
            .collect();
        let de = de::value::MapDeserializer::<_, TextError>::new(pairs.into_iter());
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let name = e.path().to_string();
                let detail = match e.into_inner() {
                    TextError::Missing(name) => format!("query parameter `{name}` is required"),
                    TextError::Expected(what) => {
                        format!("query parameter `{name}` must be {what}")
                    }
                    TextError::Other(what) => format!("query parameter `{name}`: {what}"),
                };
                ApiError::refused(Code::InvalidQuery, detail)
            })
    }
}

/// The values of one query parameter or form field, as text. A field that takes one value
/// gets the last (as Django's `QueryDict` gives it), a list field all of them, so
/// `participants=1&participants=2` is a list and `participants=1` a list of one.
pub(super) struct Values {
    values: Vec<String>,
    /// A form's empty field (`receiver=`, an HTML form's empty input) is an absent optional
    /// one, as DRF reads it; an empty query parameter is a value, refused where it must not be.
    empty_is_none: bool,
}

impl Values {
    fn query(value: String) -> Self {
        Values {
            values: vec![value],
            empty_is_none: false,
        }
    }

    pub(super) fn form(values: Vec<String>) -> Self {
        Values {
            values,
            empty_is_none: true,
        }
    }
}

impl<'de> de::IntoDeserializer<'de, TextError> for Values {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Values {
    type Error = TextError;

    fn deserialize_any<V: de::Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TextError> {
        visitor.visit_string(self.values.pop().unwrap_or_default())
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
        if self.empty_is_none && self.values.iter().all(String::is_empty) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
        let empty_is_none = self.empty_is_none;
        let each = self.values.into_iter().map(move |v| Values {
            values: vec![v],
            empty_is_none,
        });
        visitor.visit_seq(de::value::SeqDeserializer::new(each))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// Why a query parameter or form field was refused.
#[derive(Debug)]
pub(super) enum TextError {
    Missing(&'static str),
    /// The form the value must have ("true or false").
    Expected(String),
    Other(String),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // serde's own wording, which [`crate::error::FieldError::from_serde`] reads.
            TextError::Missing(name) => write!(f, "missing field `{name}`"),
            TextError::Expected(what) => write!(f, "must be {what}"),
            TextError::Other(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for TextError {}

impl de::Error for TextError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        let msg = msg.to_string();
        match msg.strip_prefix(EXPECTED) {
            Some(what) => TextError::Expected(what.to_owned()),
            None => TextError::Other(msg),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        TextError::Missing(field)
    }
}

/// Marks a query value's refusal as "must be …" (through serde's `custom` errors).
const EXPECTED: &str = "\u{0}expected ";

/// Deserializes a query value from its text with `parse`, or refuses it as not `expected`.
fn from_text<'de, D, T>(
    deserializer: D,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
{
    let text = <std::borrow::Cow<'de, str> as de::Deserialize>::deserialize(deserializer)?;
    parse(&text).ok_or_else(|| de::Error::custom(format!("{EXPECTED}{expected}")))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, any case).
#[derive(Debug, Clone, Copy)]
pub struct Flag(pub bool);

impl<'de> de::Deserialize<'de> for Flag {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(Flag(true)),
                "false" | "0" | "no" => Some(Flag(false)),
                _ => None,
            }
        })
    }
}

/// A count from 1 up (a page, a page size, a limit); handlers cap it where a cap applies, as
/// Django REST framework caps page sizes. At most 2^63 - 1, in digits only: the OpenAPI
/// document gives counts as `int64`.
#[derive(Debug, Clone, Copy)]
pub struct Count(pub usize);

impl<'de> de::Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = format!("an integer from 1 to {}", i64::MAX);
        from_text(d, &expected, |v| {
            v.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<i64>().ok())
                .flatten()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
                .map(Count)
        })
    }
}

/// An id in the query: 1 ≤ id < 2^53.
#[derive(Debug, Clone, Copy)]
pub struct QueryId(pub u64);

impl<'de> de::Deserialize<'de> for QueryId {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a positive integer id", |v| {
            crate::ids::parse_in_range(v).map(QueryId)
        })
    }
}

/// A message id as a page cursor: `0` to `2^53`, so that links built from the ends of the
/// range stay valid.
#[derive(Debug, Clone, Copy)]
pub struct Cursor(pub u64);

impl<'de> de::Deserialize<'de> for Cursor {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a message id", |v| {
            crate::ids::parse(v)
                .filter(|id| *id <= crate::MAX_ID)
                .map(Cursor)
        })
    }
}
