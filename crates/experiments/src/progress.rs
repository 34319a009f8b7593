//! Progress reports of long experiments: an optional [`Observer`] carried in an experiment's
//! options, so that a caller who wants no progress bar passes nothing.

use std::fmt;
use std::sync::Arc;

/// Called with `(done, total)` as an experiment's units of work (patches, restorations,
/// texts, candidates) complete. `Default` is no observer.
///
/// It is an `Arc`'d `Fn`, so that options holding one stay `Clone`; a progress bar (such as
/// indicatif's, which is `Clone + Send + Sync`) moves a clone of itself in. Two observers
/// compare equal whatever they do: options compare by their values alone.
#[derive(Clone, Default)]
pub struct Observer(Option<Arc<dyn Fn(usize, usize) + Send + Sync>>);

impl Observer {
    /// An observer that calls `f(done, total)`.
    pub fn new(f: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// No observer (the default).
    pub fn none() -> Self {
        Self(None)
    }

    /// Whether there is an observer.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Reports `done` of `total`.
    pub fn report(&self, done: usize, total: usize) {
        if let Some(f) = &self.0 {
            f(done, total);
        }
    }

    /// An observer that reports `offset + done` of `total` to this one: one stage of several.
    pub(crate) fn stage(&self, offset: usize, total: usize) -> Observer {
        match &self.0 {
            None => Observer(None),
            Some(f) => {
                let f = f.clone();
                Observer::new(move |done, _| f(offset + done, total))
            }
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

impl Eq for Observer {}

impl PartialEq for Observer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_stage_reports_offset_progress_of_the_whole_and_none_reports_nothing() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let whole = Observer::new(move |d, t| s.lock().unwrap().push((d, t)));
        whole.stage(10, 30).report(4, 10);
        whole.report(30, 30);
        Observer::none().report(1, 2);
        assert_eq!(*seen.lock().unwrap(), vec![(14, 30), (30, 30)]);
        assert!(!Observer::default().is_set());
    }
}
