"""`dgalign report --format html`: the page's content (every table, footnote and plot, nothing
outside the file), for a sweep and for a reproduction directory, and the page as a headless
Chromium renders it."""

import base64
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tests.experiments.conftest import synthetic_mnist

from dgalign.cli import main
from dgalign.experiments import cmnist_data
from dgalign.experiments.cmnist_data import DataConfig
from dgalign.experiments.cmnist_run import ReproduceConfig, run_reproduction
from dgalign.experiments.cmnist_train import Protocol
from dgalign.report import make_sections
from dgalign.report.runs import load_runs

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Tables (as lists of rows of cell texts), images, links and ids of an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.images, self.links, self.ids, self.headings = [], [], [], set(), []
        self._cell = self._heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs)
        elif tag in ("a", "link", "script", "iframe"):
            self.links.append((tag, attrs.get("href") or attrs.get("src")))
        elif tag in ("h1", "h2", "h3"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None
        elif tag in ("h1", "h2", "h3"):
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading is not None:
            self._heading += data


def png_images(page):
    out = []
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:40]
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert data.startswith(PNG)
        out.append(data)
    return out


def write_html(directory, capsys, *extra):
    assert main(["report", str(directory), "--format", "html", *extra]) == 0
    out = capsys.readouterr().out
    path = Path(out.strip().rsplit(" ", 1)[1])
    return path, path.read_text()


def test_sweep_page_has_every_table_note_and_plot(golden_sweep, capsys):
    path, text = write_html(golden_sweep, capsys)
    assert path == golden_sweep / "report.html"
    page = Page(text)
    sections = make_sections(load_runs(golden_sweep))
    tables = [t for _, ts in sections for t in ts]
    results = page.tables[: len(tables)]
    for table, shown in zip(tables, results, strict=True):
        assert shown[0] == ["Algorithm", *table.col_labels]
        assert [row[0] for row in shown[1:]] == table.row_labels
        for note in range(1, len(table.notes) + 1):  # every note mark has its footnote
            assert any(f"{note}" in cell for row in shown[1:] for cell in row[1:])
    assert "X1" in [c.replace(" ", "") for row in results[1] for c in row]  # missing PACS cell
    for _, target in page.links:  # links stay inside the page
        assert target.startswith("#") and target[1:] in page.ids
    assert all(tag not in ("script", "iframe", "link") for tag, _ in page.links)
    charted = [
        t for t in tables if t.dataset and any(c.mean is not None for r in t.cells for c in r)
    ]
    assert len(charted) == 5  # PACS under leave-one-domain-out has no result: no chart
    assert len(png_images(page)) == len(charted) + 2  # bars per table, curves per dataset
    assert "no runs of ZFake on PACS" in text
    assert "Top hyper-parameters" in page.headings
    assert len(page.tables) > len(tables)  # the ranked configurations
    top = page.tables[len(tables)]
    assert top[0][:4] == ["Rank", "hparams seed", "val acc", "test acc"]


def test_html_options_errors(golden_sweep, capsys, tmp_path):
    assert main(["report", str(golden_sweep), "--format", "html", "--plots"]) == 2
    assert "does not apply to --format html" in capsys.readouterr().err
    target = tmp_path / "page.html"
    path, _ = write_html(golden_sweep, capsys, "--output", str(target), "--selection", "oracle")
    assert path == target
    assert "leave-one-domain-out" not in target.read_text()


@pytest.fixture
def reproduction(tmp_path, monkeypatch):
    images, digits = synthetic_mnist(50300)
    monkeypatch.setattr(cmnist_data, "load_mnist_train", lambda data_dir: (images, digits))
    config = ReproduceConfig(
        output_dir=str(tmp_path / "repro"),
        methods=["ERM", "HGP"],
        restarts=2,
        data=DataConfig(pool=200),
        protocol=Protocol(steps=4, anneal_iters=2, hidden=8),
        quick=True,
        dynamics_every=2,
        fgsm_eps=[0.0, 0.1],
        progress=False,
    )
    return run_reproduction(config)


def test_reproduction_page_holds_the_report_and_its_plots(reproduction, capsys):
    path, text = write_html(reproduction, capsys)
    page = Page(text)
    assert path == reproduction / "report.html"
    assert page.headings[0].startswith("QUICK")
    accuracy = next(t for t in page.tables if t[0][:2] == ["method", "restarts"])
    assert [row[0] for row in accuracy[1:]] == ["ERM", "HGP"]
    assert any(t[0][0] == "method" and "ratio to ERM" in t[0] for t in page.tables)
    assert any(t[0][1:] == ["eps=0.0", "eps=0.1"] for t in page.tables)
    assert len(png_images(page)) == 4  # dynamics (all), per method x2, FGSM
    assert "missing plot" not in text


def test_reproduction_without_report_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text('{"identity": {}, "quick": true}')
    assert main(["report", str(tmp_path / "r"), "--format", "html"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dgalign: error:") and "--report-only" in err and err.count("\n") == 1


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the browser test needs Chromium: apt-get install -y chromium (.ci/run does)"
    return path


def render(html_path: Path, screenshot: Path, tmp_path: Path) -> dict:
    """Open the page in headless Chromium with every non-file request refused; return what the
    page shows (tables, images and their loaded sizes, requests made) and take a screenshot."""
    sync_api = pytest.importorskip("playwright.sync_api")
    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile
            executable_path=chromium(),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
            offline=True,
        )
        try:
            page = browser.new_page()

            def route(r):
                requests.append(r.request.url)
                if r.request.url.startswith(("file://", "data:")):
                    r.continue_()
                else:
                    r.abort()

            page.route("**/*", route)
            page.goto(html_path.as_uri(), wait_until="load")
            shown = page.evaluate(
                """() => ({
                    tables: [...document.querySelectorAll('table')].map(t => ({
                        rows: t.rows.length,
                        height: t.getBoundingClientRect().height,
                        visible: t.checkVisibility ? t.checkVisibility() : true})),
                    images: [...document.querySelectorAll('img')].map(i => ({
                        complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
                        shown: i.getBoundingClientRect().width})),
                    details: document.querySelectorAll('details').length,
                })"""
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    shown["requests"] = requests
    return shown


def non_blank(png: Path) -> tuple[float, int]:
    """(share of pixels that are not the page background, number of distinct colours)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB").reduce(2)).reshape(-1, 3).astype(np.int64)
    counts = np.bincount(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    return 1.0 - counts.max() / len(rgb), int(np.count_nonzero(counts))


@pytest.mark.slow
def test_pages_render_in_headless_chromium(golden_sweep, reproduction, capsys, tmp_path):
    for directory in (golden_sweep, reproduction):
        path, text = write_html(directory, capsys)
        expected = Page(text)
        shot = tmp_path / f"{directory.name}.png"
        shown = render(path, shot, tmp_path / directory.name)
        assert all(u.startswith(("file://", "data:")) for u in shown["requests"])
        assert len(shown["tables"]) == len(expected.tables) > 0
        for table, rows in zip(shown["tables"], expected.tables, strict=True):
            assert table["rows"] == len(rows)
            # tables inside a closed <details> are in the page but not drawn
            assert table["height"] > 0 or not table["visible"]
        assert len(shown["images"]) == len(expected.images) > 0
        for image in shown["images"]:  # every embedded PNG decoded and laid out
            assert image["complete"] and image["width"] > 100 and image["height"] > 100
            assert image["shown"] > 100
        share, colours = non_blank(shot)
        assert share > 0.02 and colours > 50, (share, colours)
