//! Control side: the configuration model, its validation and the snapshot compiler.
#![forbid(unsafe_code)]
