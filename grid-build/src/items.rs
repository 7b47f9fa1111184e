//! An index of the scanned sources: every module (from file paths and inline `mod`s), its `use`
//! imports, the structs, enums and type aliases it defines, and the `#[grid::handler]` traits.
//! It answers "which definition does this path name, seen from that module", the way rustc
//! would for the common cases; where it cannot tell, the caller falls back to comparing a type
//! as written.

use std::collections::HashMap;
use std::path::Path;

/// A module path from the crate root: `[]` is the root, `["model", "v2"]` is `model::v2`.
pub(crate) type ModPath = Vec<String>;

/// A type definition of the sources.
#[derive(Debug)]
pub(crate) struct TypeDef {
    pub(crate) module: ModPath,
    pub(crate) ident: String,
    pub(crate) item: DefItem,
}

/// The definition's syntax.
#[derive(Debug)]
pub(crate) enum DefItem {
    Struct(syn::ItemStruct),
    Enum(syn::ItemEnum),
    Alias(syn::ItemType),
}

impl TypeDef {
    pub(crate) fn generics(&self) -> &syn::Generics {
        match &self.item {
            DefItem::Struct(s) => &s.generics,
            DefItem::Enum(e) => &e.generics,
            DefItem::Alias(a) => &a.generics,
        }
    }
}

/// A `#[grid::handler]` trait and where it is.
#[derive(Debug)]
pub(crate) struct HandlerTrait {
    pub(crate) module: ModPath,
    pub(crate) file: std::path::PathBuf,
    pub(crate) item: syn::ItemTrait,
}

/// What a name imported with `use` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An item `ident` of a module of the sources.
    Local(ModPath, String),
    /// A path into another crate, as written (`uuid::Uuid`, `std::collections::HashMap`).
    External(Vec<String>),
}

#[derive(Debug, Default)]
struct Module {
    uses: HashMap<String, Target>,
    globs: Vec<Target>,
}

/// Everything the scanner found.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) defs: Vec<TypeDef>,
    pub(crate) traits: Vec<HandlerTrait>,
    modules: HashMap<ModPath, Module>,
}

/// The module a file is, relative to its source root: `lib.rs`/`main.rs` are the root,
/// `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`.
pub(crate) fn module_of_file(root: &Path, file: &Path) -> ModPath {
    let Ok(rel) = file.strip_prefix(root) else {
        return Vec::new();
    };
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
        let is_root = parts.is_empty() && (stem == "lib" || stem == "main");
        if stem != "mod" && !is_root {
            parts.push(stem);
        }
    }
    parts
}

fn is_handler_attr(a: &syn::Attribute) -> bool {
    let segs: Vec<String> = a
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    segs == ["grid", "handler"] || segs == ["handler"]
}

impl Index {
    /// Adds the items of one parsed file, which is module `module`.
    pub(crate) fn add_file(&mut self, file: &Path, module: ModPath, ast: &syn::File) {
        self.add_items(file, &module, &ast.items);
    }

    fn add_items(&mut self, file: &Path, module: &ModPath, items: &[syn::Item]) {
        self.modules.entry(module.clone()).or_default();
        for item in items {
            match item {
                syn::Item::Struct(s) => self.defs.push(TypeDef {
                    module: module.clone(),
                    ident: s.ident.to_string(),
                    item: DefItem::Struct(s.clone()),
                }),
                syn::Item::Enum(e) => self.defs.push(TypeDef {
                    module: module.clone(),
                    ident: e.ident.to_string(),
                    item: DefItem::Enum(e.clone()),
                }),
                syn::Item::Type(t) => self.defs.push(TypeDef {
                    module: module.clone(),
                    ident: t.ident.to_string(),
                    item: DefItem::Alias(t.clone()),
                }),
                syn::Item::Trait(t) if t.attrs.iter().any(is_handler_attr) => {
                    self.traits.push(HandlerTrait {
                        module: module.clone(),
                        file: file.to_path_buf(),
                        item: t.clone(),
                    });
                }
                syn::Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        let mut sub = module.clone();
                        sub.push(m.ident.to_string());
                        self.add_items(file, &sub, inner);
                    }
                }
                syn::Item::Use(u) => self.add_use(module, &u.tree, Vec::new()),
                // Items inside a function body see the enclosing module; treat them as its own.
                syn::Item::Fn(f) => {
                    let inner: Vec<syn::Item> = f
                        .block
                        .stmts
                        .iter()
                        .filter_map(|s| match s {
                            syn::Stmt::Item(i) => Some(i.clone()),
                            _ => None,
                        })
                        .collect();
                    self.add_items(file, module, &inner);
                }
                _ => {}
            }
        }
    }

    fn add_use(&mut self, module: &ModPath, tree: &syn::UseTree, mut prefix: Vec<String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.add_use(module, &p.tree, prefix);
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                if name == "self" {
                    if let Some(last) = prefix.last().cloned() {
                        let target = self.use_target(module, &prefix);
                        self.module_mut(module).uses.insert(last, target);
                    }
                } else {
                    prefix.push(name.clone());
                    let target = self.use_target(module, &prefix);
                    self.module_mut(module).uses.insert(name, target);
                }
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                let target = self.use_target(module, &prefix);
                self.module_mut(module)
                    .uses
                    .insert(r.rename.to_string(), target);
            }
            syn::UseTree::Glob(_) => {
                // The glob's module, as a target whose "item" is empty.
                prefix.push(String::new());
                let target = self.use_target(module, &prefix);
                self.module_mut(module).globs.push(target);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.add_use(module, t, prefix.clone());
                }
            }
        }
    }

    fn module_mut(&mut self, module: &ModPath) -> &mut Module {
        self.modules.entry(module.clone()).or_default()
    }

    /// Where `use a::b::c` in `module` points. `crate`, `self` and `super` are resolved; a first
    /// segment naming a child module is local (2018 paths); anything else is another crate.
    fn use_target(&self, module: &ModPath, path: &[String]) -> Target {
        let Some((last, dirs)) = path.split_last() else {
            return Target::External(Vec::new());
        };
        match local_module(module, dirs) {
            Some(m) => Target::Local(m, last.clone()),
            None => Target::External(path.to_vec()),
        }
    }

    /// True when `module` was seen (as a file or an inline `mod`).
    pub(crate) fn has_module(&self, module: &ModPath) -> bool {
        self.modules.contains_key(module)
    }

    /// The definitions named `ident` in `module`.
    pub(crate) fn defs_in(&self, module: &ModPath, ident: &str) -> Vec<usize> {
        self.defs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.ident == ident && &d.module == module)
            .map(|(i, _)| i)
            .collect()
    }

    /// The definitions named `ident` anywhere.
    pub(crate) fn defs_named(&self, ident: &str) -> Vec<usize> {
        self.defs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.ident == ident)
            .map(|(i, _)| i)
            .collect()
    }

    /// What `use` says `name` is in `module`.
    pub(crate) fn import(&self, module: &ModPath, name: &str) -> Option<&Target> {
        self.modules.get(module)?.uses.get(name)
    }

    /// The glob imports of `module`.
    pub(crate) fn globs(&self, module: &ModPath) -> &[Target] {
        self.modules.get(module).map_or(&[], |m| m.globs.as_slice())
    }
}

/// The module a path's directory part names from `module`, when it starts with `crate`,
/// `self` or `super`. `None` for a path into another crate (or one grid-build cannot place).
pub(crate) fn local_module(module: &ModPath, dirs: &[String]) -> Option<ModPath> {
    let (first, rest) = match dirs.split_first() {
        Some(x) => x,
        None => return Some(module.clone()),
    };
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => {
            let mut m = module.clone();
            m.pop()?;
            m
        }
        _ => return None,
    };
    for seg in rest {
        if seg == "super" {
            base.pop()?;
        } else if seg != "self" {
            base.push(seg.clone());
        }
    }
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_modules() {
        let root = Path::new("/c/src");
        let m = |f: &str| module_of_file(root, Path::new(f));
        assert!(m("/c/src/lib.rs").is_empty());
        assert!(m("/c/src/main.rs").is_empty());
        assert_eq!(m("/c/src/model.rs"), ["model"]);
        assert_eq!(m("/c/src/model/mod.rs"), ["model"]);
        assert_eq!(m("/c/src/model/v2.rs"), ["model", "v2"]);
    }

    #[test]
    fn uses_are_resolved_to_modules_or_other_crates() {
        let ast: syn::File = syn::parse_str(
            "use crate::model::{Item, v2::Item as Item2}; use super::*; use uuid::Uuid; \
             mod inner { use super::Item; pub struct Local; }",
        )
        .expect("parses");
        let mut ix = Index::default();
        ix.add_file(Path::new("x.rs"), vec!["a".into()], &ast);
        let a: ModPath = vec!["a".into()];
        assert_eq!(
            ix.import(&a, "Item"),
            Some(&Target::Local(vec!["model".into()], "Item".into()))
        );
        assert_eq!(
            ix.import(&a, "Item2"),
            Some(&Target::Local(
                vec!["model".into(), "v2".into()],
                "Item".into()
            ))
        );
        assert_eq!(
            ix.import(&a, "Uuid"),
            Some(&Target::External(vec!["uuid".into(), "Uuid".into()]))
        );
        assert_eq!(ix.globs(&a), [Target::Local(Vec::new(), String::new())]);
        let inner: ModPath = vec!["a".into(), "inner".into()];
        assert_eq!(
            ix.import(&inner, "Item"),
            Some(&Target::Local(a.clone(), "Item".into()))
        );
        assert_eq!(ix.defs_in(&inner, "Local").len(), 1);
    }
}
