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
            if !self.seen.insert((id.to_string(), c.map(|c| c.timestamp_micros()))) {
                return false;
            }
        }
        if let Some(c) = c {
            self.min = Some(self.min.map_or(c, |m| m.min(c)));
            self.max = Some(self.max.map_or(c, |m| m.max(c)));
        }
        true
    }
}
