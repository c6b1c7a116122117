//! Per-device rate limit for `POST /v1/reports`, in memory: a token bucket
//! per device id, `PER_MINUTE` reports a minute with bursts up to the same
//! number. A device flushing a long outbox sends at most that many per run;
//! the rest wait for its next run (the updater stops its flush on a 429).
//!
//! Buckets that have refilled are forgotten when the table grows past
//! `MAX_TRACKED`, so a flood of invented device ids cannot grow it without
//! bound (and only holders of a token get this far).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PER_MINUTE: u32 = 30;
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute)
    }

    /// Take one report from `device`'s allowance at `now`; `Err` carries
    /// how long until the next one is allowed.
    pub fn check(&self, device: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(device) {
            buckets.retain(|_, b| self.refill(*b, now) < self.per_minute);
        }
        let full = Bucket {
            tokens: self.per_minute,
            at: now,
        };
        let bucket = buckets.entry(device.to_string()).or_insert(full);
        let tokens = self.refill(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) * 60.0 / self.per_minute))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limiter = RateLimiter::new(30);
        let t0 = Instant::now();
        for _ in 0..30 {
            limiter.check("a", t0).unwrap();
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // Another device is not affected.
        limiter.check("b", t0).unwrap();
        // One report every two seconds after that.
        limiter.check("a", t0 + Duration::from_secs(2)).unwrap();
        assert!(limiter.check("a", t0 + Duration::from_secs(2)).is_err());
        // A minute later the burst is back.
        let later = t0 + Duration::from_secs(62);
        for _ in 0..30 {
            limiter.check("a", later).unwrap();
        }
        assert!(limiter.check("a", later).is_err());
    }
}
