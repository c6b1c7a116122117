//! The end-to-end harness: everything the tests in `tests/tests/` need to
//! run the real binaries the way a fleet does (DESIGN: What "done" means here).
//!
//! - [`bins`] finds `manifest-builder`, `manifest-server`, `updater` and
//!   this package's `sample-app` in `target/debug/`;
//! - [`store::TestStore`] is a temp store with a fresh key, and publishes and
//!   promotes releases of the sample app through `manifest-builder`;
//! - [`server::Server`] runs `manifest-server` on `127.0.0.1:0` and can stop
//!   and restart it on the same address;
//! - [`proxy::Proxy`] sits between device and server and injects faults (cut,
//!   stall, status, ignore Range, refuse), logging every request and the body
//!   bytes it forwarded;
//! - [`device::Device`] is an updater config and state dir in a temp dir, with
//!   a restart command that (re)starts the sample app from `current`;
//! - [`fleet::Fleet`] puts a store, its server and a proxy together;
//! - [`faults`] drives the updater's crash seams (kill at a phase or before
//!   the N-th fsync), SIGTERM at a phase, and a tmpfs state dir (disk full);
//! - [`trust::RootKeys`] gives a store a root of trust (`keys.json`);
//! - [`nginx::Nginx`] serves a store with Debian's nginx instead (static host);
//! - [`adversary`] is the attacker's kit: hand-signed stores, raw tar
//!   archives, and the "refused and nothing changed" assertion.
//!
//! Every test builds its own store, server, proxy and devices, with their own
//! temp dirs and ports, so tests run in parallel.

pub mod adversary;
pub mod bins;
pub mod device;
pub mod faults;
pub mod fleet;
pub mod nginx;
pub mod proxy;
pub mod server;
pub mod store;
pub mod trust;
pub mod util;

pub use device::{outcome, Device, DeviceConfig, PHASES};
pub use fleet::Fleet;
pub use proxy::{Fault, Proxy, Record, Rule};
pub use server::Server;
pub use store::{App, Release, TestStore};
pub use util::{wait_for, Run};
