//! The apr-ir dataflow IR.
pub mod dtype;
pub use dtype::DType;
