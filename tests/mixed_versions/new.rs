//! The catalog service as the new build has it, next to `old.rs`: the request and the response
//! each gained a field with a default, `list` is new, and `count` is retired.

use serde::{Deserialize, Serialize};

/// Which item to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Get {
    pub(crate) key: String,
    /// New: also report the owner. An old caller never sends it, so it reads as `false`.
    #[serde(default)]
    pub(crate) with_owner: bool,
}

/// One catalog item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) size: u64,
    /// New: who stored it. An old server never sends it, so it reads as empty.
    #[serde(default)]
    pub(crate) owner: String,
}

/// Why a catalog call failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum CatalogError {
    NotFound(String),
}

#[grid::handler]
pub(crate) trait Catalog {
    /// Reads one item.
    async fn get(&self, req: Get) -> Result<Item, CatalogError>;
    /// New: streams every item whose key starts with `prefix`.
    #[grid(out_capacity = 8)]
    async fn list(
        &self,
        prefix: String,
        out: grid::ResponseSender<Item>,
    ) -> Result<(), CatalogError>;
}

/// The new build's implementation: items `a` and `ab`, owned by `new`.
pub(crate) struct Server;

const ITEMS: [(&str, u64); 2] = [("a", 20), ("ab", 21)];

impl Catalog for Server {
    async fn get(&self, req: Get) -> Result<Item, CatalogError> {
        let Some((key, size)) = ITEMS.iter().find(|(k, _)| *k == req.key) else {
            return Err(CatalogError::NotFound(req.key));
        };
        Ok(Item {
            key: (*key).to_owned(),
            size: *size,
            owner: if req.with_owner {
                "new".to_owned()
            } else {
                String::new()
            },
        })
    }

    async fn list(
        &self,
        prefix: String,
        mut out: grid::ResponseSender<Item>,
    ) -> Result<(), CatalogError> {
        for (key, size) in ITEMS.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            let item = Item {
                key: (*key).to_owned(),
                size: *size,
                owner: "new".to_owned(),
            };
            if out.send(item).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
