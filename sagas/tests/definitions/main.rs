//! Definition documents: data-driven validation fixtures, the published JSON Schema, and
//! what a checked definition is made of (dependencies, merged defaults, content hash).
//!
//! - `tests/fixtures/valid/*.json` and `../examples/*.json` must validate, with
//!   [`sagas::validate::parse_definition`] and against the committed JSON Schema.
//! - `tests/fixtures/invalid/*.json` are `{"about", "definition", "errors"}`: validating
//!   `definition` must fail with exactly the JSON Pointers of `errors`, in order.
//! - `../schemas/definition.schema.json` must be [`sagas::document::definition_schema`];
//!   `GEOSAGA_BLESS=1` rewrites it.

mod semantics;

use std::path::{Path, PathBuf};

use serde_json::Value;

const BLESS_HINT: &str = "run GEOSAGA_BLESS=1 cargo test -p geosaga-sagas --test definitions to regenerate";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema_path() -> PathBuf {
    manifest_dir().join("../schemas/definition.schema.json")
}

/// The `*.json` files of a directory, sorted by name so that failures are reproducible.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn name_of(path: &Path) -> String {
    let parent = path.parent().and_then(Path::file_name).unwrap_or_default();
    format!(
        "{}/{}",
        parent.to_string_lossy(),
        path.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Every definition that must validate: the valid fixtures and the shipped examples.
fn valid_documents() -> Vec<PathBuf> {
    let mut files = json_files(&manifest_dir().join("tests/fixtures/valid"));
    let examples = json_files(&manifest_dir().join("../examples"));
    assert!(
        examples.len() >= 2,
        "examples/transfer.json and examples/book_trip.json are missing"
    );
    files.extend(examples);
    files
}

/// Whether this run regenerates the committed schema (`GEOSAGA_BLESS=1`).
fn blessing() -> bool {
    std::env::var_os("GEOSAGA_BLESS").is_some_and(|v| v == "1")
}

/// The committed schema is exactly the generated one, pretty-printed with a final newline.
#[test]
fn committed_schema_is_up_to_date() {
    let generated =
        serde_json::to_string_pretty(&sagas::document::definition_schema()).expect("the schema is JSON") + "\n";
    let path = schema_path();
    if blessing() {
        std::fs::create_dir_all(path.parent().expect("schemas/ has a parent")).expect("create schemas/");
        std::fs::write(&path, &generated).expect("write the schema");
        return;
    }
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}; {BLESS_HINT}", path.display()));
    assert!(
        committed == generated,
        "{} is not the schema generated from sagas::document; {BLESS_HINT}",
        path.display()
    );
}

/// Every valid fixture and example parses into a definition, and also passes the committed
/// schema on its own (what an editor or another tool would check).
#[test]
fn valid_documents_validate() {
    let schema: Value = if blessing() {
        sagas::document::definition_schema() // being written by `committed_schema_is_up_to_date`
    } else {
        serde_json::from_str(&read(&schema_path())).unwrap_or_else(|e| panic!("bad schema file: {e}; {BLESS_HINT}"))
    };
    let validator = jsonschema::validator_for(&schema).expect("the committed schema compiles");
    let files = valid_documents();
    assert!(files.len() >= 6, "too few valid documents: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let text = read(path);
        if let Err(errors) = sagas::validate::parse_definition(&text) {
            failures.push(format!("{}: {errors}", name_of(path)));
        }
        let value: Value = serde_json::from_str(&text).expect("valid documents are JSON");
        for error in validator.iter_errors(&value) {
            failures.push(format!(
                "{} (schema): {}: {error}",
                name_of(path),
                error.instance_path().as_str()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "valid documents were refused:\n{}",
        failures.join("\n")
    );
}

/// Each invalid fixture fails with exactly the listed error paths, in order. All
/// mismatches are reported together, each with the messages that were actually produced.
#[test]
fn invalid_fixtures_report_exact_paths() {
    let files = json_files(&manifest_dir().join("tests/fixtures/invalid"));
    assert!(files.len() >= 20, "too few invalid fixtures: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let fixture: Value = serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", name_of(path)));
        let about = fixture["about"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no \"about\"", name_of(path)));
        let expected: Vec<&str> = fixture["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no \"errors\" array", name_of(path)))
            .iter()
            .map(|e| e.as_str().expect("error paths are strings"))
            .collect();
        assert!(
            !expected.is_empty(),
            "{}: an invalid fixture lists at least one error",
            name_of(path)
        );
        let definition = fixture
            .get("definition")
            .unwrap_or_else(|| panic!("{}: no \"definition\"", name_of(path)));
        let text = serde_json::to_string(definition).expect("a JSON value prints");
        match sagas::validate::parse_definition(&text) {
            Ok(_) => failures.push(format!("{} ({about}): validated, expected {expected:?}", name_of(path))),
            Err(errors) if errors.paths() != expected => {
                let got: Vec<String> = errors
                    .0
                    .iter()
                    .map(|e| format!("    {:?}: {}", e.path, e.message))
                    .collect();
                failures.push(format!(
                    "{} ({about}):\n  expected {expected:?}\n  got\n{}",
                    name_of(path),
                    got.join("\n")
                ));
            }
            Err(errors) => assert!(
                errors.0.iter().all(|e| !e.message.is_empty()),
                "{}: every error has a message",
                name_of(path)
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "invalid fixtures did not match:\n{}",
        failures.join("\n")
    );
}

/// Text that is not JSON is one error about the whole document.
#[test]
fn text_that_is_not_json_is_one_document_error() {
    let errors = sagas::validate::parse_definition("{ \"name\": ").unwrap_err();
    assert_eq!(errors.paths(), [""]);
    assert!(errors.0[0].message.starts_with("not valid JSON"), "{errors}");
    assert!(errors.to_string().starts_with("(document): not valid JSON"), "{errors}");
}

/// The error list renders as `path: message` pairs joined by `; `.
#[test]
fn errors_render_with_their_paths() {
    let errors = sagas::validate::parse_definition(r#"{"name": "a b", "steps": []}"#).unwrap_err();
    assert_eq!(errors.paths(), ["/name", "/steps"]);
    let text = errors.to_string();
    assert!(text.starts_with("/name: `a b` is not a valid name"), "{text}");
    assert!(text.contains("; /steps: a saga needs at least one step"), "{text}");
}
