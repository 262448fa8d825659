//! Shared helpers for nnc's integration tests.
