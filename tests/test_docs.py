"""The documentation stays true: README.md and docs/*.md.

Commands. Every `mlproject`, `tune` and `mlflow` command shown in a fenced code block, or in inline
code, is checked against the real command line, in two tiers:

* parse (quick, imports neither torch nor MLflow): the real click commands
  (`mlproject.app.cli.cli`, `mlproject.app.tune.tune`) parse it after the argument rewriting their
  console scripts do, so an unknown or renamed option, a bad choice or a value of the wrong type
  fails; `mlproject train` also runs `TrainConfig.validate()` (what it answers before torch loads:
  choices, ranges, the dataset's name). `mlflow run . -e E -P k=v`: each k must be a parameter of
  the entry point E in `MLproject`, and E's command with the values put in (shell-quoted, as MLflow
  does) is checked as above.
* the project's checks (slow: torch, timm and MLflow take seconds to import): `tune`'s own command
  body up to `tuning.check` (search ranges, samplers, pruners, objectives, constraints,
  conditional options), every model name (`mlproject.models.resolve_model`), every `mlflow`
  command by MLflow's own click commands, and `mlflow run`'s command as MLflow's
  `EntryPoint.compute_command` builds it.

`mlproject report` and `outliers` are parsed only: their own checks need runs in MLflow.

Shell: a line ending in `\\` continues; `#` starts a comment; `&&`, `||`, `;`, `|` and `&` separate
commands; leading `NAME=value` words are environment settings; lines of only `NAME=value` words
(`export` too) define variables that later commands of the same block use as `$NAME` / `${NAME}`
(other variables, such as `$HOME`, stay as written).

Placeholders: a whole word in capitals (`K`, `N`, `DEFAULT_RUN_ID`) stands for a value the reader
supplies and is replaced by its dummy in PLACEHOLDERS before parsing; one not listed there fails
(add it, with a dummy that is valid where it is used). Inline code that only names a command
(`mlproject report`, `mlflow models serve`, `tune`) is checked to name one that exists; inline code
with options or arguments (`tune --cv K`) is checked as the whole command it spells.

Links: every relative link in README.md and docs/*.md points to a file that exists and, with
`#anchor`, to a heading of that Markdown file (GitHub's anchors).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import re
import shlex
from pathlib import Path
from unittest import mock

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDERS = {"K": "5", "N": "2", "DEFAULT_RUN_ID": "0123456789abcdef0123456789abcdef",
                "RUN_ID": "0123456789abcdef0123456789abcdef"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclasses.dataclass(frozen=True)
class Shown:
    """One command as a page shows it."""

    where: str  # README.md:14
    words: tuple[str, ...]  # after continuations, comments, variables and placeholders
    inline: bool = False
    unlisted: tuple[str, ...] = ()  # placeholders PLACEHOLDERS lacks (the check fails on them)

    def __str__(self):
        return f"{self.where}: {shlex.join(self.words)}"


# ---------------------------------------------------------------------------------------------
# what the pages show

def _split(text: str) -> list[list[str]]:
    """The shell words of one logical line, cut into commands at && || ; | &; comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for word in lexer:
        if word in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in commands + [current] if c]


def _is_command(words) -> bool:
    return words[0] in ("mlproject", "tune") or (words[0] == "mlflow" and len(words) > 1)


def _shown(where: str, words, inline: bool = False) -> Shown:
    """Shown, with its placeholders (whole words in capitals) replaced by their dummies."""
    placeholder = re.compile(r"[A-Z][A-Z0-9_]*")
    unlisted = tuple(w for w in words if placeholder.fullmatch(w) and w not in PLACEHOLDERS)
    return Shown(where, tuple(PLACEHOLDERS.get(w, w) for w in words), inline, unlisted)


def _fenced(lines: list[str], page: str, first: int) -> list[Shown]:
    """The commands of one fenced block: its lines without the fences, the first being line `first`."""
    logical, start, buffer = [], 0, ""
    for i, line in enumerate(lines):
        start = start if buffer else i
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        logical.append((start, buffer + line))
        buffer = ""
    variables: dict[str, str] = {}
    shown = []
    for offset, line in logical:
        for name, value in variables.items():
            line = re.sub(r"\$(%s\b|\{%s\})" % (name, name), lambda _: value, line)
        try:
            commands = _split(line)
        except ValueError:  # not shell: a JSON answer, an error message
            continue
        for words in commands:
            if words[0] == "export":
                words = words[1:]
            if words and all(ASSIGNMENT.match(w) for w in words):  # NAME=value: a variable for the lines below
                variables.update(w.split("=", 1) for w in words)
                continue
            while words and ASSIGNMENT.match(words[0]):  # CUDA_VISIBLE_DEVICES=0 tune ...
                words = words[1:]
            if words and _is_command(words):
                shown.append(_shown(f"{page}:{first + offset}", words))
    return shown


def _inline(line: str, where: str) -> list[Shown]:
    shown = []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", line):
        text = m.group(1)
        if not re.match(r"(mlproject|tune|mlflow)( |$)", text):
            continue  # a module or a tag: mlproject.failure, mlflow.log_input
        for words in _split(text):
            if _is_command(words):
                shown.append(_shown(where, words, inline=True))
    return shown


def shown_commands(pages=PAGES) -> list[Shown]:
    shown = []
    for page in pages:
        name = page.relative_to(ROOT).as_posix()
        lines = page.read_text().splitlines()
        fence = None  # the line number of the open fence
        for i, line in enumerate(lines, 1):
            if line.startswith("```"):
                if fence is None:
                    fence = i
                else:
                    shown += _fenced(lines[fence:i - 1], name, fence + 1)
                    fence = None
            elif fence is None:
                shown += _inline(line, f"{name}:{i}")
    return shown


COMMANDS = shown_commands()


# ---------------------------------------------------------------------------------------------
# checks

class Refused(Exception):
    """The project's own check refused the command (what `tune` would print)."""


class _Checked(Exception):
    """`tune`'s body got through tuning.check: its Plan, instead of running the study."""

    def __init__(self, plan):
        super().__init__("checked")
        self.plan = plan


def _parse(command: click.Command, name: str, args) -> click.Context | None:
    """click's parse of args; None for --help (which only prints)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return command.make_context(name, list(args))
    except click.exceptions.Exit as e:
        if e.exit_code:
            raise AssertionError(f"{name} exited with {e.exit_code}") from None
        return None


def _resolve(group: click.Command, words) -> tuple[click.Command, str, list[str]]:
    """Down the subcommands: (the command, its name, its arguments)."""
    command, name, rest = group, words[0], list(words[1:])
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            raise click.UsageError(f"{name} has no command {rest[0]!r}")
        command, name, rest = sub, rest[0], rest[1:]
    return command, name, rest


def _mlproject(words, full: bool) -> tuple[str, ...]:
    """`mlproject ...`: click, then for `train` what it checks before torch loads; its model."""
    from mlproject.app.cli import bool_flags_from_values, cli
    from mlproject.config import TrainConfig

    command, name, args = _resolve(cli, ["mlproject", *bool_flags_from_values(words[1:])])
    ctx = _parse(command, name, args)
    if ctx is None or name != "train":
        return ()
    return (TrainConfig(**ctx.params).validate().model,)


def _tune(words, full: bool) -> tuple[str, ...]:
    """`tune ...`: click; in full, tune's own body up to tuning.check (nothing created) and
    the models its study may train."""
    from mlproject.app import tune as tune_app

    ctx = _parse(tune_app.tune, "tune", tune_app.tune_args(words[1:]))
    if ctx is None or not full:
        return ()
    import tuning

    real_check = tuning.check

    def check_then_stop(*args, **kwargs):
        raise _Checked(real_check(*args, **kwargs))

    def refuse(message):
        raise Refused(message)

    def not_past_check(*args, **kwargs):  # were check no longer tune's first step: never a study here
        raise AssertionError("tune's body got past tuning.check")

    with mock.patch.object(tuning, "check", check_then_stop), mock.patch.object(tuning, "prepare", not_past_check), \
            mock.patch.object(tune_app, "fail", refuse), \
            mock.patch.object(tune_app, "handle_signals", lambda: None), \
            contextlib.redirect_stderr(io.StringIO()):  # runner's `note:` lines
        try:
            with ctx:
                tune_app.tune.invoke(ctx)
        except _Checked as done:
            plan = done.plan
        else:
            raise AssertionError("tune's body got past tuning.check")
    return tuple(plan.space.values("model") if "model" in plan.space.dims else [plan.base.model])


@functools.cache
def _mlflow_cli() -> click.Group:
    import mlflow.cli

    return mlflow.cli.cli


def _run_args(args) -> tuple[str | None, str, dict[str, str]]:
    """(URI, entry point, -P parameters) of `mlflow run` arguments, read without MLflow."""
    uri, entry, params, rest = None, "main", {}, list(args)
    while rest:
        word = rest.pop(0)
        if word in ("-e", "--entry-point"):
            entry = rest.pop(0)
        elif word in ("-P", "--param-list"):
            key, _, value = rest.pop(0).partition("=")
            params[key] = value
        elif word == "--env-manager":
            rest.pop(0)
        elif not word.startswith("-") and uri is None:
            uri = word
    return uri, entry, params


def _mlflow(words, full: bool) -> tuple[str, ...]:
    """`mlflow ...`: in full, MLflow's own click commands. `mlflow run .`: the -P names are the
    entry point's parameters, and the command they make is checked in turn."""
    if full:
        command, name, args = _resolve(_mlflow_cli(), words)
        ctx = _parse(command, name, args)
        if ctx is None or name != "run":
            return ()
        uri, entry, params = ctx.params["uri"], ctx.params["entry_point"], dict(
            p.split("=", 1) for p in ctx.params["param_list"])
    elif words[1] != "run":
        return ()
    else:
        uri, entry, params = _run_args(words[2:])
    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    unknown = sorted(set(params) - set(spec.get(entry, {}).get("parameters", {})))
    if uri not in (".", str(ROOT)):
        raise AssertionError(f"mlflow run of {uri!r}, not this project")
    if entry not in spec:
        raise AssertionError(f"-e {entry}: MLproject's entry points are {', '.join(spec)}")
    if unknown:
        raise AssertionError(f"-P {', '.join(unknown)}: not parameters of MLproject's {entry!r} entry point")
    if full:
        from mlflow.projects._project_spec import load_project

        built = load_project(str(ROOT)).get_entry_point(entry).compute_command(params, None)
    else:  # as MLflow builds it: the defaults, the given values, each shell-quoted
        values = {k: v.get("default", "") for k, v in spec[entry]["parameters"].items()} | params
        built = spec[entry]["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()})
    return check(shlex.split(built), full)


def check(words, full: bool = False) -> tuple[str, ...]:
    """Check one command (words, as a shell splits it); the models it trains. Raises on what is wrong."""
    return {"mlproject": _mlproject, "tune": _tune, "mlflow": _mlflow}[words[0]](list(words), full)


def check_shown(s: Shown, full: bool = False) -> tuple[str, ...]:
    """A command as shown; inline code that only names a command: that it exists."""
    if s.unlisted:
        raise AssertionError(f"placeholder {', '.join(s.unlisted)}: add it to PLACEHOLDERS with a dummy value")
    if s.inline and not any(w.startswith("-") for w in s.words):
        if s.words[0] == "tune" and len(s.words) == 1:
            return ()
        if s.words[0] == "mlproject" or full:
            from mlproject.app.cli import cli

            _, _, rest = _resolve(cli if s.words[0] == "mlproject" else _mlflow_cli(), s.words)
            if not rest:
                return ()
        elif s.words[:2] == ("mlflow", "run") and len(s.words) == 2:
            return ()  # `mlflow run`: a name (MLflow's own commands are checked in full)
    return check(s.words, full)


def failure(s: Shown, full: bool = False, models: list | None = None) -> str | None:
    """None if `s` passes (the models it trains added to `models`); else where it is and why it fails."""
    try:
        trains = check_shown(s, full)
    except (click.ClickException, AssertionError, ValueError, Refused) as e:  # ConfigError is a ValueError
        message = e.format_message() if isinstance(e, click.ClickException) else str(e)
        return f"{s}\n    -> {type(e).__name__}: {message}"
    if models is not None:
        models.extend(trains)
    return None


# wrong commands each tier must catch
WRONG_PARSE = ["mlproject train --modle lenet5", "mlproject train --optimizer adamm", "mlproject train --lr 0",
               "mlproject train --epochs five", "mlproject train --augment crop+flop", "mlproject trian",
               "mlproject report --studies x", "mlproject outliers --images photos/", "tune --trails 3",
               "tune --workers two", "mlflow run . -P trails=3", "mlflow run . -e tune -P trails=3",
               "mlflow run . -e tun", "mlflow run . -P epochs=five", "mlflow run . -P optimizer=adamm",
               "tune --cv FOLDS"]  # a placeholder PLACEHOLDERS lacks
WRONG_FULL = ["tune --lr 1e-1:1e-4", "tune --sampler grid --lr 1e-4:1e-1", "tune --seed 0,1",
              "tune --objective val_acuracy", "tune --constraint model_size_mb<5", "tune --sampler cmaez",
              "tune --model lenet5,resnet181", "mlflow run . --env-manger local",
              "mlflow models serve -m m --prot 5001", "mlflow sever", "mlproject train --model resnet181"]


def _models_exist(models) -> None:
    from mlproject.models import resolve_model

    for model in sorted(set(models)):
        resolve_model(model)  # ConfigError (a ValueError), with close matches, if unknown


# ---------------------------------------------------------------------------------------------
# tests

def test_the_commands_shown_are_found():
    assert len(COMMANDS) >= 40, len(COMMANDS)
    assert {s.words[0] for s in COMMANDS} == {"mlproject", "tune", "mlflow"}
    readme = [s for s in COMMANDS if s.where.startswith("README.md:") and not s.inline]
    assert ("mlflow", "run", ".", "--env-manager", "local", "-P", "model=resnet18", "-P", "epochs=5", "-P",
            "optimizer=adam", "-P", "lr=0.001") in [s.words for s in readme]  # the set-up command, after `&&`
    report = [s.words for s in COMMANDS if s.where.startswith("docs/report-and-outliers.md:") and not s.inline]
    assert report[0][:3] == ("tune", "--model", "tv:squeezenet1_1")  # `tune $S ...`: the variable put in
    continued = next(s.words for s in COMMANDS if "--constraint" in s.words)
    assert continued[-2:] == ("--trials", "30")  # a `\` line continued, its comment dropped


def test_every_command_shown_parses():
    wrong = [f for f in (failure(s) for s in COMMANDS) if f]
    assert not wrong, f"{len(wrong)} of {len(COMMANDS)} commands shown in the docs are wrong:\n" + "\n".join(wrong)


def test_a_renamed_option_or_bad_value_fails_the_parse():
    missed = [text for text in WRONG_PARSE if not failure(_shown("test", shlex.split(text)))]
    assert not missed, f"not caught: {missed}"


@pytest.mark.slow
def test_every_command_shown_passes_the_projects_checks():
    models: list[str] = []
    wrong = [f for f in (failure(s, full=True, models=models) for s in COMMANDS) if f]
    assert not wrong, f"{len(wrong)} of {len(COMMANDS)} commands shown in the docs are wrong:\n" + "\n".join(wrong)
    assert {"lenet5", "tv:resnet18", "resnet18", "tv:squeezenet1_1"} <= set(models)
    _models_exist(models)


@pytest.mark.slow
def test_a_bad_value_fails_the_projects_checks():
    def caught(text):
        try:
            _models_exist(check(shlex.split(text), full=True))
        except (click.ClickException, AssertionError, ValueError, Refused):
            return True
        return False

    missed = [text for text in WRONG_PARSE + WRONG_FULL if not caught(text)]
    assert not missed, f"not caught: {missed}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def _anchors(page: Path) -> frozenset[str]:
    anchors, seen, fence = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.+)", line)):
            a = _anchor(m.group(1))
            anchors.add(f"{a}-{seen[a]}" if a in seen else a)  # a repeated heading: -1, -2, ...
            seen[a] = seen.get(a, 0) + 1
    return frozenset(anchors)


def test_relative_links_point_to_files_and_headings():
    broken, links = [], 0
    for page in PAGES:
        fence = False
        for i, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                fence = not fence
            if fence:
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                links += 1
                path, _, anchor = target.partition("#")
                file = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(ROOT)}:{i}: ({target})"
                if not file.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and (file.suffix != ".md" or anchor not in _anchors(file)):
                    broken.append(f"{where}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert links >= 10, links  # README's links to the pages at least
    assert not broken, "\n".join(broken)
