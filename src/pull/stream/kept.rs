//! [`Kept`]: the incremental filter of a pass.
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The incremental filter of one pass, shared by both record paths: a record is dropped when
/// its cursor is below the pass's floor (the API may ignore the bound) or its (key, cursor)
/// was already kept in this pass (pages overlap under keyset paging); the cursor range of what
/// is kept becomes the landing's min/max cursor and the stream's watermark.
#[derive(Default)]
pub(super) struct Kept {
    seen: foldhash::HashSet<(String, Option<i64>)>,
    /// (key, cursor) of what earlier pulls landed within this pass's lookback: asked for again
    /// by the lookback, not landed again.
    pub(super) prior: foldhash::HashSet<(String, Option<i64>)>,
    /// Records dropped because `prior` holds them.
    pub(super) repeats: u64,
    pub(super) min: Option<DateTime<Utc>>,
    pub(super) max: Option<DateTime<Utc>>,
}

impl Kept {
    pub(super) fn keep(&mut self, floor: Option<DateTime<Utc>>, c: Option<DateTime<Utc>>, id: Option<&Value>) -> bool {
        if let (Some(f), Some(c)) = (floor, c) {
            if c < f {
                return false;
            }
        }
        if let Some(id) = id {
            let k = (id.to_string(), c.map(|c| c.timestamp_micros()));
            if self.prior.contains(&k) {
                self.repeats += 1;
                return false;
            }
            if !self.seen.insert(k) {
                return false;
            }
        }
        if let Some(c) = c {
            self.min = Some(self.min.map_or(c, |m| m.min(c)));
            self.max = Some(self.max.map_or(c, |m| m.max(c)));
        }
        true
    }

    /// Remember what an earlier pull landed (`file`, NDJSON) at or above `floor`.
    pub(super) fn add_prior(&mut self, file: &[u8], key: &[String], cursor: &[String], tz: &chrono_tz::Tz, floor: DateTime<Utc>) {
        for line in file.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(r) = serde_json::from_slice::<Value>(line) else { continue };
            let c = crate::json::at(&r, cursor).and_then(|v| crate::time::cursor_instant(v, tz));
            if let (Some(id), Some(c)) = (crate::json::at(&r, key), c) {
                if c >= floor {
                    self.prior.insert((id.to_string(), Some(c.timestamp_micros())));
                }
            }
        }
    }
}
