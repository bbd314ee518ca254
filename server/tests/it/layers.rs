//! The server's architecture, checked: its top-level modules import each other in no
//! cycle, the domain never reaches into the HTTP edge, no domain module names axum, and
//! only the store names sqlx (and the store names no other module: it is the bottom).
//!
//! Every `.rs` file under `server/src` is parsed (syn) and every path that starts with
//! `crate::` — in `use` trees, braces included, and in expressions and types — counts as
//! an edge from the file's top-level module (`http/auth/principal.rs` is `http`) to the
//! module it names. Test code (`#[cfg(test)]` items and `tests.rs` files) is left out: a
//! test may reach anywhere. (`cargo modules dependencies --acyclic` was tried: it reports
//! a type and its own constructor as a cycle, so it cannot gate a build.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Modules that make up the HTTP edge: only they may use axum, and nothing else may use
/// them (`lib.rs` and `main.rs` wire everything together and are not counted).
const EDGE: &[&str] = &["http", "metrics"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// The top-level module a file belongs to.
fn top_module(file: &Path) -> String {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// Collects `crate::<name>` references and the outside crates named, skipping test code.
#[derive(Default)]
struct References {
    modules: BTreeSet<String>,
    crates: BTreeSet<String>,
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for References {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_use_tree(&mut self, tree: &'ast syn::UseTree) {
        fn walk(refs: &mut References, tree: &syn::UseTree, under_crate: bool) {
            match tree {
                syn::UseTree::Path(p) if p.ident == "crate" => walk(refs, &p.tree, true),
                syn::UseTree::Path(p) => {
                    if under_crate {
                        refs.modules.insert(p.ident.to_string());
                    } else {
                        refs.crates.insert(p.ident.to_string());
                    }
                }
                syn::UseTree::Name(n) if under_crate => {
                    refs.modules.insert(n.ident.to_string());
                }
                syn::UseTree::Name(n) => {
                    refs.crates.insert(n.ident.to_string());
                }
                syn::UseTree::Rename(r) if under_crate => {
                    refs.modules.insert(r.ident.to_string());
                }
                syn::UseTree::Group(g) => {
                    for tree in &g.items {
                        walk(refs, tree, under_crate);
                    }
                }
                _ => {}
            }
        }
        walk(self, tree, false);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let Some(first) = segments.next() {
            if first.ident == "crate"
                && let Some(second) = segments.next()
            {
                self.modules.insert(second.ident.to_string());
            }
            if first.ident != "crate" {
                self.crates.insert(first.ident.to_string());
            }
        }
        syn::visit::visit_path(self, path);
    }
}

/// Top-level module → the modules it names (itself left out), or the outside crates.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph of modules, and which outside crates each module names.
fn graph() -> (Graph, Graph) {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    let mut crates = Graph::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let module = top_module(&file);
        if name == "tests.rs" || module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = syn::parse_file(&text)
            .unwrap_or_else(|err| panic!("cannot parse {}: {err}", file.display()));
        let mut refs = References::default();
        refs.visit_file(&parsed);
        crates
            .entry(module.clone())
            .or_default()
            .extend(refs.crates);
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(refs.modules.into_iter().filter(|m| *m != module));
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|m| known.contains(m));
    }
    (graph, crates)
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan.found
}

#[test]
fn the_servers_modules_import_each_other_in_no_cycle() {
    let (graph, _) = graph();
    assert!(graph.len() > 5, "the walk found the modules: {graph:?}");
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "modules that import each other in a cycle: {found:?}\n(graph: {graph:#?})"
    );
}

#[test]
fn the_domain_reaches_neither_into_the_edge_nor_for_axum() {
    let (graph, crates) = graph();
    for (module, edges) in &graph {
        if EDGE.contains(&module.as_str()) {
            continue;
        }
        for edge in EDGE {
            assert!(
                !edges.contains(*edge),
                "{module} uses crate::{edge}: the domain must not depend on the HTTP edge"
            );
        }
        assert!(
            !crates[module].contains("axum"),
            "{module} names axum: HTTP types belong to the edge"
        );
    }
}

#[test]
fn only_the_store_speaks_sql_and_it_depends_on_no_other_module() {
    let (graph, crates) = graph();
    for (module, named) in &crates {
        if module != "store" {
            assert!(
                !named.contains("sqlx"),
                "{module} names sqlx: queries and connections belong to the store"
            );
        }
    }
    assert!(
        crates["store"].contains("sqlx"),
        "the walk sees the store's sqlx"
    );
    assert!(
        graph["store"].is_empty(),
        "the store is the bottom layer, yet it uses {:?}",
        graph["store"]
    );
}

#[test]
fn the_check_sees_a_cycle_when_there_is_one() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    graph.insert("d".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let refs = {
        let file = syn::parse_file(
            "use crate::{fleet::Fleet, store};\nfn f() { crate::clock::unix_ms_now(); }\n\
             #[cfg(test)] mod tests { use crate::http; }",
        )
        .unwrap();
        let mut refs = References::default();
        refs.visit_file(&file);
        refs.modules
    };
    let crates = {
        let file = syn::parse_file("use axum::Router;\nfn f() { sqlx::query(\"\"); }").unwrap();
        let mut refs = References::default();
        refs.visit_file(&file);
        refs.crates
    };
    assert!(
        crates.contains("axum") && crates.contains("sqlx"),
        "{crates:?}"
    );
    assert_eq!(
        refs,
        BTreeSet::from(["clock".to_owned(), "fleet".to_owned(), "store".to_owned()]),
        "braces and paths count; test code does not"
    );
}
