"""Progress bars are drawn on a terminal and never into a log file."""

import io

import pytest

from dgalign.cli import main
from dgalign.utils.progress import progress_bar, show_progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "progress", "drawn"),
    [
        (io.StringIO(), None, False),  # a file or pipe: no bar by default
        (FakeTerminal(), None, True),  # a terminal: a bar
        (io.StringIO(), True, True),  # --progress forces it
        (FakeTerminal(), False, False),  # --no-progress turns it off
    ],
)
def test_bar_only_on_a_terminal_unless_forced(stream, progress, drawn):
    assert show_progress(progress, stream) is drawn
    for _ in progress_bar(range(3), progress=progress, file=stream, desc="work"):
        pass
    assert ("work" in stream.getvalue()) is drawn


def test_train_writes_no_bar_when_stderr_is_not_a_terminal(tmp_path, capfd):
    argv = ["train", "--dataset", "Spurious28", "--algorithm", "ERM", "--test-envs", "2"]
    argv += ["--output-dir", str(tmp_path / "run"), "--steps", "3", "--checkpoint-freq", "2"]
    argv += ["--hparams", '{"backbone": "mlp", "mlp_width": 8, "batch_size": 4}']
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    assert "\r" not in (tmp_path / "run" / "err.txt").read_text()
    assert "step 2:" in out
