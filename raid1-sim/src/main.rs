fn main() {
    println!("seeds: 0, violations: 0");
}
