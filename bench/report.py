"""Write docs/benchmarks.md: the markdown tables of every bench/results/*.json (`make bench` runs it last).

python bench/report.py [--results bench/results] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent
SUMMARY = HERE / "summary.md"  # the hand-written reading of the tables, placed before them
INTRO = """# Benchmarks

`make bench` runs every benchmark in `bench/`, writes `bench/results/NAME.json` (date, machine,
library versions, method, figures) and regenerates this page from them (`python bench/report.py`;
`make bench-peers` for the toolkits), after the reading of them kept in `bench/summary.md`.
Every ratio is measured side by side in one process, on one machine, interleaved, with medians over
repeats: compare ratios, not absolute times, across runs. Each benchmark has a `--smoke` mode that
the test suite runs so that none of them rots; the figures themselves are never asserted as timings.
"""


def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def provenance(report: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return (
        f"{report['date']}, {report['machine']['platform']}, Python {report['machine']['python']}; "
        f"{versions}.\nMethod: {report['method']}.\n"
    )


def variants(report: dict, columns: list[str]) -> str:
    out = []
    for model, row in report["models"].items():
        rows = row.get("variants", row)
        out.append(
            f"**{model}**\n\n"
            + table(
                ["variant", *columns],
                [[k, *[v.get(c) for c in columns]] for k, v in rows.items() if isinstance(v, dict)],
            )
        )
    return "\n\n".join(out)


def peers(report: dict) -> str:
    cols = [
        "accuracy_drop_points",
        "size_ratio",
        "batch1_speedup",
        "batch32_speedup",
        "batch1_p50_ms",
        "batch32_p50_ms",
    ]
    parts = []
    for model, row in report["models"].items():
        sf = row["squeezeflow"]
        rows = [[k, *[v.get(c) for c in cols]] for k, v in row["variants"].items()]
        parts.append(
            f"**{model}** (squeezeflow selected `{sf['selected']}` of {', '.join(sf['recipes'])} under "
            f"{sf['budgets']})\n\n" + table(["variant", *cols], rows)
        )
    return "\n\n".join(parts) + (
        "\n\nSpeedups are against FP32 ONNX Runtime; torchao's against FP32 PyTorch are in "
        "the JSON (`batchN_speedup_vs_torch_fp32`)."
    )


def toolkits(report: dict) -> str:
    parts = []
    for model, row in report["models"].items():
        rows = []
        for k, v in row["variants"].items():
            kernels = ", ".join(f"{op} {n}" for op, n in v["integer_kernels"].items())
            shown = [
                v.get("value"),
                "[{:.4g}, {:.4g}]".format(*v["interval"]) if "interval" in v else v.get("error", ""),
            ]
            rows.append(
                [
                    k,
                    *shown,
                    v["size_ratio"],
                    v.get("batch1_speedup"),
                    v.get("batch8_speedup"),
                    v["tool_wall_s"],
                    kernels,
                ]
            )
        peers = row["peers"]
        note = (
            f"peer toolkits skipped: {peers['skipped']}"
            if peers.get("skipped")
            else "peer versions: " + ", ".join(f"{k} {v}" for k, v in (peers.get("versions") or {}).items())
        )
        if peers.get("errors"):
            note += "; errors: " + "; ".join(f"{k}: {v}" for k, v in peers["errors"].items())
        verdict = row.get("verdict", {})
        said = "; ".join(
            f"{label} `{v['variant']}`: as accurate as the best peer (`{verdict['best_peer']}`) "
            f"{'yes' if v['as_accurate'] else 'NO'}, "
            f"no peer as accurate and faster {'yes' if v['no_peer_as_accurate_and_faster'] else 'NO'}"
            for label, v in verdict.items()
            if isinstance(v, dict)
        )
        metric = verdict.get("metric", "metric")
        parts.append(
            f"**{model}** ({row['kind']}, task {row.get('task', 'classification')}; auto chose "
            f"`{verdict.get('auto_chose')}`; {note})\n\n"
            + table(
                [
                    "variant",
                    metric,
                    "95% interval vs FP32",
                    "size ratio",
                    "speedup b1",
                    "speedup b8",
                    "tool s",
                    "integer kernels ORT runs",
                ],
                rows,
            )
            + (f"\n\n{said}." if said else "")
        )
    return "\n\n".join(parts)


def overhead(report: dict) -> str:
    row = next(iter(report["models"].values()))
    runs = row["repro"]
    rows = [
        [name, r["wall_s"], r["compute_s"], r["overhead_fraction"], r["imports_s"], r["startup_s"], r["dvc_s"]]
        for name, r in (("cold", runs["cold"]), ("forced (median)", runs["forced_median"]))
    ]
    text = table(["dvc repro", "wall s", "compute s", "overhead", "imports s", "start-up s", "DVC s"], rows)
    stages = runs["cold"]["stages"]
    text += "\n\nPer stage (cold run):\n\n" + table(
        ["stage", "wall s", "compute s", "imports s"],
        [[k, v["wall_s"], v["compute_s"], v["import_s"]] for k, v in stages.items()],
    )
    promo = row["promotion"]
    text += (
        f"\n\nNo-op `dvc repro`: median {row['noop_repro_s']['median']} s (target "
        f"{row['targets']['noop_repro_s']} s). "
        f"`squeezeflow --help`: median {row['help_s']['median']} s (target {row['targets']['help_s']} s).\n\n"
        + table(
            ["promotion", "HTTP requests", "wall s", "compute s", "imports s"],
            [[k, v["requests"], v["wall_s"], v["compute_s"], v["import_s"]] for k, v in promo.items()],
        )
    )
    return text


def scale(report: dict) -> str:
    parts = []
    for size, row in report["models"].items():
        rows = [
            [
                stage,
                v["wall_s"],
                round(v["peak_rss_bytes"] / 1e9, 3),
                v["peak_rss_over_fp32"],
                v.get("above_libraries_over_fp32"),
                v.get("compute_s"),
            ]
            for stage, v in row["stages"].items()
        ]
        parts.append(
            f"**{size}**: {row['params']:,} parameters, FP32 {row['fp32_bytes'] / 1e9:.3f} GB, external "
            f"data: {row['external_data']}, "
            f"libraries alone {row.get('libraries_rss_bytes', 0) / 1e9:.2f} GB resident, promotion: "
            f"{row['promotion']}\n\n"
            + table(["stage", "wall s", "peak RSS GB", "peak / FP32", "(peak - libraries) / FP32", "compute s"], rows)
        )
    sizes = list(report["models"])
    if len(sizes) > 1:
        base = sizes[0]
        stages = list(report["models"][base]["stages"])
        rows = [[stage, *[report["models"][s][f"time_ratio_vs_{base}"][stage] for s in sizes]] for stage in stages]
        parts.append(
            f"Time ratios against {base} (parameter ratios: "
            + ", ".join(f"{s} {report['models'][s][f'params_ratio_vs_{base}']}x" for s in sizes)
            + ")\n\n"
            + table(["stage", *sizes], rows)
        )
        per_m = [
            [
                stage,
                *[
                    round(report["models"][s]["stages"][stage]["compute_s"] / (report["models"][s]["params"] / 1e6), 4)
                    for s in sizes
                ],
            ]
            for stage in stages
            if all("compute_s" in report["models"][s]["stages"][stage] for s in sizes)
        ]
        parts.append(
            "Compute seconds per million parameters (constant = linear time; start-up and imports "
            "excluded)\n\n" + table(["stage", *sizes], per_m)
        )
    return "\n\n".join(parts)


def calibration(report: dict) -> str:
    parts = []
    for model, row in report["models"].items():
        rows = [
            [
                name,
                r["samples"],
                round(r["peak_rss_bytes"] / 1e6, 1),
                r["above_libraries_mb"],
                r["wall_s"],
                r.get("agreement", ""),
            ]
            for name, r in row["runs"].items()
        ]
        parts.append(
            f"**{model}** (FP32 {row['fp32_bytes'] / 1e6:.1f} MB; libraries alone "
            f"{row['libraries_rss_bytes'] / 1e6:.0f} MB resident)\n\n"
            + table(
                [
                    "calibrator method samples",
                    "samples",
                    "peak RSS MB",
                    "above libraries MB",
                    "wall s",
                    "agreement with FP32",
                ],
                rows,
            )
        )
    growth = [[m, *g.values()] for m, g in report.get("growth", {}).items()]
    if growth:
        parts.append(
            "Peak memory growth with samples\n\n" + table(["method", *next(iter(report["growth"].values()))], growth)
        )
    return "\n\n".join(parts)


def stages(report: dict) -> str:
    parts = []
    for model, row in report["models"].items():
        libs = row["libraries_rss_bytes"]
        rows = [
            [
                name,
                r["samples"],
                round(r["peak_rss_bytes"] / 1e6, 1),
                round(libs[name.split()[0]] / 1e6, 1),
                r["above_libraries_mb"],
                round(r["bound_bytes"] / 1e6, 1),
                "yes" if r["within_bound"] else "no",
                r["wall_s"],
            ]
            for name, r in row["runs"].items()
        ]
        parts.append(
            f"**{model}** (FP32 {row['fp32_bytes'] / 1e6:.1f} MB; bound: 3 x FP32 + the stage's libraries)\n\n"
            + table(
                [
                    "stage samples",
                    "samples",
                    "peak RSS MB",
                    "its libraries MB",
                    "above libraries MB",
                    "bound MB",
                    "within",
                    "wall s",
                ],
                rows,
            )
        )
    growth = [[stage, g] for stage, g in report.get("growth", {}).items()]
    if growth:
        parts.append("Peak memory, largest sample count over smallest\n\n" + table(["stage", "ratio"], growth))
    return "\n\n".join(parts)


# bench/zoo.py's read-outs of the outputs
READOUTS = ("words_read_as_fp32", "text_pixel_iou", "face_decision_agreement")


def zoo(report: dict) -> str:
    parts = []
    for model, row in report["models"].items():
        metric = next(k for k in row if k.startswith("fp32_") and k != "fp32_readout")[len("fp32_") :]
        versus = {
            "accuracy": "accuracy_drop",
            "mae": "mae_increase",
            "cosine": "retrieval_agreement",
            "max_abs_error": "mean_abs_error",
        }[metric]
        rows = [
            [
                name,
                c[metric],
                c[versus],
                "[{:.3g}, {:.3g}]".format(*c[f"{versus}_ci"]) if None not in c.get(f"{versus}_ci", [None]) else "",
                c.get("agreement", c.get("mean_rel_error")),
                "; ".join(f"{k} {c[k]:.3g}" for k in READOUTS if k in c),
                c["speedup_batch1"],
                c["speedup_batch8"],
                c["size_ratio"],
                c["status"] + (f" ({', '.join(c['missed'])})" if c["missed"] else ""),
            ]
            for name, c in row["candidates"].items()
        ]
        stages = ", ".join(f"{k} {v:g} s" for k, v in row["stages_wall_s"].items())
        parts.append(
            f"**{model}** ({row['task']}; FP32 {metric} {row[f'fp32_{metric}']:.4g}; budgets "
            f"{row['budgets']}; selected `{row['selected']}`, "
            f"promoted {row['promoted']})\n\n"
            + table(
                [
                    "candidate",
                    metric,
                    versus,
                    "95% interval",
                    "agreement / mean rel. error",
                    "read-out vs FP32",
                    "speedup b1",
                    "speedup b8",
                    "size ratio",
                    "status",
                ],
                rows,
            )
            + f"\n\nWall time per stage: {stages}."
        )
    return "\n\n".join(parts)


def targets(report: dict) -> str:
    parts = []
    for model, row in report["models"].items():
        names = list(row["targets"])
        lines = [
            [
                t,
                f"{(v['runtime'] or {}).get('runtime')} {(v['runtime'] or {}).get('runtime_version') or ''}",
                v["verdict"],
                v["selected"] or "-",
                *(
                    lambda c: [
                        c.get("speedup"),
                        "[{}, {}]".format(*c["speedup_interval"]) if c.get("speedup_interval") else "",
                        c.get("accuracy_drop", c.get("mae_increase")),
                    ]
                )(v["candidates"].get(v["selected"], {}) if v["selected"] else {}),
            ]
            for t, v in row["targets"].items()
        ]
        matrix = [[cand, *(per[t] for t in names)] for cand, per in row["matrix"].items()]
        split = (
            "; ".join(
                f"`{r['candidate']}` rejected by {', '.join(r['rejected_by'])}, accepted by "
                f"{', '.join(r['accepted_by'])}"
                for r in row["rejected_here_accepted_there"]
            )
            or "none"
        )
        parts.append(
            f"**{model}** (gate {row['verdict']})\n\n"
            + table(["target", "runtime", "verdict", "selected", "speedup", "95% interval", "quality drop"], lines)
            + "\n\n"
            + table(["candidate", *names], matrix)
            + f"\n\nRejected on one target, accepted on another: {split}."
        )
    return "\n\n".join(parts)


def search(report: dict) -> str:
    parts = []
    for model, row in report["models"].items():
        obj = row["objective"]
        lines = [
            [
                name,
                c["status"],
                c[obj],
                "[{}, {}]".format(*c["interval"]) if None not in c["interval"] else "",
                json.dumps(c["quality"]),
            ]
            for name, c in row["candidates"].items()
        ]
        best = (row["search"].get("best") or [{}])[0]
        verdicts = ", ".join(f"{k}: {v}" for k, v in (row["searched_vs_hand"] or {}).items()) or (
            "searched did not pass the gate" if "searched" in row["candidates"] else "no search result"
        )
        parts.append(
            f"**{model}** (objective {obj}; gate selected {row['selected']}): searched against the "
            f"passing hand-written recipes: {verdicts}. "
            f"Hand recipes took {row['hand_seconds']} s; the search ran {row['search_seconds']} s "
            f"(timeout {row['search_timeout_minutes']} min), "
            f"trials {row['trial_states']}, Pareto front of {len(row['pareto_front'])}; search-1 = trial "
            f"{best.get('number')}: `{json.dumps(best.get('steps'))}`.\n\n"
            + table(["candidate", "status", obj, "95% interval", "quality"], lines)
        )
    return "\n\n".join(parts)


def users(report: dict) -> str:
    """Per model a user brought: what init wrote, then each recipe's status, reason and figures."""
    out = []
    for name, row in report["models"].items():
        out.append(
            f"**{name}** (init wrote task {row['init_wrote']['task']}, data.inputs {row['init_wrote']['inputs']}; "
            f"verdict {row['verdict']}, selected {row['selected']})\n"
        )
        rows = [
            [
                recipe,
                c["status"],
                c["reason"][:160],
                sum(c["quantized_ops"]) if c["quantized_ops"] else None,
                c["opset_upgraded"],
                c["metrics"].get("speedup"),
                c["metrics"].get("compression_ratio"),
                c["metrics"].get("cosine") or c["metrics"].get("mean_rel_error"),
                c["valid_graph"],
                c["silent_no_op"],
            ]
            for recipe, c in row["candidates"].items()
        ]
        head = ["recipe", "status", "reason", "ops quantized", "opset", "speedup", "size ratio", "quality"]
        out.append(table([*head, "valid graph", "silent no-op"], rows) + "\n")
    return "\n".join(out)


SECTIONS = {
    "zoo": ("Real pretrained models (`zoo.py`)", zoo),
    "peers": ("Against the peers (`peers.py`)", peers),
    "overhead": ("Pipeline overhead (`overhead.py`)", overhead),
    "scale": ("Scale: 10M / 100M / 1B parameters (`scale.py`)", scale),
    "calibration": ("Calibration memory against sample count (`calibration.py`)", calibration),
    "stages": ("Stage memory against sample count (`stages.py`)", stages),
    "toolkits": ("INT8 against NNCF, Intel Neural Compressor and Olive (`toolkits.py`, `make bench-peers`)", toolkits),
    "targets": ("One gate, four deployment targets (`targets.py`)", targets),
    "search": ("Search against the hand-written recipes (`search.py`)", search),
    "users": ("Models users bring, from `squeezeflow init` (`users.py`)", users),
    "quantization": (
        "Quantization modes against ORT defaults (`quantization.py`)",
        lambda r: variants(r, ["accuracy_drop_points", "size_ratio", "speedup", "latency_p50_ms"]),
    ),
    "pruning": (
        "Pruning and clustering (`pruning.py`)",
        lambda r: variants(r, ["accuracy_drop_points", "params", "sparsity", "file_ratio", "gzip_ratio", "speedup"]),
    ),
    "distillation": (
        "Distillation (`distillation.py`)",
        lambda r: variants(r, ["accuracy", "accuracy_drop_points", "size_ratio", "speedup"]),
    ),
}


def render(results: Path) -> str:
    parts = [INTRO, SUMMARY.read_text() if SUMMARY.is_file() else ""]
    for name, (title, fn) in SECTIONS.items():
        path = results / f"{name}.json"
        if path.is_file():
            report = json.loads(path.read_text())
            parts.append(f"## {title}\n\n{provenance(report)}\n{fn(report)}\n")
    if (results / "gate_stability.json").is_file():
        parts.append(
            "## Gate stability (`gate_stability.py`)\n\nSee `results/gate_stability.json` (verdicts, "
            "flips and intervals of 20 + 20 gate runs).\n"
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    args.out.write_text(render(args.results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
