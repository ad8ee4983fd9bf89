//! [`StreamRun::raw_page`]: a page whose records stay the bytes the API sent
//! ([`crate::json::raw`]), for streams where nothing needs them as values.
use super::{kept::Kept, StreamRun};
use crate::error::{Error, Result};
use crate::lake::schema::Shape;
use crate::lake::RawFile;
use crate::pull::paginate::{Bound, Page, Paginator};
use crate::pull::{records, StreamReport};
use crate::time::cursor_instant;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One page for [`StreamRun::raw_page`]: the body, its records' ranges, the context to add.
pub(super) struct RawPage<'a> {
    pub(super) pass: &'a super::Pass,
    pub(super) bytes: &'a str,
    pub(super) ranges: &'a [std::ops::Range<usize>],
    pub(super) got: &'a crate::http::Fetched,
    pub(super) members: &'a str,
    pub(super) ctx: &'a [(String, Value)],
}

impl StreamRun<'_> {
    /// A page whose records were kept as bytes: the same decisions as the `Value` path (the
    /// paginator reads the page as served, the incremental filter the same cursor and key),
    /// but each kept record is written as the API sent it, context fields spliced in.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn raw_page(
        &self,
        page: RawPage<'_>,
        pager: &mut Paginator<'_>,
        bound: Option<&Bound<'_>>,
        kept: &mut Kept,
        file: &mut Option<(RawFile, String)>,
        rep: &mut StreamReport,
        what: &str,
    ) -> Result<bool> {
        let bad = |e: serde_json::Error| Error::Http(format!("{what}: a record is not valid JSON: {e}"));
        let recs: Vec<&str> = page.ranges.iter().map(|r| &page.bytes[r.clone()]).collect();
        self.check_cap(recs.len(), rep, what);
        // One read of each record for what the pull needs from it: cursor, key, and whether it
        // already holds a context field (then it is rebuilt as a value, as `inject` would).
        let inc = self.s.incremental.as_ref();
        let none: &[String] = &[];
        let mut paths: Vec<&[String]> = vec![
            inc.map_or(none, |i| i.cursor.as_slice()),
            self.s.primary_key.as_deref().filter(|_| inc.is_some()).unwrap_or(none),
        ];
        paths.extend(page.ctx.iter().map(|(k, _)| std::slice::from_ref(k)));
        // Without an incremental cursor only a possible context field needs reading, and a
        // record can only hold one if the key's bytes, or an escape, appear in it.
        let quoted: Vec<String> = page.ctx.iter().map(|(k, _)| Value::String(k.clone()).to_string()).collect();
        let finders: Vec<memchr::memmem::Finder> = quoted.iter().map(memchr::memmem::Finder::new).collect();
        let may_collide = |r: &str| memchr::memchr(b'\\', r.as_bytes()).is_some() || finders.iter().any(|f| f.find(r.as_bytes()).is_some());
        // The same read says whether the record is within the file's shape so far (then the
        // file need not read it again for its schema; see `RawFile::write_lines`).
        let null = Shape::Null;
        let shape = file.as_ref().map_or(&null, |(f, _)| f.shape());
        let (picked, within): (Vec<Vec<Option<Value>>>, Vec<bool>) = if paths.iter().all(|p| p.is_empty()) {
            Default::default()
        } else {
            recs.iter()
                .map(|r| match inc.is_some() || may_collide(r) {
                    true => shape.pick_within_valid(r, &paths),
                    false => Ok((vec![None; paths.len()], false)),
                })
                .collect::<serde_json::Result<Vec<_>>>()
                .map_err(bad)?
                .into_iter()
                .unzip()
        };
        let members_within = page.members.is_empty() || shape.pick_within(&format!("{{{}}}", page.members), &[]).is_ok_and(|(_, w)| w);
        let cursor_at: Vec<Option<DateTime<Utc>>> = match inc {
            Some(inc) => picked.iter().map(|p| p[0].as_ref().and_then(|v| cursor_instant(v, &inc.tz))).collect(),
            None => Vec::new(),
        };
        let cursor = |k: usize| cursor_at.get(k).copied().flatten();
        let cursors: Vec<DateTime<Utc>> = cursor_at.iter().copied().flatten().collect();
        // Only cursor pagination reads the last served record.
        let last = match pager.reads_last() {
            true => recs.last().map(|r| serde_json::from_str::<Value>(r)).transpose().map_err(bad)?,
            false => None,
        };
        let served = Page {
            status: page.got.status,
            body: &page.got.body,
            headers: &page.got.headers,
            count: recs.len(),
            last: last.as_ref(),
            cursors: &cursors,
        };
        let more = pager.advance(&served, bound, what).map_err(Error::Http)?;
        let mut lines = String::with_capacity(page.bytes.len() + recs.len() * (page.members.len() + 2));
        let (mut n, mut last_line) = (0usize, 0usize);
        // Lines the file must read for its shape: from the first one not known within it on
        // (the shape a line adds to can depend on the lines before it), all of them.
        let (mut fold, mut changed) = (Vec::new(), !members_within);
        for (k, r) in recs.iter().enumerate() {
            if inc.is_some() && !kept.keep(page.pass.floor, cursor(k), picked.get(k).and_then(|p| p[1].as_ref())) {
                continue;
            }
            let collides = picked.get(k).is_some_and(|p| p[2..].iter().any(Option::is_some));
            last_line = lines.len();
            records::splice(&mut lines, r, page.members, collides, page.ctx).map_err(bad)?;
            changed |= collides || !within.get(k).copied().unwrap_or(false);
            if changed {
                fold.push(last_line..lines.len());
            }
            lines.push('\n');
            n += 1;
        }
        if n == 0 {
            return Ok(more);
        }
        rep.last = Some(lines[last_line..lines.len() - 1].to_string());
        self.open(file, &self.s.outputs[0].stream, &page.pass.date).await?.write_lines(lines, n, &fold).await?;
        rep.records += n as u64;
        Ok(more)
    }
}
