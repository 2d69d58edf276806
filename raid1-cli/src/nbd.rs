//! An NBD server (fixed newstyle) that exports a block backend.
