"""Every `radflow ...` command that an error message or a ``fix=`` hint tells the user to run
exists: the hints are collected from the source (radflow/, the plugins, orthanc/, flows/,
tasks/, blocks/, deployments/, federation/, scripts/) and each is parsed by the real command
tree, with placeholders (NAME, PATH, ID, ``{name}``...) replaced by sample values. A hint that
names a missing command or option, or gives an option a value it cannot take, fails with its
file and line."""

from __future__ import annotations

import ast
import functools
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from radflow.cli import app
from radflow.hub.services import PORT_OPTIONS
from radflow.site.components import site_components

try:  # typer vendors click (typer._click) since 0.2x; older typers use click itself
    from typer._click.exceptions import MissingParameter, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import MissingParameter, UsageError

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["radflow", "orthanc", "flows", "tasks", "blocks", "deployments", "federation",
           "scripts", *(str(p.relative_to(REPO)) for p in sorted(REPO.glob("plugins/*/src")))]
# "radflow" followed by one of these words is prose about radflow ("upgrade radflow at the
# site", "this radflow cannot read"), not a command; none of them may be a command's name
PROSE = {"at", "cannot", "does", "version", "is", "uses", "the", "and", "or", "to", "on",
         "in", "with", "plugin"}
# where a hint ends: a closing quote or bracket, a clause, another sentence
END = re.compile(r"`|\)|;|,|\n| \(| / |: |\. | - |\.$")
# f-string fields whose value is an option's name: every option they can hold
FIELD_SAMPLES = {"option": sorted({o for c in site_components() for o in c.ports.values()}),
                 "PORT_OPTIONS[key]": sorted(PORT_OPTIONS.values())}
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_.=-]*|<[^>]*>|\{[^}]*\})$")
SAMPLE = "1"  # a str, a path, an int and a float all take it
FILE_SAMPLE = __file__  # for placeholders of files that must exist
FILES = {"ZIP", "FILE", "PATH", "F"}


def rendered(node: ast.AST) -> list[str]:
    """The texts an expression can evaluate to, f-string fields as ``{expression}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts = [rendered(v) if isinstance(v, ast.Constant) else
                 FIELD_SAMPLES.get(ast.unparse(v.value), ["{" + ast.unparse(v.value) + "}"])
                 for v in node.values]
        return ["".join(p) for p in itertools.product(*parts)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [a + b for a in rendered(node.left) for b in rendered(node.right)]
    if isinstance(node, ast.IfExp):
        return rendered(node.body) + rendered(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [text for value in node.values for text in rendered(value)]
    return []


def messages(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, text) of every error message and fix hint: the arguments of a raised call, the
    message and ``fix=`` of any call that takes a ``fix``, and whatever is assigned to ``fix``."""
    seen: set[int] = set()  # a raised call with a fix is reached twice
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            texts = [*node.exc.args, *(k.value for k in node.exc.keywords)]
        elif isinstance(node, ast.Call) and any(k.arg == "fix" for k in node.keywords):
            texts = [*node.args, *(k.value for k in node.keywords)]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and any(
                isinstance(t, ast.Name) and t.id == "fix"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            texts = [node.value] if node.value is not None else []
        else:
            continue
        for text_node in texts:
            if id(text_node) in seen:
                continue
            seen.add(id(text_node))
            for text in rendered(text_node):
                yield text_node.lineno, text


def commands(text: str) -> Iterator[list[str]]:
    """The argument lists of the `radflow ...` commands a text names (without "radflow");
    ``a|b`` alternatives give one command each."""
    for match in re.finditer(r"(?<![\w./-])radflow (?=[a-z{])", text):
        rest = text[match.end():]
        cut = END.search(rest)
        words = (rest[:cut.start()] if cut else rest).split()
        if not words or words[0] in PROSE:
            continue
        words = [w for w in words if w not in ("...", "…")]
        choices = [w.split("|") if re.fullmatch(r"[a-z-]+(\|[a-z-]+)+", w) else [w]
                   for w in words]
        for combination in itertools.product(*choices):
            yield [(FILE_SAMPLE if w in FILES else SAMPLE) if PLACEHOLDER.match(w) else w
                   for w in combination]


def hints() -> list[tuple[str, list[str]]]:
    found = []
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, text in messages(tree):
                for args in commands(text):
                    found.append((f"{path.relative_to(REPO)}:{line}", args))
    return found


@functools.cache
def root():
    return typer.main.get_command(app)


def parse(args: list[str]) -> None:
    """Parse ``radflow ARGS`` down to its command as the CLI would (no command runs); a missing
    required value is fine (a hint may name a command without all of its arguments)."""
    command = root()
    ctx = command.make_context("radflow", list(args))
    while isinstance(command, TyperGroup):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return  # a group named on its own
        name, command, rest = command.resolve_command(ctx, rest)
        try:
            ctx = command.make_context(name, rest, parent=ctx)
        except MissingParameter:
            return


def test_the_collector_finds_the_hints() -> None:
    found = hints()
    by_place = {place: args for place, args in found}
    assert len(found) > 60  # the source names radflow commands in many hints
    named = {" ".join(args) for _, args in found}
    # forms the collector must read: backticks, f-string fields, a fix assigned to a name,
    # alternatives, a hint continued on the next line
    assert "site up --site 1" in named
    assert "site approve 1" in named and "site revoke 1" in named
    assert "site up --site 1 --orthanc-http-port 1" in named
    assert any(place.startswith("radflow/runtime.py") for place in by_place)
    assert "orthanc/client.py" in {place.split(":")[0] for place in by_place}
    assert all(not any(w.startswith("{") for w in args) for args in by_place.values())


def test_the_collector_catches_a_wrong_hint() -> None:
    """The hint this test exists for (`--name`, an option that no longer exists), as it was in
    radflow/runtime.py and orthanc/client.py, fails."""
    old = ast.parse('raise ConfigurationError("no block", fix=f"run `radflow site up --name '
                    '{name}` (it saves the block)")\n'
                    'raise OrthancError("401", fix="use the site\'s credentials (`radflow site '
                    'credentials --name SITE`)")\n'
                    'raise SiteError("x", fix="radflow sites up")\n')
    found = [args for _, text in messages(old) for args in commands(text)]
    assert found == [["site", "up", "--name", "1"], ["site", "credentials", "--name", "1"],
                     ["sites", "up"]]
    for args in found:
        with pytest.raises(UsageError):
            parse(args)


def test_prose_words_are_no_commands() -> None:
    assert not PROSE & set(root().commands)


def test_every_hint_names_a_command_that_exists() -> None:
    wrong = []
    for place, args in hints():
        try:
            parse(args)
        except UsageError as exc:
            wrong.append(f"{place}: radflow {' '.join(args)}: {exc.format_message()}")
    assert not wrong, "hints that name no command the CLI has:\n" + "\n".join(wrong)
