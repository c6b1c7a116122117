//! Install windows ("02:00-05:00", local time, may wrap midnight): only the
//! switch waits for one; downloads and staging happen any time.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallWindow {
    /// Minutes since local midnight.
    start: u16,
    end: u16,
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl FromStr for InstallWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a window like \"02:00-05:00\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (parse_hhmm(a).ok_or_else(bad)?, parse_hhmm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{s:?} is empty: start and end are equal"));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for InstallWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

impl InstallWindow {
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start || minute_of_day < self.end
        }
    }
}

/// No windows configured means "any time".
pub fn is_open(windows: &[InstallWindow], minute_of_day: u16) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(minute_of_day))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_including_midnight() {
        let w: InstallWindow = "02:00-05:00".parse().unwrap();
        assert!(w.contains(120) && w.contains(299) && !w.contains(300) && !w.contains(119));
        let wrap: InstallWindow = "23:30-01:00".parse().unwrap();
        assert!(
            wrap.contains(23 * 60 + 45) && wrap.contains(30) && !wrap.contains(60) && !wrap.contains(600)
        );
        assert!(is_open(&[], 0));
        assert!(!is_open(&[w], 0));
        for bad in ["2-5", "24:00-01:00", "01:00-01:00", "01:60-02:00", "nope"] {
            assert!(bad.parse::<InstallWindow>().is_err(), "{bad}");
        }
    }
}
