"""The active-learning run folder after a kill: a torn last frame of ``data.xyz`` is dropped on resume,
and nothing else is (labels cost oracle calls)."""

from __future__ import annotations

from mdplugin.active.store import RunStore
from mdplugin.structures.data import dataset_to_text, read_dataset

import pytest

from .helpers import labelled


def _store(tmp_path, text):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "data.xyz").write_text(text)
    return RunStore(tmp_path / "run")


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.97])
def test_torn_last_frame_is_dropped_on_resume(tmp_path, cut):
    text = dataset_to_text(labelled(n=5))
    last = text.rindex("\n8\n") + 1  # start of the last frame
    torn = text[: last + int(cut * (len(text) - last))]
    store = _store(tmp_path, torn)
    assert store.open() == 4
    assert len(read_dataset(store.data_path)) == 4  # readable again, four frames kept


def test_blank_line_in_the_middle_loses_no_labels(tmp_path):
    text = dataset_to_text(labelled(n=5))
    lines = text.splitlines(keepends=True)
    store = _store(tmp_path, "".join(lines[:20]) + "\n" + "".join(lines[20:]))
    try:
        n = store.open()
    except Exception:  # refusing the folder with a clear error would be fine too
        n = None
    text_after = store.data_path.read_text()
    assert n in (None, 5) and text_after.count("\n8\n") + 1 >= 5, f"{n} frames kept"
