//! Linux md metadata v1.x: superblock, write-intent bitmap and bad-block log.
#![no_std]
#![forbid(unsafe_code)]
