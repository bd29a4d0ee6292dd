//! The source layout keeps its promises: no two modules of a crate import each other,
//! directly or around a loop.
//!
//! A module loop means neither module can be read, changed or tested without the other;
//! the architecture (docs/architecture.md) is a stack, and this test keeps it one. It reads
//! every crate's sources, takes each `crate::…` and `super::…` path outside comments (in
//! `use` lines and in code), resolves it to the module that defines it (an item the crate
//! root re-exports counts as its defining module's), and looks for strongly connected
//! groups in the graph. A module's `#[cfg(test)] mod tests` is a node of its own (nothing
//! imports it). Loops between crates cannot happen: cargo refuses them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates' source directories, relative to the workspace root.
const CRATES: [&str; 6] = ["proto/src", "link/src", "relay/src", "client/src", "cert/src", "src"];

/// A module path inside one crate, like `certs::ca` (the crate root is "").
type Module = String;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `relay/src/certs/ca.rs` → `certs::ca`; `lib.rs`/`main.rs` → the root; `x/mod.rs` → `x`.
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).expect("the file is under its crate");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

/// The source without comments (doc links name items without importing them).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `prefix` (`crate::` or `super::`), braces expanded one level
/// deep per group: `crate::{a, b::c}` gives `a` and `b::c`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find(prefix) {
        let start = at + i;
        at = start + prefix.len();
        // `some_crate::x` contains `crate::` only as part of an identifier.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        if bytes.get(at) == Some(&b'{') {
            let mut depth = 0;
            let mut end = at;
            for (j, c) in code[at..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = at + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &code[at + 1..end];
            let mut depth = 0;
            let mut item = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.push(item);
        } else {
            let path: String =
                code[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            found.push(path);
        }
    }
    found.into_iter().map(|p| p.trim().trim_end_matches("::").to_owned()).filter(|p| !p.is_empty()).collect()
}

/// The module a path names: its longest prefix that is a module, else the root's re-export.
fn resolve(path: &str, modules: &BTreeSet<Module>, reexports: &BTreeMap<String, Module>) -> Option<Module> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty() && *p != "self").collect();
    for n in (1..=parts.len()).rev() {
        let candidate = parts[..n].join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
    }
    parts.first().and_then(|first| reexports.get(*first).cloned())
}

/// Groups of modules that reach each other (Tarjan's strongly connected components).
fn loops(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                if !self.index.contains_key(next.as_str()) {
                    self.visit(next);
                    let low = self.low[next.as_str()].min(self.low[node]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next.as_str()) {
                    let low = self.index[next.as_str()].min(self.low[node]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    group.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.groups.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.groups
}

/// The module graph of the crate whose sources are in `root`.
fn module_graph(root: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut sources: Vec<(Module, String)> = Vec::new();
    for file in &files {
        let module = module_of(root, file);
        let code = code_of(&fs::read_to_string(file).expect("readable source"));
        // A unit-test module is a child that nothing imports: its own node, so that tests
        // reaching across the crate do not count as the module itself depending on it all.
        match code.find("#[cfg(test)]\nmod ") {
            Some(at) => {
                sources.push((format!("{module}::tests"), code[at..].to_owned()));
                sources.push((module, code[..at].to_owned()));
            }
            None => sources.push((module, code)),
        }
    }
    let modules: BTreeSet<Module> = sources.iter().map(|(m, _)| m.clone()).filter(|m| !m.is_empty()).collect();
    // `pub use x::{A, B}` at the root: a path `crate::A` depends on `x`.
    let mut reexports = BTreeMap::new();
    if let Some((_, lib)) = sources.iter().find(|(m, _)| m.is_empty()) {
        for line in lib.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
            let line = line.trim_end_matches(';');
            let Some((module, items)) = line.split_once("::") else { continue };
            if !modules.contains(module) {
                continue;
            }
            for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                let name = item.rsplit("::").next().unwrap_or("").trim();
                let name = name.rsplit(" as ").next().unwrap_or(name).trim();
                reexports.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &sources {
        if module.is_empty() {
            continue; // The root declares modules; it is not one of them.
        }
        let mut targets = BTreeSet::new();
        for path in paths_after(code, "crate::") {
            targets.extend(resolve(&path, &modules, &reexports));
        }
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        for path in paths_after(code, "super::") {
            let full = if parent.is_empty() { path } else { format!("{parent}::{path}") };
            targets.extend(
                resolve(&full, &modules, &reexports).or_else(|| (!parent.is_empty()).then(|| parent.to_owned())),
            );
        }
        targets.remove(module);
        graph.entry(module.clone()).or_default().extend(targets);
    }
    graph
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let mut crates_read = 0;
    for dir in CRATES {
        let root = workspace.join(dir);
        if !root.exists() {
            continue;
        }
        crates_read += 1;
        let graph = module_graph(&root);
        assert!(graph.len() > 1 || dir == "src", "{dir}: no modules found; is the path right?");
        for group in loops(&graph) {
            problems.push(format!("{dir}: {} import each other (directly or around a loop)", group.join(", ")));
        }
    }
    assert!(crates_read >= 5, "read only {crates_read} crates");
    assert!(problems.is_empty(), "module loops:\n{}", problems.join("\n"));
}

/// The checker itself finds a loop when there is one, and resolves the path forms the
/// code uses.
#[test]
fn the_checker_sees_loops_and_paths() {
    let code = "use crate::{a, b::{C, D}, e::F};\nfn f() { crate::g::h(); } // crate::not_this\n";
    assert_eq!(paths_after(&code_of(code), "crate::"), ["a", "b::{C, D}", "e::F", "g::h"]);
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(loops(&graph), [vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
    graph.get_mut("c").unwrap().clear();
    assert!(loops(&graph).is_empty());
}
