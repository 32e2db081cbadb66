"""Bad data files: every malformed input ends in a DataError naming the file, the frame and the problem.

Property-based (hypothesis) on top of tests/structures/test_data.py: a valid 3-frame labelled file is truncated at
any byte, has a byte replaced, a line deleted or doubled, a label broken in one chosen frame, key names
that do not exist, duplicated atoms and unknown elements. Whatever happens, ``read_dataset`` either
returns a valid data set or raises :class:`DataError` — never another exception.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from ase.data import chemical_symbols
from hypothesis import assume, given
from hypothesis import strategies as st

from mdplugin.structures.data import PROPERTIES, read_dataset
from mdplugin.core.errors import DataError
from mdplugin.core.units import BOHR, HARTREE

from .helpers import FAST, N_ATOMS, N_FRAMES, QUICK, VALID_TEXT, frame_lines, labelled, scratch

ALL = ["energy", "forces", "dipole", "polarizability"]


def _read_or_error(path, **kw):
    """read_dataset's result, or the DataError (any other exception fails the test)."""
    try:
        return read_dataset(path, **kw)
    except DataError as err:
        return err


def _check_outcome(path, out, max_frames=N_FRAMES):
    if isinstance(out, DataError):
        msg = str(out)
        assert str(path) in msg, msg
        assert "\n" not in msg.strip(), msg
        for k in re.findall(r"frame (\d+)", msg):
            assert int(k) < max_frames + 1, msg
        return
    assert 1 <= len(out) <= max_frames
    for name in out.properties:
        values = out.get(name)
        values = np.concatenate(values) if name == "forces" else values
        assert np.all(np.isfinite(values))
    for atoms in out.frames:
        assert np.all(np.isfinite(atoms.positions))


def test_valid_text_reads():
    with scratch() as d:
        (d / "ok.xyz").write_text(VALID_TEXT)
        data = read_dataset(d / "ok.xyz", properties=ALL)
    ref = labelled()
    assert len(data) == N_FRAMES and np.allclose(data.dipole, ref.dipole)
    assert np.allclose(data.polarizability, ref.polarizability)


@FAST
@given(cut=st.integers(0, len(VALID_TEXT) - 1))
def test_truncated_at_any_byte(cut):
    """A half-written file: an error naming file and frame, or the complete frames before the cut."""
    with scratch() as d:
        path = d / "cut.xyz"
        path.write_text(VALID_TEXT[:cut])
        out = _read_or_error(path, properties=ALL)
        _check_outcome(path, out)
        if cut == 0:
            assert isinstance(out, DataError) and "empty" in str(out)
        if not isinstance(out, DataError):
            # only frames that were complete (or lost at most part of the last number) survive
            complete = sum(1 for k in range(1, N_FRAMES + 1)
                           if cut >= len("".join("".join(f) for f in frame_lines()[:k])) - 1)
            assert len(out) in (complete, complete + 1) or cut >= len(VALID_TEXT) - 20


NASTY = ["", " ", "\n", '"', "=", "-", ".", "e", "nan", "inf", "x", "Q", "\x00", "é", "\t", "1e999", ":"]


@FAST
@given(pos=st.integers(0, len(VALID_TEXT) - 1), repl=st.sampled_from(NASTY))
def test_any_byte_replaced(pos, repl):
    """One character replaced by a nasty one (or deleted): DataError or a valid data set."""
    with scratch() as d:
        path = d / "flip.xyz"
        path.write_bytes((VALID_TEXT[:pos] + repl + VALID_TEXT[pos + 1 :]).encode("utf-8", "surrogateescape"))
        _check_outcome(path, _read_or_error(path, properties=ALL))


@FAST
@given(line=st.integers(0, len(VALID_TEXT.splitlines()) - 1), op=st.sampled_from(["delete", "double", "blank"]))
def test_line_deleted_doubled_or_blanked(line, op):
    lines = VALID_TEXT.splitlines(keepends=True)
    if op == "delete":
        del lines[line]
    elif op == "double":
        lines.insert(line, lines[line])
    else:
        lines[line] = "\n"
    with scratch() as d:
        path = d / "lines.xyz"
        path.write_text("".join(lines))
        out = _read_or_error(path, properties=ALL)
        _check_outcome(path, out)
        # removing or doubling a header/atom line always breaks the frame structure
        if op != "blank" or line % (N_ATOMS + 2) != 1:
            assert isinstance(out, DataError), (op, line)


def read_error(frames: list[list[str]], name: str):
    """Write ``frames`` (each a list of lines) to the scratch file ``name``, read it, and return the
    path and the message of the :class:`DataError` the reader must raise."""
    with scratch() as d:
        path = d / name
        path.write_text("".join("".join(f) for f in frames))
        with pytest.raises(DataError) as err:
            read_dataset(path, properties=ALL)
    return path, str(err.value)


def _comment_key_re(key: str) -> re.Pattern:
    return re.compile(rf'(?<![\w]){key}=("[^"]*"|\S+)')


CORRUPTIONS = {
    "nan": lambda vals: " ".join(["nan"] + vals[1:]),
    "inf": lambda vals: " ".join(vals[:-1] + ["-inf"]),
    "short": lambda vals: " ".join(vals[:-1]) if len(vals) > 1 else "1 2",
    "long": lambda vals: " ".join(vals + ["1.0"]),
    "text": lambda vals: "abc",
}


@FAST
@given(frame=st.integers(0, N_FRAMES - 1), name=st.sampled_from(["energy", "dipole", "polarizability"]),
       how=st.sampled_from(sorted(CORRUPTIONS) + ["missing"]))
def test_one_broken_label_names_its_frame(frame, name, how):
    """NaN/inf, wrong shape, non-numeric or missing label in frame k -> 'frame k' and the key in the message."""
    frames = frame_lines()
    comment = frames[frame][1]
    match = _comment_key_re(name).search(comment)
    assert match
    if how == "missing":
        new = comment[: match.start()] + comment[match.end() :]
    else:
        vals = match.group(1).strip('"').split()
        if name == "energy" and how in ("short",):
            new_val = '"1 2"'
        else:
            new_val = CORRUPTIONS[how](vals)
            new_val = f'"{new_val}"' if " " in new_val else new_val
        new = comment[: match.start()] + f"{name}={new_val}" + comment[match.end() :]
    frames[frame][1] = new
    path, msg = read_error(frames, "label.xyz")
    assert f"{path}: frame {frame}:" in msg
    # ASE itself converts known array properties (dipole, ...) and fails before we see the key: the
    # message then quotes the bad value instead of the key name
    assert name in msg or (how == "text" and "'abc'" in msg), msg
    expect = {"nan": "NaN or inf", "inf": "NaN or inf", "short": "shape", "long": "shape",
              "text": "not numeric", "missing": "missing key"}[how]
    if not (how == "text" and name != "energy"):  # ASE keeps "abc" as a string: 'not numeric'
        assert expect in msg, msg


@FAST
@given(frame=st.integers(0, N_FRAMES - 1), atom=st.integers(0, N_ATOMS - 1), col=st.integers(0, 2),
       value=st.sampled_from(["nan", "inf", "-inf"]))
def test_non_finite_forces_name_frame(frame, atom, col, value):
    frames = frame_lines()
    parts = frames[frame][2 + atom].split()
    parts[4 + col] = value
    frames[frame][2 + atom] = " ".join(parts) + "\n"
    _, msg = read_error(frames, "forces.xyz")
    assert re.search(rf"frame {frame}: forces \(key 'forces'\) contains NaN or inf", msg), msg


KNOWN_KEYS = {"energy", "forces", "dipole", "polarizability", "pbc", "species", "pos", "positions", "numbers",
              "properties", "lattice", "symbols"}


@FAST
@given(name=st.sampled_from(["dipole", "polarizability", "energy", "forces"]),
       key=st.from_regex(r"\A[a-z][a-z_0-9]{0,9}\Z"))
def test_wrong_key_name(name, key):
    assume(key.lower() not in KNOWN_KEYS)
    with scratch() as d:
        path = d / "keys.xyz"
        path.write_text(VALID_TEXT)
        with pytest.raises(DataError) as err:
            read_dataset(path, properties=[name], keys={name: key})
    msg = str(err.value)
    assert f"{path}: frame 0: missing key {key!r} for {name}" in msg
    assert "keys present:" in msg and "dipole" in msg  # tells the user what the file does have


def test_unknown_property_in_key_map_or_units():
    with scratch() as d:
        path = d / "ok.xyz"
        path.write_text(VALID_TEXT)
        with pytest.raises(DataError, match="unknown property 'dipol' in key mapping"):
            read_dataset(path, keys={"dipol": "mu"})
        with pytest.raises(DataError, match="unknown units 'si'"):
            read_dataset(path, units="si")


@FAST
@given(frame=st.integers(0, N_FRAMES - 1), pair=st.sets(st.integers(0, N_ATOMS - 1), min_size=2, max_size=2),
       jitter=st.floats(0.0, 0.09))
def test_duplicate_atoms(frame, pair, jitter):
    """An atom on top of (within 0.1 Å of) another: 'frame k: atoms i and j are ... apart'."""
    i, j = sorted(pair)
    frames = frame_lines()
    pi = frames[frame][2 + i].split()
    pj = frames[frame][2 + j].split()
    pj[1:4] = [f"{float(pi[1]) + jitter:.8f}", pi[2], pi[3]]
    frames[frame][2 + j] = " ".join(pj) + "\n"
    path, msg = read_error(frames, "dup.xyz")
    assert f"{path}: frame {frame}: atoms" in msg and "closer than 0.1 Å" in msg
    assert {int(a) for a in re.findall(r"atoms (\d+) and (\d+)", msg)[0]} == {i, j}


@FAST
@given(frame=st.integers(0, N_FRAMES - 1), atom=st.integers(0, N_ATOMS - 1),
       symbol=st.from_regex(r"\A[A-Za-z]{1,3}\Z"))
def test_unknown_element_symbol(frame, atom, symbol):
    assume(symbol.capitalize() not in chemical_symbols)
    frames = frame_lines()
    parts = frames[frame][2 + atom].split()
    parts[0] = symbol
    frames[frame][2 + atom] = " ".join(parts) + "\n"
    path, msg = read_error(frames, "elem.xyz")
    assert f"{path}: frame {frame}: cannot parse (unknown element symbol {symbol.capitalize()!r})" in msg


@pytest.mark.parametrize("z", [0, 119, 200, -3])
def test_unknown_atomic_number(tmp_path, z):
    path = tmp_path / "z.xyz"
    path.write_text(f"2\nProperties=Z:I:1:pos:R:3 energy=1.0\n{z} 0 0 0\n1 0 0 0.74\n")
    with pytest.raises(DataError) as err:
        read_dataset(path, properties=["energy"])
    assert f"{path}: frame 0: unknown element (atomic number {z})" in str(err.value)


@pytest.mark.parametrize(
    "lattice, message",
    [
        ("1 0 0 1 0 0 0 0 1", "periodic cell is degenerate"),  # two equal vectors: singular cell
        ("0.05 0 0 0 0.05 0 0 0 0.05", "periodic images 0.05 Å apart"),  # used to hang in neighbor_list
        ("5 0 0 0 nan 0 0 0 5", "cell contains NaN or inf"),
        ("1 2 3", "cannot parse"),
    ],
)
def test_bad_cells(tmp_path, lattice, message):
    path = tmp_path / "cell.xyz"
    path.write_text(f'2\nLattice="{lattice}" Properties=species:S:1:pos:R:3 energy=1.0\nH 0 0 0\nH 0 0 0.74\n')
    with pytest.raises(DataError) as err:
        read_dataset(path, properties=["energy"])
    assert f"{path}: frame 0:" in str(err.value) and message in str(err.value)


def test_partly_periodic_cell_is_fine(tmp_path):
    path = tmp_path / "slab.xyz"
    path.write_text('2\nLattice="5 0 0 0 0 0 0 0 0" pbc="T F F" Properties=species:S:1:pos:R:3 energy=1.0\n'
                    "H 0 0 0\nH 0 0 0.74\n")
    assert list(read_dataset(path).frames[0].pbc) == [True, False, False]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"   \n\n\t\n", "no frames"),
        (b"\x00\x01\x02garbage\xff\xfe", "not a text file"),
        (b"\x00\x01\x02garbage", "frame 0: line 1: expected an atom count"),
        (b"8\n", "frame 0: cannot parse (file ends in the middle of a frame (truncated?): line 1 announces 8 atoms"),
        (b"99999999\nx\nH 0 0 0\n", "frame 0: cannot parse (file ends in the middle of a frame (truncated?)"),
        (b"-2\nx\nH 0 0 0\n", "frame 0: line 1: negative atom count -2"),
        (b"two\nx\nH 0 0 0\n", "frame 0: line 1: expected an atom count, got 'two'"),
        (b"3\n\nH 0 0 0\nH 0 0 0.74\n", "frame 0: cannot parse (file ends in the middle of a frame (truncated?)"),
        (b'2\nProperties=species:S:1:pos:R:3\nH 0 0\nH 0 0 0.74\n', "frame 0: cannot parse"),
        (b'2\nProperties=species:S:1:pos:R:3 dipole="0 0 1 energy=1\nH 0 0 0\nH 0 0 0.74\n', "frame 0: cannot parse"),
    ],
)
def test_empty_binary_and_malformed_headers(tmp_path, content, message):
    path = tmp_path / "bad.xyz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_dataset(path, properties=["energy"])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "absent.xyz")


def test_frame_index_out_of_range(tmp_path):
    path = tmp_path / "ok.xyz"
    path.write_text(VALID_TEXT)
    with pytest.raises(DataError, match=r"no frame 7 \(file has 3\)"):
        read_dataset(path, index=7)


@QUICK
@given(scale=st.sampled_from(["dipole", "polarizability", "energy", "forces"]))
def test_units_mismatch_scales_exactly_and_is_not_guessed(scale):
    """A file in atomic units read as ASE units (or the reverse) is NOT detected: magnitudes of real
    dipoles/polarizabilities/energies overlap in both systems. What happens is exactly a unit factor
    (documented in docs/robustness.md); --units atomic is the user's switch."""
    factor = {"dipole": BOHR, "polarizability": BOHR**3, "energy": HARTREE, "forces": HARTREE / BOHR}[scale]
    with scratch() as d:
        path = d / "u.xyz"
        path.write_text(VALID_TEXT)
        ase_units = read_dataset(path, properties=[scale])
        atomic = read_dataset(path, properties=[scale], units="atomic")
    a, b = ase_units.get(scale), atomic.get(scale)
    if scale == "forces":
        a, b = np.concatenate(a), np.concatenate(b)
    assert np.allclose(b, factor * a, rtol=1e-12, atol=0)


def test_extra_columns_are_ignored_missing_columns_are_not(tmp_path):
    """Documented ASE behaviour: an atom line with more values than Properties declares is accepted."""
    ok = tmp_path / "extra.xyz"
    ok.write_text("2\nProperties=species:S:1:pos:R:3 energy=1\nH 0 0 0 99\nH 0 0 0.74 99\n")
    assert len(read_dataset(ok)) == 1
    bad = tmp_path / "fewer.xyz"
    bad.write_text("2\nProperties=species:S:1:pos:R:3:forces:R:3 energy=1\nH 0 0 0 1 1\nH 0 0 0.74 1 1 1\n")
    with pytest.raises(DataError, match="frame 0: cannot parse"):
        read_dataset(bad)


def test_properties_are_the_known_four():
    assert set(PROPERTIES) == set(ALL)


@FAST
@given(frame=st.integers(0, N_FRAMES - 1), count=st.sampled_from(["7", "9", "0", "-1", "abc", "8.5", "", "1e3"]))
def test_wrong_atom_count_names_the_right_frame(frame, count):
    """ASE scans every header first, so its errors would all say 'frame 0': the reader finds the frame.
    A wrong count in frame k shows up at frame k (or at k + 1, with a hint to check frame k's count)."""
    frames = frame_lines()
    frames[frame][0] = count + "\n"
    path, msg = read_error(frames, "count.xyz")
    assert msg.startswith(f"{path}: frame ")
    k = int(re.match(rf"{re.escape(str(path))}: frame (\d+)", msg).group(1))
    assert k == frame or (k == frame + 1 and f"atom count of frame {frame}" in msg) or (
        k > frame and count in ("0", "-1", "")), msg
