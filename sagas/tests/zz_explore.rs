use serde_json::json;
fn show(label: &str, v: serde_json::Value) {
    match sagas::validate::validate_value(&v) {
        Ok(_) => println!("{label}: OK"),
        Err(e) => { println!("{label}:"); for x in &e.0 { println!("    {:?}  {}", x.path, x.message); } }
    }
}
fn step(name: &str) -> serde_json::Value { json!({"name": name, "action": {"rust": {"handler": "h"}}}) }
#[test]
fn dump() {
    let mut s = step("a"); s["retry"] = json!({"max_attempts": 3, "bogus": 1});
    show("unknown in retry", json!({"name":"x","steps":[s]}));
    let mut s = step("a"); s["action"] = json!({"http": {"method": "POST", "url": "http://x", "bogus": 1}});
    show("unknown in http", json!({"name":"x","steps":[s]}));
    let mut s = step("a"); s["compensation"] = json!({"http": {"method": "FETCH", "url": "http://x"}});
    show("bad method in comp", json!({"name":"x","steps":[s]}));
    let mut s = step("a"); s["action"] = json!({"http": {"method": "FETCH", "url": "http://x"}});
    show("bad method in action", json!({"name":"x","steps":[s]}));
    show("unknown in defaults", json!({"name":"x","defaults":{"retry":{"x":1}},"steps":[step("a")]}));
    show("unknown top", json!({"name":"x","bogus":1,"steps":[step("a")]}));
    let mut s = step("a"); s["bogus"] = json!(1);
    show("unknown step", json!({"name":"x","steps":[s]}));
    let mut s = step("a"); s["action"] = json!({});
    show("empty action", json!({"name":"x","steps":[s]}));
    let mut s = step("a"); s["action"] = json!({"http": {"method": "POST", "url": "http://x"}, "rust": {"handler": "h"}});
    show("two kinds", json!({"name":"x","steps":[s]}));
    let mut s = step("a"); s["action"] = json!({"http": null});
    show("null http", json!({"name":"x","steps":[s]}));
    show("missing name", json!({"steps":[step("a")]}));
    show("missing action", json!({"name":"x","steps":[{"name":"a"}]}));
    show("wrong types", json!({"name":5,"steps":[{"name":"a","timeout_ms":"x","depends_on":"b","action":{"rust":{"handler":"h"}}}]}));
    show("steps not array", json!({"name":"x","steps":{}}));
    show("not object", json!([]));
    show("defaults bad retry 0", json!({"name":"x","defaults":{"retry":{"max_attempts":0}},"steps":[step("a"), {"name":"b","retry":{"jitter":false},"action":{"rust":{"handler":"h"}}}]}));
    show("huge attempts", json!({"name":"x","steps":[{"name":"a","retry":{"max_attempts":5000000000u64},"action":{"rust":{"handler":"h"}}}]}));
    show("empty steps", json!({"name":"x","steps":[]}));
    show("input schema bad", json!({"name":"x","input_schema":{"type":"bogus"},"steps":[step("a")]}));
    show("input schema bad2", json!({"name":"x","input_schema":5,"steps":[step("a")]}));
    show("neg timeout", json!({"name":"x","steps":[{"name":"a","timeout_ms":-1,"action":{"rust":{"handler":"h"}}}]}));
    show("float attempts", json!({"name":"x","steps":[{"name":"a","retry":{"max_attempts":1.5},"action":{"rust":{"handler":"h"}}}]}));
    show("cycle", json!({"name":"x","steps":[{"name":"a","depends_on":["c"],"action":{"rust":{"handler":"h"}}},{"name":"b","action":{"rust":{"handler":"h"}}},{"name":"c","action":{"rust":{"handler":"h"}}}]}));
    show("dup + dep", json!({"name":"x","steps":[step("a"), step("a"), {"name":"b","depends_on":["a"],"action":{"rust":{"handler":"h","params":{"v":"{{steps.a.output.x}}"}}}}]}));
    show("empty handler", json!({"name":"x","steps":[{"name":"a","action":{"rust":{"handler":" "}}}]}));
    show("json", serde_json::Value::Null);
    println!("{:?}", sagas::validate::parse_definition("{oops").unwrap_err().0);
}
