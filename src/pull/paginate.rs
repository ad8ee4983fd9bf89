//! One paginator per [`Pagination`] kind: what the next request adds (query parameters, or a
//! whole next URL) and, from the page just read, whether there is a next one. The stream loop
//! (`stream.rs`) knows nothing of the kinds.
use crate::config::Pagination;
use crate::json::{self, Condition};
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::collections::HashSet;

/// What the stream loop saw on one page.
pub struct Page<'a> {
    pub status: u16,
    pub body: &'a Value,
    pub headers: &'a HeaderMap,
    /// Records of the first output, as selected (before any client-side filter).
    pub count: usize,
    pub last: Option<&'a Value>,
    /// Cursor instants of those records (incremental streams).
    pub cursors: &'a [DateTime<Utc>],
}

/// The next request: parameters that replace same-named ones, or a URL to fetch as is.
pub struct Request {
    pub query: Vec<(String, String)>,
    pub url: Option<String>,
}

pub struct Paginator<'a> {
    cfg: &'a Pagination,
    cond: Option<Condition>,
    state: State,
}

enum State {
    Once,
    Page { n: i64, first: i64, offset: u64 },
    Cursor { next: Option<String>, sent: HashSet<String> },
    Link { next: Option<String> },
    Keyset { bound: Option<DateTime<Utc>>, page: i64, ignored: u32, unfiltered: bool },
}

/// The incremental bound a keyset walk moves, and how it goes on the wire.
pub struct Bound<'a> {
    pub param: &'a str,
    pub format: &'a dyn Fn(DateTime<Utc>) -> String,
    /// The API's resolution: bounds are cut down to it (whole seconds for C2S).
    pub floor: &'a dyn Fn(DateTime<Utc>) -> DateTime<Utc>,
}

const IGNORED_BEFORE_UNFILTERED: u32 = 5;

impl<'a> Paginator<'a> {
    /// `start`: the incremental floor of this pass (keyset walks start there).
    pub fn new(cfg: &'a Pagination, start: Option<DateTime<Utc>>) -> Self {
        let cond = cfg.continue_if().map(|c| Condition::parse(c).expect("validated"));
        let state = match cfg {
            Pagination::None => State::Once,
            Pagination::PageNumber { start, .. } => State::Page { n: *start, first: *start, offset: 0 },
            Pagination::Offset { start, .. } => State::Page { n: 0, first: 0, offset: *start },
            Pagination::Cursor { .. } => State::Cursor { next: None, sent: HashSet::new() },
            Pagination::NextLink { .. } | Pagination::LinkHeader { .. } => State::Link { next: None },
            Pagination::Keyset { .. } => State::Keyset { bound: start, page: 1, ignored: 0, unfiltered: false },
        };
        Paginator { cfg, cond, state }
    }

    pub fn request(&self, bound: Option<&Bound>) -> Request {
        let mut query = Vec::new();
        if let (Some(p), Some(n)) = self.cfg.size() {
            query.push((p.to_string(), n.to_string()));
        }
        match (&self.state, self.cfg) {
            (State::Page { n, offset, .. }, Pagination::PageNumber { param, .. }) => {
                let _ = offset;
                query.push((param.clone(), n.to_string()));
            }
            (State::Page { offset, .. }, Pagination::Offset { param, .. }) => query.push((param.clone(), offset.to_string())),
            (State::Cursor { next: Some(c), .. }, Pagination::Cursor { param, .. }) => query.push((param.clone(), c.clone())),
            (State::Link { next: Some(u) }, _) => {
                return Request {
                    query: Vec::new(),
                    url: Some(u.clone()),
                }
            }
            (State::Keyset { bound: b, page, unfiltered, .. }, Pagination::Keyset { param, .. }) => {
                query.push((param.clone(), page.to_string()));
                if let (Some(bd), Some(b), false) = (bound, b, unfiltered) {
                    query.push((bd.param.to_string(), (bd.format)(*b)));
                }
            }
            _ => {}
        }
        Request { query, url: None }
    }

    /// Whether [`Self::advance`] reads [`Page::last`] (cursor pagination); others get None.
    pub fn reads_last(&self) -> bool {
        matches!(self.cfg, Pagination::Cursor { .. })
    }

    /// Read the page just fetched; true when there is a next one. An error names why paging
    /// cannot go on safely.
    pub fn advance(&mut self, page: &Page, bound: Option<&Bound>, what: &str) -> Result<bool, String> {
        let (_, size) = self.cfg.size();
        let short = size.is_some_and(|s| (page.count as u64) < s);
        let more = match (&mut self.state, self.cfg) {
            (State::Once, _) => false,
            (State::Page { n, first, offset }, cfg) => {
                *offset += page.count as u64;
                if let Pagination::PageNumber {
                    continue_while_status_code_is,
                    stop_when_response_body_is_empty,
                    ..
                } = cfg
                {
                    let empty = match page.body {
                        Value::Null => true,
                        Value::Array(a) => a.is_empty(),
                        Value::Object(m) => m.is_empty(),
                        _ => false,
                    };
                    if continue_while_status_code_is.is_some_and(|c| c != page.status)
                        || (*stop_when_response_body_is_empty && (empty || page.count == 0))
                    {
                        return Ok(false);
                    }
                }
                let total = match cfg {
                    Pagination::PageNumber { total, .. } | Pagination::Offset { total, .. } => total.as_deref(),
                    _ => None,
                };
                let step = match cfg {
                    Pagination::PageNumber { step, .. } => *step,
                    _ => 1,
                };
                let done_pages = ((*n - *first) / step + 1) as u64;
                let seen = size.map_or(*offset, |s| done_pages * s).max(*offset);
                let reached = total
                    .and_then(|t| json::at_str(page.body, t))
                    .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
                    .is_some_and(|total| seen as f64 >= total);
                *n += step;
                page.count > 0 && !short && !reached
            }
            (State::Cursor { next, sent }, Pagination::Cursor { from, .. }) => {
                let n = page
                    .last
                    .and_then(|r| json::at_str(r, from))
                    .map(json::text);
                if let Some(c) = &n {
                    if !sent.insert(c.clone()) {
                        return Err(format!(
                            "{what}: the API sent cursor {c:?} twice; stopping instead of paging in a loop"
                        ));
                    }
                }
                let more = page.count > 0 && !short && n.is_some();
                *next = n;
                more
            }
            (State::Link { next }, Pagination::NextLink { next: path, .. }) => {
                *next = json::at_str(page.body, path)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                next.is_some() && page.count > 0
            }
            (State::Link { next }, _) => {
                *next = crate::http::next_link(page.headers);
                next.is_some() && page.count > 0
            }
            (State::Keyset { bound: b, page: p, ignored, unfiltered }, _) => {
                if page.count == 0 || short {
                    false
                } else if *unfiltered {
                    *p += 1;
                    true
                } else {
                    let max = page.cursors.iter().max().copied();
                    let floor = |t| bound.map_or(t, |bd| (bd.floor)(t));
                    match (max, *b) {
                        (Some(m), Some(cur)) if m < cur => {
                            // The API ignored the bound: nothing on this page is new. Ask again;
                            // an API that never honours it is walked page by page instead.
                            *ignored += 1;
                            if *ignored >= IGNORED_BEFORE_UNFILTERED {
                                tracing::warn!(stream = what, "the API keeps ignoring the incremental bound; paging through the whole list");
                                *unfiltered = true;
                                *p = 1;
                            }
                            true
                        }
                        (Some(m), cur) => {
                            *ignored = 0;
                            let m = floor(m);
                            if cur.is_none_or(|c| m > c) {
                                *b = Some(m);
                                *p = 1;
                            } else {
                                // A whole page inside one timestamp: page within it.
                                *p += 1;
                            }
                            true
                        }
                        (None, _) => {
                            *p += 1;
                            true
                        }
                    }
                }
            }
            _ => false,
        };
        Ok(more && self.cond.as_ref().is_none_or(|c| c.holds(page.body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pagination(toml_text: &str) -> Pagination {
        toml::from_str(toml_text).unwrap()
    }

    fn page<'a>(status: u16, body: &'a Value, count: usize, h: &'a HeaderMap) -> Page<'a> {
        Page { status, body, headers: h, count, last: None, cursors: &[] }
    }

    #[test]
    fn sequential_with_start_step_and_seed_stop_rules() {
        let h = HeaderMap::new();
        let cfg = pagination("type = \"page_number\"\nparam = \"p\"\nstart = 0\nstep = 10\ncontinue_if = \"more\"\ncontinue_while_status_code_is = 200\n");
        let mut pg = Paginator::new(&cfg, None);
        assert_eq!(pg.request(None).query, vec![("p".to_string(), "0".to_string())]);
        let more = json!({"more": true, "data": [1]});
        assert!(pg.advance(&page(200, &more, 1, &h), None, "t").unwrap());
        assert_eq!(pg.request(None).query, vec![("p".to_string(), "10".to_string())]);
        // Another status ends it; so does `there_are_more_pages` (continue_if) going false.
        assert!(!pg.advance(&page(206, &more, 1, &h), None, "t").unwrap());
        let mut pg = Paginator::new(&cfg, None);
        assert!(!pg.advance(&page(200, &json!({"more": false, "data": [1]}), 1, &h), None, "t").unwrap());
        let empty = pagination("type = \"page_number\"\nparam = \"p\"\nstop_when_response_body_is_empty = true\n");
        let mut pg = Paginator::new(&empty, None);
        assert!(!pg.advance(&page(200, &json!({}), 1, &h), None, "t").unwrap());
    }
}
