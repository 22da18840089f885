"""Which files of an output folder are stmil's: one ledger per folder, ``.stmil/ledger.json``.

**The rule.** A command replaces or deletes a file only if the folder's ledger names it and its
current bytes still match (size, then SHA-256); any other file is the user's and is refused in
one line naming it (:class:`~stmil.errors.OutputError`). A stmil-like name (``model.safetensors``,
``<id>.overlay.mp4``...) proves nothing.

**The format** (compact JSON)::

    {"format": "stmil-ledger", "version": 1,
     "files": {"<name>": {"size": 123, "sha256": "<hex>", "command": "extract",
                          "previous": {"size": 120, "sha256": "<hex>"}}},
     "legacy": {"<name>": [size, mtime_ns]}}

Names are relative to the folder (``/``-separated). ``previous`` is the stmil file that the last
commit replaced (see below). ``legacy`` lists the files the folder held when its ledger was
created (size and modification time, no hashing).

**Committing.** :func:`commit` writes outputs and their ledger entries as one
:func:`~stmil.atomic.atomic_write_group` under a lock on ``.stmil/``: every temporary first,
then the entries naming their hashes, then the renames. A kill between renames leaves a ledger
naming the new bytes of a file that still holds its previous ones; those are its ``previous``
entry, so the file stays ours and the next run replaces it. A ledger entry whose bytes are not
there (a file never renamed into place, or changed since) is simply "not ours": the safe
direction.

**The journal** (so that committing N files one by one costs O(N), not O(N^2)): a commit's
entries are one line appended to ``.stmil/journal.jsonl``, ``{"g": "<generation>", "set":
{"<name>": {entry}}}``, instead of the whole ledger rewritten. Readers replay the lines whose
``g`` is the ``generation`` of ``ledger.json``. Once the lines outnumber the files the ledger
names (and :data:`JOURNAL_MIN`), the next commit writes the ledger whole, with a new
generation, as part of its group (so stale lines are ignored even if a kill leaves them), and
deletes the journal. A kill mid-append leaves a torn last line: skipped by readers, and ended
by the next append. Within one process the ledger is kept between commits and only the
journal's new lines are read (:func:`commit`, under the lock).

**Folders from earlier versions** (:func:`Ledger.owns`, the one migration path): where a folder
has no ledger, or its ledger lists a file under ``legacy`` with unchanged size and time, the
command's old test (a ``legacy`` predicate: today's "is this ours") decides, and a file it
adopts is recorded when it is replaced. Hashes are computed only for a file that exists under a
name a command wants to write or delete. ``legacy`` snapshots list a folder's own files, not
its subfolders': a command whose old outputs lie deeper (``synth``) records them once with
:func:`adopt`. :func:`prune` deletes the files a command wrote before and no longer makes (an
export's video removed since), those still unchanged only.

Claim files (:mod:`stmil.features.claims`) are the one exception: short-lived lock files, made
atomically with their marker line, they are never listed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from stmil import safejson
from stmil.atomic import TEMP_PATTERN, atomic_write, atomic_write_group, naming
from stmil.atomic import locked as folder_lock
from stmil.errors import OutputError, StmilError

LEDGER_DIR = ".stmil"
LEDGER = "ledger.json"
JOURNAL = "journal.jsonl"
#: Journal lines a ledger gathers before it is written whole again (at least; and at least as
#: many as the files it names, so each whole write is paid for by as many one-line commits).
JOURNAL_MIN = 1000
FORMAT = "stmil-ledger"
FIX = "move it away or choose another output folder (stmil replaces only files it wrote)"

#: A command's old "is this file ours" test, for folders written before ledgers: it returns
#: True or False, or raises an error (a :class:`~stmil.errors.StmilError`) that names the file.
Legacy = Callable[[Path], bool]
Write = Callable[[Path], None]

_DIGESTS: dict[tuple[int, int, int, int], str] = {}  # (dev, ino, size, mtime_ns) -> sha256


def ledger_path(folder: Path | str) -> Path:
    """The ledger of ``folder``: ``folder/.stmil/ledger.json``."""
    return Path(folder) / LEDGER_DIR / LEDGER


def journal_path(folder: Path | str) -> Path:
    """The ledger's journal of ``folder``: ``folder/.stmil/journal.jsonl``."""
    return Path(folder) / LEDGER_DIR / JOURNAL


def sha256_of(path: Path | str, st: os.stat_result | None = None) -> str:
    """SHA-256 of a file, remembered for an unchanged file (same inode, size and mtime)."""
    st = st or os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        if len(_DIGESTS) > 4096:
            _DIGESTS.clear()
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


class Ledger:
    """The ledger of one folder: which of its files stmil wrote (see the module docstring)."""

    def __init__(self, folder: Path, files: dict[str, dict],
                 legacy: dict[str, list[int]] | None, generation: str | None = None) -> None:
        self.folder = folder
        self.files = files
        self.legacy = legacy  # None: no ledger yet, every present file predates ledgers
        self.generation = generation  # of ledger.json: the journal lines that apply to it
        self.key: tuple[int, int, int] | None = None  # ledger.json's (inode, size, mtime)
        self.journal_end = 0  # bytes of the journal read (whole lines)
        self.journal_lines = 0  # lines of this generation read or written

    @classmethod
    def load(cls, folder: Path | str) -> Ledger:
        """The ledger of ``folder`` (an empty one with no legacy limit when there is none),
        its journal's lines replayed.

        :class:`OutputError` naming the file when the ledger is not one stmil wrote.
        """
        folder, path = Path(folder), ledger_path(folder)
        try:
            with open(path, "rb") as f:
                st, raw = os.fstat(f.fileno()), f.read()
            data = safejson.loads(raw.decode("utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return cls(folder, {}, None)
        except (UnicodeDecodeError, ValueError) as e:
            raise OutputError(f"{path}: not a stmil ledger (not JSON: {e}); {FIX}") from None
        if not (isinstance(data, dict) and data.get("format") == FORMAT
                and isinstance(data.get("files"), dict) and isinstance(data.get("legacy"), dict)
                and isinstance(data.get("generation", ""), str)
                and all(_entry_ok(e) for e in data["files"].values())):
            raise OutputError(f"{path}: not a stmil ledger (format {FORMAT}, version 1); {FIX}")
        ledger = cls(folder, data["files"], data["legacy"], data.get("generation"))
        ledger.key = _key(st)
        ledger.read_journal()
        return ledger

    def read_journal(self) -> None:
        """Replay the journal's whole lines past :attr:`journal_end` that belong to this
        generation; a torn or foreign line is skipped (its entries are then "not ours")."""
        try:
            with open(journal_path(self.folder), "rb") as f:
                f.seek(self.journal_end)
                tail = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return
        whole = tail[:tail.rfind(b"\n") + 1]
        self.journal_end += len(whole)
        for line in whole.splitlines():
            try:
                data = safejson.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if not (isinstance(data, dict) and data.get("g") == self.generation
                    and isinstance(data.get("set"), dict)
                    and all(_entry_ok(e) for e in data["set"].values())):
                continue
            self.journal_lines += 1
            for name, entry in data["set"].items():
                self.files[name] = entry
                if self.legacy is not None:
                    self.legacy.pop(name, None)

    def append_journal(self, names: Sequence[str]) -> int:
        """Append one line naming ``names``' entries to the journal (ending a torn last line
        first); returns the journal's size before, for :func:`_undo_append`."""
        line = json.dumps({"g": self.generation, "set": {n: self.files[n] for n in names}},
                          separators=(",", ":"), sort_keys=True).encode() + b"\n"
        fd = os.open(journal_path(self.folder), os.O_RDWR | os.O_APPEND | os.O_CREAT
                     | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        try:
            before = os.fstat(fd).st_size
            if before and os.pread(fd, 1, before - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.journal_end, self.journal_lines = before + len(line), self.journal_lines + 1
        return before

    def owns(self, name: str, legacy: Legacy | None = None) -> bool:
        """Whether ``folder/name`` is stmil's: named with matching bytes, or (migration) a file
        from before the ledger that ``legacy`` accepts. An absent file is nobody's: False."""
        path = self.folder / name
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not stat.S_ISREG(st.st_mode):  # stmil writes no links, folders or devices
            return False
        entry = self.files.get(name)
        if entry is not None:
            sums = [e for e in (entry, entry.get("previous")) if e and e["size"] == st.st_size]
            return bool(sums) and sha256_of(path, st) in {e["sha256"] for e in sums}
        if legacy is None:
            return False
        if self.legacy is not None and self.legacy.get(name) != [st.st_size, st.st_mtime_ns]:
            return False
        return bool(legacy(path))

    def holds(self, name: str) -> bool:
        """Whether ``folder/name`` holds the bytes of its entry (not its ``previous``)."""
        entry, path = self.files.get(name), self.folder / name
        try:
            return (entry is not None and os.stat(path).st_size == entry["size"]
                    and sha256_of(path) == entry["sha256"])
        except (FileNotFoundError, NotADirectoryError):
            return False

    def check_replaceable(self, path: Path | str, legacy: Legacy | None = None,
                          fix: str = FIX) -> None:
        """:class:`OutputError` naming ``path`` unless it is absent or stmil's (:meth:`owns`)."""
        path = Path(path)
        if not os.path.lexists(path):
            return
        if not self.owns(self._name(path), legacy):
            raise OutputError(f"{path}: exists and is not a file stmil wrote here (or it was "
                              f"changed since); {fix}")

    def record(self, name: str, tmp: Path, command: str) -> None:
        """Name ``tmp``'s bytes as ``name``'s, keeping the present file's as ``previous`` (it
        was checked to be ours); forget its legacy snapshot."""
        entry: dict = {"size": tmp.stat().st_size, "sha256": sha256_of(tmp), "command": command}
        present = self.folder / name
        if present.is_file() and present != tmp:
            before = {"size": present.stat().st_size, "sha256": sha256_of(present)}
            if before != {"size": entry["size"], "sha256": entry["sha256"]}:  # else: same bytes
                entry["previous"] = before
        self.files[name] = entry
        if self.legacy is not None:
            self.legacy.pop(name, None)

    def forget(self, name: str) -> None:
        """Drop ``name`` (a file stmil deleted)."""
        self.files.pop(name, None)
        if self.legacy is not None:
            self.legacy.pop(name, None)

    def save(self, tmp: Path) -> None:
        """Write the ledger whole to ``tmp`` (the writer of an atomic write), with the
        next generation (``<count>-<hash of the content>``: the journal's lines so far are
        then stale); a first ledger lists the files the folder already held under
        ``legacy``."""
        if self.legacy is None:
            self.legacy = _snapshot(self.folder, set(self.files))
        body = json.dumps({"files": self.files, "legacy": self.legacy}, separators=(",", ":"),
                          sort_keys=True)
        # counted and named by its content: the same commits give the same bytes (a rerun
        # into a fresh folder), and a generation never returns (stale lines never count)
        count = int(str(self.generation).split("-")[0]) + 1 \
            if re.fullmatch(r"\d+-[0-9a-f]+", str(self.generation)) else 1
        self.generation = f"{count}-{hashlib.sha256(body.encode()).hexdigest()[:16]}"
        self.journal_end = self.journal_lines = 0
        data = {"format": FORMAT, "version": 1, "generation": self.generation,
                "files": self.files, "legacy": self.legacy}
        tmp.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True), encoding="utf-8")

    def _name(self, path: Path) -> str:
        """``path``'s name in this folder (either may be relative to the working directory)."""
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.folder)).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not in {self.folder}") from None


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _entry_ok(e: object) -> bool:
    """Whether a ledger entry (or its ``previous``) has an int size and a hex sha256."""
    return (isinstance(e, dict) and isinstance(e.get("size"), int)
            and isinstance(e.get("sha256"), str)
            and (e.get("previous") is None or _entry_ok(e["previous"])))


def _snapshot(folder: Path, skip: set[str]) -> dict[str, list[int]]:
    """``name -> [size, mtime_ns]`` of the regular files of ``folder`` (not recursive; no
    temporaries, nothing in ``skip``): the files of a folder that predates its ledger."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for e in entries:
        if (e.name == LEDGER_DIR or TEMP_PATTERN.fullmatch(e.name) or e.name in skip
                or not e.is_file(follow_symlinks=False)):
            continue
        st = e.stat(follow_symlinks=False)
        out[e.name] = [st.st_size, st.st_mtime_ns]
    return out


@contextmanager
def locked(folder: Path | str) -> Iterator[None]:
    """Hold the exclusive lock of ``folder``'s ledger (``flock`` on ``folder/.stmil/``), made if
    needed, so concurrent commands take turns reading and writing it."""
    home = Path(folder) / LEDGER_DIR
    if os.path.lexists(home) and not (home.is_dir() and not home.is_symlink()):
        raise OutputError(f"{home}: exists and is not stmil's ledger folder; {FIX}")
    with naming(folder, home):  # a read-only folder is named, not its hidden .stmil/
        home.mkdir(parents=True, exist_ok=True)
    with folder_lock(home):
        yield


def check_can_write(folder: Path | str, names: Sequence[str], legacy: Legacy | None = None,
                    fix: str = FIX) -> None:
    """Refuse (:class:`OutputError`, naming the file) any of ``names`` that exists in
    ``folder`` and is not stmil's; no lock, no writes (a check before long work)."""
    ledger = Ledger.load(folder)
    for name in names:
        ledger.check_replaceable(Path(folder) / name, legacy, fix)


_LIVE: dict[str, Ledger] = {}  # absolute folder -> its ledger as this process last left it


def _current(folder: Path) -> Ledger:
    """``folder``'s ledger (call under its lock): the one this process kept, with the
    journal's new lines read, while ``ledger.json`` is the one it read; else loaded afresh."""
    where = os.path.abspath(folder)
    kept = _LIVE.get(where)
    try:
        key = _key(os.stat(ledger_path(folder)))
        size = os.stat(journal_path(folder)).st_size
    except FileNotFoundError:
        key, size = None, 0
    if kept is not None and key is not None and kept.key == key and size >= kept.journal_end:
        kept.read_journal()
        return kept
    _LIVE[where] = ledger = Ledger.load(where)  # absolute: kept across working directories
    return ledger


def commit(folder: Path | str, writes: Sequence[tuple[Path | str, Write]], command: str,
           legacy: Legacy | None = None, fix: str = FIX) -> None:
    """Write ``writes`` (``(dest, write(tmp))``, files of ``folder``) and the ledger entries
    naming them as one atomic group, refusing any destination that is not stmil's: one
    journal line, or the ledger whole when it has none yet or its journal is long."""
    folder = Path(folder)
    with locked(folder):
        ledger = _current(folder)
        appended: list[int] = []
        try:
            for dest, _ in writes:
                ledger.check_replaceable(Path(dest), legacy, fix)
            group: list[tuple[Path | str, Write]] = [
                (d, _recording(ledger, Path(d), w, command)) for d, w in writes]
            if ledger.key is None or ledger.journal_lines >= max(JOURNAL_MIN, len(ledger.files)):
                atomic_write_group([*group, (ledger_path(folder), ledger.save)])
                journal_path(folder).unlink(missing_ok=True)  # stale now: tidy only
                ledger.key = _key(os.stat(ledger_path(folder)))
                return
            names = [ledger._name(Path(d)) for d, _ in writes]

            def note() -> None:
                with naming(writes[0][0]):  # a full disk names the output
                    appended.append(ledger.append_journal(names))

            atomic_write_group(group, before_renames=note)
        except BaseException:
            _LIVE.pop(os.path.abspath(folder), None)  # this process's copy may be ahead
            if appended and not any(ledger.holds(n) for n in names):
                _undo_append(folder, appended[0])  # nothing was renamed: the line goes
            raise


def _recording(ledger: Ledger, dest: Path, write: Write, command: str) -> Write:
    """``write``, then record what it wrote in ``ledger`` under ``dest``'s name."""
    def run(tmp: Path) -> None:
        write(tmp)
        ledger.record(ledger._name(dest), tmp, command)
    return run


def remove(folder: Path | str, name: str, legacy: Legacy | None = None,
           fix: str = FIX) -> None:
    """Delete ``folder/name`` if it is stmil's (else :class:`OutputError`) and forget it.

    The file goes first and the ledger after, so a kill between them leaves an entry for an
    absent file: harmless."""
    folder = Path(folder)
    with locked(folder):
        ledger = Ledger.load(folder)
        ledger.check_replaceable(folder / name, legacy, fix)
        (folder / name).unlink(missing_ok=True)
        ledger.forget(name)
        _write_whole(ledger)


def prune(folder: Path | str, names: Sequence[str], legacy: Legacy | None = None
          ) -> list[str]:
    """Delete each of ``names`` that is stmil's (:meth:`Ledger.owns`) and forget it, under one
    lock and one ledger write; an absent name is forgotten. Returns the names left in place:
    files that are not stmil's (the user's now) or that the legacy test refused.

    For outputs a command wrote before and no longer makes (an export's video that is gone):
    the files go first and the ledger after, so a kill between them leaves entries for absent
    files, which is harmless."""
    folder = Path(folder)
    kept: list[str] = []
    with locked(folder):
        ledger = Ledger.load(folder)
        for name in names:
            try:
                ours = ledger.owns(name, legacy)
            except StmilError:
                ours = False
            if ours:
                (folder / name).unlink(missing_ok=True)
            elif os.path.lexists(folder / name):
                kept.append(name)
                continue
            ledger.forget(name)
        _write_whole(ledger)
    return kept


def adopt(folder: Path | str, names: Sequence[str], legacy: Legacy, command: str) -> list[str]:
    """Record in the ledger, by their present bytes, each of ``names`` that the ``legacy`` test
    accepts as a file an earlier stmil wrote (:meth:`Ledger.owns`): the one-time migration of
    a folder from before ledgers whose files lie in subfolders (which ``legacy`` snapshots do
    not list). A name the ledger already names is left as it is. Returns the names adopted."""
    folder = Path(folder)
    adopted: list[str] = []
    with locked(folder):
        ledger = Ledger.load(folder)
        for name in names:
            if name not in ledger.files and ledger.owns(name, legacy):
                ledger.record(name, folder / name, command)
                adopted.append(name)
        _write_whole(ledger)
    return adopted


def _undo_append(folder: Path, size: int) -> None:
    """Cut the journal back to ``size`` bytes (deleted when it was new)."""
    if size:
        os.truncate(journal_path(folder), size)
    else:
        journal_path(folder).unlink(missing_ok=True)


def _write_whole(ledger: Ledger) -> None:
    """Write ``ledger`` whole (a new generation) and delete the journal it makes stale."""
    atomic_write(ledger_path(ledger.folder), ledger.save)
    journal_path(ledger.folder).unlink(missing_ok=True)
    _LIVE.pop(os.path.abspath(ledger.folder), None)


def files_of(folder: Path | str) -> list[str]:
    """Every file and folder entry below ``folder`` as relative names, the ledger's own folder
    and stale temporaries left out; folders are listed only when empty or unreadable."""
    folder = Path(folder)
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != LEDGER_DIR]
        names += [(rel / n).as_posix() for n in filenames if not TEMP_PATTERN.fullmatch(n)]
        if not filenames and not dirnames and rel != Path("."):
            names.append(rel.as_posix() + "/")
    return sorted(names)


def record_folder(folder: Path | str, command: str) -> None:
    """Write a fresh ledger naming every file below ``folder`` (a folder stmil built whole, such
    as a run's staging folder, before it is committed in one step)."""
    folder = Path(folder)
    ledger = Ledger(folder, {}, {})
    for name in files_of(folder):
        if not name.endswith("/"):
            ledger.record(name, folder / name, command)
    (folder / LEDGER_DIR).mkdir(exist_ok=True)
    _write_whole(ledger)
