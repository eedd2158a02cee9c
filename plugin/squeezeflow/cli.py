"""The `squeezeflow` command: parses arguments, calls one stage, maps errors to exit codes.

Exit codes: 0 ok, 1 gate failed, 2 bad input or config, 3 registry or service unreachable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from squeezeflow import __version__, env
from squeezeflow.errors import SqueezeflowError

EPILOG = "exit codes: 0 ok, 1 gate failed, 2 bad input or config, 3 registry unreachable. Set SQUEEZEFLOW_DEBUG=1 for tracebacks."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="squeezeflow", description="Compress a registered model, gate it on budgets, promote it with lineage.", epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"squeezeflow {__version__}")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="pipeline parameters (default: params.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("pull", help="resolve params source.model_uri and write artifacts/source/", epilog=EPILOG)
    sub.add_parser("soft-labels", help="run every distillation teacher over data.train and write artifacts/soft-labels/", epilog=EPILOG)
    c = sub.add_parser("compress", help="apply recipe RECIPE and write artifacts/candidates/RECIPE/", epilog=EPILOG)
    c.add_argument("recipe", help="a key of params recipes")
    e = sub.add_parser("evaluate", help="measure NAME (a recipe, or baseline) and write metrics/NAME.json", epilog=EPILOG)
    e.add_argument("name", help="a recipe name, or `baseline`")
    sub.add_parser("gate", help="check candidates against budgets, write reports/gate.{json,md}; exit 1 if none passes", epilog=EPILOG)
    pr = sub.add_parser("promote", help="register the selected candidate and move the alias", epilog=EPILOG)
    pr.add_argument("--dry-run", action="store_true", default=env.flag(env.DRY_RUN), help=f"read the registry but write nothing (default from {env.DRY_RUN})")
    sub.add_parser("demo", help="create demo data and source model if missing, then run `dvc repro`", epilog=EPILOG)
    ln = sub.add_parser("lineage", help="walk a registered version back to its source model", epilog=EPILOG)
    ln.add_argument("uri", help="models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest")
    sub.add_parser("steps", help="list the available compression steps and their parameters", epilog=EPILOG)
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "lineage":
        from squeezeflow.lineage import walk

        for depth, v in enumerate(walk(args.uri)):
            taught = f" teachers={v['teachers']}" if v["teachers"] else ""
            detail = f"recipe={v['recipe']} steps={v['steps']}{taught} verdict={v['verdict']} sha256={v['sha256'][:12]} commit={v['git_commit'][:12]}" if v["recipe"] else "(source model)"
            print(f"{'  ' * depth}{'└─ ' if depth else ''}{v['uri']}  {detail}  run={v['run_id']}")
        return 0
    if args.command == "steps":
        return _print_steps()
    from squeezeflow.config import load_params

    params = load_params(args.params)
    if args.command == "pull":
        from squeezeflow.stages.pull import pull

        m = pull(params)
        print(f"pull: {params.source.model_uri} -> models:/{m['root']['name']}/{m['root']['version']} ({m['root']['flavor']}), sha256 {m['sha256'][:12]}")
        from squeezeflow.stages.pull import read_index

        for uri, entry in read_index().items():
            print(f"pull: {uri} -> models:/{entry['name']}/{entry['version']}, sha256 {entry['sha256'][:12]}")
    elif args.command == "soft-labels":
        from squeezeflow.stages.soft_labels import soft_labels

        index = soft_labels(params)
        print(f"soft-labels: {len(index)} teacher(s)")
    elif args.command == "compress":
        from squeezeflow.stages.compress import compress

        m = compress(params, args.recipe)
        print(f"compress {args.recipe}: {' -> '.join(s['kind'] for s in m['steps'])}, sha256 {m['sha256'][:12]}")
    elif args.command == "evaluate":
        from squeezeflow.stages.evaluate import evaluate

        m = evaluate(params, args.name)
        print(f"evaluate {args.name}: accuracy {m['accuracy']:.4f} (drop {m['accuracy_drop']:+.4f}), p50 {m['latency_p50_ms']:.3f} ms, speedup {m['speedup']:.2f}x, {m['size_mb']:.3f} MB")
    elif args.command == "gate":
        from squeezeflow.stages.gate import gate

        gate(params)
    elif args.command == "promote":
        from squeezeflow.stages.promote import promote

        promote(params, dry_run=args.dry_run)
    elif args.command == "demo":
        from squeezeflow.demo import run

        return run(params, args.params)
    return 0


def _print_steps() -> int:
    from squeezeflow.steps import config_class, known_steps

    for kind in known_steps():
        cls = config_class(kind)
        print(f"{kind}: {(cls.__doc__ or '').strip()}")
        for name, field in cls.model_fields.items():
            print(f"  {name} (default {field.default!r}): {field.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SqueezeflowError as e:
        if env.flag(env.DEBUG):
            raise
        print(f"squeezeflow: error: {e}", file=sys.stderr)
        print(f"(set {env.DEBUG}=1 for the traceback)", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
