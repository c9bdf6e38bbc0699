//! What a batch costs as a function of its rows, fitted over many batches:
//! the per-batch overhead that bigger batches save, and the per-row cost
//! they do not.

/// A least-squares fit of `cost = o + c·rows` over batches: what a batch
/// costs whatever its size (`o`, what bigger batches save) and what each
/// row adds (`c`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CostFit {
    /// Count, Σrows, Σcost, Σrows², Σrows·cost.
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl CostFit {
    pub(crate) fn add(&mut self, rows: f64, cost: f64) {
        self.add_sums(1.0, rows, cost, rows * rows, rows * cost);
    }

    /// Adds sums kept elsewhere (count, Σrows, Σcost, Σrows², Σrows·cost).
    pub(crate) fn add_sums(&mut self, n: f64, sx: f64, sy: f64, sxx: f64, sxy: f64) {
        self.n += n;
        self.sx += sx;
        self.sy += sy;
        self.sxx += sxx;
        self.sxy += sxy;
    }

    pub(crate) fn merge(&mut self, other: &CostFit) {
        self.add_sums(other.n, other.sx, other.sy, other.sxx, other.sxy);
    }

    pub(crate) fn batches(&self) -> f64 {
        self.n
    }

    /// The summed cost of every batch.
    pub(crate) fn total(&self) -> f64 {
        self.sy
    }

    /// `(o, c)`, the cost per batch (never below 0) and per row; `None`
    /// with fewer than 8 batches, no cost, or sizes too alike to tell.
    pub(crate) fn per_batch_and_row(&self) -> Option<(f64, f64)> {
        let (n, sx, sy, sxx, sxy) = (self.n, self.sx, self.sy, self.sxx, self.sxy);
        let spread = n * sxx - sx * sx;
        if n < 8.0 || sy <= 0.0 || spread <= f64::EPSILON * n * sxx {
            return None;
        }
        let per_row = (n * sxy - sx * sy) / spread;
        let per_batch = (sy - per_row * sx) / n;
        Some((per_batch.max(0.0), per_row))
    }

    /// The share of the total cost that was per-batch overhead.
    pub(crate) fn overhead_share(&self) -> Option<f64> {
        self.per_batch_and_row()
            .map(|(o, _)| (o * self.n / self.sy).min(1.0))
    }
}
