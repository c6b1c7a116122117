//! The device agent: converges a device on its cohort's signed target with
//! A/B slots, health checks and automatic rollback (DESIGN: The device).
//!
//! One module per concern: `config` (updater.toml), `paths` (every file,
//! from the state dir), `state` (the durable state machine), `durable`
//! (atomic writes, the symlink flip), `lock`, `clock`, `fetch` (network
//! seam), `trust` (root keys and keys.json), `bundle` (offline bundles, read as a `file://` store), `policy`
//! (pure decisions), `stage` + `unpack` (downloads and safe
//! unpacking), `health`, `process` (running programs), `window`, `history`, `inbox` (the daemon's bundle drop),
//! `run` (the orchestration), `status`, `logging`, `cli`.

pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod durable;
pub mod failpoint;
pub mod fetch;
pub mod health;
pub mod history;
pub mod inbox;
pub mod lock;
pub mod logging;
pub mod paths;
pub mod policy;
pub mod process;
pub mod report;
pub mod run;
pub mod stage;
pub mod state;
pub mod status;
pub mod trust;
pub mod unpack;
pub mod window;
