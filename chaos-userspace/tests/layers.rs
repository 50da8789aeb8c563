//! The library's layers point one way: no top-level module imports one that imports it back
//! (front ends → service → engine → faults → kernel → net, and the vocabulary modules below).
//! Read from the source, so a new `use crate::...` that closes a circle fails here.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The identifiers a `crate::` path names first, in `crate::a::b` and `crate::{a, b::{c, d}}`.
fn crate_roots(text: &str) -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at depth 0 of the group.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && depth == 0 && !c.is_whitespace() => {
                        roots.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            roots.insert(ident(rest));
        }
    }
    roots
}

fn without_tests_and_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let top = |path: &Path| -> String {
        let relative = path.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| top(f)).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top(file);
        if from == "main" || from == "lib" {
            continue;
        }
        let text = without_tests_and_comments(&std::fs::read_to_string(file).expect("read"));
        for to in crate_roots(&text) {
            if to != from && modules.contains(&to) {
                imports.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    assert!(
        imports["frontend"].contains("service") && imports["engine"].contains("kernel"),
        "the scan found the imports it must: {imports:?}"
    );
    // A circle exists when a module reaches itself.
    for start in imports.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((module, path)) = stack.pop() {
            for next in imports.get(&module).into_iter().flatten() {
                assert!(
                    next != start,
                    "a circle of imports: {} -> {next}",
                    path.join(" -> ")
                );
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
}

#[test]
fn crate_roots_reads_grouped_paths() {
    let roots = crate_roots(
        "use crate::{\n    engine::{A, B},\n    kernel::x::{self, Y}, wire};\nlet a = crate::net::f();",
    );
    assert_eq!(
        roots,
        BTreeSet::from(["engine", "kernel", "net", "wire"].map(String::from))
    );
}
