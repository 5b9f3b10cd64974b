"""The boot history of an adopted cluster, built from the files sealer keeps (pure: no I/O).

sealer v0.9+ leaves two records of what it ran, neither of which names both the image and its
applications:

- `~/.sealer/application.json`, a LOG: every `sealer run` (cluster image or app image), upgrade
  and rollback appends ``json.MarshalIndent(imageExtension, "", "  ")`` to the file, with no
  separator (pkg/application/appdriver.go@v0.11.0:128-160). An `ImageExtension` is
  ``{buildClient, schemaVersion, type, applications: [{name, type, files, version, env, cmds}],
  labels, env, launch: {cmds, app_names}}`` (pkg/define/image/v1/sealer_image.go@v0.11.0:86-122;
  pkg/define/application/v1/application.go@v0.11.0:27-41); `type` may be missing (omitempty),
  strings are HTML-escaped (`&` as `\\u0026`). It names no image.
- `<rootfs>/cache/registry/<id>`: an empty flag file per image whose registry data reached the
  host, named by the image id (64 hex digits), copied there right after the data
  (pkg/imagedistributor/scp_distributor.go@v0.11.0:47-99,203-221). Its mtime is when.

How they pair (our rule): the log's entries and master0's flags, the flags in mtime order, pair
one to one in run order: sealer distributes an image's data (flag) and then launches and saves its
extension (log entry), one image per run. An entry equal to an earlier one is the same image run
again (its flag already existed: no new one) and is dropped when that makes the counts meet. When
the counts still differ (an image loaded with `--mode load-image` leaves a flag and no entry; an
image with no registry data an entry and no flag) nothing is guessed: `HistoryError` names both
counts and `--history-file` as the way out.

Launch commands are sealer's `GetAppLaunchCmd` (application.go@v0.11.0:53-83) with the app root
`application/apps/<name>/` (pkg/rootfs/v1/manager.go@v0.11.0:37; appdriver.go:262-273), run from
the rootfs. An extension's `launch.app_names` are the apps launched; the Cluster document's
`spec.appNames` (for the cluster image) and an Application document's `spec.launchApps` (the last
run whose image has those apps) override them, as NewAppDriver does (appdriver.go:176-200).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

APP_ROOT = "application/apps"
SEALER_LOG_KEYS = ("schemaVersion", "buildClient")
_FLAG_ID = re.compile(r"[0-9a-f]{64}")


class HistoryError(ValueError):
    pass


@dataclass(frozen=True)
class Flag:
    """One `<rootfs>/cache/registry/<id>` flag file."""

    image_id: str      # sha256:<64 hex>
    mtime: float


@dataclass(frozen=True)
class LaunchOverride:
    """An override of the apps an image launches: the Cluster document's spec.appNames/cmd or an
    Application document's spec.launchApps/cmds."""

    where: str
    app_names: list[str] | None = None
    cmds: list[str] = field(default_factory=list)


def parse_flags(text: str) -> tuple[list[Flag], list[str]]:
    """``<mtime> <name>`` lines (adopt-read.sh: `find -printf '%T@ %f'`) -> the flags in run
    order (mtime, then name), and the names that are not image ids (skipped)."""
    flags, skipped = [], []
    for line in text.splitlines():
        when, _, name = line.strip().partition(" ")
        if not name:
            continue
        try:
            mtime = float(when)
        except ValueError:
            skipped.append(line.strip())
            continue
        if not _FLAG_ID.fullmatch(name):
            skipped.append(name)
            continue
        flags.append(Flag(f"sha256:{name}", mtime))
    flags.sort(key=lambda f: (f.mtime, f.image_id))
    return flags, skipped


def split_log(text: str) -> list[Any]:
    """The JSON values of a file written by appending JSON documents with no separator."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise HistoryError(f"is not a sequence of JSON objects (object {len(out) + 1}: "
                               f"{e.msg} at line {e.lineno} column {e.colno})") from None
        out.append(value)


def is_sealer_log_entry(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in SEALER_LOG_KEYS)


def _go_join(*parts: str) -> str:
    """Go's filepath.Join: the non-empty parts joined with '/', then Clean."""
    return posixpath.normpath("/".join(p for p in parts if p))


def launch_cmd(app: dict) -> str:
    """GetAppLaunchCmd(appRoot, app) (pkg/define/application/v1/application.go@v0.11.0:53-83)."""
    name = str(app.get("name") or "")
    root = _go_join(APP_ROOT, name) + "/"
    cmds = [str(c) for c in app.get("cmds") or []]
    files = [str(f) for f in app.get("files") or []]
    if cmds:
        return " ".join(["cd", root, "&&", *cmds])
    kind = app.get("type") or ""
    if kind == "kube":
        return " && ".join(f"kubectl apply -f {_go_join(root, f)}" for f in files)
    if kind == "helm":
        return f"helm install {name} {root}"
    if kind == "shell":
        return " && ".join(f"bash {_go_join(root, f)}" for f in files)
    return ""


def _entry_problem(i: int, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"object {i + 1} is not a JSON object"
    apps = entry.get("applications") or []
    if not isinstance(apps, list) or not all(isinstance(a, dict) and a.get("name") for a in apps):
        return f"object {i + 1}: applications is not a list of {{name, ...}}"
    launch = entry.get("launch") or {}
    if not isinstance(launch, dict):
        return f"object {i + 1}: launch is not an object"
    return None


@dataclass
class LogHistory:
    """The boot history built from the log and the flags, and what to tell the operator."""

    history: dict
    notes: list[str]


def history_from_log(entries: list[dict], flags: list[Flag], *, cluster_image: str = "",
                     overrides: list[LaunchOverride] = ()) -> LogHistory:
    """Pair `entries` (the log, in order) with `flags` (run order) and build the program's boot
    history ``{type, applications: [{name, image_id, type, launch_cmd, version}], launch}``.
    ``overrides``: the Cluster document's (applies to the first entry, the cluster image) first,
    then the Application documents' (each to the last entry holding all its app names)."""
    for i, entry in enumerate(entries):
        problem = _entry_problem(i, entry)
        if problem:
            raise HistoryError(problem)
    notes: list[str] = []
    if len(entries) != len(flags):
        unique = [e for i, e in enumerate(entries) if e not in entries[:i]]
        if len(unique) == len(flags) and len(unique) < len(entries):
            notes.append(f"{len(entries) - len(unique)} log entries repeat an earlier one (the same "
                         "image run again, no new flag): counted once")
            entries = unique
        else:
            raise HistoryError(
                f"holds {len(entries)} image extensions but master0's cache/registry holds "
                f"{len(flags)} image ids: they cannot be paired in run order (an image loaded "
                "with --mode load-image, or one without registry data, breaks the pairing)")
    launches: list[list[str] | None] = [None] * len(entries)
    names_of = [[a["name"] for a in e.get("applications") or []] for e in entries]
    for override in overrides:
        if override.where.startswith("the Cluster") and entries:
            target = 0
        else:
            wanted = set(override.app_names or [])
            target = next((i for i in reversed(range(len(entries)))
                           if wanted <= set(names_of[i])), None)
        if target is None:
            notes.append(f"{override.where} launches {override.app_names}, which no logged image "
                         "holds: ignored")
            continue
        if override.app_names is not None:
            launches[target] = [n for n in override.app_names if n]
        if override.cmds:
            notes.append(f"{override.where} runs its own commands for image {target + 1} instead "
                         f"of its apps' (not part of the boot history): {override.cmds}")

    applications: dict[str, dict] = {}
    launch_names: list[str] = []
    for i, (entry, flag) in enumerate(zip(entries, flags)):
        for app in entry.get("applications") or []:
            name = str(app["name"])
            if name in applications:
                notes.append(f"app {name} is in images {applications[name]['image_id']} and "
                             f"{flag.image_id}: the later run's is kept")
            applications[name] = {"name": name, "image_id": flag.image_id,
                                  "type": app.get("type") or None, "launch_cmd": launch_cmd(app),
                                  "version": str(app.get("version") or "")}
        launch = entry.get("launch") or {}
        if launch.get("cmds") and launches[i] is None:
            notes.append(f"image {flag.image_id} launches with its own commands "
                         f"{launch['cmds']} (not part of the boot history)")
        for name in launches[i] if launches[i] is not None else launch.get("app_names") or []:
            if name in launch_names:
                launch_names.remove(name)
            launch_names.append(name)
        if not entry.get("applications"):
            what = f"the cluster image {cluster_image}" if i == 0 and cluster_image else f"image {i + 1}"
            notes.append(f"{what} ({flag.image_id}) has no applications: nothing of it in the "
                         "boot history")
    if cluster_image and flags:
        notes.append(f"the cluster image {cluster_image} is {flags[0].image_id} (the first run)")
    history = {"type": str(entries[0].get("type") or "unknown") if entries else "unknown",
               "applications": list(applications.values()),
               "launch": {"app_names": [n for n in launch_names if n in applications]}}
    return LogHistory(history, notes)
