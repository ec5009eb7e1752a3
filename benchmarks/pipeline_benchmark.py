"""TFX pipeline wall time on MovieLens-100K, per component: Beam DirectRunner in-memory vs
multi-processing (2 worker processes).

Both runs use LocalDagRunner, a fresh pipeline root and no cache, the same data and model
(DIN, ``--epochs``): DIN's family's data (``families.for_model("din").prepare("movielens-100k")``,
the cached TFRecord splits), trained by the Trainer through the family contract. Only the
Beam arguments of the data components differ. The Trainer and the Pusher do not use Beam,
so their times show the run-to-run noise.

    python benchmarks/pipeline_benchmark.py [--epochs 1] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)
from tfrec_onerec import families
from tfx_pipelines.pipeline import DIRECT_MULTIPROCESSING, PipelineConfig
from tfx_pipelines.run_report import last_run
from tfx_pipelines.runners import run_pipeline

MODES = {
    "in_memory": ("--direct_running_mode=in_memory", "--direct_num_workers=1"),
    "multi_processing": DIRECT_MULTIPROCESSING,
}


def time_pipeline(mode: str, data_dir: str, workdir: Path, epochs: int) -> tuple:
    root = workdir / mode
    config = PipelineConfig(model="din", data=data_dir, pipeline_root=str(root / "root"),
                            serving_dir=str(root / "serving"), epochs=epochs, beam_args=MODES[mode],
                            enable_cache=False, min_value=0.0)
    start = time.perf_counter()
    run_pipeline(config, "local")
    total = time.perf_counter() - start
    return {r.component: r.seconds for r in last_run(root / "root" / "metadata.sqlite")}, total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workdir", help="where the pipeline roots go (default: a temporary directory)")
    args = parser.parse_args()
    data_dir = families.for_model("din").prepare("movielens-100k").side_dir  # the prepared directory
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        results = {mode: time_pipeline(mode, data_dir, workdir, args.epochs) for mode in MODES}
    (memory, memory_total), (multi, multi_total) = results["in_memory"], results["multi_processing"]
    width = max(len(c) for c in memory)
    print(f"\nTFX pipeline on MovieLens-100K (DIN, {args.epochs} epoch(s)), wall seconds per component")
    print(f"{'component':<{width}}  {'in_memory':>9}  {'multi_proc (2)':>14}  {'ratio':>6}")
    for component in memory:
        a, b = memory[component], multi.get(component, float("nan"))
        ratio = f"{a / b:6.2f}" if b >= 0.5 else "     -"
        print(f"{component:<{width}}  {a:9.1f}  {b:14.1f}  {ratio}")
    print(f"{'whole pipeline':<{width}}  {memory_total:9.1f}  {multi_total:14.1f}  {memory_total / multi_total:6.2f}")
    print("ratio = in_memory / multi_processing (> 1: multi-processing is faster)")


if __name__ == "__main__":
    main()
