"""pytest plugin: the whole run fails when a secret value from the settings shows up in captured output.

Register with ``pytest_plugins = [..., "tests.support.secret_scan"]`` (disable once with
``-p no:tests.support.secret_scan``).

For the entire session it collects

- **secrets**: every ``SecretStr`` value of every ``Settings`` object built during the run (it observes
  ``Settings.model_validate`` — which ``Settings.from_env`` uses — and ``Settings.__init__``; production code
  is unchanged), the secret settings of the environment the session started with, and the secret settings
  handed to subprocess hosts (``tests.support.host.HostProcess``: its environment and ``--settings`` file);
- **text**: every log record of every logger (a root handler at DEBUG; the root logger's level is lowered to
  DEBUG for the session so records are created at all), the sections pytest captured for each test phase
  (stdout and stderr — what ``capsys``/``capfd`` saw and the test did not consume with ``readouterr()``), and
  the log of every subprocess host when it stops. (``caplog`` sees the same records as the root handler.)

Not covered: what forked child processes log (``multiprocessing`` workers; they would share the spool's
buffer), and what a test consumed itself with ``capsys.readouterr()``.

Text is spooled to a file and scanned once at the end, against every secret known by then, so a record
logged before the ``Settings`` holding its secret was built is still caught. Findings name the source (the
logger), the setting and the first test — never the value — and set a failing exit status.

What is not a secret here (so never flagged): values shorter than ``MIN_SECRET_CHARS``; well-known public
development values (Azurite's account key, ``UseDevelopmentStorage=true``); a URL that carries no password
and no query (``redis://127.0.0.1:6390/0``: nothing secret in it); a connection string whose only secret
parts are public (the Azurite one). The parts of a secret that can leak on their own — a URL's password,
a connection string's ``AccountKey`` — are scanned for separately.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel, SecretStr

from shared.redaction import secret_fragments
from shared.settings import Settings

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "MIN_SECRET_CHARS",
    "Finding",
    "SecretScan",
    "secret_candidates",
    "secret_settings_of_environ",
]

#: Azurite's development account key: public, documented by Microsoft, in every local connection string.
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PUBLIC_VALUES = frozenset({AZURITE_ACCOUNT_KEY, "UseDevelopmentStorage=true"})
#: Shorter values ("secret", "token") occur in ordinary text; flagging them would only make noise.
MIN_SECRET_CHARS = 8
_MAX_FINDINGS_SHOWN = 50
_HOST_LOG_LINE = re.compile(r"^\[[^\]]*\]\s+[A-Z]+\s+([\w.\-]+):")
_STANDARD_RECORD_ATTRS = frozenset(vars(logging.LogRecord("n", 0, "p", 0, "m", (), None))) | {
    "message", "asctime",
}


# --- which values are secrets ------------------------------------------------------------------------


def _is_secret_annotation(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret_annotation(arg) for arg in typing.get_args(annotation))


def _secret_aliases() -> dict[str, str]:
    """Attribute → environment variable name of every ``SecretStr`` setting."""
    return {
        attr: info.alias or attr
        for attr, info in Settings.model_fields.items()
        if _is_secret_annotation(info.annotation)
    }


def secret_settings_of(settings: BaseModel) -> list[tuple[str, str]]:
    """``(setting name, value)`` of every secret set on a ``Settings`` object."""
    found = []
    for attr, alias in _secret_aliases().items():
        value = getattr(settings, attr, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append((alias, value.get_secret_value()))
    return found


def secret_settings_of_environ(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(setting name, value)`` of the secret settings in an environment, without validating it."""
    return [(alias, environ[alias]) for alias in _secret_aliases().values() if environ.get(alias, "").strip()]


def _has_credential(value: str) -> bool:
    """False for values that name a place but hold no credential (a URL without password or query)."""
    if "://" in value and ";" not in value:
        parts = urlsplit(value)
        return bool(parts.password or parts.query)
    return True


def secret_candidates(name: str, value: str) -> list[tuple[str, str]]:
    """``(label, text)`` to scan for: the value and its parts that can leak alone, minus public and short ones."""
    fragments = secret_fragments(value)
    parts = [f for f in fragments if f != value]
    found: list[tuple[str, str]] = []
    whole_is_secret = (
        value not in PUBLIC_VALUES
        and _has_credential(value)
        and not (parts and all(p in PUBLIC_VALUES for p in parts))
        and not ("=" in value and ";" in value and not parts)  # a connection string with no secret parts
    )
    if whole_is_secret:
        found.append((name, value))
    found += [(f"{name} (part)", p) for p in parts if p not in PUBLIC_VALUES]
    return [(label, text) for label, text in found if len(text) >= MIN_SECRET_CHARS]


# --- the session's collector -------------------------------------------------------------------------


@dataclass
class Finding:
    """One secret seen in one source (never holds the value)."""

    setting: str
    source: str
    first_test: str
    occurrences: int = 1


@dataclass
class _State:
    secrets: dict[str, str] = field(default_factory=dict)  # text → setting label (first seen wins)
    lock: threading.Lock = field(default_factory=threading.Lock)
    current_test: str = "(collection or session setup)"


class _SpoolHandler(logging.Handler):
    """Writes every record's full text (message, exception, stack, extra strings) to the spool."""

    def __init__(self, scan: SecretScan) -> None:
        super().__init__(level=logging.NOTSET)
        self._scan = scan

    def emit(self, record: logging.LogRecord) -> None:
        try:
            texts = [record.getMessage()]
        except Exception:  # noqa: BLE001 - a bad format string still shows its parts
            texts = [f"{record.msg!r} {record.args!r}"]
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(logging.Formatter().formatException(record.exc_info))
        texts += [t for t in (record.exc_text, record.stack_info) if t]
        texts += [v for k, v in vars(record).items() if k not in _STANDARD_RECORD_ATTRS and isinstance(v, str)]
        self._scan.spool(f"logger {record.name}", "\n".join(texts))


class SecretScan:
    """The plugin object: observes settings, spools text, scans at session end."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._state = _State()
        self._dir = Path(tempfile.mkdtemp(prefix="secret-scan-"))
        self._spool_path = self._dir / "spool.jsonl"
        self._spool = self._spool_path.open("w", encoding="utf-8")
        self._spool_lock = threading.Lock()
        self._handler = _SpoolHandler(self)
        self._pid = os.getpid()
        self._root_level: int | None = None
        self._undo: list[Any] = []
        self.findings: list[Finding] = []

    # --- collection of secrets

    def add_secret(self, name: str, value: str) -> None:
        """Remember one secret setting (and its leakable parts)."""
        with self._state.lock:
            for label, text in secret_candidates(name, value):
                self._state.secrets.setdefault(text, label)

    def observe_settings(self, settings: BaseModel) -> None:
        """Remember every secret of a ``Settings`` object."""
        for name, value in secret_settings_of(settings):
            self.add_secret(name, value)

    def observe_environ(self, environ: Mapping[str, str]) -> None:
        """Remember the secret settings of an environment (a subprocess's, or the session's own)."""
        for name, value in secret_settings_of_environ(environ):
            self.add_secret(name, value)

    # --- collection of text

    def spool(self, source: str, text: str) -> None:
        """Keep ``text`` from ``source`` for the scan at session end."""
        if not text or os.getpid() != self._pid:  # a forked child shares the spool's buffer: not safe to write
            return
        line = json.dumps({"s": source, "t": self._state.current_test, "x": text}, ensure_ascii=False)
        with self._spool_lock:
            if not self._spool.closed:
                self._spool.write(line + "\n")

    # --- hooks

    def install(self) -> None:
        """Start observing: settings hooks, root handler at DEBUG, subprocess hosts."""
        self.observe_environ(os.environ)
        self._hook_settings()
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self._handler)
        self._hook_host_process()

    def uninstall(self) -> None:
        """Undo ``install`` (restore the settings class, the root logger and the host class)."""
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self._root_level is not None:
            root.setLevel(self._root_level)
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        with self._spool_lock:
            self._spool.close()
        self._spool_path.unlink(missing_ok=True)
        self._dir.rmdir()

    def _hook_settings(self) -> None:
        scan = self
        base_validate = BaseModel.model_validate.__func__  # type: ignore[attr-defined]
        base_init = BaseModel.__init__

        def model_validate(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
            obj = base_validate(cls, *args, **kwargs)
            scan.observe_settings(obj)
            return typing.cast(BaseModel, obj)

        def init(self: BaseModel, /, **data: Any) -> None:
            base_init(self, **data)
            scan.observe_settings(self)

        Settings.model_validate = classmethod(model_validate)  # type: ignore[assignment,method-assign]
        Settings.__init__ = init  # type: ignore[method-assign,assignment]

        def undo() -> None:
            del Settings.model_validate
            del Settings.__init__

        self._undo.append(undo)

    def _hook_host_process(self) -> None:
        try:
            from tests.support import host as host_module
        except ImportError:  # the session runs without the host plugin's dependencies
            return
        cls = host_module.HostProcess
        scan = self
        original_init, original_stop = cls.__init__, cls.stop

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            scan.observe_process(self.process)

        def stop(self: Any, *args: Any, **kwargs: Any) -> int:
            scan.observe_process(self.process)  # again, while it still runs: the first look may have been early
            try:
                return int(original_stop(self, *args, **kwargs))
            finally:
                scan.spool_host_log(self.log_path, pid=self.process.pid)

        cls.__init__, cls.stop = init, stop  # type: ignore[method-assign]

        def undo() -> None:
            cls.__init__, cls.stop = original_init, original_stop  # type: ignore[method-assign]

        self._undo.append(undo)

    def observe_process(self, process: Any) -> None:
        """The secret settings a subprocess started with: its environment and its ``--settings`` file."""
        environ_path = Path(f"/proc/{process.pid}/environ")
        raw = b""
        # Popen returns once exec closed its error pipe, which is before the kernel has set up the new
        # environment: an empty read right then means "not yet", so look again for a moment.
        deadline = time.monotonic() + 2.0
        while not raw and time.monotonic() < deadline and process.poll() is None:
            try:
                raw = environ_path.read_bytes()
            except OSError:
                break
            if not raw:
                time.sleep(0.01)
        environ = dict(
            item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item
        )
        self.observe_environ(environ)
        args = [str(a) for a in (process.args if isinstance(process.args, list | tuple) else [])]
        if "--settings" in args[:-1]:
            path = Path(args[args.index("--settings") + 1])
            try:
                values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
            except (OSError, ValueError, AttributeError):
                values = {}
            if isinstance(values, dict):
                self.observe_environ({str(k): str(v) for k, v in values.items()})

    def spool_host_log(self, path: Path, *, pid: int) -> None:
        """Spool a stopped subprocess host's log, one source per logger where the line names one."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            match = _HOST_LOG_LINE.match(line)
            source = f"logger {match.group(1)} in subprocess host {pid}" if match else f"subprocess host {pid} output"
            self.spool(source, line)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        """Attribute spooled text to the running test."""
        self._state.current_test = item.nodeid
        yield
        self._state.current_test = "(between tests)"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Spool what pytest captured in this phase: stdout and stderr (its log section is what the root
        handler already saw, with the logger's name)."""
        for title, content in report.sections:
            if not title.startswith("Captured log"):
                self.spool(f"{title.lower()} of {report.nodeid}", content)

    def scan(self) -> list[Finding]:
        """Scan everything spooled against every secret known now."""
        with self._state.lock:
            secrets = dict(self._state.secrets)
        with self._spool_lock:
            self._spool.flush()
        if not secrets:
            return []
        pattern = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))
        found: dict[tuple[str, str], Finding] = {}
        with self._spool_path.open(encoding="utf-8") as spool:
            for line in spool:
                try:
                    entry = json.loads(line)
                except ValueError:  # a torn line (a crash mid-write): scan it as plain text
                    entry = {"s": "(unreadable spool line)", "t": "(unknown)", "x": line}
                for match in pattern.finditer(entry["x"]):
                    key = (secrets[match.group(0)], entry["s"])
                    if key in found:
                        found[key].occurrences += 1
                    else:
                        found[key] = Finding(key[0], key[1], entry["t"])
        self.findings = list(found.values())
        return self.findings

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Fail the session (exit status 1) when any secret was seen; report where, never the value."""
        findings = self.scan()
        if not findings:
            return
        header = f"secret scan: {len(findings)} leak(s) of setting values into captured output"
        lines = [header + " (values not shown; find them with the test and source below):"]
        for f in findings[:_MAX_FINDINGS_SHOWN]:
            lines.append(f"  {f.setting} in {f.source} ({f.occurrences}x), first in {f.first_test}")
        if len(findings) > _MAX_FINDINGS_SHOWN:
            lines.append(f"  ... and {len(findings) - _MAX_FINDINGS_SHOWN} more")
        report = "\n".join(lines)
        reporter = self._config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")  # the progress line has no newline yet
            reporter.write_sep("=", "secret scan", red=True, bold=True)
            reporter.write_line(report)
        else:
            print(report)  # no terminal reporter (-p no:terminal): still say why it failed
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


_KEY = pytest.StashKey[SecretScan]()


def pytest_configure(config: pytest.Config) -> None:
    """Start the scan for this session."""
    scan = SecretScan(config)
    scan.install()
    config.stash[_KEY] = scan
    config.pluginmanager.register(scan, "secret-scan")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop observing and remove the spool."""
    scan = config.stash.get(_KEY, None)
    if scan is not None:
        scan.uninstall()
