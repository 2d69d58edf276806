//! RAID1 over an SD card and a SPI NOR flash, for bare-metal targets.
#![no_std]
