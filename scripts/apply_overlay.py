"""Apply a params overlay (params-small.yaml) to params.yaml: each key it names is replaced,
every other key kept.

    python scripts/apply_overlay.py params-small.yaml                # rewrite params.yaml
    python scripts/apply_overlay.py params-small.yaml --params p.yaml --out small.yaml
    dvc exp run $(python scripts/apply_overlay.py params-small.yaml --set-param)

An overlay is a YAML mapping shaped like params.yaml, holding only the keys to change; a
mapping value descends into that section, any other value (a number, a list, null) replaces
the key whole. A key that params.yaml lacks stops the script with its dotted name. The
rewritten params.yaml is plain YAML: comments and anchors (&, *) are not kept, and a section
that params.yaml shares through an anchor gets only the keys the overlay names for it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml


class OverlayError(ValueError):
    pass


def _mapping(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OverlayError(f"{path}: cannot read it as YAML: {exc}") from None
    if not isinstance(data, dict):
        raise OverlayError(f"{path}: expected a mapping of params sections")
    return data


def flatten(overlay: dict, prefix: str = "") -> dict[str, object]:
    """``{"judge": {"epochs": 1}}`` -> ``{"judge.epochs": 1}``: the keys the overlay sets."""
    flat: dict[str, object] = {}
    for key, value in overlay.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def apply(params: dict, overlay: dict) -> dict:
    """A copy of ``params`` (no section shared with another) with the overlay's keys set."""
    out = json.loads(json.dumps(params))  # a plain tree: anchored sections become copies
    for name, value in flatten(overlay).items():
        node, parts = out, name.split(".")
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                where = ".".join(parts[: depth + 1])
                raise OverlayError(f"overlay key {name}: params has no section {where}")
            node = node[part]
        if parts[-1] not in node:
            raise OverlayError(f"overlay key {name}: params has no such key")
        node[parts[-1]] = value
    return out


def apply_files(params: Path, overlay: Path) -> dict:
    return apply(_mapping(params), _mapping(overlay))


def set_param_args(overlay: dict) -> list[str]:
    """``dvc exp run`` arguments: ``-S key=value`` for each key, the value in YAML flow style
    without spaces, so that a shell's word splitting of ``$(...)`` keeps each one whole."""
    args = []
    for name, value in flatten(overlay).items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        text = text.removesuffix("...").strip().replace(", ", ",")  # "..." ends a scalar
        if any(c.isspace() for c in text):
            raise OverlayError(f"overlay key {name}: {text!r} has spaces; apply it in place")
        args += ["-S", f"{name}={text}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlay", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, help="default: rewrite --params in place")
    parser.add_argument(
        "--set-param", action="store_true", help="print `dvc exp run` -S arguments instead"
    )
    args = parser.parse_args(argv)
    try:
        merged = apply_files(args.params, args.overlay)  # checks every key, even for -S
        if args.set_param:
            print(" ".join(set_param_args(_mapping(args.overlay))))
            return 0
        out = args.out or args.params
        fd, tmp = tempfile.mkstemp(dir=out.resolve().parent, prefix=f".{out.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(merged, handle, sort_keys=False)
        os.replace(tmp, out)
    except OverlayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(flatten(_mapping(args.overlay)))} keys from {args.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
