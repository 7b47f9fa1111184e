//! The catalog service as the old build has it. `new.rs` is the next release; grid-build's
//! verdict on the step from this file to that one is pinned by
//! `grid-build/tests/mixed_versions_lock.rs`.

use serde::{Deserialize, Serialize};

/// Which item to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Get {
    pub(crate) key: String,
}

/// One catalog item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) size: u64,
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
    /// How many items there are (retired by the new build).
    async fn count(&self) -> Result<u64, CatalogError>;
}

/// The old build's implementation: a single item, `a`, of size 10.
pub(crate) struct Server;

impl Catalog for Server {
    async fn get(&self, req: Get) -> Result<Item, CatalogError> {
        if req.key != "a" {
            return Err(CatalogError::NotFound(req.key));
        }
        Ok(Item {
            key: req.key,
            size: 10,
        })
    }

    async fn count(&self) -> Result<u64, CatalogError> {
        Ok(1)
    }
}
