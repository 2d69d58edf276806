//! The command-line verbs, one module each: their arguments and what they do, in terms of the
//! layers below (member, report, array).
pub mod create;
pub mod ctl;
pub mod examine;
pub mod monitor;
pub mod run;
pub mod zero;
