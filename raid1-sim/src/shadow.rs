//! The shadow oracle: per sector, what the array may legitimately return and what a power
//! cut may legitimately leave.

/// Shadow state of one sector.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shadow {
    /// Possible durable values (one, except after a crash before the resync settled them).
    pub(crate) base: Vec<u64>,
    /// Possible current values.
    pub(crate) current: Vec<u64>,
    /// Writes since the durable point: (value, ack sequence when acknowledged).
    pub(crate) since: Vec<(u64, Option<u64>)>,
    /// Value of the write in flight (the workload never overlaps two writes).
    pub(crate) inflight: Option<u64>,
}

pub(crate) fn dedup(v: &mut Vec<u64>) {
    v.sort_unstable();
    v.dedup();
}
