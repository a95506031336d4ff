"""Message types: definitions (for bags) and rclpy classes (for DDS), looked up by type name.

A rosbag2 stores, per topic, the type name (`sensor_msgs/msg/Image`), its definition (the
.msg text with its dependencies) and, since Iron, its RIHS01 hash. Replay needs the rclpy
class of each type, found by name (`sensor_msgs.msg.Image`), and checks that the installed
interface hashes like the recorded one; recording needs a definition, taken from the
rosbags Kilted store or from the `.msg` files of installed interface packages.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ember.bag.errors import BagError

DEFAULT_STORE = Stores.ROS2_KILTED
"""Definitions used for bags that hold none (rosbag2 before Iron) and for recording."""


def split_type(msgtype: str) -> tuple[str, str, str]:
    """`pkg/msg/Name` -> (pkg, 'msg', Name); BagError for anything else."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style `pkg/Name`
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise BagError(f"malformed message type name {msgtype!r}; expected package/msg/Name")
    return parts[0], parts[1], parts[2]


def rclpy_class(msgtype: str) -> type | None:
    """The installed Python message class of `msgtype`, or None when no interface package has it."""
    pkg, kind, name = split_type(msgtype)
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
    except ImportError:
        return None
    cls = getattr(module, name, None)
    return cls if isinstance(cls, type) else None


def share_dirs() -> list[Path]:
    """`share/` of every prefix that may hold interface packages (AMENT_PREFIX_PATH, this venv)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    seen: list[Path] = []
    for prefix in prefixes:
        share = Path(prefix) / "share"
        if share.is_dir() and share not in seen:
            seen.append(share)
    return seen


def installed_hash(msgtype: str) -> str | None:
    """The RIHS01 hash of the installed interface (`share/<pkg>/msg/<Name>.json`), if any."""
    pkg, kind, name = split_type(msgtype)
    for share in share_dirs():
        path = share / pkg / kind / f"{name}.json"
        if path.is_file():
            try:
                hashes = json.loads(path.read_text())["type_hashes"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
            for entry in hashes:
                if entry.get("type_name") == f"{pkg}/{kind}/{name}":
                    return entry.get("hash_string")
    return None


def _referenced(typs: dict) -> set[str]:
    """Type names the fields of `typs` refer to."""
    out: set[str] = set()

    def walk(desc) -> None:
        kind, rest = desc
        if kind.name == "NAME":
            out.add(rest)
        elif kind.name in ("ARRAY", "SEQUENCE"):
            walk(rest[0])

    for _consts, fields in typs.values():
        for _fname, desc in fields:
            walk(desc)
    return out


def _installed_msg_types(msgtype: str) -> dict:
    pkg, kind, name = split_type(msgtype)
    for share in share_dirs():
        path = share / pkg / kind / f"{name}.msg"
        if path.is_file():
            return get_types_from_msg(path.read_text(), f"{pkg}/{kind}/{name}")
    raise BagError(
        f"no definition of message type {msgtype!r}: it is neither a standard Kilted type nor an installed "
        f"interface (looked for {pkg}/{kind}/{name}.msg under {', '.join(map(str, share_dirs())) or 'no share dir'})"
    )


def typestore_with(msgtypes: Iterable[str]) -> Typestore:
    """A Kilted typestore extended with the installed definitions of `msgtypes` and their dependencies."""
    store = get_typestore(DEFAULT_STORE)
    todo = list(msgtypes)
    while todo:
        msgtype = todo.pop()
        pkg, kind, name = split_type(msgtype)
        full = f"{pkg}/{kind}/{name}"
        if full in store.fielddefs:
            continue
        typs = _installed_msg_types(full)
        store.register(typs)
        todo.extend(t for t in _referenced(typs) if t not in store.fielddefs)
    return store


def definition_for(store: Typestore, msgtype: str) -> tuple[str, str]:
    """(msgdef text, RIHS01 hash) of `msgtype` for a bag connection."""
    try:
        msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
        return msgdef, store.hash_rihs01(msgtype)
    except TypesysError as exc:
        raise BagError(f"cannot build a definition of {msgtype!r}: {exc}") from None


def _types_of(connection: Connection) -> dict:
    fmt, data = connection.msgdef.format, connection.msgdef.data
    if fmt == MessageDefinitionFormat.MSG:
        return get_types_from_msg(data, connection.msgtype)
    typs: dict = {}
    sep = "=" * 80 + "\n"
    if data.startswith(f"{sep}IDL: "):
        for part in data.split(sep)[1:]:
            _hdr, idl = part.split("\n", 1)
            typs.update(get_types_from_idl(idl))
    else:
        typs.update(get_types_from_idl(data))
    return typs


def _closure(store: Typestore, names: Iterable[str]) -> dict:
    """The fielddefs of `names` in `store` and everything they refer to."""
    out: dict = {}
    todo = [n for n in names if n in store.fielddefs]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out[name] = store.fielddefs[name]
        todo.extend(t for t in _referenced({name: out[name]}) if t in store.fielddefs and t not in out)
    return out


def bag_typestore(connections: Iterable[Connection]) -> tuple[Typestore, set[str]]:
    """A typestore with every definition the bag holds, plus Kilted's for connections without one.

    Returns (store, names of the types it cannot deserialize). A definition that does not
    parse, or whose hash differs from the one recorded beside it, raises BagError.
    """
    connections = list(connections)
    store = get_typestore(Stores.EMPTY)
    digests: dict[str, str] = {}
    bare: set[str] = set()
    for conn in connections:
        if conn.msgdef.format == MessageDefinitionFormat.NONE or not conn.msgdef.data.strip():
            bare.add(conn.msgtype)
            continue
        try:
            store.register(_types_of(conn))
        except (TypesysError, ValueError, AssertionError) as exc:
            raise BagError(f"topic {conn.topic}: the bag's definition of {conn.msgtype} does not parse: {exc}") from None
        if conn.digest and conn.digest.startswith("RIHS01_"):
            digests[conn.msgtype] = conn.digest
    for msgtype, digest in digests.items():
        have = store.hash_rihs01(msgtype)
        if have != digest:
            raise BagError(f"the bag's definition of {msgtype} hashes to {have}, not the recorded {digest}")
    missing = bare - store.fielddefs.keys()
    if missing:
        kilted = _closure(get_typestore(DEFAULT_STORE), missing)
        store.register({k: v for k, v in kilted.items() if k not in store.fielddefs})
    unknown = {c.msgtype for c in connections if c.msgtype not in store.fielddefs}
    return store, unknown
