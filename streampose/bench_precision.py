"""``streampose bench-precision``: what each inference precision costs and scores on this machine.

Precision is a choice to measure, not to guess: bf16 makes PP-TinyPose 1.6x faster on one CPU of
this project's machine kind and slower on another, INT8 is slower than f32 on a CPU without VNNI,
and every lower precision may cost OKS AP (README, "Precision"). So one command runs the pose model
in each precision this machine can run, times it as the streaming graph runs it (one OpenVINO
stream of one thread, static models of each batch size, crops of real persons) and scores it on
the shared COCO keypoint sets against PaddleX's own figure, computed with the same evaluator from
PaddleX's saved outputs. A user deciding on ``--precision`` reads speed and accuracy off one run.

The detector runs once per image, in f32, one image per call as PaddleX ran it, so every precision
poses the same boxes and the AP differences are the pose model's alone.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from streampose.bench import write_report
from streampose.errors import ConfigError, InputError, ModelError
from streampose.evaluation import (EVAL_SETS, REFERENCE_THRESHOLD, EvalSet, GroundTruth, KeypointScores,
                                   evaluate, records_from_paddlex_dir)

# PaddleX's reference figures were made with this detector (at REFERENCE_THRESHOLD).
REFERENCE_DETECTOR = "PicoDet-S_pedestrian_320"


@dataclass
class PrecisionBenchSettings:
    data_dir: Path
    pose_model: str = "PP-TinyPose_128x96"
    precisions: list[str] | None = None  # None: every precision this machine can run now
    sets: list[str] = field(default_factory=lambda: list(EVAL_SETS))
    batch_sizes: tuple[int, ...] = (1, 4, 8)
    calls: int = 20  # per timing round
    rounds: int = 5  # the median round is reported
    json_path: str | None = None


def default_data_dir() -> Path:
    """``$STREAMPOSE_DATA``, else ``../shared/data`` beside the working directory or the checkout."""
    candidates = [Path(os.environ["STREAMPOSE_DATA"])] if os.environ.get("STREAMPOSE_DATA") else []
    candidates += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "coco_mini").is_dir():
            return candidate
    raise InputError("bench-precision: no --data given and no shared data folder with coco_mini found "
                     "(set STREAMPOSE_DATA)")


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (it reports the capability, not the speed)."""
    import openvino as ov  # noqa: PLC0415

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def available_precisions(pose_files) -> list[str]:
    """f32, bf16 where the CPU has it, int8 where ``streampose models quantize`` made a copy."""
    from streampose.runtime.int8_cache import find_int8_model  # noqa: PLC0415
    from streampose.runtime.openvino_backend import float_model_source  # noqa: PLC0415

    found = ["f32"]
    if cpu_supports_bf16():
        found.append("bf16")
    if find_int8_model(pose_files, float_model_source(pose_files)[0]) is not None:
        found.append("int8")
    return found


def check_precisions(pose_files, precisions: list[str]) -> None:
    """Refuse, before any model loads, a precision this machine cannot run as asked."""
    runnable = available_precisions(pose_files)
    if "bf16" in precisions and "bf16" not in runnable:
        raise ConfigError("bench-precision: bf16: this CPU has no bf16 units (OpenVINO would run f32 instead)")
    if "int8" in precisions and "int8" not in runnable:
        raise ModelError(f"bench-precision: int8: no INT8 copy of {pose_files.model_dir.name} in the cache; "
                         f"run `streampose models quantize --model {pose_files.model_dir.name}` first")


def load_eval_set(data_dir: Path, name: str, detector) -> EvalSet:
    annotation = data_dir / name / EVAL_SETS[name]
    if not annotation.is_file():
        raise InputError(f"bench-precision: {annotation}: no such file (the {name} set of --data)")
    return EvalSet.detect(annotation, detector)


def paddlex_score(data_dir: Path, set_name: str, model_name: str, ground_truth: GroundTruth) -> KeypointScores | None:
    """PaddleX's own OKS AP from its saved outputs (``paddlex_reference/<set>/base_<size>``), if there."""
    size = model_name.rsplit("_", 1)[-1]
    folder = data_dir / "paddlex_reference" / set_name / f"base_{size}"
    if not folder.is_dir():
        return None
    return evaluate(ground_truth, records_from_paddlex_dir(ground_truth, folder))


def crop_tensor(model, sets: list[EvalSet], count: int) -> np.ndarray:
    """``count`` model inputs cut from real detected persons (repeated when the sets hold fewer)."""
    tensors = [model.make_crops(image, boxes)[0]
               for data in sets for image, boxes in zip(data.images, data.boxes) if len(boxes)]
    if not tensors:
        raise InputError("bench-precision: the detector found no person in the evaluation sets")
    tensor = np.concatenate(tensors)
    return np.ascontiguousarray(np.resize(tensor, (count, *tensor.shape[1:])))


def time_pose(model, tensor: np.ndarray, batch_sizes: tuple[int, ...], calls: int, rounds: int) -> dict[int, float]:
    """Median-round ms per call at each batch size, with each size's static model compiled first."""
    preload = getattr(model.session, "preload", None)
    if preload is not None:
        preload(batch_sizes)
    timings = {}
    for batch in batch_sizes:
        inputs = tensor[:batch]
        for _ in range(3):
            model.heatmaps(inputs)
        per_round = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(calls):
                model.heatmaps(inputs)
            per_round.append((time.perf_counter() - started) * 1000.0 / calls)
        timings[batch] = statistics.median(per_round)
    return timings


def run_precision_bench(settings: PrecisionBenchSettings) -> dict:
    import openvino as ov  # noqa: PLC0415

    from streampose.models.detector import Detector  # noqa: PLC0415
    from streampose.models.keypoints import KeypointModel  # noqa: PLC0415
    from streampose.models.registry import load_model_files  # noqa: PLC0415
    from streampose.runtime import RuntimeOptions  # noqa: PLC0415

    as_folder = Path(settings.pose_model).is_dir()
    pose_files = load_model_files(None if as_folder else settings.pose_model,
                                  settings.pose_model if as_folder else None)
    precisions = settings.precisions or available_precisions(pose_files)
    check_precisions(pose_files, precisions)
    detector = Detector(load_model_files(REFERENCE_DETECTOR, None),
                        RuntimeOptions(backend="openvino", precision="f32"))
    sets = {name: load_eval_set(settings.data_dir, name, detector) for name in settings.sets}
    report: dict = {
        "cpu": ov.Core().get_property("CPU", "FULL_DEVICE_NAME"), "openvino": ov.get_version(),
        "pose_model": pose_files.model_dir.name, "detector": f"{REFERENCE_DETECTOR} f32, threshold {REFERENCE_THRESHOLD}",
        "timing": f"one stream of one thread, median of {settings.rounds} rounds of {settings.calls} calls",
        "sets": {}, "precisions": [],
    }
    for name, data in sets.items():
        reference = paddlex_score(settings.data_dir, name, pose_files.model_dir.name, data.ground_truth)
        report["sets"][name] = {"images": len(data.images), "persons_detected": data.persons,
                                "paddlex": None if reference is None else asdict(reference)}
    for precision in precisions:
        model = KeypointModel(pose_files, RuntimeOptions(backend="openvino", precision=precision,
                                                         cpu_threads=1, streams=1))
        ms = time_pose(model, crop_tensor(model, list(sets.values()), max(settings.batch_sizes)),
                       settings.batch_sizes, settings.calls, settings.rounds)
        scores = {name: data.score(model) for name, data in sets.items()}
        report["precisions"].append({
            "precision": precision,
            "ms_per_call": {str(batch): value for batch, value in ms.items()},
            "ms_per_person": {str(batch): value / batch for batch, value in ms.items()},
            "oks": {name: asdict(value) for name, value in scores.items()},
            "not_below_paddlex": all(_not_below(scores[name].ap, report["sets"][name]["paddlex"]) for name in sets),
        })
    return report


def _not_below(ap: float, paddlex: dict | None) -> bool:
    """At least PaddleX's AP as the data README prints it (three decimals); True without a reference."""
    return paddlex is None or round(ap, 3) >= round(paddlex["ap"], 3)


def print_report(report: dict) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    sets = list(report["sets"])
    batches = list(report["precisions"][0]["ms_per_call"]) if report["precisions"] else []
    table = Table(title=f"streampose bench-precision · {report['pose_model']} · {report['cpu']}")
    table.add_column("precision")
    for batch in batches:
        table.add_column(f"ms, batch {batch}", justify="right")
    if batches:
        table.add_column(f"ms per person at {batches[-1]}", justify="right")
    for name in sets:
        table.add_column(f"{name} AP", justify="right")
    table.add_column("≥ PaddleX")
    for row in report["precisions"]:
        table.add_row(row["precision"], *(f"{row['ms_per_call'][batch]:.2f}" for batch in batches),
                      *([f"{row['ms_per_person'][batches[-1]]:.2f}"] if batches else []),
                      *(f"{row['oks'][name]['ap']:.3f}" for name in sets),
                      "yes" if row["not_below_paddlex"] else "[red]no[/red]")
    references = [report["sets"][name]["paddlex"] for name in sets]
    if any(references):
        table.add_row("PaddleX 3.7.2", *([""] * (len(batches) + bool(batches))),
                      *(f"{reference['ap']:.3f}" if reference else "-" for reference in references), "")
    console = Console(stderr=True, width=max(Console(stderr=True).width, 120))
    console.print(table)
    persons = ", ".join(f"{name} {info['persons_detected']} persons on {info['images']} images"
                        for name, info in report["sets"].items())
    console.print(f"OpenVINO {report['openvino']} · pose timed on {report['timing']} · "
                  f"detector {report['detector']}, run once: {persons}")


def main(settings: PrecisionBenchSettings) -> int:
    report = run_precision_bench(settings)
    print_report(report)
    write_report(report, settings.json_path)
    return 0
