//! Prints the RAM the engine needs for a few sizings (`cargo run --release -p raid1-core
//! --example footprint`). The bitmap lives in caller storage and is not included.

fn main() {
    println!(
        "Array<2 members, 8 requests, 1 sync window>:    {} bytes",
        size_of::<raid1_core::Array<'static, 2, 8, 1>>()
    );
    println!(
        "Array<2 members, 8 requests, 2 sync windows>:   {} bytes",
        size_of::<raid1_core::Array<'static, 2, 8, 2>>()
    );
    println!(
        "Array<3 members, 64 requests, 4 sync windows>:  {} bytes",
        size_of::<raid1_core::Array<'static, 3, 64, 4>>()
    );
    println!(
        "Array<4 members, 256 requests, 8 sync windows>: {} bytes",
        size_of::<raid1_core::Array<'static, 4, 256, 8>>()
    );
}
