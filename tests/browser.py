"""A real headless Chromium (Debian's `chromium` package) driven by Playwright, for UI tests.

    with chromium_page(tmp_dir) as page:
        page.goto("http://127.0.0.1:PORT/")
        page.screenshot(path=...)

chromium_path() installs Debian's `chromium` with apt-get when it is missing and raises
servers.Unavailable (the caller skips) when that is impossible. Playwright (the `test` extra)
drives that binary through `executable_path`: no `playwright install`, no browser download. The
flags keep Chromium off the network (no component updates, sync, QUIC or other background
connections, which a closed network refuses) and out of any profile but a fresh one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from servers import Unavailable, apt_install

DEBIAN_CHROMIUM = "/usr/bin/chromium"

# --headless and --no-sandbox (root has no user namespaces for the sandbox here) are Playwright's
# own launch options (headless=True, chromium_sandbox=False); --user-data-dir is passed below
FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
]


def _find() -> str | None:
    for candidate in (DEBIAN_CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def chromium_path() -> str:
    """Debian's chromium binary; `apt-get install chromium` when it is missing (Unavailable when
    apt-get is absent, we are not root, or the install fails)."""
    found = _find()
    if found:
        return found
    if os.geteuid() != 0:
        raise Unavailable("chromium is not installed and installing it needs root (apt-get install chromium)")
    apt_install("chromium")
    found = _find()
    if not found:
        raise Unavailable("apt-get installed chromium but /usr/bin/chromium was not found")
    return found


@contextlib.contextmanager
def chromium_page(tmp: Path | None = None, viewport=(1600, 1000), timeout_ms: float = 30_000):
    """A Playwright page in a fresh headless Chromium (its own --user-data-dir, a temporary
    directory under `tmp`), default timeout `timeout_ms`; the browser is closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp))
    try:
        with sync_playwright() as pw:
            # a persistent context is how Playwright takes a user-data-dir of our choosing
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=executable, headless=True, chromium_sandbox=False,
                args=FLAGS, viewport={"width": viewport[0], "height": viewport[1]}, timeout=60_000)
            try:
                context.set_default_timeout(timeout_ms)
                page = context.pages[0] if context.pages else context.new_page()
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
