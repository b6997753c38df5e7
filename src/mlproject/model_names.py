"""What --model accepts, without importing torch, timm or torchvision where it can.

    names = known_names()        # {'builtin': [...], 'timm': [...], 'timm_pretrained': [...], 'torchvision': [...]}
    check_model_name("resnet1888")   # ConfigError with close matches, from the cache alone

Importing timm takes 4-6 s on a 2-core machine (torch with it: 2-3 s of that), which `mlproject
models` and an unknown `--model` would otherwise wait for. So the names timm and torchvision list
are written to a small JSON file in the user's cache folder the first time they are imported for
names (mlproject.models), one file per installed timm, torchvision and mlproject version (their
versions come from the packages' metadata, read without importing them); later commands read the
names from it in milliseconds. No file (first use, a read-only home): None, and the callers import
the libraries as before.
"""
from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

from .errors import unknown

CACHE_ENV = "MLPROJECT_CACHE_DIR"  # as mlproject.features' (the feature cache lives there too)
KINDS = ("builtin", "timm", "timm_pretrained", "torchvision")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def cache_file() -> Path:
    """$MLPROJECT_CACHE_DIR/model-names-...json, else in $XDG_CACHE_HOME/mlproject or ~/.cache/mlproject;
    named by the versions whose names it holds (another version: another file)."""
    if os.environ.get(CACHE_ENV):
        folder = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlproject"
    versions = "-".join(f"{d}{_version(d)}" for d in ("mlproject", "timm", "torchvision"))
    return folder / f"model-names-{versions}.json"


def cached_names() -> dict[str, list[str]] | None:
    """The names stored for the installed versions, or None (none stored, or unreadable)."""
    try:
        names = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(names, dict) or any(not isinstance(names.get(k), list) for k in KINDS):
        return None
    return names


def store_names(names: dict[str, list[str]]) -> None:
    """Write the names (every kind of KINDS), replacing the file whole; a cache folder that
    cannot be written is no error (the names are listed the slow way next time too)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump({k: list(names[k]) for k in KINDS}, f)
        os.replace(f.name, path)
    except OSError:
        pass


def known_names() -> dict[str, list[str]]:
    """Every name of each kind of KINDS (timm's in its own order; 'timm_pretrained': the names
    with a pretrained tag, `resnet18.a1_in1k`): from the cache, else from the libraries (seconds
    to import), then cached."""
    names = cached_names()
    if names is None:
        import timm
        import torchvision

        from .builtin import BUILTINS

        names = {"builtin": list(BUILTINS), "timm": timm.list_models(),
                 "timm_pretrained": timm.list_models(pretrained=True),
                 "torchvision": torchvision.models.list_models(module=torchvision.models)}
        store_names(names)
    return names


def list_models(pattern: str = "*", pretrained: bool = False) -> dict[str, list[str]]:
    """{'builtin': [...], 'timm': [...], 'torchvision': [...]} of names matching the glob
    `pattern` (as timm.list_models matches: fnmatch); `pretrained`: timm's tagged names that have
    weights, and no built-in network."""
    names = known_names()
    match = lambda kind: fnmatch.filter(names[kind], pattern)  # noqa: E731
    return {"builtin": [] if pretrained else match("builtin"),
            "timm": match("timm_pretrained" if pretrained else "timm"),
            "torchvision": match("torchvision")}


def resolve(name: str, names: dict[str, list[str]]) -> tuple[str, str]:
    """(source, name) for a --model value among `names` (known_names()): 'builtin', 'timm' or
    'torchvision', in that order, or as `timm:NAME` / `tv:NAME` / `builtin:NAME` choose; a timm
    name may carry a pretrained tag (`resnet18.a1_in1k`). ConfigError with close matches."""
    prefix, _, rest = name.partition(":")
    if rest and prefix in ("timm", "tv", "builtin"):
        source, bare = {"timm": "timm", "tv": "torchvision", "builtin": "builtin"}[prefix], rest
    else:
        source, bare = None, name
    if source in (None, "builtin") and bare in names["builtin"]:
        return "builtin", bare
    if source in (None, "timm") and bare.split(".")[0] in names["timm"]:
        return "timm", bare
    if source in (None, "torchvision") and bare in names["torchvision"]:
        return "torchvision", bare
    pool = names[source] if source else [*names["builtin"], *names["timm"], *(f"tv:{n}" for n in names["torchvision"])]
    raise unknown("model", name, pool)


def check_cached(name: str) -> None:
    """ConfigError for a --model value that the cached names do not hold; nothing where no names
    are cached yet (mlproject.models checks it then, importing timm): bad input answered before
    torch loads whenever it can be."""
    names = cached_names()
    if names is not None:
        resolve(name, names)
