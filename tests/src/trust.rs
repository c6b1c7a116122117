//! A store with a root of trust (docs/runbooks/key-rotation.md): two root
//! keys (both needed), a release key and an ops key, and `keys.json`
//! version 1 written by `manifest-builder keys init`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::store::TestStore;
use crate::util::Run;

/// Key pairs as `(secret, public)` paths.
pub struct RootKeys {
    pub root: [(PathBuf, PathBuf); 2],
    pub release: (PathBuf, PathBuf),
    pub ops: (PathBuf, PathBuf),
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl RootKeys {
    /// Generate the keys and `keys init` the store (root threshold 2).
    pub fn init(store: &TestStore) -> RootKeys {
        let keys = RootKeys {
            root: [store.keygen("keys/root1"), store.keygen("keys/root2")],
            release: store.keygen("keys/release1"),
            ops: store.keygen("keys/ops1"),
        };
        let out = store.builder_ok(&[
            "keys",
            "init",
            "--store",
            &s(&store.store),
            "--root",
            &s(&keys.root[0].1),
            "--root",
            &s(&keys.root[1].1),
            "--root-threshold",
            "2",
            "--release",
            &s(&keys.release.1),
            "--ops",
            &s(&keys.ops.1),
            "--sign",
            &s(&keys.root[0].0),
            "--sign",
            &s(&keys.root[1].0),
        ]);
        assert!(out.contains("keys.json version 1"), "{out}");
        keys
    }

    /// A directory holding the two root public keys, for `root_keys_dir`.
    pub fn pinned_dir(&self, store: &TestStore) -> PathBuf {
        let dir = store.root().join("device-root-keys");
        fs::create_dir_all(&dir).unwrap();
        for (i, (_, public)) in self.root.iter().enumerate() {
            fs::copy(public, dir.join(format!("root{i}.pub"))).unwrap();
        }
        dir
    }

    /// Both root secret keys, for `--sign`.
    pub fn root_signers(&self) -> [&Path; 2] {
        [&self.root[0].0, &self.root[1].0]
    }
}

/// `manifest-builder ARGS --store STORE --sign K…` (`keys rotate`, `revoke`…).
pub fn keys_cmd(store: &TestStore, args: &[&str], signers: &[&Path]) -> Run {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--store".into(), s(&store.store)]);
    for k in signers {
        all.extend(["--sign".into(), s(k)]);
    }
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    store.builder(&all)
}
