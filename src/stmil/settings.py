"""The one validation engine: typed settings dataclasses, their checks, ``--config`` files and
the CLI flags generated from them.

A settings class is a frozen dataclass deriving from :class:`Settings`; each field is declared
once with :func:`setting`, carrying its help text, unit, bounds and choices. Its type is the
annotation: ``int``, ``float``, ``str``, ``bool``, ``Path`` (a path given as text),
``list[str]`` / ``list[Path]`` (one or more) and any of them ``| None`` (unset). Every whole
number and every float has a lower AND an upper bound (checked when the class is first used).
Only fields declared with :func:`setting` are settings (a plain ``field`` is a record kept
beside them, never checked nor offered as a flag).
A class whose fields depend on each other adds the rule in :meth:`Settings.rules` with
:func:`require`. Example::

    @dataclass(frozen=True)
    class WatchConfig(Settings):
        timeout: float = setting(10.0, "stream open/read timeout", unit="seconds",
                                 lo=0, lo_open=True, hi=3600)
        backoff: float = setting(0.5, "first reconnection delay", unit="seconds", lo=0, hi=3600)
        max_backoff: float = setting(10.0, "longest reconnection delay", unit="seconds",
                                     lo=0, lo_open=True, hi=86400)

        def rules(self) -> None:
            require(self.max_backoff >= self.backoff,
                    f"{{max_backoff}} must be at least {{backoff}} ({self.backoff:g} s), "
                    f"got {self.max_backoff!r}", "max_backoff", "backoff")

**Adding a flag** to a command is one line: a field in one of the settings classes the command
is built from (:data:`stmil.cli.COMMANDS`), e.g. ``engine: str = setting("local", "where
videos are processed", choices=ENGINES)`` gives ``--engine {local,ray}``, the ``--config`` key
``engine``, its help with the default, and the check; the command reads it as
``opts.engine`` (or from the class instance, ``opts.get(Cls).engine``). A flag whose name is
not the field's: ``setting(..., flag="videos")`` (``n_videos`` is ``--videos``). A positional
argument: ``setting(..., positional=True)``; a field with no default is required (given as a
flag or in ``--config``); ``cli=False`` keeps a field out of the CLI.

**Files stmil reads** declare their fields the same way, one record class per file or block
(:class:`~stmil.features.store.FeatureMeta`, ``ScoresHeader``, ``ModelConfig``,
``Calibration``, the export manifest's blocks, ``Metrics``): ``pattern`` (a regular
expression a string must match) and ``what`` (the rule in the file's own words) serve them;
a field declared with a plain ``field`` is a record the reader builds itself (a nested
settings object, an array). The reader parses the file, then
``Cls.from_mapping(data, path, fix=..., error=..., others="ignore")`` gives the one line
``<file>: <key> must be <rule>, got <value>; <fix>`` (a nested block: ``where=f"{path}:
events"``). An array in a file (a scores file's maps, a feature file's motion record, a
dataset's intervals and boxes) is checked by :func:`number_array` (shape, whole numbers or
finite ones, bounds), inside ``with in_file(path, fix, error):`` for the same one line.
Unknown keys: a ``--config`` refuses them (a typo); stmil's own JSON files ignore
them (``others="ignore"``: a newer stmil may add keys, and the file's format/version marker,
checked first, says whose file it is), except feature metadata, whose ``schema_version``
governs (an unknown key in a current-version file is refused).

Errors: a bad value is a :class:`SettingError` (a :class:`~stmil.errors.ConfigError`), one
line naming the setting: ``hidden must be a whole number from 1 to 65536, got 0`` from the
library; the CLI renders the same error naming where the value came from (:class:`Values`):
``--hidden must be ...`` for a flag, ``FILE: hidden must be ...`` for a ``--config`` key.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stmil.errors import ConfigError

MISSING = dataclasses.MISSING
META = "stmil"


class SettingError(ConfigError):
    """A setting's bad value. ``template`` holds ``{name}`` for each setting it names, filled by
    :meth:`render` with where each value came from (the plain setting names by default)."""

    def __init__(self, template: str, *names: str) -> None:
        self.template, self.names = template, names
        super().__init__(self.render({}))

    def render(self, labels: Mapping[str, str], subject: str | None = None) -> str:
        """The message with each setting named by ``labels`` (default: its name), and its
        first mention, the subject, by ``subject`` when given (``FILE: key``)."""
        if not self.names:  # remade from its message alone (e.g. unpickled)
            return self.template
        first = "{" + self.names[0] + "}"
        template = self.template.replace(first, "{0}", 1)
        mapping = {n: labels.get(n, n) for n in self.names}
        return template.format(subject or mapping[self.names[0]], **mapping)


def _esc(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def require(ok: bool, template: str, *names: str) -> None:
    """A cross-field rule: :class:`SettingError` ``template`` (naming ``{names}``) unless ``ok``."""
    if not ok:
        raise SettingError(template, *names)


@dataclass(frozen=True)
class Rule:
    """What :func:`setting` declares about a field."""

    help: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    unit: str | None = None
    flag: str | None = None
    positional: bool = False
    cli: bool = True
    even: bool = False
    metavar: str | None = None
    pattern: str | None = None
    what: str | None = None


def setting(default: Any = MISSING, help: str = "", *, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
            choices: Iterable | None = None, unit: str | None = None, flag: str | None = None,
            positional: bool = False, cli: bool = True, even: bool = False,
            metavar: str | None = None, pattern: str | None = None,
            what: str | None = None) -> Any:
    """A settings field: its default (none: required), help text, unit (``"seconds"``), bounds
    ``lo``/``hi`` (closed unless ``*_open``), ``choices`` (the library's tuple itself),
    ``even`` (whole numbers), ``pattern`` (a regular expression a string must match whole),
    ``what`` (a valid value in words, for the errors, when the engine's own words are too
    general: ``"64 lowercase hex digits"``), the CLI ``flag`` name when not the field's,
    ``positional``, and ``cli=False`` for a field the CLI does not offer."""
    rule = Rule(help, lo, hi, lo_open, hi_open, choices, unit, flag, positional, cli, even,
                metavar, pattern, what)
    return field(default=default, metadata={META: rule})


def setting_like(cls: type, name: str, default: Any = None, help: str | None = None) -> Any:
    """A field with the rule (bounds, choices, unit) of ``cls``'s field ``name``, kept in that
    one place, but its own default (``None``: "not given, use what the library chooses") and,
    if given, its own help."""
    rule = next(f for f in dataclasses.fields(cls) if f.name == name).metadata[META]
    if help is not None:
        rule = dataclasses.replace(rule, help=help)
    return field(default=default, metadata={META: rule})


@dataclass(frozen=True)
class Spec:
    """One field of a settings class, resolved: its value ``kind`` (int, float, str, bool,
    Path), whether ``None`` is allowed (``optional``), whether it holds one or more values
    (``many``), its default (``MISSING``: required) and :class:`Rule`."""

    name: str
    kind: type
    optional: bool
    many: bool
    default: Any
    rule: Rule
    owner: type

    @property
    def flag(self) -> str:
        """The flag and ``--config`` key: ``batch-size`` (``batch_size`` is taken too)."""
        return self.rule.flag or self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def describe(self) -> str:
        """What a valid value is, in words: ``a whole number from 1 to 400``."""
        r = self.rule
        if r.what is not None:
            return r.what
        if self.kind is bool:
            what = "true or false"
        elif r.choices is not None:
            what = f"one of {', '.join(map(str, r.choices))}"
        elif self.kind in (int, float):
            what = ("an even " if r.even else "a ") + \
                ("whole number" if self.kind is int else "number") + " " + self.range_words()
            if r.unit:
                what += f" {r.unit}"
        elif self.kind is Path:
            what = "a path (a non-empty string)"
        else:
            what = "a string" if r.pattern is None else f"a string matching {r.pattern}"
        if self.many:
            what = f"a list of one or more values, each {what}"
        return what

    def range_words(self) -> str:
        r, fmt = self.rule, _number
        if r.hi == math.inf:
            return f"{'>' if r.lo_open else '>='} {fmt(r.lo)}"
        if not (r.lo_open or r.hi_open):
            return f"from {fmt(r.lo)} to {fmt(r.hi)}"
        return (f"{'>' if r.lo_open else '>='} {fmt(r.lo)} and "
                f"{'<' if r.hi_open else '<='} {fmt(r.hi)}")

    def error(self, value: Any) -> SettingError:
        error = getattr(self.owner, "error_class", SettingError)
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return error("{" + self.name + "} must be " + _esc(self.describe()) + ", got " +
                     _esc(shown), self.name)

    def check(self, value: Any) -> Any:
        """``value`` converted (an int for a float setting: a float) if valid, else
        :class:`SettingError`. Types are strict: a bool is no number, a string no bool."""
        if value is None and (self.optional or self.default is None):
            return None
        if self.many:
            if isinstance(value, (str, Path)):
                value = [value]
            if not isinstance(value, (list, tuple)) or not value:
                raise self.error(value)
            return [self._one(v) for v in value]
        return self._one(value)

    def _one(self, value: Any) -> Any:
        kind, r, given = self.kind, self.rule, value
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
        elif kind is float:
            try:
                ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
                    and math.isfinite(value)
            except OverflowError:  # an int beyond any float (10**400)
                ok = False
            value = float(value) if ok else value
        elif kind is Path:
            ok = isinstance(value, (str, Path)) and str(value) != ""
        else:
            ok = isinstance(value, str) and (
                r.pattern is None or re.fullmatch(r.pattern, value, re.DOTALL) is not None)
        if not ok or (r.choices is not None and value not in r.choices):
            raise self.error(given)
        if kind in (int, float) and r.choices is None:
            if (value < r.lo or (r.lo_open and value == r.lo) or value > r.hi
                    or (r.hi_open and value == r.hi) or (r.even and value % 2)):
                raise self.error(given)
        return value

    def parse_text(self, text: str) -> Any:
        """A flag's text as a value of this kind (checked by :meth:`check` after)."""
        try:
            if self.kind is int:
                return int(text)
            if self.kind is float:
                return float(text)
        except ValueError:
            return text  # refused by check, named with the text
        return text

    def parse_config(self, value: Any) -> Any:
        """A YAML value as a value of this kind: YAML 1.1 reads ``1e-3`` as a string, so a
        string that spells a number is taken for a float setting; nothing else is converted."""
        if self.kind is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value


def _number(x: float) -> str:
    """``1000000`` for 1e6, ``0.01`` for 0.01: a bound as a user would write it."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _kind(hint: Any) -> tuple[type, bool, bool]:
    """``(kind, optional, many)`` of a field's type hint."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    many = typing.get_origin(hint) in (list, tuple)
    if many:
        hint = typing.get_args(hint)[0]
    if hint not in (int, float, str, bool, Path):
        raise TypeError(f"unsupported settings type {hint!r}")
    return hint, optional, many


@functools.cache
def specs(cls: type) -> dict[str, Spec]:
    """The :class:`Spec` of each field of the settings class ``cls``, by field name."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if META not in f.metadata:  # a plain field (a record kept beside the settings)
            continue
        rule = f.metadata[META]
        kind, optional, many = _kind(hints[f.name])
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        spec = Spec(f.name, kind, optional, many, default, rule, cls)
        if kind in (int, float) and rule.choices is None and (rule.lo is None or rule.hi is None):
            raise TypeError(f"{cls.__name__}.{f.name}: a number needs a lower and upper bound")
        out[f.name] = spec
    return out


def check(cls: type, name: str, value: Any) -> Any:
    """``value`` checked as the ``name`` setting of ``cls`` (for a library function taking a
    setting as an argument): converted, or :class:`SettingError`."""
    return specs(cls)[name].check(value)


def check_number(name: str, value: Any, kind: type = int, lo: float = 1,
                 hi: float = math.inf, unit: str | None = None) -> Any:
    """``value`` checked as a number setting ``name`` that no settings class holds (a library
    argument such as ``window``): converted, or :class:`SettingError`."""
    spec = Spec(name, kind, False, False, MISSING, Rule(lo=lo, hi=hi, unit=unit), object)
    return spec.check(value)


def number_array(name: str, value: Any, shape: tuple[int | None, ...], *, integer: bool = False,
                 lo: float = -math.inf, hi: float = math.inf, what: str | None = None,
                 error: type[SettingError] = SettingError) -> np.ndarray:
    """The array rule of files stmil reads: ``value`` (nested JSON lists, or an array) as a new
    float64 (int64 with ``integer``) array of ``shape`` (``None``: any length; at least one row
    for ``shape[0] is None``) whose every element is a finite number from ``lo`` to ``hi``.
    Anything else (ragged, strings, booleans, NaN, an integer beyond int64, out of range) is one
    ``error`` "``{name}`` must be ``what``, got ..." naming the first bad element it can; ``what``
    (the rule in the file's words) defaults to the shape and range in words.
    """
    if what is None:
        dims = " x ".join("N" if d is None else str(d) for d in shape)
        kind = "whole numbers" if integer else "finite numbers"
        bounds = "" if lo == -math.inf and hi == math.inf else \
            f" >= {_number(lo)}" if hi == math.inf else f" from {_number(lo)} to {_number(hi)}"
        what = f"an array of {dims} {kind}{bounds}"

    def fail(got: Any, shown: str | None = None) -> SettingError:
        shown = repr(got) if shown is None else shown
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return error("{" + name + "} must be " + _esc(what) + ", got " + _esc(shown), name)

    def walk(v: Any, depth: int) -> None:  # types first: np.asarray would take "1" or True
        if depth == len(shape):
            number = isinstance(v, numbers.Integral if integer else numbers.Real)
            if not number or isinstance(v, (bool, np.bool_)):
                raise fail(v)
        elif not isinstance(v, list) or (shape[depth] is not None and len(v) != shape[depth]):
            raise fail(v)
        else:
            for x in v:
                walk(x, depth + 1)

    if isinstance(value, np.ndarray):
        ok = np.issubdtype(value.dtype, np.integer) or (
            not integer and np.issubdtype(value.dtype, np.floating))
        if not ok or value.ndim != len(shape):
            raise fail(None, f"an array of {value.dtype} {value.shape}")
        value = value.tolist()
    walk(value, 0)
    try:
        arr = np.array(value, dtype=np.int64 if integer else np.float64)
    except (ValueError, OverflowError):  # ragged below a free dimension, an int beyond int64
        raise fail(value) from None
    if arr.ndim != len(shape) or (shape and shape[0] is None and not len(arr)) or any(
            d is not None and d != n for d, n in zip(shape, arr.shape)):
        raise fail(value)
    bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
    if bad.any():
        for i in np.argwhere(bad)[0]:  # the element as the file wrote it
            value = value[i]
        raise fail(value)
    return arr


class Settings:
    """Base of the settings dataclasses: every field is checked (and converted: an int given
    for a float is made a float) when the object is made, then :meth:`rules` runs."""

    def __post_init__(self) -> None:
        for name, spec in specs(type(self)).items():
            value = getattr(self, name)
            checked = spec.check(value)
            if checked is not value:
                object.__setattr__(self, name, checked)
        self.rules()

    def rules(self) -> None:
        """Cross-field rules (:func:`require`); none by default."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str | Path | None = None, *,
                     fix: str | None = None, error: type[Exception] = ConfigError,
                     others: str = "refuse") -> Any:
        """An object from a mapping of field names (a ``--config``, or a JSON file stmil
        wrote): a missing required key, an unknown key or a bad value is one ``error`` line
        ``<where>: <key> must be ...; <fix>``. ``others``: what becomes of a key ``cls`` does
        not declare, ``"refuse"`` (a ``--config``: a typo) or ``"ignore"`` (a file whose other
        keys its reader checks itself). A plain field (a record, e.g. a nested settings object
        the reader made) is passed as it is."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        prefix, suffix = (f"{where}: " if where else ""), (f"; {fix}" if fix else "")
        unknown = sorted(set(values) - set(known))
        if unknown and others == "refuse":
            raise error(f"{prefix}unknown settings {', '.join(unknown)}; "
                        f"allowed: {', '.join(known)}")
        values = {k: v for k, v in values.items() if k in known}
        missing = [n for n, f in known.items() if n not in values
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise error(f"{prefix}missing {', '.join(missing)}{suffix}")
        if where is None and error is ConfigError and fix is None:
            return cls(**values)
        with in_file(where, fix, error):
            return cls(**values)


@contextlib.contextmanager
def in_file(where: str | Path | None, fix: str | None = None,
            error: type[Exception] = ConfigError) -> Iterator[None]:
    """A :class:`SettingError` raised inside as the one line a file's reader gives:
    ``<where>: <key> must be ...; <fix>`` (an ``error``)."""
    try:
        yield
    except SettingError as e:
        prefix, suffix = (f"{where}: " if where else ""), (f"; {fix}" if fix else "")
        raise error(prefix + e.render({}) + suffix) from None


# --- files -------------------------------------------------------------------------------------


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping with string keys that a YAML ``--config`` file holds (``{}`` when it is
    empty); ``what`` names its settings in the errors (``"train settings"``). Its values are
    the caller's to check."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text YAML file (byte {e.start}); "
                          f"pass a YAML config of {what}") from e
    if "\x00" in text:
        raise ConfigError(f"{path}: a binary file, not a YAML config of {what}")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if cfg is None:
        return {}
    if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
        raise ConfigError(f"{path}: a config is a flat mapping of {what}")
    return cfg


def by_key(mapping: Mapping[str, Any], path: str | Path) -> dict[str, tuple[str, Any]]:
    """``{flag name: (key as written, value)}`` of a config mapping: ``batch-size`` and
    ``batch_size`` are one key; a file giving both is refused."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in mapping.items():
        name = key.replace("_", "-")
        if name in out:
            raise ConfigError(f"{path}: {out[name][0]!r} and {key!r} are one setting given "
                              "twice; keep one")
        out[name] = (key, value)
    return out


# --- the CLI: flags, --config and where each value came from -----------------------------------


def all_specs(classes: Iterable[type]) -> dict[str, Spec]:
    """The fields of ``classes`` the CLI offers, by flag name (one flag, one field)."""
    out: dict[str, Spec] = {}
    for cls in classes:
        for spec in specs(cls).values():
            if spec.rule.cli:
                if spec.flag in out and out[spec.flag].owner is not cls:
                    raise TypeError(f"--{spec.flag} is declared twice ({cls.__name__})")
                out[spec.flag] = spec
    return out


def _help(spec: Spec) -> str:
    """A flag's help: its text, then its range and unit, then its default."""
    r, parts = spec.rule, []
    if spec.kind in (int, float) and r.choices is None:
        parts.append(("even, " if r.even else "") + spec.range_words() +
                     (f" {r.unit}" if r.unit else ""))
    elif r.unit:
        parts.append(r.unit)
    d = spec.default
    if not (d is MISSING or d is None or spec.kind is bool or d == "" or d == []):
        parts.append(f"default {d:g}" if isinstance(d, float) else f"default {d}")
    text = r.help
    if parts:
        text += (" " if text else "") + "(" + "; ".join(parts) + ")"
    return text.replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, classes: Iterable[type]) -> None:
    """One argument per field of ``classes`` (:func:`all_specs`). A flag not given leaves its
    name out of the parsed namespace (so that ``--config`` and defaults can fill it)."""
    for flag, spec in all_specs(classes).items():
        dest = spec.name
        if spec.rule.positional:
            nargs = "+" if spec.many else ("?" if not spec.required else None)
            parser.add_argument(dest, nargs=nargs, help=_help(spec), metavar=flag,
                                default=argparse.SUPPRESS)
            continue
        common = dict(dest=dest, default=argparse.SUPPRESS, help=_help(spec))
        if spec.kind is bool:
            parser.add_argument("--" + flag, action=argparse.BooleanOptionalAction, **common)
            continue
        metavar = spec.rule.metavar or (
            "{" + ",".join(map(str, spec.rule.choices)) + "}" if spec.rule.choices
            else (spec.rule.unit or flag).upper().replace("-", "_").replace(" ", "_"))
        parser.add_argument("--" + flag, nargs="+" if spec.many else None, metavar=metavar,
                            **common)


@dataclass
class Values:
    """A command's settings as the user gave them: each field's checked value and where it
    came from (``--flag``, ``FILE: key``, or absent: the default). :meth:`get` makes a settings
    object; :meth:`render` words any :class:`SettingError` with those origins."""

    specs: dict[str, Spec]  # by field name
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # field name -> "--flag" / "F: key"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("specs", "values", "origins"):
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, cls: type) -> Any:
        """The ``cls`` object of these values (fields the CLI does not offer: defaults)."""
        return cls(**{n: self.values[n] for n in specs(cls) if n in self.values})

    def given(self, name: str) -> bool:
        return name in self.origins

    def render(self, error: SettingError) -> str:
        """``error`` worded with origins: its subject in full (``--flag``, ``FILE: key``), any
        other mention of a setting by its flag or key (a setting left at its default: by its
        flag)."""
        labels = {n: self.origins[n].rpartition(": ")[2] if n in self.origins
                  else "--" + self.specs[n].flag for n in error.names
                  if n in self.origins or n in self.specs}
        return error.render(labels, self.origins.get(error.names[0]) if error.names else None)


def collect(classes: Iterable[type], parsed: Mapping[str, Any],
            config: Mapping[str, Any] | None = None, where: str | Path | None = None,
            what: str = "options") -> Values:
    """The :class:`Values` of flags ``parsed`` (field name -> text, or bools and lists as
    argparse gave them) over those of a ``config`` mapping read from ``where``, over defaults.
    An unknown key, a bad value or a required setting given nowhere is a :class:`ConfigError`
    (a :class:`SettingError` worded with its origin)."""
    by_flag = all_specs(classes)
    out = Values({s.name: s for s in by_flag.values()})
    raw: dict[str, tuple[Any, str]] = {}
    for flag, (key, value) in by_key(config or {}, where or "config").items():
        spec = by_flag.get(flag)
        if spec is None:
            raise ConfigError(f"{where}: unknown key {key!r} for {what}; valid keys: "
                              f"{', '.join(sorted(by_flag))}")
        raw[spec.name] = (spec.parse_config(value), f"{where}: {key}")
    for name, value in parsed.items():
        spec = out.specs.get(name)
        if spec is not None:
            if isinstance(value, str):
                value = spec.parse_text(value)
            elif spec.many and isinstance(value, list):
                value = [spec.parse_text(v) for v in value]
            raw[name] = (value, "--" + spec.flag)
    for name, (value, origin) in raw.items():
        out.origins[name] = origin
        try:
            out.values[name] = out.specs[name].check(value)
        except SettingError as e:
            raise ConfigError(out.render(e)) from None
    for name, spec in out.specs.items():
        if name not in out.values and not spec.required:
            out.values[name] = spec.default
    return out


def missing(values: Values) -> list[str]:
    """The required settings given neither as flags nor in ``--config``, as the user names
    them (``--out``, or ``inputs`` for a positional argument)."""
    return [s.flag if s.rule.positional else "--" + s.flag for n, s in values.specs.items()
            if s.required and n not in values.values]
