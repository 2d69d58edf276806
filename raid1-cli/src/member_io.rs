//! Member I/O on Linux: O_DIRECT files and block devices driven by io_uring.
