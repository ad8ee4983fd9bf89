//! Progress of a pull: an `indicatif` bar per stream on a terminal, quiet otherwise (the
//! stream runner logs a line per finished stream instead).
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Progress {
            multi: (enabled && std::io::stderr().is_terminal()).then(MultiProgress::new),
        }
    }

    pub fn bar(&self, name: &str) -> Bar {
        Bar {
            bar: self.multi.as_ref().map(|m| {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(ProgressStyle::with_template("{spinner} {prefix:32} {msg}").unwrap());
                b.set_prefix(name.to_string());
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                b
            }),
        }
    }
}

pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn set_counts(&self, pages: u64, records: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{pages} pages, {records} records"));
        }
    }
    pub fn finish(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.finish_with_message(msg);
        }
    }
}
