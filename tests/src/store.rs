//! A temporary store and the release engineer's side of the tests: a fresh
//! key (`manifest-builder keygen`), component directories built at test time,
//! and `manifest-builder release` / `promote` / `sign` run as real processes.
//!
//! Every release has the same shape (DESIGN: Release manifest):
//! - `app`: `bin/start`, a sh script that execs the sample app with this
//!   release's version label, and `health`, holding `ok` or `broken` (what
//!   the app's `/health` reports: a broken release fails its health checks
//!   as a real one would, over HTTP);
//! - `config`: one small text file;
//! - optionally `videos`: N MiB of seeded random bytes, identical in every
//!   release of the store, so its artifact hash is reused between releases.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use manifest::ReleaseManifest;
use rand::{RngCore as _, SeedableRng as _};

use crate::bins;
use crate::util::{run_with_timeout, write_executable, Run};

pub const PRODUCT: &str = "neopro";
pub const HARDWARE: &str = "raspberrypi-arm64";

/// Whether the release's app passes its health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    Good,
    Broken,
}

/// What to publish; `Release::new("1.0.0", App::Good)` plus adjustments.
#[derive(Clone, Debug)]
pub struct Release {
    pub version: String,
    pub app: App,
    /// What the app answers on `/version`; default: the release version.
    /// Two releases with the same label and health have the same `app` artifact.
    pub app_label: Option<String>,
    /// Content of `config/settings.conf`; default: `release=<version>`.
    pub config: Option<String>,
    /// Size of the `videos` component in MiB; `None`: no such component.
    pub videos_mib: Option<usize>,
    /// Number of 2-byte files in an `assets` component; `None`: no such
    /// component. Many tiny files take a block each on disk, far more than
    /// their declared `unpacked_size` (the disk-full tests use that).
    pub tiny_files: Option<usize>,
    pub compatible: Vec<String>,
    /// A `post_stage` hook: this sh script becomes `app/bin/post-stage` and
    /// the release names it (`manifest-builder release --post-stage`).
    pub post_stage: Option<String>,
    /// The release's own health section, JSON (`{"checks": [...]}`),
    /// published with `manifest-builder release --health`.
    pub health: Option<String>,
}

impl Release {
    pub fn new(version: &str, app: App) -> Self {
        Release {
            version: version.into(),
            app,
            app_label: None,
            config: None,
            videos_mib: None,
            tiny_files: None,
            compatible: vec![HARDWARE.into()],
            post_stage: None,
            health: None,
        }
    }

    /// Ship `script` as `app/bin/post-stage`, the release's post_stage hook.
    pub fn post_stage(mut self, script: &str) -> Self {
        self.post_stage = Some(script.into());
        self
    }

    /// The release's own health checks (JSON health section).
    pub fn health(mut self, json: &str) -> Self {
        self.health = Some(json.into());
        self
    }

    pub fn app_label(mut self, label: &str) -> Self {
        self.app_label = Some(label.into());
        self
    }

    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.into());
        self
    }

    pub fn videos_mib(mut self, mib: usize) -> Self {
        self.videos_mib = Some(mib);
        self
    }

    pub fn tiny_files(mut self, n: usize) -> Self {
        self.tiny_files = Some(n);
        self
    }

    pub fn compatible(mut self, hw: &[&str]) -> Self {
        self.compatible = hw.iter().map(|s| s.to_string()).collect();
        self
    }
}

pub struct TestStore {
    dir: tempfile::TempDir,
    /// The store tree (`cohorts/`, `releases/`, `artifacts/`).
    pub store: PathBuf,
    /// The signing key and its public half (what devices trust).
    pub key: PathBuf,
    pub public_key: PathBuf,
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for sub in ["cohorts", "releases", "artifacts"] {
            fs::create_dir_all(store.join(sub)).unwrap();
        }
        let s = TestStore {
            key: dir.path().join("keys/dev.key"),
            public_key: dir.path().join("keys/dev.pub"),
            store,
            dir,
        };
        s.keygen("keys/dev");
        s
    }

    /// The temp dir holding the store, keys and component sources.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `manifest-builder ARGS` run in the temp dir.
    pub fn builder(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bins::manifest_builder());
        cmd.args(args).current_dir(self.root());
        run_with_timeout(cmd, self.root(), Duration::from_secs(120))
    }

    /// Like [`builder`](Self::builder), failing the test unless it exits 0.
    pub fn builder_ok(&self, args: &[&str]) -> String {
        let run = self.builder(args);
        run.expect_code(0);
        run.stdout
    }

    /// A new key pair `PREFIX.key`/`PREFIX.pub` under the temp dir.
    pub fn keygen(&self, prefix: &str) -> (PathBuf, PathBuf) {
        self.builder_ok(&["keygen", "--out", prefix]);
        (
            self.root().join(format!("{prefix}.key")),
            self.root().join(format!("{prefix}.pub")),
        )
    }

    /// Publish a good or broken release with the default shape.
    pub fn publish(&self, version: &str, app: App) -> ReleaseManifest {
        self.publish_release(&Release::new(version, app))
    }

    pub fn publish_release(&self, spec: &Release) -> ReleaseManifest {
        let src = self.root().join("src").join(&spec.version);
        let app = src.join("app");
        fs::create_dir_all(app.join("bin")).unwrap();
        let label = spec.app_label.as_deref().unwrap_or(&spec.version);
        write_executable(&app.join("bin/start"), &start_script(label));
        let health = match spec.app {
            App::Good => "ok\n",
            App::Broken => "broken\n",
        };
        fs::write(app.join("health"), health).unwrap();
        let config = src.join("config");
        fs::create_dir_all(&config).unwrap();
        let text = spec
            .config
            .clone()
            .unwrap_or_else(|| format!("release={}\n", spec.version));
        fs::write(config.join("settings.conf"), text).unwrap();

        let mut components = vec![
            format!("app={}", app.display()),
            format!("config={}", config.display()),
        ];
        if let Some(mib) = spec.videos_mib {
            components.push(format!("videos={}", self.videos_dir(mib).display()));
        }
        if let Some(n) = spec.tiny_files {
            let assets = src.join("assets");
            fs::create_dir_all(&assets).unwrap();
            for i in 0..n {
                fs::write(assets.join(format!("{i:06}.txt")), "x\n").unwrap();
            }
            components.push(format!("assets={}", assets.display()));
        }
        let mut args = vec![
            "release".to_string(),
            "--store".into(),
            self.store.display().to_string(),
            "--product".into(),
            PRODUCT.into(),
            "--version".into(),
            spec.version.clone(),
            "--key".into(),
            self.key.display().to_string(),
        ];
        for hw in &spec.compatible {
            args.extend(["--compatible".into(), hw.clone()]);
        }
        for c in components {
            args.extend(["--component".into(), c]);
        }
        if let Some(script) = &spec.post_stage {
            write_executable(&app.join("bin/post-stage"), script);
            args.extend(["--post-stage".into(), "app/bin/post-stage".into()]);
        }
        if let Some(json) = &spec.health {
            let file = src.join("health.json");
            fs::write(&file, json).unwrap();
            args.extend(["--health".into(), file.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.builder_ok(&args);
        self.release_manifest(&spec.version)
    }

    /// `<root>/src/videos-<mib>`: seeded random bytes, built once per store,
    /// so every release that includes it packs to the same artifact.
    fn videos_dir(&self, mib: usize) -> PathBuf {
        let dir = self.root().join("src").join(format!("videos-{mib}"));
        if dir.exists() {
            return dir;
        }
        fs::create_dir_all(&dir).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0000 + mib as u64);
        let mut file = fs::File::create(dir.join("intro.mp4")).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..mib {
            rng.fill_bytes(&mut chunk);
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
        dir
    }

    /// `manifest-builder promote --cohort C --version V [--percent P] EXTRA…`.
    pub fn promote(&self, cohort: &str, version: &str, percent: Option<&str>, extra: &[&str]) -> Run {
        let store = self.store.display().to_string();
        let key = self.key.display().to_string();
        let mut args = vec![
            "promote",
            "--store",
            &store,
            "--cohort",
            cohort,
            "--version",
            version,
            "--key",
            &key,
        ];
        if let Some(p) = percent {
            args.extend(["--percent", p]);
        }
        args.extend_from_slice(extra);
        self.builder(&args)
    }

    /// Promote to 100 %, failing the test if the builder refuses.
    pub fn promote_ok(&self, cohort: &str, version: &str) {
        self.promote(cohort, version, None, &[]).expect_code(0);
    }

    /// `manifest-builder sign --key KEY FILE` (validates, bumps the sequence).
    pub fn sign(&self, file: &Path) {
        let key = self.key.display().to_string();
        let file = file.display().to_string();
        self.builder_ok(&["sign", "--key", &key, &file]);
    }

    /// `manifest-builder bundle --store S --cohort C --out OUT`: an offline
    /// bundle of the cohort's current target.
    pub fn bundle(&self, cohort: &str, out: &Path) {
        let store = self.store.display().to_string();
        let out = out.display().to_string();
        self.builder_ok(&["bundle", "--store", &store, "--cohort", cohort, "--out", &out]);
    }

    pub fn cohort_file(&self, cohort: &str) -> PathBuf {
        self.store.join(format!("cohorts/{cohort}.json"))
    }

    pub fn release_manifest(&self, version: &str) -> ReleaseManifest {
        let bytes = fs::read(self.store.join(format!("releases/{version}.json"))).unwrap();
        ReleaseManifest::parse(&bytes).unwrap()
    }

    /// The artifact file of `component` in release `version`.
    pub fn artifact(&self, version: &str, component: &str) -> PathBuf {
        let doc = self.release_manifest(version);
        let c = doc
            .components
            .iter()
            .find(|c| c.name.as_str() == component)
            .unwrap_or_else(|| panic!("release {version} has no component {component}"));
        self.store.join("artifacts").join(c.sha256.to_hex())
    }

    /// `/artifacts/<sha256>`, the URL path the device fetches it from.
    pub fn artifact_url_path(&self, version: &str, component: &str) -> String {
        let path = self.artifact(version, component);
        format!("/artifacts/{}", path.file_name().unwrap().to_string_lossy())
    }
}

/// The app component's entry point. `SAMPLE_APP`, `APP_PORT` and
/// `APP_PID_FILE` come from the device's restart command; the health file is
/// resolved through the physical slot path, so an app keeps reading its own
/// slot's file after `current` flips.
fn start_script(label: &str) -> String {
    format!(
        r#"#!/bin/sh
# Sample app, release {label} (tests/src/bin/sample-app.rs).
: "${{SAMPLE_APP:?}}" "${{APP_PORT:?}}" "${{APP_PID_FILE:?}}"
here=$(cd "$(dirname "$0")/.." && pwd -P)
exec "$SAMPLE_APP" --port "$APP_PORT" --version "{label}" --health-file "$here/health" --pid-file "$APP_PID_FILE"
"#
    )
}
