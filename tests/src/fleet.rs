//! The usual arrangement of a test: one store, the real `manifest-server`
//! serving it, and the fault-injecting proxy in front, which devices talk
//! to (so every request they make is logged).

use crate::device::{Device, DeviceConfig};
use crate::proxy::{Proxy, Record};
use crate::server::Server;
use crate::store::{App, Release, TestStore};
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

    /// Publish 1.0.0 (good) and `v2`.
    pub fn publish_v1_and(&self, v2: &Release) {
        self.store.publish("1.0.0", App::Good);
        self.store.publish_release(v2);
    }

    /// Promote 1.0.0 to `stable` and install it on `device` (its app then
    /// answers), then promote 2.0.0.
    pub fn install_v1_then_promote_v2(&self, device: &Device) {
        self.promote("stable", "1.0.0");
        device.check().expect_code(10);
        device.wait_app_version("1.0.0");
        self.promote("stable", "2.0.0");
    }

    /// 1.0.0 installed on a device configured by `f`, and 2.0.0 with `mib`
    /// MiB of videos promoted; returns the device, the videos artifact's
    /// URL path and its size.
    pub fn upgrade_with_videos(
        &self,
        mib: usize,
        f: impl FnOnce(&mut DeviceConfig),
    ) -> (Device, String, u64) {
        self.publish_v1_and(&Release::new("2.0.0", App::Good).videos_mib(mib));
        let device = self.device_with(f);
        self.install_v1_then_promote_v2(&device);
        let path = self.store.artifact_url_path("2.0.0", "videos");
        let size = std::fs::metadata(self.store.artifact("2.0.0", "videos"))
            .unwrap()
            .len();
        (device, path, size)
    }

    /// The GET requests for `path` the proxy saw, oldest first.
    pub fn gets(&self, path: &str) -> Vec<Record> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.path == path && r.method == "GET")
            .collect()
    }

    /// Requests for artifacts the proxy saw (`"GET /artifacts/…"`), oldest
    /// first: empty means nothing was downloaded.
    pub fn artifact_requests(&self) -> Vec<String> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/artifacts/"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Wait until the server serves the cohort manifest now on disk.
    pub fn wait_cohort(&self, cohort: &str) {
        self.server.wait_serving(&format!("cohorts/{cohort}.json"));
    }
}
