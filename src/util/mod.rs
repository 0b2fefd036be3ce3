//! Small pure helpers shared by every layer (a leaf: no I/O, nothing of the crate).

pub mod body;
pub mod url;
