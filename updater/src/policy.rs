//! Pure decisions over verified documents (STYLE: decisions are pure
//! functions that take `now`): is this cohort manifest acceptable here, and
//! what should this device do about it.

use std::collections::BTreeMap;

use manifest::{
    in_rollout, version_change, CohortManifest, CohortName, HardwareId, ProductName, ReleaseManifest,
    Sha256Hex, Timestamp, Version, VersionChange,
};

use crate::state::Accepted;

/// Why a cohort manifest is refused even though its signature is good.
pub fn check_cohort(
    doc: &CohortManifest,
    doc_sha256: Sha256Hex,
    product: &ProductName,
    cohort: &CohortName,
    previous: Option<&Accepted>,
    time_floor: Timestamp,
) -> Result<(), String> {
    if &doc.product != product {
        return Err(format!(
            "the cohort manifest is for product {}, this device runs {product}",
            doc.product
        ));
    }
    if &doc.cohort != cohort {
        return Err(format!(
            "the cohort manifest is for cohort {}, this device is in {cohort}",
            doc.cohort
        ));
    }
    if let Some(prev) = previous {
        if doc.sequence < prev.sequence {
            return Err(format!(
                "sequence {} is lower than {} already accepted: a replayed or rolled-back manifest",
                doc.sequence, prev.sequence
            ));
        }
        if doc.sequence == prev.sequence && doc_sha256 != prev.sha256 {
            return Err(format!(
                "sequence {} was already accepted with other content: ops must re-sign (sequence bump)",
                doc.sequence
            ));
        }
    }
    if doc.is_expired(time_floor) {
        return Err(format!(
            "the cohort manifest expired at {} (device time floor {}): ops must re-sign it",
            doc.expires_at, time_floor
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    UpToDate,
    Install(VersionChange),
    Blocked(String),
    NotInRollout { bucket: u16, percent: String },
    RefusedDowngrade { current: Version },
}

pub fn decide(
    doc: &CohortManifest,
    active: Option<&Version>,
    blocked: &BTreeMap<String, String>,
    device_id: &str,
) -> Decision {
    let target = &doc.target.version;
    let change = version_change(active, target, doc.allow_downgrade);
    if change == VersionChange::UpToDate {
        return Decision::UpToDate;
    }
    if let Some(reason) = blocked.get(&target.to_string()) {
        return Decision::Blocked(reason.clone());
    }
    if change == VersionChange::RefusedDowngrade {
        return Decision::RefusedDowngrade {
            current: active.cloned().expect("a downgrade has a current version"),
        };
    }
    if !in_rollout(device_id, &doc.cohort, target, doc.rollout.percent) {
        return Decision::NotInRollout {
            bucket: manifest::bucket(device_id, &doc.cohort, target),
            percent: doc.rollout.percent.to_string(),
        };
    }
    Decision::Install(change)
}

/// A verified release must also be the one the cohort pointed at, for this
/// product and this board.
pub fn check_release(
    release: &ReleaseManifest,
    product: &ProductName,
    version: &Version,
    hardware: &HardwareId,
) -> Result<(), String> {
    if &release.product != product {
        return Err(format!(
            "release is for product {}, this device runs {product}",
            release.product
        ));
    }
    if &release.version != version {
        return Err(format!(
            "release manifest says version {}, the cohort pinned {version}",
            release.version
        ));
    }
    if !release.is_compatible_with(hardware) {
        let list: Vec<String> = release.compatible.iter().map(ToString::to_string).collect();
        return Err(format!(
            "release {version} is built for [{}], this device is {hardware}: not installing wrong software",
            list.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(seq: u64, version: &str, percent: f64, downgrade: bool) -> CohortManifest {
        CohortManifest {
            schema: 1,
            kind: "cohort".into(),
            product: ProductName::new("neopro").unwrap(),
            cohort: CohortName::new("stable").unwrap(),
            sequence: seq,
            issued_at: Timestamp::from_unix(1000),
            expires_at: Timestamp::from_unix(2000),
            target: manifest::Target {
                version: Version::parse(version).unwrap(),
                sha256: Sha256Hex::digest(b"r"),
                size: 10,
            },
            rollout: manifest::Rollout {
                percent: manifest::Percent::from_f64(percent).unwrap(),
            },
            allow_downgrade: downgrade,
        }
    }

    #[test]
    fn replay_expiry_and_identity() {
        let c = cohort(5, "1.0.0", 100.0, false);
        let (p, s) = (c.product.clone(), c.cohort.clone());
        let sha = Sha256Hex::digest(b"x");
        assert!(check_cohort(&c, sha, &p, &s, None, Timestamp::from_unix(1500)).is_ok());
        let seen = Accepted {
            sequence: 6,
            sha256: sha,
            signers: vec![],
        };
        assert!(
            check_cohort(&c, sha, &p, &s, Some(&seen), Timestamp::from_unix(1500))
                .unwrap_err()
                .contains("replayed")
        );
        let same = Accepted {
            sequence: 5,
            sha256: Sha256Hex::digest(b"other"),
            signers: vec![],
        };
        assert!(
            check_cohort(&c, sha, &p, &s, Some(&same), Timestamp::from_unix(1500))
                .unwrap_err()
                .contains("other content")
        );
        assert!(check_cohort(&c, sha, &p, &s, None, Timestamp::from_unix(2000))
            .unwrap_err()
            .contains("expired"));
        let other = CohortName::new("beta").unwrap();
        assert!(check_cohort(&c, sha, &p, &other, None, Timestamp::from_unix(1500)).is_err());
    }

    #[test]
    fn decisions() {
        let v = |s: &str| Version::parse(s).unwrap();
        let none = BTreeMap::new();
        assert_eq!(
            decide(&cohort(1, "1.0.0", 100.0, false), Some(&v("1.0.0")), &none, "d"),
            Decision::UpToDate
        );
        assert!(matches!(
            decide(&cohort(1, "2.0.0", 100.0, false), Some(&v("1.0.0")), &none, "d"),
            Decision::Install(_)
        ));
        assert!(matches!(
            decide(&cohort(1, "0.9.0", 100.0, false), Some(&v("1.0.0")), &none, "d"),
            Decision::RefusedDowngrade { .. }
        ));
        assert!(matches!(
            decide(&cohort(1, "0.9.0", 100.0, true), Some(&v("1.0.0")), &none, "d"),
            Decision::Install(_)
        ));
        assert!(matches!(
            decide(&cohort(1, "2.0.0", 0.0, false), Some(&v("1.0.0")), &none, "d"),
            Decision::NotInRollout { .. }
        ));
        let blocked = BTreeMap::from([("2.0.0".to_string(), "crashed".to_string())]);
        assert_eq!(
            decide(
                &cohort(1, "2.0.0", 100.0, false),
                Some(&v("1.0.0")),
                &blocked,
                "d"
            ),
            Decision::Blocked("crashed".into())
        );
    }
}
