"""Subcommands beyond ``predict``: ``run``, ``serve``, ``models``, ``bench`` (registered here)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register_commands(commands: argparse._SubParsersAction,
                      add_runtime_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    models = commands.add_parser("models", help="model utilities")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    export = models_sub.add_parser("export-onnx", help="convert a Paddle model folder to ONNX")
    export.add_argument("model", help="model name (in the model home) or folder")
    export.add_argument("--output", default=None, help="where to write the .onnx (default: cache)")
    export.add_argument("--opset", type=int, default=13)


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "models":
        return _models(args)
    raise SystemExit(f"streampose: unknown command {args.command}")


def _models(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from streampose.models.export import export_onnx
    from streampose.models.registry import load_model_files

    folder = Path(args.model)
    files = load_model_files(None, folder) if folder.is_dir() else load_model_files(args.model, None)
    output = export_onnx(files, Path(args.output) if args.output else None, opset=args.opset)
    print(f"streampose: ONNX model written to {output}", file=sys.stderr)
    return 0
