"""The command line on bad input: one line on stderr naming the file, the frame and the problem, a
non-zero exit status, no traceback (``--debug`` shows it), and no output file left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdplugin.cli.parser import main
from mdplugin.structures.data import read_dataset
from mdplugin.core.errors import DataError

from .helpers import FAST, QUICK, VALID_TEXT, frame_lines, one_error_line, scratch
from .test_model_files import RAW as MODEL_BYTES


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _train(path, out):
    return ["train", path, "--target", "dipole", "--model", "rpr", "-o", out]


def _broken(frame: int, old: str, new: str) -> str:
    frames = frame_lines()
    frames[frame] = [ln.replace(old, new, 1) for ln in frames[frame]]
    return "".join("".join(f) for f in frames)


def _dipole(frame: int, value: str) -> str:
    """VALID_TEXT with the dipole of one frame replaced by ``value``."""
    frames = frame_lines()
    frames[frame][1] = re.sub(r'dipole="[^"]*"', f'dipole="{value}"', frames[frame][1])
    return "".join("".join(f) for f in frames)


def _duplicate_atom() -> str:
    frames = frame_lines()
    frames[0][3] = frames[0][2]
    return "".join("".join(f) for f in frames)


BAD_DATA = {
    "empty": ("", "file is empty"),
    "whitespace only": ("\n \n", "no frames"),
    "binary": ("\x00\x01garbage", "frame 0: line 1: expected an atom count"),
    "atom count of frame 1 too small": (_broken(1, "8\n", "7\n"), "frame 2: line 20: expected an atom count"),
    "truncated": (VALID_TEXT[: len(VALID_TEXT) // 2], "frame 1: cannot parse"),
    "blank line between frames": (VALID_TEXT.replace("\n8\n", "\n\n8\n", 1), "frame 1: blank line"),
    "NaN dipole in frame 2": (_dipole(2, "nan 0 1"), "frame 2: dipole (key 'dipole') contains NaN or inf"),
    "inf dipole in frame 1": (_dipole(1, "0 -inf 1"), "frame 1: dipole (key 'dipole') contains NaN or inf"),
    "dipole of 2 values in frame 1": (_dipole(1, "0 1"), "frame 1: dipole (key 'dipole') has shape (2,)"),
    "unknown element in frame 1": (_broken(1, "Cl  ", "Qq  "), "frame 1: cannot parse (unknown element symbol 'Qq')"),
    "duplicate atom in frame 0": (_duplicate_atom(), "frame 0: atoms 0 and 1 are 0 Å apart"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_train_on_bad_data_is_one_line(tmp_path, capsys, name):
    data = tmp_path / "bad.xyz"
    data.write_text(BAD_DATA[name][0])
    out = tmp_path / "model.npz"
    rc, _, err = _run(capsys, _train(data, out))
    line = one_error_line(err)
    assert rc == 2
    assert str(data) in line and BAD_DATA[name][1] in line, line
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["bad.xyz"]


def test_wrong_key_name_and_units_option(tmp_path, capsys):
    data = tmp_path / "ok.xyz"
    data.write_text(VALID_TEXT)
    rc, _, err = _run(capsys, _train(data, tmp_path / "m.npz") + ["--dipole-key", "mu"])
    line = one_error_line(err)
    assert rc == 2 and f"{data}: frame 0: missing key 'mu' for dipole (keys present:" in line
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in _train(data, tmp_path / "m.npz")] + ["--units", "si"])
    assert exit_.value.code == 2  # argparse: usage + one error line
    assert "invalid choice: 'si'" in capsys.readouterr().err


@pytest.mark.parametrize("model, target", [("rpr", "energy"), ("lsoap", "energy"), ("soap", "dipole"),
                                           ("soap", "polarizability")])
def test_model_that_cannot_learn_the_target(tmp_path, capsys, model, target):
    """A model asked for a target it cannot learn is one line naming both, before any data is read
    (the dipole models used to fail inside ``fit`` with a TypeError about ``forces``)."""
    from mdplugin.core.errors import ConfigError
    from mdplugin.models import build

    data = tmp_path / "ok.xyz"
    data.write_text(VALID_TEXT)
    out = tmp_path / "m.npz"
    rc, _, err = _run(capsys, ["train", data, "--target", target, "--model", model, "-o", out])
    line = one_error_line(err)
    assert rc == 2 and f"model {model!r} cannot learn target {target!r}" in line, line
    assert "TypeError" not in line and not out.exists()
    with pytest.raises(ConfigError, match="cannot learn target"):
        build(model, target=target)


@FAST
@given(cut=st.integers(1, len(VALID_TEXT) - 2))
def test_truncated_data_through_the_command_line(capsys, cut):
    with scratch() as d:
        data = d / "cut.xyz"
        data.write_text(VALID_TEXT[:cut])
        try:
            read_dataset(data, properties=["dipole"])
        except DataError as exc:
            expected = str(exc)
        else:
            return  # a complete prefix: nothing to report (training would start)
        rc, _, err = _run(capsys, _train(data, d / "m.npz"))
        assert rc == 2
        assert one_error_line(err) == f"mdplugin: error: {expected}"
        assert not (d / "m.npz").exists()


@QUICK
@given(pos=st.integers(0, len(MODEL_BYTES) - 1), value=st.integers(0, 255))
def test_damaged_model_file_through_the_command_line(capsys, pos, value):
    raw = bytearray(MODEL_BYTES)
    if raw[pos] == value:
        return
    raw[pos] = value
    with scratch() as d:
        model = d / "m.npz"
        model.write_bytes(bytes(raw))
        data = d / "ok.xyz"
        data.write_text(VALID_TEXT)
        rc, _, err = _run(capsys, ["predict", model, data, "-o", d / "out.xyz"])
        if rc == 0:  # a harmless byte (zip timestamp, padding): the model is intact
            return
        line = one_error_line(err)
        assert rc == 2 and str(model) in line
        assert not (d / "out.xyz").exists()


def test_model_of_the_wrong_target_or_missing(tmp_path, capsys):
    data = tmp_path / "ok.xyz"
    data.write_text(VALID_TEXT)
    rc, _, err = _run(capsys, ["evaluate", tmp_path / "absent.npz", data])
    assert rc == 2 and "absent.npz: no such model file" in one_error_line(err)
    pickle_file = tmp_path / "model.pkl"
    import pickle

    pickle_file.write_bytes(pickle.dumps({"a": 1}))
    rc, _, err = _run(capsys, ["evaluate", pickle_file, data])
    assert rc == 2 and str(pickle_file) in one_error_line(err)


# ---------------------------------------------------------------------------------------------
# mdplugin spectrum: i-PI extras files, arrays and trajectories
# ---------------------------------------------------------------------------------------------
def _extras(path, rows, extra_type):
    """An i-PI extras file as ipi.engine.outputs.TrajectoryOutput writes it."""
    with open(path, "w") as fh:
        for step, row in enumerate(rows):
            fh.write(" #EXTRAS(%s)# Step:  %10d \n" % (extra_type, step + 1))
            fh.write((row if extra_type == "raw" else " ".join("%.8e" % x for x in np.ravel(row))) + "\n")


RNG = np.random.default_rng(1)
MU = RNG.normal(size=(40, 3))


def _raw(rows):
    return [json.dumps(r) for r in rows]


SERIES = {
    "raw extras missing dipole at frame 7": (
        lambda p: _extras(p, _raw([{"dipole": list(m)} for m in MU[:7]] + [{"energy": 1.0}]
                                  + [{"dipole": list(m)} for m in MU[8:]]), "raw"),
        "frame 7: i-PI extras have no key 'dipole' (keys: energy)"),
    "raw extras not JSON at frame 3": (
        lambda p: _extras(p, _raw([{"dipole": list(m)} for m in MU[:3]]) + ["{oops"] * 3, "raw"),
        "frame 3: extras are not a JSON object"),
    "extras holding only the polarizability": (
        lambda p: _extras(p, RNG.normal(size=(10, 9)), "polarizability"),
        "i-PI extras file has no key 'dipole' (it holds: polarizability)"),
    "extras NaN at frame 5": (
        lambda p: _extras(p, np.vstack([MU[:5], [[np.nan, 0, 0]], MU[6:]]), "dipole"),
        "frame 5: dipole contains NaN or inf"),
    "extras of one frame": (lambda p: _extras(p, MU[:1], "dipole"), "1 frame(s); a spectrum needs a time series"),
    "extras with 4 columns": (lambda p: _extras(p, RNG.normal(size=(10, 4)), "dipole"),
                              "dipole series has shape (10, 4)"),
    "pickled .npy": (lambda p: np.save(p.with_suffix(".npy"), np.array([{}], dtype=object), allow_pickle=True),
                     "cannot read as a .npy array"),
    "text array (n, 2)": (lambda p: np.savetxt(p.with_suffix(".txt"), MU[:, :2]), "dipole series has shape (40, 2)"),
    "trajectory without dipole at frame 1": (
        lambda p: p.with_suffix(".xyz").write_text(_broken(1, " dipole=", " mu=")), "frame 1: no 'dipole'"),
    "empty file": (lambda p: p.write_text(""), "file is empty"),
}


def _series_file(tmp_path, name):
    p = tmp_path / "series"
    make, message = SERIES[name]
    make(p)
    for suffix in ("", ".npy", ".txt", ".xyz"):
        if p.with_suffix(suffix).exists():
            return p.with_suffix(suffix), message
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(SERIES))
def test_spectrum_on_bad_series_is_one_line(tmp_path, capsys, name):
    path, message = _series_file(tmp_path, name)
    csv = tmp_path / "spectrum.csv"
    rc, _, err = _run(capsys, ["spectrum", "ir", path, "--dt", "1", "--temperature", "300", "-o", csv])
    line = one_error_line(err)
    assert rc == 2 and str(path) in line and message in line, line
    assert not csv.exists()


def test_truncated_extras_names_the_frame(tmp_path, capsys):
    path = tmp_path / "dip_0"
    _extras(path, MU, "dipole")
    path.write_text(path.read_text()[:-30])
    rc, _, err = _run(capsys, ["spectrum", "ir", path, "--dt", "1", "--temperature", "300", "-o", tmp_path / "s.csv"])
    line = one_error_line(err)
    assert rc == 2 and str(path) in line and "frame 39" in line, line


@pytest.mark.parametrize("option, value, message", [
    ("--dt", "0", "time step must be positive"),
    ("--dt", "nan", "time step must be positive"),
    ("--temperature", "-5", "temperature must be positive"),
])
def test_spectrum_bad_options(tmp_path, capsys, option, value, message):
    np.save(tmp_path / "mu.npy", MU)
    argv = ["spectrum", "ir", tmp_path / "mu.npy", "--dt", "1", "--temperature", "300", "-o", tmp_path / "s.csv"]
    argv[argv.index(option) + 1] = value
    rc, _, err = _run(capsys, argv)
    assert rc == 2 and message in one_error_line(err)


# ---------------------------------------------------------------------------------------------
# the real console script: no traceback without --debug, a traceback with it
# ---------------------------------------------------------------------------------------------
def test_console_script_one_line_and_debug_traceback(tmp_path):
    """The real console script (the entry point of pyproject.toml), once plain and once with --debug."""
    data = tmp_path / "bad.xyz"
    data.write_text(BAD_DATA["NaN dipole in frame 2"][0])
    script = "import sys; from mdplugin.cli.parser import main; sys.exit(main())"
    args = list(map(str, _train(data, tmp_path / "m.npz")))
    plain = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2
    line = one_error_line(plain.stderr)
    assert str(data) in line and "frame 2" in line
    debug = subprocess.run([sys.executable, "-c", script, "--debug", *args], capture_output=True, text=True,
                           timeout=300)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "DataError" in debug.stderr


def test_debug_flag_re_raises_in_process(tmp_path):
    data = tmp_path / "bad.xyz"
    data.write_text("")
    with pytest.raises(DataError, match="file is empty"):
        main(["--debug", *map(str, _train(data, tmp_path / "m.npz"))])


def test_spectrum_trajectory_with_a_blank_line_is_refused(tmp_path, capsys):
    from .helpers import dataset_to_text, labelled

    text = dataset_to_text(labelled(n=10))
    lines = text.splitlines(keepends=True)
    cut = 4 * 10  # after frame 3 (8 atoms + 2 header lines per frame)
    path = tmp_path / "traj.xyz"
    path.write_text("".join(lines[:cut]) + "\n" + "".join(lines[cut:]))
    rc, _, err = _run(capsys, ["spectrum", "ir", path, "--dt", "1", "--temperature", "300", "-o", tmp_path / "s.csv"])
    assert rc == 2 and "blank line" in one_error_line(err)


ODD = ["0", "-1", "nan", "inf", "-inf", "1e-300", "1e300", "0.5", "3", "100"]


@QUICK
@given(dt=st.sampled_from(ODD), temperature=st.sampled_from(ODD),
       extra=st.lists(st.tuples(st.sampled_from(["--depth", "--block", "--max-wavenumber", "--pad", "--laser"]),
                                st.sampled_from(ODD)), max_size=3, unique_by=lambda t: t[0]),
       kind=st.sampled_from(["ir", "raman"]))
def test_spectrum_options_never_crash(capsys, dt, temperature, extra, kind):
    """Any odd number for any option: a result (exit 0) or one line (exit 2); never an internal error.
    (Non-finite --depth/--block are covered by test_spectrum_non_finite_depth_or_block.)"""
    if any(opt in ("--depth", "--block") and val in ("nan", "inf", "-inf") for opt, val in extra):
        return
    with scratch() as d:
        np.save(d / "mu.npy", MU if kind == "ir" else RNG.normal(size=(40, 9)))
        argv = ["spectrum", kind, d / "mu.npy", "--dt", dt, "--temperature", temperature, "-o", d / "s.csv"]
        for opt, val in extra:
            argv += [opt, val]
        try:
            rc, _, err = _run(capsys, argv)
        except SystemExit as exit_:  # argparse: not a number of the right type
            assert exit_.code == 2
            capsys.readouterr()
            return
        assert rc in (0, 2), err
        if rc == 2:
            one_error_line(err)
            assert not (d / "s.csv").exists()
        else:
            assert (d / "s.csv").exists()


@pytest.mark.parametrize("option, value", [("--block", "nan"), ("--block", "inf"), ("--depth", "inf")])
def test_spectrum_non_finite_depth_or_block(tmp_path, capsys, option, value):
    np.save(tmp_path / "mu.npy", MU)
    rc, _, err = _run(capsys, ["spectrum", "ir", tmp_path / "mu.npy", "--dt", "1", "--temperature", "300",
                               "-o", tmp_path / "s.csv", option, value])
    assert rc == 2, one_error_line(err)


@pytest.mark.parametrize("dt, option, value", [("1e-300", "--depth", "1e300"), ("1e-300", "--block", "1e300"),
                                               ("5e-324", None, None)])
def test_spectrum_lengths_that_overflow_a_frame_count(tmp_path, capsys, dt, option, value):
    """A depth or block of 1e300 fs at a time step of 1e-300 fs is an infinite number of frames: one
    error line naming the option (exit 2), not an OverflowError (exit 1). Without --depth, the
    default depth (at most 2 ps) at a subnormal time step is capped by the series, not overflowed."""
    np.save(tmp_path / "mu.npy", MU)
    argv = ["spectrum", "ir", tmp_path / "mu.npy", "--dt", dt, "--temperature", "300", "-o", tmp_path / "s.csv"]
    rc, _, err = _run(capsys, argv + ([option, value] if option else []))
    if option is None:
        assert rc == 0, err
        return
    line = one_error_line(err)
    assert rc == 2, line
    assert ("correlation depth" if option == "--depth" else "block length") in line
