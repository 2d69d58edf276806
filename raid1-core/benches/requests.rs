//! Cost of the engine per logical request (ns/request), for 2 and 3 members: the whole round
//! trip a frontend makes (submit, poll the member I/O, complete each, poll the completion), with
//! one request at a time (qd1) and with 32 in flight (qd32). No data is touched: this is the
//! engine's bookkeeping only. Results are recorded in docs/CORE.md.
//!
//! With `RAID1_CORE_CASE=<members>-<read|write>-<depth>` and `RAID1_CORE_ROUNDS=N` set, the
//! binary runs N rounds of that one case and exits, without criterion: the way
//! `scripts/bench/core-instructions.sh` counts instructions per request under callgrind.

use criterion::{BenchmarkId, Criterion, Throughput};
use raid1_core::{Array, Config, Instant, IoCmd, IoResult, MemberId, Request, RequestOp};
use std::hint::black_box;

const T: Instant = Instant(1);

fn array<const M: usize>() -> Array<'static, M, 64, 2> {
    let ids: Vec<MemberId> = (0..M as u8).map(MemberId).collect();
    let mut a = Array::create(Config::new(1 << 30), None, M as u16, &ids, true).expect("create");
    settle(&mut a);
    // One write so the array is dirty (the steady state under load).
    a.submit(T, req(0, RequestOp::Write, 0)).expect("submit");
    settle(&mut a);
    while a.poll_completion().is_some() {}
    a
}

fn req(id: u64, op: RequestOp, sector: u64) -> Request {
    Request {
        id,
        op,
        sector,
        sectors: 8,
        buffer: id as u32,
        fua: false,
    }
}

fn settle<const M: usize>(a: &mut Array<'static, M, 64, 2>) {
    while let Some(c) = a.poll_io() {
        let tag = match c {
            IoCmd::Member(io) => io.tag,
            IoCmd::Superblock { tag, .. }
            | IoCmd::BitmapPage { tag, .. }
            | IoCmd::Compare { tag, .. } => tag,
        };
        a.complete(T, tag, IoResult::Ok).expect("tag");
    }
}

fn round<const M: usize>(
    a: &mut Array<'static, M, 64, 2>,
    op: RequestOp,
    depth: u64,
    base: &mut u64,
) {
    for i in 0..depth {
        *base = (*base + 8) % (1 << 29);
        a.submit(T, req(i, op, *base)).expect("submit");
    }
    settle(a);
    let mut n = 0;
    while let Some(c) = a.poll_completion() {
        black_box(c);
        n += 1;
    }
    assert_eq!(n, depth);
}

fn bench_members<const M: usize>(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("{M}-members"));
    for (name, op) in [("read", RequestOp::Read), ("write", RequestOp::Write)] {
        for depth in [1u64, 32] {
            g.throughput(Throughput::Elements(depth));
            g.bench_with_input(
                BenchmarkId::new(name, format!("qd{depth}")),
                &depth,
                |b, &depth| {
                    let mut a = array::<M>();
                    let mut base = 0;
                    b.iter(|| round(&mut a, op, depth, &mut base));
                },
            );
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_members::<2>(c);
    bench_members::<3>(c);
}

/// One case, `rounds` times, outside criterion (for instruction counting).
fn run_case<const M: usize>(op: RequestOp, depth: u64, rounds: u64) {
    let mut a = array::<M>();
    let mut base = 0;
    for _ in 0..rounds {
        round(&mut a, op, depth, &mut base);
    }
}

fn main() {
    if let Ok(case) = std::env::var("RAID1_CORE_CASE") {
        let rounds: u64 = std::env::var("RAID1_CORE_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .expect("RAID1_CORE_ROUNDS=<number> goes with RAID1_CORE_CASE");
        let parts: Vec<&str> = case.split('-').collect();
        let (members, op, depth) = match parts.as_slice() {
            [m, o, d] => (*m, *o, d.parse::<u64>().expect("depth")),
            _ => panic!("RAID1_CORE_CASE is <members>-<read|write>-<depth>, not {case}"),
        };
        let op = match op {
            "read" => RequestOp::Read,
            "write" => RequestOp::Write,
            _ => panic!("RAID1_CORE_CASE names read or write, not {op}"),
        };
        match members {
            "2" => run_case::<2>(op, depth, rounds),
            "3" => run_case::<3>(op, depth, rounds),
            _ => panic!("RAID1_CORE_CASE has 2 or 3 members, not {members}"),
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
