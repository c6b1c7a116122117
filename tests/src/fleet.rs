//! The usual arrangement of a test: one store, the real `manifest-server`
//! serving it, and the fault-injecting proxy in front, which devices talk
//! to (so every request they make is logged).

use crate::device::{Device, DeviceConfig};
use crate::proxy::Proxy;
use crate::server::Server;
use crate::store::TestStore;
use crate::util::Run;

pub struct Fleet {
    // Field order is drop order: stop talking before the store goes away.
    pub proxy: Proxy,
    pub server: Server,
    pub store: TestStore,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    /// A server that verifies manifests with the store's key.
    pub fn new() -> Fleet {
        let store = TestStore::new();
        let server = Server::start(&store.store, std::slice::from_ref(&store.public_key));
        Fleet::assemble(store, server)
    }

    /// A server that serves whatever is on disk (see [`Server::start_unverified`]).
    pub fn unverified() -> Fleet {
        let store = TestStore::new();
        let server = Server::start_unverified(&store.store);
        Fleet::assemble(store, server)
    }

    fn assemble(store: TestStore, server: Server) -> Fleet {
        let proxy = Proxy::start(server.addr());
        Fleet { proxy, server, store }
    }

    /// A config for a device that talks to the store through the proxy.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig::new(&self.proxy.url())
    }

    /// A device behind the proxy trusting the store's key.
    pub fn device(&self) -> Device {
        self.device_with(|_| {})
    }

    pub fn device_with(&self, f: impl FnOnce(&mut DeviceConfig)) -> Device {
        let mut cfg = self.device_config();
        f(&mut cfg);
        Device::new(cfg, &[self.store.public_key.as_path()])
    }

    /// Promote `version` to 100 % of `cohort` and wait until it is served.
    pub fn promote(&self, cohort: &str, version: &str) {
        self.store.promote_ok(cohort, version);
        self.wait_cohort(cohort);
    }

    /// `manifest-builder promote` with options; waits for the server when it
    /// succeeded.
    pub fn promote_with(&self, cohort: &str, version: &str, percent: Option<&str>, extra: &[&str]) -> Run {
        let run = self.store.promote(cohort, version, percent, extra);
        if run.code == Some(0) {
            self.wait_cohort(cohort);
        }
        run
    }

    /// Wait until the server serves the cohort manifest now on disk.
    pub fn wait_cohort(&self, cohort: &str) {
        self.server.wait_serving(&format!("cohorts/{cohort}.json"));
    }
}
