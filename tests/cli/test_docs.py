"""The generated pages (docs/cli.md, docs/api.md, the settings table of docs/demo.md) are up to date and every relative link in
docs/*.md, README.md and examples/README.md points to an existing file (and, inside the
generated API page, to an existing anchor)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

#: [text](target) links, images included; the target ends at whitespace or ")"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _generator(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, page", [("gen_cli", "cli.md"), ("gen_api", "api.md"), ("gen_demo", "demo.md")])
def test_generated_page_is_up_to_date(name: str, page: str) -> None:
    expected = _generator(name).render()
    committed = (DOCS / page).read_text(encoding="utf-8")
    assert committed == expected, f"docs/{page} is out of date: run python docs/{name}.py"


def test_cli_page_documents_every_subcommand() -> None:
    from mdplugin.cli.parser import build_parser

    gen = _generator("gen_cli")
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name, _, sub in gen._subcommands(build_parser()):
        assert f"## mdplugin {name}\n" in text
        for action in sub._actions:  # every option string of every command is on the page
            for option in action.option_strings:
                assert option in text, (name, option)


def test_api_page_documents_the_model_interface() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    for name in ("mdplugin.models.base.build", "mdplugin.models.base.load_model", "mdplugin.engines.ase.MLCalculator",
                 "mdplugin.spectra.compute.ir_spectrum", "mdplugin.spectra.compute.raman_spectrum",
                 "mdplugin.engines.md.run_md"):
        assert f'<a id="{name}"></a>' in text, name


def _markdown_files() -> list[Path]:
    files = sorted(DOCS.glob("*.md")) + [REPO / "README.md", REPO / "examples" / "README.md"]
    return [f for f in files if f.exists()]


def _links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # no links inside code blocks
    return LINK.findall(text)


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # URLs, mailto:, in-page anchors
        file_part = target.split("#", 1)[0]
        if not (page.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_api_page_anchors_exist() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    missing = [t for t in _links(DOCS / "api.md") if t.startswith("#") and t[1:] not in ids]
    assert not missing, missing
