//! Rate limit for warnings a traced program can trigger (a loop opening a file that cannot
//! be downloaded must not fill the job's stderr): one line per key, the repository and
//! object, per [`INTERVAL`]; the next line allowed says how many were held back.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// At most one warning per key in this interval.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Keys remembered before the table is emptied (memory bound, not a policy).
const MAX_KEYS: usize = 10_000;

/// Per key: when a line was last let through, and how many were held back since.
fn table() -> &'static Mutex<HashMap<String, (Instant, u64)>> {
    static TABLE: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `Some(held_back)` when a warning about `key` may be logged now (`held_back` lines about it
/// were suppressed since the last one), `None` when it must be suppressed.
pub fn allow(key: &str) -> Option<u64> {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if let Some((last, held)) = t.get_mut(key) {
        if now.duration_since(*last) < INTERVAL {
            *held += 1;
            return None;
        }
        let n = *held;
        *last = now;
        *held = 0;
        return Some(n);
    }
    if t.len() >= MAX_KEYS {
        t.clear();
    }
    t.insert(key.to_string(), (now, 0));
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_warning_about_one_object_is_held_back() {
        assert_eq!(allow("test.example.org/a"), Some(0));
        assert_eq!(allow("test.example.org/a"), None);
        assert_eq!(allow("test.example.org/a"), None);
        assert_eq!(allow("test.example.org/b"), Some(0));
    }
}
