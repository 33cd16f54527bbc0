//! Shared helpers for the corral examples (none yet: each example stands alone).
