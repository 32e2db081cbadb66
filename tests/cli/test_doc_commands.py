"""Every ``mdplugin`` command line in the README and the docs matches the parser.

The code blocks of README.md, docs/*.md (but the pages generated from the parser) and the
examples' READMEs are read; each line that runs ``mdplugin`` (after environment assignments,
``mpiexec -n P``, ``srun``, continuation lines joined) is

* a concrete command (no ``[``, ``|`` or ``…``): parsed by the real parser, which must accept it;
* a synopsis (``mdplugin md START.xyz --energy MODEL.npz|tblite [--dipole M.npz] ...``): every
  option must exist for that sub-command, and an option that takes a value must be shown with one
  (``active … [--resume]`` where the form is ``--resume RUN_DIR`` fails).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mdplugin.cli.parser import build_parser

REPO = Path(__file__).resolve().parents[2]
GENERATED = {"api.md", "cli.md"}
SHELL_END = {"&&", "||", ";", "|", ">", ">>", "2>", "&"}
WRAPPERS = {"srun", "nohup", "time", "exec"}


def _pages() -> list[Path]:
    pages = [p for p in sorted((REPO / "docs").glob("*.md")) if p.name not in GENERATED]
    pages += [REPO / "README.md", *sorted((REPO / "examples").glob("**/README.md"))]
    return [p for p in pages if p.exists()]


def _command_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, text from ``mdplugin`` on) of every mdplugin command in the code blocks."""
    out, block, joined, start = [], False, "", 0
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            block = not block
            joined = ""
            continue
        if not block:
            continue
        if not joined:
            start = number
        joined += line.rstrip().rstrip("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        text, joined = joined.strip(), ""
        text = re.sub(r"^\$\s+", "", text)
        match = re.search(r"(?:^|\s|&&\s*)(mdplugin\s.*)$", text)
        if match is None or text.lstrip().startswith(("#", "from ", "import ")) or "mdplugin." in match.group(1)[:9]:
            continue
        head = text[: match.start(1)].split("&&")[-1].split()  # what runs before it in the same command
        prefix_ok = all(re.match(r"^[A-Z_]+=\S*$", w) or w in WRAPPERS or w in ("mpiexec", "-n", "&&") or w.isdigit()
                        for w in head)
        if prefix_ok:
            out.append((start, match.group(1)))
    return out


def _all_commands() -> list[tuple[str, str]]:
    return [(f"{page.relative_to(REPO)}:{n}", text) for page in _pages() for n, text in _command_lines(page)]


def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _is_synopsis(text: str) -> bool:
    return any(c in text for c in "[]|…") or "..." in text


def _check_synopsis(text: str) -> list[str]:
    parser = build_parser()
    subs = _subparsers(parser)
    problems = []
    command = next((w for w in text.split()[1:] if w in subs), None)
    sub = subs.get(command) if command else None
    for alternative in re.split(r"\s\|\s", text):
        words = re.sub(r"[\[\]()]", " ", alternative).replace("…", " ").replace("...", " ").split()
        known = {o: a for p in (parser, sub) if p is not None for a in p._actions for o in a.option_strings}
        for i, word in enumerate(words):
            option = word.split("=")[0].split("|")[0]
            if not option.startswith("-") or option in ("-", "--"):
                continue
            action = known.get(option)
            if action is None:
                problems.append(f"{option}: no such option of 'mdplugin {command}'")
                continue
            takes_value = action.nargs != 0
            following = words[i + 1] if i + 1 < len(words) else ""
            shown_value = "=" in word or (following and not following.startswith("-"))
            if takes_value and not shown_value:
                problems.append(f"{option} is shown without its value ({action.metavar or action.dest.upper()})")
            if not takes_value and "=" in word:
                problems.append(f"{option} takes no value")
    return problems


def _check_concrete(text: str) -> list[str]:
    words = shlex.split(text, comments=True)
    for i, word in enumerate(words):
        if word in SHELL_END:
            words = words[:i]
            break
    try:
        build_parser().parse_args(words[1:])
    except SystemExit:
        return ["rejected by the parser"]
    return []


COMMANDS = _all_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 50
    assert any("README.md" in where for where, _ in COMMANDS)


@pytest.mark.parametrize("where, text", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_matches_the_parser(where: str, text: str, capsys) -> None:
    problems = _check_synopsis(text) if _is_synopsis(text) else _check_concrete(text)
    err = capsys.readouterr().err.strip().splitlines()
    assert not problems, f"{where}: {text}\n  " + "\n  ".join(problems + err[-1:])


@pytest.mark.parametrize("text, problem", [
    ("mdplugin active START.xyz --oracle tblite -o RUN_DIR [--resume]", "--resume is shown without its value"),
    ("mdplugin md START.xyz --energy M.npz --steps N [--dtt FS] -o T.xyz", "--dtt: no such option"),
    ("mdplugin train DATA.xyz --target energy --model soap -o M.npz [--n-train]", "--n-train is shown without"),
])
def test_the_checker_finds_wrong_forms(text: str, problem: str) -> None:
    assert any(problem in p for p in _check_synopsis(text))


def test_the_checker_rejects_a_wrong_concrete_command(capsys) -> None:
    assert _check_concrete("mdplugin md start.xyz --energy e.npz --steps 10 -o t.xyz")  # no --dt
    assert not _check_concrete("mdplugin md start.xyz --energy e.npz --steps 10 --dt 0.5 -o t.xyz")


def test_window_help_says_any_scipy_window_works(tmp_path) -> None:
    import numpy as np

    from mdplugin.spectra import ir_spectrum

    sub = _subparsers(build_parser())["spectrum"]
    text = next(a.help for a in sub._actions if "--window" in a.option_strings)
    assert "scipy.signal.get_window" in text and "tukey:0.5" in text
    mu = [np.random.default_rng(0).normal(size=(400, 3))]
    for window in ("tukey:0.5", "kaiser:8", "cosine", "none"):  # windows the old help did not list
        assert ir_spectrum(mu, 1.0, 300.0, window=window).kind == "ir"


def test_figures_are_dated_not_labelled_by_rounds_of_work() -> None:
    """A reader cannot place "session 4": figures carry a date or a commit, and benchmarks.md opens
    with one table of the headline numbers whose rows link to their sections."""
    pages = [p for p in sorted((REPO / "docs").glob("*.md")) if p.name not in GENERATED] + [REPO / "README.md"]
    labelled = [f"{p.name}:{n}" for p in pages for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                if re.search(r"\bsession[- ]\d|\b(first|this|next|last) session\b", line, re.I)]
    assert not labelled, labelled
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    sections = text.split("\n## ")
    assert sections[1].startswith("Headline numbers\n")  # the first section
    table = [line for line in sections[1].splitlines() if line.startswith("| ") and not line.startswith("|---")]
    assert len(table) > 10 and all(re.search(r"\]\(#\w", row) for row in table[1:]), "rows link to sections"
    anchors = {re.sub(r"[^\w\- ]", "", h.split("\n")[0]).strip().lower().replace(" ", "-") for h in sections}
    anchors |= {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^### (.+)$", text, re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", sections[1]):
        assert target in anchors, target
