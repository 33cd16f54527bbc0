//! A cluster's settings, each held once.

pub(crate) mod name;
