//! Row parallelism: a batch's rows split across the CPU threads, each block of rows through
//! the same forward pass.
//!
//! GPT-2's rows never see each other (attention is within a row), so the logits of a batch are
//! the logits of its blocks of rows stacked. On the CPU backends every element-wise op runs on
//! one thread; only the matmuls use the others. Running blocks of rows on separate threads
//! keeps every core busy through the element-wise ops too (GPT-2-small at 8 × 128 on two
//! cores: 15–20% faster; docs/PERFORMANCE.md).
//!
//! A forward splits only when all of these hold, and otherwise runs whole:
//! - no KV cache (generation steps run whole);
//! - two rows or more, and more than one rayon thread;
//! - a device whose kernels nest in rayon's pool: flex (its matmuls run on rayon) and ndarray
//!   built with OpenBLAS (whose own threads are set to one while the parts run, and put back
//!   after). Not ndarray's default `matrixmultiply`, whose thread pool does not nest and was
//!   slower split; not wgpu, whose work is on the GPU; not autodiff devices, whose graphs stay
//!   as one pass;
//! - the hook set splits ([`RowSplit::split`]): no hooks, an empty set, or (burnlens-hooks'
//!   `HookSet`) a set of captures only, each block capturing its rows; a set that intervenes
//!   or takes gradients sees the whole batch in one pass;
//! - `BURNLENS_ROW_PARALLEL` is not `0`.

use std::ops::Range;

use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

use crate::batch::TokenBatch;
use crate::error::{Error, Result};
use crate::hook::{Hooks, RowPart, RowSplit};

/// The blocks of rows a forward of `batch` on `device` runs as (if its hooks split), or
/// `None` to run it whole.
pub(crate) fn row_blocks(batch: &TokenBatch, device: &Device) -> Option<Vec<Range<usize>>> {
    if std::env::var_os("BURNLENS_ROW_PARALLEL").is_some_and(|v| v == "0") {
        return None;
    }
    let rows = batch.batch_size();
    let parts = rayon::current_num_threads().min(rows);
    if parts < 2 || device.is_autodiff() || !nests_in_rayon(device) {
        return None;
    }
    // As even as possible: the first `rows % parts` blocks get one row more.
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    Some(
        (0..parts)
            .map(|i| {
                let len = base + usize::from(i < extra);
                start += len;
                start - len..start
            })
            .collect(),
    )
}

/// Whether `device`'s kernels share rayon's pool rather than keep threads of their own.
fn nests_in_rayon(device: &Device) -> bool {
    // Deprecated upstream in favour of flex, and kept on purpose (see `BackendKind`).
    #[allow(deprecated)]
    let ndarray = *device == Device::ndarray();
    *device == Device::flex() || (ndarray && cfg!(feature = "openblas"))
}

/// The forward `whole` of `batch` as blocks of rows run in parallel, each with its part of the
/// hook set (`parts`, from [`RowSplit::split`]), the logits stacked in row order; the parts
/// then go back to the set (`split`, [`RowSplit::join`]).
///
/// # Shapes
/// - output: logits `[batch, pos, vocab]`
pub(crate) fn forward_rows(
    batch: &TokenBatch,
    blocks: &[Range<usize>],
    mut parts: Vec<Box<dyn RowPart>>,
    split: &mut dyn RowSplit,
    whole: impl Fn(&TokenBatch, &mut dyn Hooks) -> Result<Tensor<3>> + Sync,
) -> Result<Tensor<3>> {
    if parts.len() != blocks.len() {
        return Err(Error::Shape(format!(
            "a hook set split into {} parts for {} blocks of rows",
            parts.len(),
            blocks.len()
        )));
    }
    let sub = blocks
        .iter()
        .map(|r| batch.rows(r.clone()))
        .collect::<Result<Vec<_>>>()?;
    let logits = {
        let _blas = blas::OneThread::enter();
        sub.par_iter()
            .zip(parts.par_iter_mut())
            .map(|(rows, part)| whole(rows, part.as_mut()))
            .collect::<Result<Vec<_>>>()?
    };
    split.join(parts)?;
    Ok(Tensor::cat(logits, 0))
}

/// OpenBLAS's own threads, set to one while the parts of a row-parallel forward run (each
/// part is a thread already); a no-op without the `openblas` feature.
#[cfg(feature = "openblas")]
#[allow(unsafe_code)]
mod blas {
    use std::ffi::c_int;
    use std::sync::Mutex;

    unsafe extern "C" {
        fn openblas_get_num_threads() -> c_int;
        fn openblas_set_num_threads(n: c_int);
    }

    /// How many row-parallel forwards are running, and OpenBLAS's thread count before the
    /// first of them (forwards on several user threads at once put it back only at the end).
    static ACTIVE: Mutex<(usize, c_int)> = Mutex::new((0, 0));

    /// While alive, OpenBLAS runs each call on its caller's thread.
    pub(super) struct OneThread;

    impl OneThread {
        pub(super) fn enter() -> Self {
            let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
            if active.0 == 0 {
                // SAFETY: both functions only read or write OpenBLAS's thread-count setting;
                // no OpenBLAS call of this forward is in flight.
                active.1 = unsafe { openblas_get_num_threads() };
                unsafe { openblas_set_num_threads(1) };
            }
            active.0 += 1;
            OneThread
        }
    }

    impl Drop for OneThread {
        fn drop(&mut self) {
            let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
            active.0 -= 1;
            if active.0 == 0 {
                // SAFETY: as in `enter`; the parts have finished.
                unsafe { openblas_set_num_threads(active.1) };
            }
        }
    }
}

#[cfg(not(feature = "openblas"))]
mod blas {
    /// Nothing to set without OpenBLAS.
    pub(super) struct OneThread;

    impl OneThread {
        pub(super) fn enter() -> Self {
            OneThread
        }
    }
}
