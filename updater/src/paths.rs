//! Every file the updater touches, derived from `state_dir` (STYLE: Paths in
//! one struct built from the config, never constants).

use std::path::{Path, PathBuf};

use manifest::{CohortName, Sha256Hex};

use crate::state::Slot;

#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.to_path_buf(),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The time floor (DESIGN: expiry against the persisted time floor).
    pub fn time_floor(&self) -> PathBuf {
        self.root.join("time_floor")
    }
    /// The accepted `keys.json` (root-of-trust mode), see `trust`.
    pub fn trust(&self) -> PathBuf {
        self.root.join("trust.json")
    }
    pub fn last_check(&self) -> PathBuf {
        self.root.join("last_check.json")
    }
    pub fn history(&self) -> PathBuf {
        self.root.join("history.jsonl")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn slots(&self) -> PathBuf {
        self.root.join("slots")
    }
    pub fn slot(&self, slot: Slot) -> PathBuf {
        self.slots().join(slot.name())
    }
    /// Relative target of the `current` link for a slot.
    pub fn slot_link_target(slot: Slot) -> PathBuf {
        Path::new("slots").join(slot.name())
    }
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    pub fn partial(&self, sha256: &Sha256Hex) -> PathBuf {
        self.downloads().join(format!("{sha256}.partial"))
    }
    /// `<url> <etag>` the partial download's first bytes came with.
    pub fn partial_validator(&self, sha256: &Sha256Hex) -> PathBuf {
        self.downloads().join(format!("{sha256}.validator"))
    }
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    /// Where `updater install` unpacks a bundle for the run (emptied first).
    pub fn bundle_dir(&self) -> PathBuf {
        self.root.join("bundle")
    }
    /// Offline bundles dropped here (a copied file or a mounted stick) are
    /// installed by the daemon, then moved to `done/` or `failed/`.
    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }
    pub fn inbox_done(&self) -> PathBuf {
        self.inbox().join("done")
    }
    pub fn inbox_failed(&self) -> PathBuf {
        self.inbox().join("failed")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn cached_cohort(&self, cohort: &CohortName) -> PathBuf {
        self.cache().join(format!("{cohort}.json"))
    }
    pub fn cached_cohort_signature(&self, cohort: &CohortName) -> PathBuf {
        self.cache().join(format!("{cohort}.json.minisig"))
    }
    pub fn cached_cohort_etag(&self, cohort: &CohortName) -> PathBuf {
        self.cache().join(format!("{cohort}.etag"))
    }

    /// Create the directories a run needs.
    pub fn ensure(&self) -> std::io::Result<()> {
        for dir in [self.root.clone(), self.slots(), self.downloads(), self.cache()] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// Which slot `current` points at, if any.
    pub fn current_slot(&self) -> Option<Slot> {
        let target = std::fs::read_link(self.current()).ok()?;
        match target.file_name()?.to_str()? {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}
