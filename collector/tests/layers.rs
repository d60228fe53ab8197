//! The daemon's modules depend on each other in one direction only: no module reaches, through
//! the paths it names (`use crate::...`, `super::...`, inline `crate::` paths), back to itself.
//! A module declaring and re-exporting its own children is not counted; anything else is.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

#[test]
fn no_module_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let code = code_outside_tests(&text);
        let mut targets = Vec::new();
        for path in named_paths(&code) {
            let Some(target) = resolve(module, &path, &names) else {
                continue;
            };
            // A module imported by name (`use crate::ebpf;`) is used through that name:
            // `ebpf::block::SPEC`.
            let absolute = absolute(module, &path).unwrap_or_default();
            if target == absolute
                && let Some(alias) = target.rsplit("::").next()
            {
                for tail in paths_through(&code, alias) {
                    targets.extend(resolve("", &format!("crate::{target}::{tail}"), &names));
                }
            }
            targets.push(target);
        }
        for target in targets {
            let declares_child = target.starts_with(&format!("{module}::")) || module.is_empty();
            if target != *module && !target.is_empty() && !declares_child {
                edges.entry(module).or_default().insert(target);
            }
        }
    }
    assert!(
        edges.len() > 20,
        "the scan found too few dependencies to be trusted: {edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_scan_finds_a_cycle_when_there_is_one() {
    let edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("a", BTreeSet::from(["b".to_owned()])),
        ("b", BTreeSet::from(["c".to_owned()])),
        ("c", BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    let names = BTreeSet::from(["node", "node::cpu", "node::stat", "read"]);
    let paths = named_paths("use super::{stat::{CpuTimes, parse}};\nuse crate::{read, x::Y};");
    let resolved: Vec<_> = paths
        .iter()
        .filter_map(|p| resolve("node::cpu", p, &names))
        .collect();
    assert_eq!(resolved, ["node::stat", "node::stat", "read"]);
}

/// Module path (`node::cpu`; the crate root is "") → its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut modules = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            modules.insert(parts.join("::"), path);
        }
    }
    modules
}

/// The text before the file's test module, without line comments.
fn code_outside_tests(text: &str) -> String {
    let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or(text);
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names from `crate`, `super` or `self`, use trees expanded.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(start) = rest.find("use ") {
        let after = &rest[start + 4..];
        let Some(end) = after.find(';') else { break };
        expand(after[..end].trim(), "", &mut paths);
        rest = &after[end..];
    }
    // Inline paths outside `use` (`crate::ebpf::runtime::Hook { .. }` in a macro...).
    let bytes = code.as_bytes();
    for prefix in ["crate::", "super::"] {
        for (index, _) in code.match_indices(prefix) {
            let before = index.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let path: String = code[index..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            if path.contains("::") {
                paths.push(path.to_owned());
            }
        }
    }
    paths.retain(|p| p.starts_with("crate") || p.starts_with("super") || p.starts_with("self"));
    paths
}

/// Expands a use tree (`a::{b, c::{d}}`) under `prefix` into whole paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let join = |tail: &str| {
        if prefix.is_empty() {
            tail.to_owned()
        } else {
            format!("{prefix}::{tail}")
        }
    };
    match tree.find('{') {
        None => {
            let tree = tree.split(" as ").next().unwrap().trim();
            if !tree.is_empty() {
                out.push(join(tree.trim_end_matches("::*")));
            }
        }
        Some(open) => {
            let head = tree[..open].trim().trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let head = join(head);
            let mut depth = 0;
            let mut item = String::new();
            for c in inner.chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let part = std::mem::take(&mut item);
                        match part.trim() {
                            "" => {}
                            "self" => out.push(head.clone()),
                            part => expand(part, &head, out),
                        }
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        }
    }
}

/// The module `path`, named from `module`, lies in: the longest module prefix of its absolute
/// form. `None` for paths outside the crate.
fn resolve(module: &str, path: &str, names: &BTreeSet<&str>) -> Option<String> {
    let absolute = absolute(module, path)?;
    let segments: Vec<&str> = absolute.split("::").collect();
    (0..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| names.contains(candidate.as_str()))
}

/// `path` (from `crate`, `super` or `self`), named from `module`, from the crate root.
fn absolute(module: &str, path: &str) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    match segments.first().copied() {
        Some("crate") => {
            segments.remove(0);
            base.clear();
        }
        Some("super") | Some("self") => {
            while let Some(first) = segments.first().copied() {
                match first {
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                segments.remove(0);
            }
        }
        _ => return None,
    }
    base.extend(segments);
    Some(base.join("::"))
}

/// What follows `alias::` wherever the code names a path through it.
fn paths_through(code: &str, alias: &str) -> Vec<String> {
    let prefix = format!("{alias}::");
    let bytes = code.as_bytes();
    code.match_indices(&prefix)
        .filter(|(index, _)| {
            let before = index.checked_sub(1).map(|i| bytes[i]);
            !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        })
        .map(|(index, _)| {
            code[index + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect::<String>()
                .trim_end_matches(':')
                .to_owned()
        })
        .filter(|tail| !tail.is_empty())
        .collect()
}

/// A cycle in `edges`, as the modules on it with the first repeated at the end.
fn find_cycle(edges: &BTreeMap<&str, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<&str, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}
