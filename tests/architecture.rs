//! The layer map of `docs/architecture.md`, checked against the code: which top-level
//! module may use which (`crate::x` paths in `src/`). Every module sits in a layer and
//! uses only lower ones; the leaves import nothing of the crate but each other's pure
//! parts; there is no cycle between top-level modules.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Leaves: what each may use of the crate.
const LEAVES: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("config", &["api"]),
    ("store", &["api"]),
    ("util", &[]),
];

/// The layers of ../shared/ARCHITECTURE.md, bottom up: a module may use only modules
/// of lower layers, and of its own layer only in the layers of `SAME_LAYER_OK` (the
/// API server never imports the client, components never import each other: shared
/// logic moves down).
const LAYERS: &[(&str, &[&str])] = &[
    ("L0 leaves", &["api", "config", "util"]),
    ("L1 boundaries", &["store", "pki", "cri", "net", "host"]),
    ("L2 API", &["apiserver", "client"]),
    ("L3 runtime", &["runtime"]),
    (
        "L4 components",
        &[
            "controllers",
            "scheduler",
            "kubelet",
            "overlay",
            "proxy",
            "policy",
            "dns",
        ],
    ),
    ("L5 assembly", &["server", "agent"]),
    ("L6 entry", &["cli", "sim"]),
];

/// Layers whose modules may use each other: the leaves (within what `LEAVES` allows),
/// the assembly (the server starts the embedded agent, as k3s' does) and the entry.
const SAME_LAYER_OK: &[&str] = &["L0 leaves", "L5 assembly", "L6 entry"];

/// Edges that break the layering today, each a debt with its reason. Removing one is
/// welcome; adding one fails.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

/// The top-level module a source file belongs to (`src/apiserver/x.rs` → apiserver).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)]` tail (tests may
/// reach anywhere); nothing of a file that is a test module (`#![cfg(test)]`).
fn code(text: &str) -> String {
    if text.lines().any(|l| l.trim() == "#![cfg(test)]") {
        return String::new();
    }
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::x` a file uses, also in grouped imports (`use crate::{a, b::c}`).
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}}`: the first segment of each top-level item
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_segment(&item));
        } else {
            out.insert(first_segment(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn first_segment(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&root, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(&root, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for to in uses(&code(&text)) {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// The edges inside strongly connected components (Tarjan's algorithm).
fn cycle_edges(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<(String, String)> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        comp: BTreeMap<&'a str, usize>,
        next: usize,
        comps: usize,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(out) = t.g.get(v) {
            for w in out {
                if !t.index.contains_key(w.as_str()) {
                    visit(t, w);
                    let l = t.low[w.as_str()].min(t.low[v]);
                    t.low.insert(v, l);
                } else if t.on.contains(w.as_str()) {
                    let l = t.index[w.as_str()].min(t.low[v]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                t.comp.insert(w, t.comps);
                if w == v {
                    break;
                }
            }
            t.comps += 1;
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        comp: BTreeMap::new(),
        next: 0,
        comps: 0,
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a.as_str()).chain(bs.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    let mut out = BTreeSet::new();
    for (a, bs) in g {
        for b in bs {
            if t.comp.get(a.as_str()) == t.comp.get(b.as_str()) {
                out.insert((a.clone(), b.clone()));
            }
        }
    }
    out
}

#[test]
fn leaves_use_only_what_the_map_allows() {
    let g = graph();
    for (leaf, allowed) in LEAVES {
        let used = g.get(*leaf).cloned().unwrap_or_default();
        let extra: Vec<&String> = used
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{leaf} may use only {allowed:?}, but uses {extra:?}"
        );
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

#[test]
fn every_module_has_a_layer_and_uses_only_lower_layers() {
    let g = graph();
    let mut wrong = BTreeSet::new();
    for (from, tos) in &g {
        let f = layer_of(from).unwrap_or_else(|| panic!("module {from} is in no layer of LAYERS"));
        for to in tos {
            let t = layer_of(to).unwrap_or_else(|| panic!("module {to} is in no layer of LAYERS"));
            let ok = t < f || (t == f && SAME_LAYER_OK.contains(&LAYERS[f].0));
            if !ok {
                wrong.insert((from.clone(), to.clone()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_EXCEPTIONS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = wrong.difference(&known).collect();
    assert!(
        new.is_empty(),
        "edges that do not point down the layer map (docs/architecture.md): {new:?}"
    );
    let gone: Vec<_> = known.difference(&wrong).collect();
    assert!(
        gone.is_empty(),
        "these edges follow the map now: remove them from KNOWN_EXCEPTIONS: {gone:?}"
    );
}

#[test]
fn no_cycle_between_top_level_modules() {
    let cycles = cycle_edges(&graph());
    assert!(
        cycles.is_empty(),
        "edges closing a cycle between top-level modules: {cycles:?} (the layer map is in docs/architecture.md)"
    );
}

#[test]
fn the_import_reader_sees_grouped_and_plain_paths() {
    let u = uses(
        "use crate::{api::meta, store::{Store, sled}};\nlet x = crate::pki::join::Token::parse(t);",
    );
    assert_eq!(u.into_iter().collect::<Vec<_>>(), ["api", "pki", "store"]);
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["a".to_string(), "c".to_string()].into()),
    ]
    .into();
    let c = cycle_edges(&g);
    assert!(c.contains(&("a".into(), "b".into())) && c.contains(&("b".into(), "a".into())));
    assert!(!c.contains(&("b".into(), "c".into())));
}

/// Where `anyhow` may appear: the command-line edge (`cli`, which holds the benches)
/// and the simulator. Every other module has its own error type.
const ANYHOW_ALLOWED: &[&str] = &["cli", "sim"];

#[test]
fn anyhow_only_at_the_command_line_edge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut offenders = Vec::new();
    for f in &files {
        let Some(module) = module_of(&root, f) else {
            continue;
        };
        if ANYHOW_ALLOWED.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        if code(&text).contains("anyhow") {
            offenders.push(f.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "anyhow outside the command-line edge (give the module a thiserror enum): {offenders:?}"
    );
    // the check sees what it looks for
    assert!(code("fn f() -> anyhow::Result<()> {}").contains("anyhow"));
}

/// Whether a line of code returns a bare `String` as its error (`Result<T, String>`,
/// generics of `T` included).
fn string_error(line: &str) -> bool {
    let mut rest = line;
    while let Some(i) = rest.find("Result<") {
        let mut depth = 0usize;
        let inner = &rest[i + "Result<".len()..];
        let mut last_comma = None;
        for (j, ch) in inner.char_indices() {
            match ch {
                '<' | '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => last_comma = Some(j),
                '>' if depth == 0 => {
                    if last_comma.is_some_and(|c| inner[c + 1..j].trim() == "String") {
                        return true;
                    }
                    break;
                }
                '>' => depth -= 1,
                _ => {}
            }
        }
        rest = &rest[i + 1..];
    }
    false
}

#[test]
fn errors_are_types_not_strings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut offenders = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in code(&text).lines().enumerate() {
            if string_error(line) {
                let file = f.strip_prefix(&root).unwrap().display();
                offenders.push(format!("{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "errors as strings (give the module a thiserror enum):\n{}",
        offenders.join("\n")
    );
    // the check sees what it looks for, and only that
    assert!(string_error("fn f() -> Result<(), String> {"));
    assert!(string_error(
        "fn f() -> Result<Vec<(u64, Wire<'_>)>, String> {"
    ));
    assert!(string_error(
        "fn f() -> Result<Option<BTreeMap<String, String>>, String> {"
    ));
    assert!(!string_error(
        "fn f() -> Result<BTreeMap<String, String>, EnvError> {"
    ));
    assert!(!string_error("fn f() -> Result<String, Error> {"));
}

/// The generic verbs' files: per-kind behaviour belongs to a kind's strategy
/// (`apiserver/resources/kinds/`) or an admission plugin, never here.
const GENERIC_VERBS: &[&str] = &[
    "apiserver/resources/create.rs",
    "apiserver/resources/write.rs",
    "apiserver/resources/delete.rs",
    "apiserver/resources/list.rs",
    "apiserver/resources/watch.rs",
    "apiserver/resources/object.rs",
    "apiserver/watchcache.rs",
];

#[test]
fn generic_verbs_name_no_kind() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let names_a_kind = |code: &str| {
        ["kind ==", "kind !=", "plural ==", "plural !="]
            .iter()
            .any(|p| code.contains(&format!("{p} \"")))
    };
    for file in GENERIC_VERBS {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            !names_a_kind(&code(&text)),
            "{file} branches on a kind name: give the kind a Strategy instead"
        );
    }
    assert!(
        names_a_kind("if res.kind == \"Pod\" {}"),
        "the check sees a branch"
    );
}
