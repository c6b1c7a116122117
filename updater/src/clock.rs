//! The clock seam: only the outer loop reads time, through this trait.

use chrono::Timelike;
use manifest::Timestamp;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Minutes since local midnight, for install windows.
    fn local_minute_of_day(&self) -> u16;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(std::time::SystemTime::now())
    }
    fn local_minute_of_day(&self) -> u16 {
        let t = chrono::Local::now();
        (t.hour() * 60 + t.minute()) as u16
    }
}
