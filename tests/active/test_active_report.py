"""active.png: a panel per target with its threshold, a note when nothing was labelled, whole
oracle-call ticks."""

from __future__ import annotations

import numpy as np

from mdplugin.active import RunStore

from .helpers import _run


def _lines(ax, label: str):
    return [line for line in ax.get_lines() if line.get_label() == label]


def test_plot_has_a_panel_per_target_threshold_and_note_with_no_label(tmp_path):
    from mdplugin.active.report import build_figure

    s = _run(tmp_path, steps=5, max_calls=0, thresholds={"energy": 10.0}, threshold_factor=2.0)
    assert s.oracle_calls == 0 and (tmp_path / "run" / "active.png").stat().st_size > 0
    fig = build_figure(RunStore(tmp_path / "run"))
    axes = fig.get_axes()
    assert [ax.get_ylabel().split()[0] for ax in axes] == ["energy", "dipole"]
    for ax, t in zip(axes, ("energy", "dipole")):
        (thr,) = _lines(ax, "threshold")
        assert np.allclose(thr.get_ydata(), s.thresholds[t])  # drawn at the run's threshold
        assert any("no structure labelled yet" in text.get_text() for text in ax.texts)
    fig.canvas.draw()
    ticks = [x for x in axes[-1].get_xticks() if axes[-1].get_xlim()[0] <= x <= axes[-1].get_xlim()[1]]
    assert ticks and all(float(x).is_integer() for x in ticks)


def test_plot_x_ticks_are_whole_oracle_calls(tmp_path):
    from mdplugin.active.report import build_figure

    s = _run(tmp_path, steps=200, max_calls=3)
    assert s.oracle_calls == 3
    fig = build_figure(RunStore(tmp_path / "run"))
    fig.canvas.draw()
    for ax in fig.get_axes():
        lo, hi = ax.get_xlim()
        ticks = [x for x in ax.get_xticks() if lo <= x <= hi]
        assert len(ticks) >= 2 and all(float(x).is_integer() for x in ticks)
        assert len(_lines(ax, "uncertainty (model std)")[0].get_xdata()) == 3
        assert not ax.texts

