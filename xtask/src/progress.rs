//! Progress bars for the commands, and the library observers that drive them.

use burnlens_experiments::Observer;
use indicatif::ProgressBar;

/// An observer that sets `bar`'s length and position from `(done, total)`.
pub fn observer(bar: &ProgressBar) -> Observer {
    let bar = bar.clone();
    Observer::new(move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
}
