"""`dgalign data fetch NAME` and `dgalign data check NAME`: obtain and verify datasets.

NAME is `mnist` (the MNIST files behind ColoredMNIST and RotatedMNIST), an image benchmark
(VLCS, PACS, OfficeHome, TerraIncognita, DomainNet; case-insensitive) or a WILDS dataset
(WILDSCamelyon, WILDSFMoW; needs `pip install dgalign[wilds]`).
"""

from __future__ import annotations

import argparse

from dgalign.utils.progress import add_progress_flag

SOURCES = ("local", "mirror", "registry")
IMAGE_NAMES = ("VLCS", "PACS", "OfficeHome", "TerraIncognita", "DomainNet", "SVIRO")
WILDS_NAMES = ("WILDSCamelyon", "WILDSFMoW")
FETCH_NAMES = ("mnist", *IMAGE_NAMES, *WILDS_NAMES)


def _name(choices: tuple[str, ...]):
    """An argparse type: the canonical spelling of a case-insensitive dataset name."""

    def parse(value: str) -> str:
        for choice in choices:
            if choice.lower() == value.lower():
                return choice
        raise argparse.ArgumentTypeError(
            f"unknown dataset {value!r}; choose from {', '.join(choices)}"
        )

    return parse


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        "--data_dir",
        dest="data_dir",
        default=None,
        help="data directory (default: $DGALIGN_DATA, else the user cache dir)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="obtain and check datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_sub.add_parser("fetch", help="download or locate a dataset and cache it")
    fetch.add_argument(
        "name", type=_name(FETCH_NAMES), metavar="NAME", help=f"one of {', '.join(FETCH_NAMES)}"
    )
    fetch.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="mnist only: only this source (default: try local, mirror, registry in order)",
    )
    fetch.add_argument(
        "--keep-archives",
        action="store_true",
        help="image datasets: keep the downloaded archives in DATA_DIR/downloads",
    )
    fetch.add_argument(
        "--no-verify",
        action="store_true",
        help="image datasets: do not compare sizes and digests with the recorded ones",
    )
    _data_dir_option(fetch)
    add_progress_flag(fetch)
    fetch.set_defaults(handler=run_fetch)
    check = data_sub.add_parser(
        "check", help="verify a placed image dataset: environments, classes, image counts"
    )
    check.add_argument(
        "name", type=_name(IMAGE_NAMES), metavar="NAME", help=f"one of {', '.join(IMAGE_NAMES)}"
    )
    _data_dir_option(check)
    check.set_defaults(handler=run_check)


def run_fetch(args: argparse.Namespace) -> int:
    from dgalign.data.sources import resolve_data_dir
    from dgalign.data.sources.download import DownloadOptions

    data_dir = resolve_data_dir(args.data_dir)
    options = DownloadOptions(progress=args.progress)
    if args.name == "mnist":
        from dgalign.data.sources import fetch_mnist

        arrays = fetch_mnist(data_dir, source=args.source, download_options=options)
        print(
            f"MNIST ready in {data_dir}: {len(arrays.train_labels)} training and "
            f"{len(arrays.test_labels)} test images"
        )
        return 0
    from dgalign.data import fetch_images

    if args.name in WILDS_NAMES:
        fetch_images.fetch_wilds(args.name, data_dir)
        return 0
    from dgalign.data.manifest import MANIFEST

    fetch_images.fetch_image_dataset(
        MANIFEST[args.name],
        data_dir,
        options,
        keep_archives=args.keep_archives,
        verify=not args.no_verify,
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dgalign.data.fetch_images import check_image_dataset
    from dgalign.data.manifest import MANIFEST
    from dgalign.data.sources import resolve_data_dir

    report = check_image_dataset(MANIFEST[args.name], resolve_data_dir(args.data_dir))
    print(report.render())
    return 0 if report.ok else 1
