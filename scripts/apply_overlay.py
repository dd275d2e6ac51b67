"""Apply a params overlay (params-small.yaml) to params.yaml: each key it names is replaced,
every other key kept, and the result is checked against the params schema before anything
is written.

    python scripts/apply_overlay.py params-small.yaml                # rewrite params.yaml
    python scripts/apply_overlay.py params-small.yaml --params p.yaml --out small.yaml
    dvc exp run $(python scripts/apply_overlay.py params-small.yaml --set-param)

An overlay is a YAML mapping shaped like params.yaml, holding only the keys to change. A
mapping in the overlay descends into the section of params.yaml it names (an empty one,
``judge: {}``, changes nothing); any other value (a number, a string, a list, null) replaces
the key whole. Each of these stops the script with one ``error:`` line naming the dotted key,
and nothing is written: a key that params.yaml lacks; a value that is not a mapping where
params.yaml has a section; a mapping where params.yaml has a value; a merged result that the
schema (pipeline/config.py) refuses, such as ``epochs: lots``. ``--set-param`` checks the
same before it prints anything. Both files are read by the strict reader
(pipeline/yamlfile.py), which refuses anchors and aliases (&, *), duplicate keys and bytes
that are not UTF-8.

The rewritten file is plain YAML (comments are not kept), written atomically: a temp file
beside it, then a rename. It keeps the mode of the file it replaces; where the file is a
symlink, its target is rewritten and the link stays a link.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.atomic import temp_beside  # noqa: E402
from pipeline.config import parse_params  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.yamlfile import load_yaml  # noqa: E402


class OverlayError(PipelineError):
    pass


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # never write an anchor: the reader refuses them
        return True


def _mapping(path: Path, what: str) -> dict:
    data = load_yaml(path, what)
    if not isinstance(data, dict):
        raise OverlayError(f"{path}: expected a mapping of params sections")
    return data


def _shown(value: object) -> str:
    """``value`` as a short line of YAML flow style: 5, null, [1, 2], lots."""
    text = yaml.dump(value, Dumper=_PlainDumper, default_flow_style=True, width=10**6)
    text = " ".join(text.strip().removesuffix("...").split())  # "..." ends a scalar
    return text if len(text) <= 60 else text[:57] + "..."


def flatten(overlay: dict, prefix: str = "") -> dict[str, object]:
    """``{"judge": {"epochs": 1}}`` -> ``{"judge.epochs": 1}``: the keys the overlay sets (an
    empty mapping sets none)."""
    flat: dict[str, object] = {}
    for key, value in overlay.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _merge(params: dict, overlay: dict, prefix: str = "") -> dict:
    """A new mapping: ``params`` with the overlay's keys set (``params`` is not changed)."""
    out = dict(params)
    for key, value in overlay.items():
        name = f"{prefix}{key}"
        if key not in params or (isinstance(value, dict) and not isinstance(params[key], dict)):
            if not isinstance(value, dict):
                raise OverlayError(f"overlay key {name}: params has no such key")
            leaf = next(iter(flatten(value, name + ".")), name)
            raise OverlayError(f"overlay key {leaf}: params has no section {name}")
        if isinstance(value, dict):
            out[key] = _merge(params[key], value, name + ".")
        elif isinstance(params[key], dict):
            raise OverlayError(
                f"overlay key {name}: params has a section here, got {_shown(value)}"
            )
        else:
            out[key] = value
    return out


def apply(params: dict, overlay: dict) -> dict:
    """``params`` with the overlay's keys set; an overlay key params lacks, or a section and a
    value in each other's place, is an OverlayError naming the dotted key."""
    return _merge(params, overlay)


def apply_files(params: Path, overlay: Path) -> dict:
    """The overlay applied to params, checked against the params schema (a PipelineError
    naming the key otherwise)."""
    merged = apply(_mapping(params, "params file"), _mapping(overlay, "params overlay"))
    parse_params(merged, source=f"{params} + {overlay}")
    return merged


def set_param_args(overlay: dict) -> list[str]:
    """``dvc exp run`` arguments: ``-S key=value`` for each key, the value in YAML flow style
    without spaces, so that a shell's word splitting of ``$(...)`` keeps each one whole."""
    args = []
    for name, value in flatten(overlay).items():
        text = yaml.dump(value, Dumper=_PlainDumper, default_flow_style=True, width=10**6)
        text = text.strip().removesuffix("...").strip().replace(", ", ",")
        if any(c.isspace() for c in text):
            raise OverlayError(f"overlay key {name}: {text!r} has spaces; apply it in place")
        args += ["-S", f"{name}={text}"]
    return args


def write(out: Path, merged: dict) -> None:
    """Atomically replace ``out`` (a symlink's target, so the link stays) keeping its mode."""
    try:
        target = out.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise OverlayError(f"{out}: cannot write it ({exc})") from None
    if not target.parent.is_dir():
        raise OverlayError(f"{out}: cannot write it (no folder {target.parent})")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) if target.exists() else None
        text = yaml.dump(merged, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)
        with temp_beside(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
            if mode is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
            os.replace(tmp, target)
    except OSError as exc:
        raise OverlayError(f"{out}: cannot write it ({exc.strerror or exc})") from None


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
        overlay = _mapping(args.overlay, "params overlay")
        if args.set_param:
            print(" ".join(set_param_args(overlay)))
            return 0
        out = args.out or args.params
        write(out, merged)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(flatten(overlay))} keys from {args.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
