//! The crate's layout stays what `src/lib.rs` says it is (issue 17):
//!
//! * dependencies between the top-level modules go one way — no module reaches, directly or
//!   through others, a module that reaches it back. Six pairs once imported each other (the
//!   wiring and the HTTP layer, the hub and the sockets, …), which made every change touch
//!   both sides;
//! * the crate map (`//! # Layout` in `src/lib.rs`) names every top-level module.
//!
//! Read from the sources: an edge is any `crate::NAME` outside a comment, in any file of a
//! module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules declared in `lib.rs`.
fn modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// Every `.rs` file of module `name` (`src/name.rs`, and `src/name/**`).
fn files(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src().join(format!("{name}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src().join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The leading identifier of `text`.
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level names `code` reaches through `crate::` paths, groups (`crate::{a, b::c}`)
/// included.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest).to_owned());
            continue;
        };
        // The group's top-level items, up to its closing brace.
        let (mut depth, mut item_start) = (1, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 1 => item_start = true,
                c if item_start && depth == 1 && !c.is_whitespace() => {
                    found.insert(ident(&group[i..]).to_owned());
                    item_start = false;
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
        }
    }
    found
}

/// Module → the other top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut uses = BTreeSet::new();
        for file in files(module) {
            let text = std::fs::read_to_string(&file).expect("source file");
            // Comments (doc links included) name modules without depending on them.
            let code: String = text
                .lines()
                .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
                .collect::<Vec<_>>()
                .join("\n");
            uses.extend(
                crate_paths(&code)
                    .into_iter()
                    .filter(|m| m != module && modules.contains(m)),
            );
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle through `graph`, if there is one, as the path that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in &graph[module] {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(graph, m, &mut Vec::new(), &mut done))
}

#[test]
fn reads_every_kind_of_crate_path() {
    let code = "use crate::a::B;\nuse crate::{\n    b::{C, D},\n    c,\n};\nlet x = crate::d::f();";
    let found: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d"]);
    let mut knot = BTreeMap::new();
    knot.insert("x".to_owned(), BTreeSet::from(["y".to_owned()]));
    knot.insert("y".to_owned(), BTreeSet::from(["z".to_owned()]));
    knot.insert("z".to_owned(), BTreeSet::from(["x".to_owned()]));
    assert_eq!(
        cycle(&knot),
        Some(vec!["x".into(), "y".into(), "z".into(), "x".into()])
    );
    knot.insert("z".to_owned(), BTreeSet::new());
    assert_eq!(cycle(&knot), None);
}

#[test]
fn top_level_modules_depend_one_way() {
    let graph = graph();
    // The sources were read: the wiring uses the HTTP layer.
    assert!(graph["app"].contains("http"), "{graph:#?}");
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "these modules import each other in a circle: {}\n(the full graph: {graph:#?})",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_crate_map_names_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let layout: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "# Layout")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("# "))
        .collect::<Vec<_>>()
        .join("\n");
    for module in modules() {
        assert!(
            layout.contains(&format!("[`{module}`]")),
            "the `# Layout` section of src/lib.rs does not name module `{module}`"
        );
    }
}
