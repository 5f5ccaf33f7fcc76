"""Images/s of the image loader (decode + DomainBed augmentation in DataLoader workers) next to
images/s of an ERM training step on the same batch shape, measured in one run, then both
together (the loader feeding the step, as in training).

A fake PACS-layout dataset of JPEGs at a realistic size (default 400x300) is written to a
temporary folder. The loader keeps the GPU busy when its images/s exceeds the step's.

Usage: python benchmarks/image_loader.py [--backbone resnet50] [--batch-size 32] [--envs 3]
           [--workers N] [--steps 20] [--device auto|cpu|cuda] [--image-size 224]
           [--source-size 400x300] [--images-per-class 40] [--amp]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dgalign.algorithms import get as get_algorithm
from dgalign.algorithms.spaces import default_hparams
from dgalign.data.images import PACS, write_fake_dataset
from dgalign.data.splits import InfiniteLoader, default_num_workers, split_environment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(images: int, seconds: float) -> str:
    return f"{images / seconds:9.1f} images/s  ({seconds / max(images, 1) * 1e3:6.2f} ms/image)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=32, help="per environment")
    parser.add_argument("--envs", type=int, default=3, help="training environments (loaders)")
    parser.add_argument("--workers", type=int, default=None, help="per loader")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--source-size", default="400x300", help="JPEG width x height")
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--amp", action="store_true", help="bfloat16 + channels-last on CUDA")
    args = parser.parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    workers = default_num_workers() if args.workers is None else args.workers
    width, height = (int(v) for v in args.source_size.split("x"))
    per_step = args.batch_size * args.envs

    with tempfile.TemporaryDirectory() as tmp:
        write_fake_dataset("PACS", tmp, args.images_per_class, None, (width, height))
        PACS.IMAGE_SIZE = args.image_size
        dataset = PACS(Path(tmp))
        splits = [split_environment(dataset[e], e, 0, 0.2)[0] for e in range(args.envs)]

        def loaders() -> list[InfiniteLoader]:
            return [
                InfiniteLoader(s, args.batch_size, 0, e, device, num_workers=workers)
                for e, s in enumerate(splits)
            ]

        hp = default_hparams("ERM", "PACS")
        hp.update(backbone=args.backbone, pretrained=False, amp=args.amp)
        algorithm = get_algorithm("ERM")(dataset.input_shape, dataset.num_classes, args.envs, hp)
        algorithm.to(device)
        print(
            f"{len(dataset[0])} images/env of {width}x{height} -> {args.image_size}px; "
            f"{args.envs} envs x batch {args.batch_size}; {workers} workers/loader; "
            f"{args.backbone} ERM step on {device}; {torch.get_num_threads()} torch threads"
        )

        feed = loaders()
        for step in range(args.warmup):  # worker start-up and first batches
            [loader.batch(step) for loader in feed]
        start = time.perf_counter()
        for step in range(args.warmup, args.warmup + args.steps):
            batches = [loader.batch(step) for loader in feed]
        _sync(device)
        load_s = time.perf_counter() - start
        del feed

        fixed = [(x.clone(), y.clone()) for x, y in batches]
        for _ in range(args.warmup):
            algorithm.update(fixed)
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            algorithm.update(fixed)
        _sync(device)
        step_s = time.perf_counter() - start

        feed = loaders()
        for step in range(args.warmup):
            algorithm.update([loader.batch(step) for loader in feed])
        _sync(device)
        start = time.perf_counter()
        for step in range(args.warmup, args.warmup + args.steps):
            algorithm.update([loader.batch(step) for loader in feed])
        _sync(device)
        both_s = time.perf_counter() - start

    n = per_step * args.steps
    print(f"loader alone      {_rate(n, load_s)}")
    print(f"train step alone  {_rate(n, step_s)}")
    print(f"loader + step     {_rate(n, both_s)}")
    verdict = "keeps the step fed" if load_s <= step_s else "is the bottleneck"
    print(f"loader/step throughput ratio {step_s / load_s:.2f}: the loader {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
