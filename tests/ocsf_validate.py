"""A strict validator of OCSF events against the compiled OCSF 1.8.0 schema in
``tests/vectors/ocsf`` (the file ``ocsf-lib`` compiles: ``classes`` and ``objects`` with
their ``attributes``, ``types``, ``profiles``).

It checks, for the event's class and recursively for every nested object:

* every key is an attribute of the class / object (``object``-typed ones, such as
  ``unmapped``, are free-form), not deprecated, and not ``null``;
* every ``required`` attribute is there, and the ``at_least_one`` / ``just_one``
  constraints hold;
* types: ``integer_t`` (32-bit) / ``long_t`` / ``timestamp_t`` → ``int``, ``float_t`` →
  number, ``boolean_t`` → ``bool``, ``string_t`` and its derivations → ``str`` with their
  ``regex`` / ``max_len`` / ``range``; ``is_array`` → a list of them;
* every enum value is in its enum, and its sibling (``status_id`` → ``status`` …), when
  there, is the value's caption (any name for 99, Other);
* ``type_uid`` == ``class_uid * 100 + activity_id`` and ``metadata.version`` is the
  schema's;
* an attribute a profile brings is allowed only when ``metadata.profiles`` names it.
  The compiled file also tags with a profile an attribute that the class defines itself
  and a profile defines too (API Activity's required ``actor`` and ``api``); such an
  attribute is the class's own when the class gives it another requirement than the
  profile does.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent / "vectors" / "ocsf" / "ocsf-schema-1.8.0.json.gz"

_INT_RANGES = {"integer_t": (-(2**31), 2**31 - 1), "long_t": (-(2**63), 2**63 - 1)}


@functools.cache
def schema() -> dict[str, Any]:
    with gzip.open(SCHEMA_PATH, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def validate(event: Any) -> list[str]:
    """Every way ``event`` breaks OCSF 1.8.0, as ``path: problem`` lines (none if valid)."""
    return _Validator(schema()).event(event)


class _Validator:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.classes = {c["uid"]: c for c in data["classes"].values()}
        self.errors: list[str] = []
        self.enabled: set[str] = set()

    def event(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["event: not an object"]
        class_uid = event.get("class_uid")
        if not _is_int(class_uid):
            return ["class_uid: missing or not an integer"]
        cls = self.classes.get(class_uid)
        if cls is None:
            return [f"class_uid: no class {class_uid}"]
        if cls.get("@deprecated"):
            self.errors.append(f"class_uid: class {cls['name']} is deprecated")
        self._profiles(event.get("metadata"))
        self._item(event, cls, "")
        activity_id, type_uid = event.get("activity_id"), event.get("type_uid")
        if _is_int(activity_id) and _is_int(type_uid) and type_uid != class_uid * 100 + activity_id:
            self.errors.append(f"type_uid: {type_uid} is not class_uid * 100 + activity_id")
        metadata = event.get("metadata")
        if isinstance(metadata, dict) and metadata.get("version") != self.data["version"]:
            self.errors.append(f"metadata.version: not {self.data['version']}")
        return self.errors

    def _profiles(self, metadata: Any) -> None:
        profiles = metadata.get("profiles") if isinstance(metadata, dict) else None
        if not isinstance(profiles, list):
            return
        for name in profiles:
            if name not in self.data["profiles"]:
                self.errors.append(f"metadata.profiles: no profile {name!r}")
            elif isinstance(name, str):
                self.enabled.add(name)

    def _attributes(self, item: dict[str, Any]) -> dict[str, Any]:
        """The attributes of a class or object usable with the enabled profiles."""
        return {
            name: attr
            for name, attr in item["attributes"].items()
            if attr.get("profile") is None
            or attr["profile"] in self.enabled
            or self._own(name, attr)
        }

    def _own(self, name: str, attr: dict[str, Any]) -> bool:
        profile = self.data["profiles"].get(attr["profile"])
        theirs = profile["attributes"].get(name) if profile else None
        return theirs is not None and theirs["requirement"] != attr["requirement"]

    def _item(self, value: dict[str, Any], item: dict[str, Any], path: str) -> None:
        """Check ``value`` against the class or object ``item``."""
        if not item["attributes"]:  # ``object``: anything goes
            return
        attrs = self._attributes(item)
        for key, sub in value.items():
            where = f"{path}{key}"
            attr = attrs.get(key)
            if attr is None:
                profile = item["attributes"].get(key, {}).get("profile")
                needs = f" without profile {profile!r}" if profile else ""
                self.errors.append(f"{where}: not an attribute of {item['name']}{needs}")
            elif attr.get("@deprecated"):
                self.errors.append(f"{where}: deprecated")
            else:
                self._value(sub, attr, where)
        for key, attr in attrs.items():
            if attr["requirement"] == "required" and key not in value:
                self.errors.append(f"{path}{key}: required by {item['name']}, missing")
        self._constraints(value, item, path)
        self._siblings(value, attrs, path)

    def _constraints(self, value: dict[str, Any], item: dict[str, Any], path: str) -> None:
        where = path.rstrip(".") or item["name"]
        for kind, keys in (item.get("constraints") or {}).items():
            count = sum(key in value for key in keys)
            if kind == "at_least_one" and count < 1:
                self.errors.append(f"{where}: needs at least one of {keys}")
            elif kind == "just_one" and count != 1:
                self.errors.append(f"{where}: needs exactly one of {keys}, has {count}")
            elif kind not in ("at_least_one", "just_one"):
                self.errors.append(f"{where}: unknown constraint {kind}")

    def _siblings(self, value: dict[str, Any], attrs: dict[str, Any], path: str) -> None:
        for key, attr in attrs.items():
            sibling, enum = attr.get("sibling"), attr.get("enum")
            if not (sibling and enum and key in value and sibling in value):
                continue
            given = value[key]
            if attr.get("is_array") or given == 99 or str(given) not in enum:
                continue
            if value[sibling] != enum[str(given)]["caption"]:
                caption = enum[str(given)]["caption"]
                self.errors.append(f"{path}{sibling}: {value[sibling]!r} is not {caption!r}")

    def _value(self, value: Any, attr: dict[str, Any], path: str) -> None:
        if value is None:
            self.errors.append(f"{path}: null")
        elif attr.get("is_array"):
            if not isinstance(value, list):
                self.errors.append(f"{path}: not an array")
                return
            for index, element in enumerate(value):
                self._one(element, attr, f"{path}[{index}]")
        else:
            self._one(value, attr, path)

    def _one(self, value: Any, attr: dict[str, Any], path: str) -> None:
        kind = attr["object_type"] if attr["type"] == "object_t" else attr["type"]
        if kind in self.data["types"]:
            self._scalar(value, kind, path)
            enum = attr.get("enum")
            if enum and str(value) not in enum:
                self.errors.append(f"{path}: {value!r} is not in the enum")
        elif kind == "object" or kind in self.data["objects"]:
            if not isinstance(value, dict):
                self.errors.append(f"{path}: not an object")
                return
            obj = self.data["objects"][kind]
            if obj.get("@deprecated"):
                self.errors.append(f"{path}: object {kind} is deprecated")
            self._item(value, obj, f"{path}.")
        else:
            self.errors.append(f"{path}: unknown type {kind!r}")

    def _scalar(self, value: Any, kind: str, path: str) -> None:
        chain = [kind]
        while self.data["types"][chain[-1]].get("type"):
            chain.append(self.data["types"][chain[-1]]["type"])
        base = chain[-1]
        if base in _INT_RANGES:
            low, high = _INT_RANGES[base]
            ok = _is_int(value) and low <= value <= high
        elif base == "float_t":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif base == "boolean_t":
            ok = isinstance(value, bool)
        elif base == "string_t":
            ok = isinstance(value, str)
        elif base == "json_t":
            ok = True
        else:
            ok = False
        if not ok:
            self.errors.append(f"{path}: {value!r} is not a {kind}")
            return
        for name in chain:
            spec = self.data["types"][name]
            regex, max_len, bounds = spec.get("regex"), spec.get("max_len"), spec.get("range")
            if regex and not re.search(regex, value):
                self.errors.append(f"{path}: {value!r} does not match {name}")
            if max_len is not None and len(value) > max_len:
                self.errors.append(f"{path}: longer than {max_len} ({name})")
            if bounds and not bounds[0] <= value <= bounds[1]:
                self.errors.append(f"{path}: {value!r} out of range {bounds} ({name})")
            if spec.get("values") is not None and value not in spec["values"]:
                self.errors.append(f"{path}: {value!r} is not one of {spec['values']}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
