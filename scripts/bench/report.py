#!/usr/bin/env python3
"""Summarise a scripts/bench.sh run: medians over repetitions, ratios against the targets.

Usage: report.py OUT_DIR. Reads OUT_DIR/r{rep}.{kind}.{target}.{workload}.json (fio JSON) and
OUT_DIR/events.tsv (load averages, resync and copy timings); writes OUT_DIR/results.json and
OUT_DIR/results.md and prints the markdown. Figures only: nothing here passes or fails a run.
"""

import json
import os
import re
import statistics
import sys

WORKLOADS = ["randread", "randwrite", "read", "write"]
WL_LABEL = {
    "randread": "4k randread QD32",
    "randwrite": "4k randwrite QD32",
    "read": "1M seq read QD32",
    "write": "1M seq write QD32",
}
TARGETS = ["raw1", "raw2", "raid1", "qemu"]
NAME = re.compile(r"^r(\d+)\.(\w+)\.(raw1|raw2|raid1|qemu)\.(randread|randwrite|read|write)\.json$")


def load_fio(path):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before the JSON document.
    return json.loads(text[text.index("{"):])


def job_figures(job, wl):
    side = job["read"] if wl in ("randread", "read") else job["write"]
    pct = side.get("clat_ns", {}).get("percentile", {})
    return {
        "iops": side["iops"],
        "mibs": side["bw"] / 1024.0,
        "p50_us": pct.get("50.000000", 0) / 1000.0,
        "p99_us": pct.get("99.000000", 0) / 1000.0,
    }


def median(values):
    return statistics.median(values) if values else None


def main():
    out = sys.argv[1]
    runs = {}  # (kind, target, wl) -> list of per-rep dicts
    for name in sorted(os.listdir(out)):
        m = NAME.match(name)
        if not m:
            continue
        rep, kind, target, wl = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        jobs = [job_figures(j, wl) for j in load_fio(os.path.join(out, name))["jobs"]]
        rec = {
            "rep": rep,
            # min over jobs: the mirrored ceiling (both members must take every write)
            "iops": min(j["iops"] for j in jobs),
            "mibs": min(j["mibs"] for j in jobs),
            "iops_sum": sum(j["iops"] for j in jobs),
            "mibs_sum": sum(j["mibs"] for j in jobs),
            "p50_us": max(j["p50_us"] for j in jobs),
            "p99_us": max(j["p99_us"] for j in jobs),
            "jobs": jobs,
        }
        runs.setdefault((kind, target, wl), []).append(rec)

    loads = []
    syncs = {}  # (kind, what) -> list of MiB/s
    with open(os.path.join(out, "events.tsv")) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            for v in fields[2:4]:
                try:
                    loads.append(float(v))
                except ValueError:
                    pass
            if fields[0] in ("resync", "copy"):
                _, tag, _, _, nbytes, ns = fields
                rep, kind, what = tag.split(".")
                mibs = int(nbytes) / 1048576.0 / (int(ns) / 1e9)
                syncs.setdefault((kind, what), []).append({"rep": int(rep[1:]), "mibs": mibs})

    kinds = []
    for kind, _, _ in runs:
        if kind not in kinds:
            kinds.append(kind)

    def med(kind, target, wl, field="iops"):
        return median([r[field] for r in runs.get((kind, target, wl), [])])

    def sync_med(kind, what):
        return median([r["mibs"] for r in syncs.get((kind, what), [])])

    def ratio(a, b):
        return a / b if a is not None and b else None

    def fmt_ratio(r):
        return "–" if r is None else f"{r:.2f}"

    def fig(kind, target, wl, field=None):
        rand = wl.startswith("rand")
        field = field or ("iops" if rand else "mibs")
        v = med(kind, target, wl, field)
        if v is None:
            return "–"
        return f"{v / 1000:.1f} k" if rand else f"{v:.0f}"

    result = {"kinds": {}, "targets": [], "load_average": {}}
    md = []
    machine = os.path.join(out, "machine.txt")
    if os.path.exists(machine):
        with open(machine) as f:
            md.append("```text\n" + f.read().rstrip() + "\n```\n")
    if loads:
        result["load_average"] = {"min": min(loads), "median": median(loads), "max": max(loads)}
        md.append(
            f"Load average (1 min) at the fio runs' starts and ends: min {min(loads):.2f}, "
            f"median {median(loads):.2f}, max {max(loads):.2f}.\n"
        )

    for kind in kinds:
        md.append(f"### members: {kind}\n")
        md.append("IOPS for 4k, MiB/s for 1M; medians over repetitions (values per repetition in results.json).\n")
        md.append(
            "| workload | raw, one member | raw, both at once (slower / sum) | raid1 run over NBD | "
            "qemu-nbd over NBD (one member) | raid1 / raw ceiling | raid1 / qemu-nbd |"
        )
        md.append("|---|---:|---:|---:|---:|---:|---:|")
        kres = {}
        for wl in WORKLOADS:
            rand = wl.startswith("rand")
            field = "iops" if rand else "mibs"
            reading = wl in ("randread", "read")
            raid1 = med(kind, "raid1", wl, field)
            # Reads: the reference is one member (the target asks for ~2x it); writes: the slower
            # of the two members written at once.
            ceiling = med(kind, "raw1" if reading else "raw2", wl, field)
            both_sum = med(kind, "raw2", wl, field + "_sum")
            r_ceiling = ratio(raid1, ceiling)
            r_qemu = ratio(raid1, med(kind, "qemu", wl, field))
            both = fig(kind, "raw2", wl)
            if both_sum is not None:
                both += " / " + (f"{both_sum / 1000:.1f} k" if rand else f"{both_sum:.0f}")
            md.append(
                f"| {WL_LABEL[wl]} | {fig(kind, 'raw1', wl)} | {both} | {fig(kind, 'raid1', wl)} | "
                f"{fig(kind, 'qemu', wl)} | {fmt_ratio(r_ceiling)}{' (vs one)' if reading else ''} | "
                f"{fmt_ratio(r_qemu)} |"
            )
            kres[wl] = {
                t: {
                    "median_" + field: med(kind, t, wl, field),
                    "median_p50_us": med(kind, t, wl, "p50_us"),
                    "median_p99_us": med(kind, t, wl, "p99_us"),
                    "runs": runs.get((kind, t, wl), []),
                }
                for t in TARGETS
            }
            kres[wl]["raid1_over_reference"] = r_ceiling
            kres[wl]["raid1_over_qemu"] = r_qemu
        md.append("")
        md.append("| latency p50 / p99 (µs) | raw, one | raw, both (slower) | raid1 run | qemu-nbd |")
        md.append("|---|---:|---:|---:|---:|")
        for wl in WORKLOADS:
            cells = []
            for t in TARGETS:
                p50, p99 = med(kind, t, wl, "p50_us"), med(kind, t, wl, "p99_us")
                cells.append("–" if p50 is None else f"{p50:.0f} / {p99:.0f}")
            md.append(f"| {WL_LABEL[wl]} | " + " | ".join(cells) + " |")
        md.append("")
        resync = sync_med(kind, "resync")
        copy64 = sync_med(kind, "copy64k")
        copy1m = sync_med(kind, "copy1024k")
        md.append("| initial resync | MiB/s (median) | per repetition |")
        md.append("|---|---:|---|")
        for what, label in (
            ("resync", "raid1 run + raid1 wait (64 KiB windows, 8 in flight)"),
            ("copy64k", "dd O_DIRECT bs=64k, one member to the other"),
            ("copy1024k", "dd O_DIRECT bs=1M"),
            ("copy64kdsync", "dd O_DIRECT bs=64k, oflag=dsync (writes durable, as the resync's FUA)"),
        ):
            vals = [f"{r['mibs']:.0f}" for r in sorted(syncs.get((kind, what), []), key=lambda r: r["rep"])]
            v = sync_med(kind, what)
            md.append(f"| {label} | {'–' if v is None else f'{v:.0f}'} | {', '.join(vals)} |")
        md.append("")
        kres["resync"] = {w: syncs.get((kind, w), []) for w in ("resync", "copy64k", "copy1024k", "copy64kdsync")}
        kres["resync_over_copy64k_dsync"] = ratio(resync, sync_med(kind, "copy64kdsync"))
        kres["resync_over_copy64k"] = ratio(resync, copy64)
        kres["resync_over_copy1m"] = ratio(resync, copy1m)
        result["kinds"][kind] = kres

        def target(name, value, goal, note=""):
            reached = None if value is None else value >= goal
            result["targets"].append(
                {"kind": kind, "target": name, "ratio": value, "goal": goal, "reached": reached, "note": note}
            )

        ref_scaling = ratio(med(kind, "raw2", "randread", "iops_sum"), med(kind, "raw1", "randread", "iops"))
        target("mirrored 4k randwrite / two-member raw write ceiling", kres["randwrite"]["raid1_over_reference"], 0.9)
        target("mirrored 1M write / two-member raw write ceiling", kres["write"]["raid1_over_reference"], 0.9)
        target(
            "4k randread / one member",
            kres["randread"]["raid1_over_reference"],
            1.8,
            "device-bound only if both members at once read ~2x one: here "
            + ("–" if ref_scaling is None else f"{ref_scaling:.2f}x"),
        )
        target("resync / raw copy (dd bs=64k)", kres["resync_over_copy64k"], 0.9)
        target("resync / raw copy (dd bs=1M)", kres["resync_over_copy1m"], 0.9, "a stronger reference than asked")
        target(
            "resync / raw copy (dd bs=64k, dsync)",
            kres["resync_over_copy64k_dsync"],
            0.9,
            "like for like: every resync write is FUA",
        )
        for wl in WORKLOADS:
            target(f"NBD export / qemu-nbd, {WL_LABEL[wl]}", kres[wl]["raid1_over_qemu"], 1.2)

    md.append("### ratios against the targets\n")
    md.append("| members | ratio | measured | target | reached | note |")
    md.append("|---|---|---:|---:|---|---|")
    for t in result["targets"]:
        reached = "–" if t["reached"] is None else ("yes" if t["reached"] else "**no**")
        md.append(
            f"| {t['kind']} | {t['target']} | {fmt_ratio(t['ratio'])} | {t['goal']} | {reached} | {t['note']} |"
        )
    md.append("")
    text = "\n".join(md)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
