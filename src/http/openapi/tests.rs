//! The generated document is sound: every reference resolves, every error response is the
//! `Error` schema, and the error codes it lists are the daemon's.

use serde_json::Value;

use super::*;

fn document() -> Value {
    Api::new(&LimitsConfig::default()).document()
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "{found:?}");
    for target in found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
}

#[test]
fn every_operation_says_who_may_call_it_and_how_it_fails() {
    let doc = document();
    let resolve = |v: &Value| -> Value {
        match v["$ref"].as_str() {
            Some(target) => doc
                .pointer(target.trim_start_matches('#'))
                .cloned()
                .expect("resolves"),
            None => v.clone(),
        }
    };
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let what = format!("{method} {path}");
            assert!(op["security"].is_array(), "{what}: no security");
            assert!(op["summary"].is_string(), "{what}: no summary");
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.contains_key("405"), "{what}");
            let secured = !op["security"].as_array().expect("array").is_empty();
            if secured {
                assert!(
                    responses.contains_key("401"),
                    "{what}: secured without a 401"
                );
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415"] {
                    assert!(
                        responses.contains_key(status),
                        "{what}: body without {status}"
                    );
                }
            }
            for (status, response) in responses {
                let response = resolve(response);
                assert!(response["description"].is_string(), "{what} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    let named = schema["$ref"].as_str().unwrap_or_default();
                    assert!(
                        named == "#/components/schemas/Error"
                            || (path.contains("health") || path == "/ready") && status == "503",
                        "{what} {status}: {schema}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_error_schema_lists_every_code() {
    let doc = document();
    let listed: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|v| v.as_str().expect("code"))
        .collect();
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, codes);
}
