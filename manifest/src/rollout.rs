//! Rollout and version rules as pure functions (DESIGN: Cohort manifest).
//!
//! A device is in a rollout when `bucket(device, cohort, version) < percent`.
//! The bucket is a stable hash mapped to basis points (0.01 % resolution), so
//! raising the percentage only ever adds devices, and every new version picks
//! a different set of canaries.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::names::{CohortName, Version};

/// A rollout percentage with 0.01 resolution, stored as basis points 0..=10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rollout percent {0} is not valid: use a number from 0 to 100 with at most two decimals")]
pub struct PercentError(String);

impl Percent {
    pub const ALL: Percent = Percent(10_000);

    pub fn from_basis_points(bp: u16) -> Result<Self, PercentError> {
        if bp > 10_000 {
            return Err(PercentError(format!("{}", bp as f64 / 100.0)));
        }
        Ok(Self(bp))
    }

    pub fn from_f64(p: f64) -> Result<Self, PercentError> {
        let bp = (p * 100.0).round();
        if !p.is_finite() || !(0.0..=10_000.0).contains(&bp) || (bp - p * 100.0).abs() > 1e-6 {
            return Err(PercentError(p.to_string()));
        }
        Ok(Self(bp as u16))
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl std::str::FromStr for Percent {
    type Err = PercentError;
    fn from_str(s: &str) -> Result<Self, PercentError> {
        let n: f64 = s
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| PercentError(s.to_string()))?;
        Self::from_f64(n)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}", self.0 / 100)
        } else {
            write!(f, "{}", self.as_f64())
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole percentages are written as integers so hand-edited files stay tidy.
        if self.0.is_multiple_of(100) {
            s.serialize_u64(u64::from(self.0 / 100))
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        Self::from_f64(n).map_err(serde::de::Error::custom)
    }
}

/// The device's stable position in [0, 10000) for this cohort and version.
///
/// SHA-256 over length-prefixed fields (so `("ab","c")` and `("a","bc")`
/// differ), first 8 bytes as a big-endian integer, reduced modulo 10000. The
/// modulo bias is below 1e-15 and irrelevant here.
pub fn bucket(device_id: &str, cohort: &CohortName, version: &Version) -> u16 {
    let mut h = Sha256::new();
    for field in [device_id, cohort.as_str(), &version.to_string()] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as u16
}

/// Is this device part of the rollout?
pub fn in_rollout(device_id: &str, cohort: &CohortName, version: &Version, percent: Percent) -> bool {
    bucket(device_id, cohort, version) < percent.basis_points()
}

/// What moving from the running version to a cohort's target would mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChange {
    /// Nothing installed yet: any target is fine.
    FreshInstall,
    /// The target is what runs already.
    UpToDate,
    Upgrade,
    /// Lower than what runs, and the cohort manifest says that is intended.
    PermittedDowngrade,
    /// Lower than what runs, without `allow_downgrade`: never installed.
    RefusedDowngrade,
}

impl VersionChange {
    pub fn should_install(self) -> bool {
        matches!(
            self,
            VersionChange::FreshInstall | VersionChange::Upgrade | VersionChange::PermittedDowngrade
        )
    }
}

pub fn version_change(current: Option<&Version>, target: &Version, allow_downgrade: bool) -> VersionChange {
    match current {
        None => VersionChange::FreshInstall,
        Some(cur) => match target.cmp(cur) {
            std::cmp::Ordering::Equal => VersionChange::UpToDate,
            std::cmp::Ordering::Greater => VersionChange::Upgrade,
            std::cmp::Ordering::Less if allow_downgrade => VersionChange::PermittedDowngrade,
            std::cmp::Ordering::Less => VersionChange::RefusedDowngrade,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn percent_parses_two_decimals_and_refuses_more() {
        assert_eq!("12.5".parse::<Percent>().unwrap().basis_points(), 1250);
        assert_eq!("0.01".parse::<Percent>().unwrap().basis_points(), 1);
        assert_eq!("100%".parse::<Percent>().unwrap(), Percent::ALL);
        assert!("100.01".parse::<Percent>().is_err());
        assert!("-1".parse::<Percent>().is_err());
        assert!("0.001".parse::<Percent>().is_err());
        assert!("NaN".parse::<Percent>().is_err());
        assert_eq!(
            serde_json::to_string(&Percent::from_f64(25.0).unwrap()).unwrap(),
            "25"
        );
        assert_eq!(
            serde_json::to_string(&Percent::from_f64(2.5).unwrap()).unwrap(),
            "2.5"
        );
    }

    /// Pinned values, computed outside this code (Python's hashlib over the
    /// documented inputs). Comparing two calls in one process would not
    /// notice a change to the hash inputs or their encoding, which would
    /// silently reshuffle every fleet's rollout membership on upgrade.
    #[test]
    fn bucket_values_are_pinned_across_builds() {
        let cases = [
            ("device-1", "stable", "1.3.0", 1279),
            ("hall-7-screen-2", "stable", "2.0.0", 732),
            ("hall-7-screen-2", "beta", "2.0.0", 5858),
            ("sim-000", "stable", "3.0.0", 6976),
            ("dev-42", "canary", "1.0.0-rc.1", 4764),
        ];
        for (device, cohort, version, want) in cases {
            assert_eq!(
                bucket(device, &CohortName::new(cohort).unwrap(), &v(version)),
                want,
                "bucket({device}, {cohort}, {version})"
            );
        }
    }

    #[test]
    fn bucket_is_stable_and_spread() {
        let cohort = CohortName::new("stable").unwrap();
        let version = v("1.3.0");
        assert_eq!(
            bucket("device-1", &cohort, &version),
            bucket("device-1", &cohort, &version)
        );
        // Over 10 000 device ids, 10 % selects 10 % +- 1 %; 0 % none, 100 % all.
        let count = |p: f64| {
            (0..10_000)
                .filter(|i| {
                    in_rollout(
                        &format!("dev-{i}"),
                        &cohort,
                        &version,
                        Percent::from_f64(p).unwrap(),
                    )
                })
                .count()
        };
        let ten = count(10.0);
        assert!((900..=1100).contains(&ten), "{ten} devices in a 10% rollout");
        assert_eq!(count(0.0), 0);
        assert_eq!(count(100.0), 10_000);
    }

    #[test]
    fn raising_percent_only_adds_devices() {
        let cohort = CohortName::new("stable").unwrap();
        let version = v("2.0.0");
        let steps = [10.0, 25.0, 50.0, 75.0, 100.0].map(|p| Percent::from_f64(p).unwrap());
        for i in 0..2000 {
            let id = format!("pi-{i}");
            let mut was_in = false;
            for p in steps {
                let now_in = in_rollout(&id, &cohort, &version, p);
                assert!(now_in || !was_in, "{id} left the rollout at {p}");
                was_in = now_in;
            }
            assert!(was_in, "100% must include everyone");
        }
        assert!(!in_rollout(
            "x",
            &cohort,
            &version,
            Percent::from_basis_points(0).unwrap()
        ));
    }

    #[test]
    fn version_rules() {
        use VersionChange::*;
        assert_eq!(version_change(None, &v("1.0.0"), false), FreshInstall);
        assert_eq!(version_change(Some(&v("1.0.0")), &v("1.0.0"), false), UpToDate);
        assert_eq!(version_change(Some(&v("1.0.0")), &v("1.1.0"), false), Upgrade);
        assert_eq!(
            version_change(Some(&v("1.1.0")), &v("1.0.0"), false),
            RefusedDowngrade
        );
        assert_eq!(
            version_change(Some(&v("1.1.0")), &v("1.0.0"), true),
            PermittedDowngrade
        );
        assert_eq!(
            version_change(Some(&v("1.0.0")), &v("1.0.0-rc.1"), false),
            RefusedDowngrade
        );
        assert!(!RefusedDowngrade.should_install());
    }
}
