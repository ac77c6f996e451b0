//! Ids as requests carry them (contract section 7): a JSON number, or a decimal string
//! (`"12"`), as Django REST framework's `PrimaryKeyRelatedField` takes them. Clients built on
//! DRF send strings without thinking about it, and a form field is always one.
//!
//! Every id a request body or socket frame takes is a [`WireId`] (or a list or option of them),
//! so the rule lives here once for REST bodies, form fields, both socket dialects and the
//! service API. Whether an id is in range (1 ≤ id < 2^53) is checked where it is used, the same
//! for either form.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A decimal id: ASCII digits only (no sign, no spaces, no `0x`), within `u64`.
pub fn parse(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a path or query id: decimal, 1 ≤ id < 2^53.
pub fn parse_in_range(text: &str) -> Option<u64> {
    parse(text).filter(|id| (1..crate::MAX_ID).contains(id))
}

/// An id read from a request: a non-negative integer (also written as a whole float, `12.0`),
/// or a string of its decimal digits. Anything else (a fraction, a sign, spaces, `"12a"`) is
/// refused with serde's "invalid type"
/// or "invalid value" error, which the layer reading the request turns into its 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireId(pub u64);

impl From<WireId> for u64 {
    fn from(id: WireId) -> u64 {
        id.0
    }
}

/// `ids` as plain numbers.
pub fn plain(ids: Vec<WireId>) -> Vec<u64> {
    ids.into_iter().map(u64::from).collect()
}

const EXPECTED: &str = "an id (an integer, or its decimal digits as a string)";

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = WireId;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireId, E> {
                Ok(WireId(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireId, E> {
                u64::try_from(v)
                    .map(WireId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            /// `12.0`: JSON Schema's `integer` admits it and DRF's `IntegerField` takes it;
            /// only a whole number an `f64` holds exactly (below 2^53) is an id.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireId, E> {
                const EXACT: f64 = (1u64 << 53) as f64;
                if v.fract() == 0.0 && (0.0..EXACT).contains(&v) {
                    // Whole, non-negative and below 2^53: the conversion is exact.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(WireId(v as u64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireId, E> {
                parse(v)
                    .map(WireId)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

/// The decimal digits of an id from 1 to 2^53 - 1, leading zeros allowed: every number below
/// 10^15, or 16 digits no greater than 9007199254740991, digit by digit.
const ID_PATTERN: &str = "^0*(?:[1-9][0-9]{0,14}|[1-8][0-9]{15}|900[0-6][0-9]{12}|90070[0-9]{11}|90071[0-8][0-9]{10}|900719[0-8][0-9]{9}|9007199[0-1][0-9]{8}|90071992[0-4][0-9]{7}|900719925[0-3][0-9]{6}|9007199254[0-6][0-9]{5}|90071992547[0-3][0-9]{4}|9007199254740[0-8][0-9]{2}|90071992547409[0-8][0-9]|9007199254740990|9007199254740991)$";

/// In the OpenAPI document: an id, or its decimal digits as a string.
impl utoipa::PartialSchema for WireId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(crate::views::id_schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    // Exactly 1 to 2^53 - 1 (leading zeros allowed), as the server checks.
                    .pattern(Some(ID_PATTERN))
                    .description(Some(
                        "The id's decimal digits (as DRF's PrimaryKeyRelatedField takes them).",
                    )),
            )
            .description(Some(
                "An id: an integer, or its decimal digits as a string (`\"12\"`).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for WireId {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("IdInput")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<u64, String> {
        serde_json::from_str::<WireId>(json)
            .map(u64::from)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_and_decimal_strings_only() {
        assert_eq!(read("12"), Ok(12));
        assert_eq!(read(r#""12""#), Ok(12));
        assert_eq!(read(r#""0012""#), Ok(12));
        assert_eq!(read(r#""18446744073709551615""#), Ok(u64::MAX));
        // A whole number written as a float, as JSON Schema's `integer` allows.
        assert_eq!(read("723655.0"), Ok(723_655));
        assert_eq!(read("12e0"), Ok(12));
        for bad in [
            r#""12a""#,
            r#""-1""#,
            r#""+1""#,
            r#"" 1""#,
            r#""""#,
            r#""1.0""#,
            r#""18446744073709551616""#,
            "-1",
            "1.5",
            "-1.0",
            "9007199254740992.0",
            "1e300",
            "true",
            "null",
            "[1]",
        ] {
            let e = read(bad).expect_err(bad);
            assert!(
                e.contains("expected an id") || e.contains("invalid type"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn in_range_for_paths_and_queries() {
        assert_eq!(parse_in_range("1"), Some(1));
        assert_eq!(parse_in_range("0"), None);
        assert_eq!(parse_in_range(&crate::MAX_ID.to_string()), None);
        assert_eq!(parse_in_range("9007199254740991"), Some(crate::MAX_ID - 1));
    }
}
