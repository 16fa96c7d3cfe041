//! The shape of `src/`: its top-level modules (folders and root files) depend on each
//! other without a cycle, so the layers stay one-way:
//!
//!     server → http → ws → services (streams, sessions, viewers, chat, moderation, rtc,
//!     media) → auth → persist → store → domain, config, telemetry
//!
//! Dependencies are read from the code (every `crate::module` path outside unit tests),
//! the way a reader would follow them. No source file is longer than [`MAX_LINES`]
//! (unit-test files aside): a longer one holds more than one job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/chat/service.rs` → `chat`; `src/lib.rs` → `lib`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// The code of a file without its unit tests (by convention at the end, behind
/// `#[cfg(test)]` at the start of a line).
fn non_test_code(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Top-level modules named by `crate::x` paths, including grouped ones
/// (`use crate::{a::B, c}`).
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `streamedge_crate::` or `mycrate::` are not ours.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(is_ident) {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start_of_item = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start_of_item = true,
                    c if depth == 1 && start_of_item && is_ident(c) => {
                        let name: String =
                            group[j..].chars().take_while(|c| is_ident(*c)).collect();
                        out.insert(name);
                        start_of_item = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => start_of_item = false,
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let top = top_module(&src, &file);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if top == "lib" || top == "main" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let deps = graph.entry(top.clone()).or_default();
        for m in crate_references(non_test_code(&text)) {
            if m != top {
                deps.insert(m);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph
            .iter()
            .map(|(k, v)| {
                format!(
                    "  {k} -> {}",
                    v.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "import cycle between top-level modules of src/: {}\n(move what the lower module needs \
             down instead of importing upward)\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn the_lowest_layers_import_nothing_above_them() {
    let graph = module_graph();
    let allowed: [(&str, &[&str]); 4] = [
        ("config", &[]),
        ("domain", &[]),
        ("store", &["config", "domain"]),
        ("persist", &["config", "domain", "store"]),
    ];
    for (module, may) in allowed {
        let deps = graph.get(module).cloned().unwrap_or_default();
        let extra: Vec<_> = deps.iter().filter(|d| !may.contains(&d.as_str())).collect();
        assert!(extra.is_empty(), "{module} imports {extra:?}");
    }
}

#[test]
fn the_scanner_reads_grouped_and_plain_paths() {
    let refs = crate_references(
        "use crate::{http::AppState, store::{A, B}, config};\nlet x = crate::domain::clock::now_ms();\nmycrate::nope();",
    );
    let refs: Vec<_> = refs.into_iter().collect();
    assert_eq!(refs, ["config", "domain", "http", "store"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "a"]);
}

#[test]
fn no_source_file_holds_more_than_one_job() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with("_tests.rs"))
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let n = non_test_code(&text).lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
}
