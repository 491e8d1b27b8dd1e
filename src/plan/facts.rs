//! What `resolve` found out about host paths before the plan is built, so that building
//! the plan reads nothing: where a path really points, and what is there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Dir,
    /// Anything that is not a directory: a file, a socket, a device.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFact {
    /// The path with its symlinks resolved (for the longest prefix that exists).
    pub real: PathBuf,
    /// What is there; None when nothing is.
    pub kind: Option<NodeKind>,
}

/// Facts keyed by the path as the plan spells it (expanded, lexically normalised).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    map: BTreeMap<PathBuf, PathFact>,
}

impl Facts {
    pub fn insert(&mut self, path: PathBuf, fact: PathFact) {
        self.map.insert(path, fact);
    }

    /// The fact for `p`; a path nobody looked at counts as missing and unresolved.
    pub fn get(&self, p: &Path) -> PathFact {
        self.map.get(p).cloned().unwrap_or_else(|| PathFact {
            real: p.to_path_buf(),
            kind: None,
        })
    }

    pub fn real(&self, p: &Path) -> PathBuf {
        self.get(p).real
    }

    pub fn kind(&self, p: &Path) -> Option<NodeKind> {
        self.get(p).kind
    }

    pub fn contains(&self, p: &Path) -> bool {
        self.map.contains_key(p)
    }
}
