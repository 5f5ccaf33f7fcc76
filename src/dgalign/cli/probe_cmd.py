"""`dgalign probe extract | train | report`: linear probing on frozen features (docs/probing.md).

extract  features of every sample of a group-shift dataset through a frozen backbone, into
         OUT/features.npz + OUT/features.json (resumable: rerun the same command);
train    the probing protocol for one algorithm over several seeds, results in
         OUT/<name>.jsonl, and its mean +- std table;
report   one table from several result files or folders.
"""

from __future__ import annotations

import argparse
import json

from dgalign.errors import ConfigError

DATASETS = ("waterbirds", "celeba", "multinli", "cmnist")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "probe",
        help="linear probing on frozen features (Waterbirds, CelebA, MultiNLI, pixels)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="probe_command", metavar="ACTION", required=True)

    ext = actions.add_parser("extract", help="extract frozen features of a dataset")
    ext.add_argument("--dataset", required=True, choices=DATASETS)
    ext.add_argument(
        "--backbone",
        required=True,
        choices=("clip-vit-b16", "bert", "tiny-random", "pixels"),
        help="clip-vit-b16 (images, timm), bert (MultiNLI, transformers), tiny-random "
        "(smoke tests), pixels (cmnist)",
    )
    ext.add_argument("--weights", default=None, help="local weights file or folder")
    ext.add_argument(
        "--data-dir", default=None, help="dataset folder (default: $DGALIGN_DATA, else cache)"
    )
    ext.add_argument("--out", required=True, help="output folder for the features")
    ext.add_argument("--batch-size", type=int, default=64)
    ext.add_argument("--shard-rows", type=int, default=4096, help="rows per resumable shard")
    ext.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ext.add_argument("--device", default="cpu", help="auto, cpu or cuda[:i]")
    ext.add_argument("--seed", type=int, default=0, help="cmnist: the restart's data seed")
    ext.set_defaults(handler=run_extract)

    tr = actions.add_parser("train", help="train linear heads by the probing protocol")
    tr.add_argument("--features", required=True, help="folder written by `probe extract`")
    tr.add_argument(
        "--algorithm",
        required=True,
        help="ERM, GroupDRO, IRM, VREx, Fishr, CORAL, HGP, Hutchinson, HessianDiag, CMA, or a "
        "variant: HessianDiag-expected, CMA-full, CMA-gram, CMA-diag, CMA-kfac, CMA-order3",
    )
    tr.add_argument("--hparams", default=None, help="JSON object of hyper-parameter overrides")
    tr.add_argument("--epochs", type=int, default=None, help="default: the dataset's")
    tr.add_argument("--batch-size", type=int, default=500)
    tr.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    tr.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,1,2 (default 0-4)")
    tr.add_argument("--pca", type=int, default=0, help="PCA to this many dims first (0: off)")
    tr.add_argument("--isr-mean", action="store_true", help="ISR-Mean projection after PCA")
    tr.add_argument("--isr-class", type=int, default=0, help="class whose means ISR-Mean uses")
    tr.add_argument("--spu-scale", type=float, default=0.0, help="scale of spurious directions")
    tr.add_argument(
        "--domains",
        choices=("environment", "attribute", "group"),
        default="environment",
        help="training domains: the dataset's environments (default), attribute values, groups",
    )
    tr.add_argument("--out", required=True, help="folder for the per-seed records")
    tr.add_argument("--name", default=None, help="result file name (default: the algorithm)")
    tr.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    tr.add_argument("--device", default="cpu", help="auto, cpu or cuda[:i]")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    tr.set_defaults(handler=run_train)

    rep = actions.add_parser("report", help="table of probing results")
    rep.add_argument("paths", nargs="+", help="result files (.jsonl) or folders of them")
    rep.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    rep.set_defaults(handler=run_report)


def run_extract(args: argparse.Namespace) -> int:
    from dgalign.probe.backbones import build_extractor
    from dgalign.probe.datasets import open_dataset
    from dgalign.probe.extract import extract_features

    dataset = open_dataset(args.dataset, args.data_dir, seed=args.seed)
    dim = dataset.extra.get("dim")
    extractor = build_extractor(args.backbone, dataset.modality, args.weights, dim)
    out = extract_features(
        dataset,
        extractor,
        args.out,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        workers=args.workers,
        device=args.device,
    )
    print(f"features of {len(dataset)} {args.dataset} samples in {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import torch

    from dgalign.probe.projection import ProjectionConfig
    from dgalign.probe.results import render, train_probe
    from dgalign.probe.train import ProbeConfig, parse_seeds

    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    if args.hparams:
        try:
            overrides = json.loads(args.hparams)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--hparams is not valid JSON ({exc.msg})") from None
        if not isinstance(overrides, dict):
            raise ConfigError("--hparams must be a JSON object such as '{\"hess_beta\": 100}'")
    projection = ProjectionConfig(args.pca, args.isr_mean, args.isr_class, args.spu_scale)
    config = ProbeConfig(
        algorithm=args.algorithm,
        hparams=overrides,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        domains=args.domains,
        projection=projection,
        device=args.device,
    )
    records = train_probe(args.features, config, parse_seeds(args.seeds), args.out, args.name)
    name = args.name or args.algorithm
    print(render({name: records}, args.format), end="")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from dgalign.probe.results import collect, render

    print(render(collect(args.paths), args.format), end="")
    return 0
