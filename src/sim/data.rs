//! Deterministic data of the simulator: every record is a pure function of (seed, day, index),
//! so any window can be generated on its own and a longer run extends a shorter one.
//! Records are created on a day and updated on later days (versions with newer `updated_at`).
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use std::sync::atomic::{AtomicBool, Ordering};

/// `--fractional`: times carry milliseconds, and the first record of each day is stamped in
/// the last second of it (23:59:59.5), where an `until = end − 1 s` window never looks. One
/// simulator per process (set when it starts).
static FRACTIONAL: AtomicBool = AtomicBool::new(false);

pub fn set_fractional(on: bool) {
    FRACTIONAL.store(on, Ordering::SeqCst);
}

/// `--empty SOURCE,…`: the entity kinds those sources generate none of (a fresh account).
static EMPTY: std::sync::RwLock<Vec<u64>> = std::sync::RwLock::new(Vec::new());

pub fn set_empty(kinds: Vec<u64>) {
    *EMPTY.write().unwrap() = kinds;
}

fn is_empty(kind: u64) -> bool {
    EMPTY.read().unwrap().contains(&kind)
}

pub fn fractional() -> bool {
    FRACTIONAL.load(Ordering::SeqCst)
}

pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for p in parts {
        x ^= p
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(x << 6)
            .wrapping_add(x >> 2);
        x = splitmix(x);
    }
    splitmix(x)
}

/// [`mix`] of a text (a field's path, a record, a request URI): the simulator's deterministic
/// choices keyed by content.
pub fn mix_text(seed: u64, s: &str) -> u64 {
    mix(seed, &[s.bytes().fold(0u64, |a, b| a.wrapping_mul(131).wrapping_add(b as u64))])
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn start() -> DateTime<Utc> {
    let (y, m, d) = super::START;
    Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(0, 0, 0).unwrap())
}

pub fn page_ids(n: u32) -> Vec<String> {
    (0..n).map(|i| (1001 + i as u64).to_string()).collect()
}

/// One entity created on `day` (0-based) as number `idx`, with its versions' times.
#[derive(Debug, Clone)]
pub struct Entity {
    pub day: u32,
    pub idx: u64,
    pub h: u64,
    /// `versions[0]` is the creation; later ones are updates, strictly increasing.
    pub versions: Vec<DateTime<Utc>>,
}

/// Updates fall within this many days of creation.
pub const MAX_LAG_DAYS: u32 = 3;

pub fn entity(seed: u64, kind: u64, scope: u64, day: u32, idx: u64) -> Entity {
    let h = mix(seed, &[kind, scope, day as u64, idx]);
    let frac = fractional();
    let mut created = start() + Duration::days(day as i64) + Duration::seconds((h % 86_000) as i64);
    if frac {
        created += Duration::milliseconds(((h >> 44) % 1000) as i64);
        if idx == 0 {
            created = start() + Duration::days(day as i64 + 1) - Duration::milliseconds(500);
        }
    }
    let mut versions = vec![created];
    let updates = (h >> 20) % 3; // 0, 1 or 2 updates
    let mut t = created;
    for j in 0..updates {
        let lag = 3_600 + (mix(h, &[j]) % (MAX_LAG_DAYS as u64 * 86_400 / 2)) as i64;
        t += Duration::seconds(lag);
        if frac {
            t += Duration::milliseconds((mix(h, &[j, 1]) % 1000) as i64);
        }
        versions.push(t);
    }
    Entity { day, idx, h, versions }
}

/// Entities of a kind whose creation day is in `[first_day, last_day]` and ≤ the simulated end.
pub fn entities(
    seed: u64,
    kind: u64,
    scope: u64,
    per_day: u64,
    days: std::ops::RangeInclusive<i64>,
    sim_days: u32,
) -> impl Iterator<Item = Entity> {
    let lo = (*days.start()).max(0);
    let hi = if is_empty(kind) { -1 } else { (*days.end()).min(sim_days as i64 - 1) };
    (lo..=hi).flat_map(move |d| (0..per_day).map(move |i| entity(seed, kind, scope, d as u32, i)))
}

/// Day index (0-based from START) of an instant.
pub fn day_of(t: DateTime<Utc>) -> i64 {
    (t - start()).num_seconds().div_euclid(86_400)
}

/// The simulator's "now": the end of its last simulated day.
pub fn sim_now(days: u32) -> DateTime<Utc> {
    start() + Duration::days(days as i64)
}

pub fn pick<'a>(h: u64, xs: &[&'a str]) -> &'a str {
    xs[(h % xs.len() as u64) as usize]
}

pub const FIRST: &[&str] = &[
    "Ana", "Bruno", "Carla", "Diego", "Linh", "Minh", "Hoa", "Tuan", "Lucia", "Pedro",
];
pub const LAST: &[&str] = &["Silva", "Souza", "Nguyen", "Tran", "Le", "Pham", "Costa", "Lima"];
