//! The rules, as a pure function of the scanned sources and the lock.

use std::collections::{BTreeMap, HashMap};

use crate::compat;
use crate::lock::{Entry, Lock, Locked};
use crate::problem::{Error, Problem};
use crate::scan::{Handler, Scan, Signature, Written};
use crate::schema::{Ty, Types};

/// What a passing check produced.
pub(crate) struct Outcome {
    pub(crate) lock: Lock,
    pub(crate) added: Vec<String>,
    pub(crate) updated: Vec<String>,
    pub(crate) retired: Vec<String>,
}

/// Checks `scan` against `locked`; in update mode every change is accepted and removed handlers
/// are retired.
pub(crate) fn check(scan: &Scan, locked: &Lock, update: bool) -> Result<Outcome, Error> {
    let handlers = &scan.handlers;
    let mut problems = collisions(handlers);
    let by_name: HashMap<&str, &Handler> =
        handlers.iter().map(|h| (h.wire_name.as_str(), h)).collect();

    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let (mut retired, mut updated) = (Vec::new(), Vec::new());
    for e in &locked.entries {
        if e.is_retired() {
            let reuse = handlers
                .iter()
                .find(|h| h.id == e.id || h.wire_name == e.wire_name);
            if let Some(h) = reuse {
                problems.push(Problem::ReusedRetired {
                    retired: e.wire_name.clone(),
                    id: e.id,
                    by: format!("`{}` ({})", h.wire_name, h.location),
                });
            }
            entries.insert(e.wire_name.clone(), e.clone());
            continue;
        }
        let Some(h) = by_name.get(e.wire_name.as_str()) else {
            if update {
                retired.push(e.wire_name.clone());
                entries.insert(e.wire_name.clone(), e.retired());
            } else {
                problems.push(Problem::Removed {
                    handler: e.wire_name.clone(),
                    id: e.id,
                });
                entries.insert(e.wire_name.clone(), e.clone());
            }
            continue;
        };
        if !update {
            if h.id != e.id {
                problems.push(Problem::IdChanged {
                    handler: h.wire_name.clone(),
                    location: h.location.clone(),
                    old: e.id,
                    new: h.id,
                });
            }
            match &e.locked {
                Locked::Signature(old) => {
                    problems.extend(structural(h, old, &locked.types, &scan.types));
                }
                Locked::Written(shape, old) => {
                    problems.extend(as_written(h, *shape, old));
                }
                Locked::Retired => {}
            }
        }
        let now = Entry::from_handler(h);
        if now.locked != e.locked || !same_types(&now, &locked.types, &scan.types) {
            updated.push(h.wire_name.clone());
        }
        entries.insert(e.wire_name.clone(), now);
    }
    let mut added = Vec::new();
    for h in handlers {
        if !entries.contains_key(&h.wire_name) {
            added.push(h.wire_name.clone());
            entries.insert(h.wire_name.clone(), Entry::from_handler(h));
        }
    }
    if !problems.is_empty() {
        return Err(Error { problems });
    }
    Ok(Outcome {
        lock: Lock {
            entries: entries.into_values().collect(),
            types: scan.types.clone(),
        },
        added,
        updated,
        retired,
    })
}

/// Collisions inside the sources fail even in update mode: they can never work.
fn collisions(handlers: &[Handler]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut by_id: HashMap<u32, &Handler> = HashMap::new();
    let mut by_name: HashMap<&str, &Handler> = HashMap::new();
    for h in handlers {
        if let Some(first) = by_id.insert(h.id, h) {
            problems.push(Problem::Collision {
                what: format!("the id {:#010x}", h.id),
                first: format!("`{}` ({})", first.wire_name, first.location),
                second: format!("`{}` ({})", h.wire_name, h.location),
            });
        }
        if let Some(first) = by_name.insert(&h.wire_name, h) {
            problems.push(Problem::Collision {
                what: format!("the wire name `{}`", h.wire_name),
                first: first.location.clone(),
                second: h.location.clone(),
            });
        }
    }
    problems
}

/// The structural rules, part by part.
fn structural(h: &Handler, old: &Signature, old_types: &Types, new_types: &Types) -> Vec<Problem> {
    let new = &h.signature;
    let mut problems = Vec::new();
    if old.shape != new.shape {
        problems.push(Problem::SignatureChanged {
            handler: h.wire_name.clone(),
            location: h.location.clone(),
            part: "shape",
            old: old.shape.to_string(),
            new: new.shape.to_string(),
            as_written: false,
        });
    }
    let parts: [(&'static str, Option<&Ty>, Option<&Ty>); 5] = [
        ("request", Some(&old.request), Some(&new.request)),
        ("input item", old.input.as_ref(), new.input.as_ref()),
        ("output item", old.output.as_ref(), new.output.as_ref()),
        ("response", Some(&old.response), Some(&new.response)),
        ("error", Some(&old.error), Some(&new.error)),
    ];
    for (part, o, n) in parts {
        // A stream end that appeared or vanished is the shape change reported above.
        let (Some(o), Some(n)) = (o, n) else { continue };
        for finding in compat::compare(o, old_types, n, new_types) {
            problems.push(Problem::Incompatible {
                handler: h.wire_name.clone(),
                location: h.location.clone(),
                part,
                finding,
            });
        }
    }
    problems
}

/// A lock from before structural records: the old rules, on types as written.
fn as_written(h: &Handler, shape: grid_wire::Shape, old: &Written) -> Vec<Problem> {
    let new = &h.written;
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
    let parts: [(&'static str, String, String); 5] = [
        ("shape", shape.to_string(), h.shape().to_string()),
        ("request type", old.request.clone(), new.request.clone()),
        ("input item type", opt(&old.input), opt(&new.input)),
        ("output item type", opt(&old.output), opt(&new.output)),
        ("response type", old.response.clone(), new.response.clone()),
    ];
    parts
        .into_iter()
        .filter(|(_, o, n)| o != n)
        .map(|(part, old, new)| Problem::SignatureChanged {
            handler: h.wire_name.clone(),
            location: h.location.clone(),
            part,
            old,
            new,
            as_written: true,
        })
        .collect()
}

/// True when every definition `entry` reaches reads the same in both tables (so the lock's
/// record of this handler did not change).
fn same_types(entry: &Entry, old: &Types, new: &Types) -> bool {
    let Locked::Signature(s) = &entry.locked else {
        return true;
    };
    let mut keys = Vec::new();
    let mut stack: Vec<&Ty> = vec![&s.request, &s.response, &s.error];
    stack.extend(s.input.iter().chain(s.output.iter()));
    let mut seen = std::collections::HashSet::new();
    while let Some(t) = stack.pop() {
        crate::scan::collect_keys(t, &mut keys);
        while let Some(k) = keys.pop() {
            if !seen.insert(k.clone()) {
                continue;
            }
            if old.get(&k) != new.get(&k) {
                return false;
            }
            if let Some(d) = new.get(&k) {
                for t in crate::scan::def_tys(d) {
                    crate::scan::collect_keys(t, &mut keys);
                }
            }
        }
    }
    true
}
