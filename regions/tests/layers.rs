//! The regions crate's layers hold (see the layout in `regions/src/lib.rs`): every module of
//! `regions/src` has a layer, and no file imports a module of a higher one; the pure core
//! (`regions/core`) depends on no crate that does I/O. It reads the source as text, so it
//! costs no build of its own (milliseconds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `regions/src` and its layer, lowest first. A new module needs
/// a line here: deciding its layer is the point.
const LAYERS: &[(&str, u8)] = &[
    // What every layer shares: the error type; the core's modules, re-exported.
    ("error", 0),
    ("add", 0),
    ("closed", 0),
    ("config", 0),
    ("conflict", 0),
    ("counter", 0),
    ("digest", 0),
    ("hlc", 0),
    ("mvcc", 0),
    ("op_ids", 0),
    ("placement", 0),
    ("protocol", 0),
    ("replica", 0),
    ("txn", 0),
    // The store port and its implementations.
    ("store", 1),
    // What a region needs before it runs.
    ("tls", 2),
    ("membership", 2),
    // The node.
    ("node", 3),
    // The loops between regions, over a node.
    ("replication", 4),
    ("antientropy", 4),
    ("rehome", 4),
    ("gossip", 4),
    ("gateway", 4),
    ("restore", 4),
    // The HTTP API.
    ("api", 5),
    // A client of the HTTP API.
    ("client", 5),
];

/// Names `lib.rs` re-exports at the crate root, and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Result", "error"),
    ("Region", "node"),
    ("Clock", "hlc"),
    ("ClockError", "hlc"),
    ("Timestamp", "hlc"),
    ("Config", "config"),
    ("Quorum", "config"),
];

/// The only dependencies the pure core may have: none of them does I/O.
const CORE_DEPENDENCIES: &[&str] = &["serde", "serde_json", "thiserror", "toml", "utoipa"];

fn layer_of_module(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The layer of what `crate::NAME` names: a module, or an item re-exported at the root.
fn layer_of_root_name(name: &str) -> Option<u8> {
    layer_of_module(name).or_else(|| {
        ROOT_ITEMS
            .iter()
            .find(|(item, _)| *item == name)
            .and_then(|(_, module)| layer_of_module(module))
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its tests module (at the end of a file, by the crate's habit) and
/// without comments (a `//` inside a string, as in a URL, is kept).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line.split(" //").next().unwrap_or_default(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The root names a file reaches through `crate::`: `crate::a::b` gives `a`, and
/// `crate::{a, b::c}` gives `a` and `b`.
fn crate_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.push(name);
        }
    }
    names
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut faults = Vec::new();
    let mut seen = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue; // the top: it wires every layer together
        }
        let Some(own) = layer_of_module(&module) else {
            faults.push(format!(
                "{}: module {module} has no layer in LAYERS",
                relative.display()
            ));
            continue;
        };
        seen.insert(module.clone(), own);
        for name in crate_names(&code(&std::fs::read_to_string(file).unwrap())) {
            match layer_of_root_name(&name) {
                Some(theirs) if theirs > own => faults.push(format!(
                    "{}: {module} (layer {own}) imports crate::{name} (layer {theirs})",
                    relative.display()
                )),
                Some(_) => {}
                None => faults.push(format!(
                    "{}: crate::{name} is neither a module nor a root item listed here",
                    relative.display()
                )),
            }
        }
    }
    assert!(faults.is_empty(), "layering broken:\n{}", faults.join("\n"));
    assert!(seen.contains_key("node") && seen.contains_key("api"), "read {seen:?}");
}

#[test]
fn the_pure_core_depends_on_no_crate_that_does_io() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut section = "";
    let mut dependencies = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]"
            && let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            dependencies.push(name.trim().split('.').next().unwrap_or_default().to_owned());
        }
    }
    let extra: Vec<&String> = dependencies
        .iter()
        .filter(|d| !CORE_DEPENDENCIES.contains(&d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "regions/core may depend only on {CORE_DEPENDENCIES:?} (no runtime, database, network or \
         file crate); it also lists {extra:?}"
    );
    assert!(dependencies.iter().any(|d| d == "serde"), "read {dependencies:?}");
}

#[test]
fn the_checker_sees_an_upward_import() {
    let store_file = "use crate::node::Region;\nfn f() { crate::api::router(); }\n// crate::gossip\n";
    let names = crate_names(&code(store_file));
    assert_eq!(names, ["node", "api"]);
    let higher: Vec<&String> = names
        .iter()
        .filter(|n| layer_of_root_name(n) > layer_of_module("store"))
        .collect();
    assert_eq!(higher, ["node", "api"]);
    assert_eq!(crate_names("use crate::{Error, Result};"), ["Error", "Result"]);
    assert_eq!(layer_of_root_name("Region"), layer_of_module("node"));
}
