"""``python -m dafsl.data {check,convert}``: look at a dataset without training.

    python -m dafsl.data check MANIFEST [--split NAME ...] [--threshold 0.1]
    python -m dafsl.data convert MANIFEST --out DIR [--split NAME ...]

``check`` reads every split of the manifest through its reader (every record and every kept
image's header), then prints per split the images, boxes, class counts, what was skipped
and what a ``select``/``subset`` chose, and for ``train`` the Denough/Dlack split. A bad
record is one line naming file and record, exit status 2.

``convert`` writes each split as COCO JSON (``DIR/<split>.json``, the class attribute on
every annotation) plus ``DIR/manifest.json``, a ``coco`` manifest over the same image
folders, usable wherever a manifest is (``--set data.manifest=DIR/manifest.json``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from dafsl.config import DEFAULT_CONFIG, read_yaml
from dafsl.data import Split, denough_dlack, load_split
from dafsl.errors import DafslError, exit_on_error
from dafsl.manifest import load_manifest


def split_lines(split: Split) -> list[str]:
    anns = split.coco["annotations"]
    crowd = sum(1 for a in anns if a.get("iscrowd"))
    counts = ", ".join(f"{c}={n}" for c, n in split.class_counts().items())
    lines = [f"{split.label}: {len(split.image_ids)} images, {len(anns)} boxes"
             + (f" ({crowd} crowd/difficult, ignored in scoring)" if crowd else "")
             + f"; {counts}; images in {split.image_dir}"]
    if split.skipped:
        lines.append("  skipped: " + ", ".join(f"{n} {why}" for why, n in split.skipped.items()))
    sel = split.selection
    if sel:
        what = (f"select {sel['select']} (available {sel['available']})" if "select" in sel
                else f"subset of {sel['subset']}")
        lines.append(f"  selection: {what} from {sel['images_before']} images, seed {sel['seed']}")
    return lines


def check(manifest_arg: str, splits: Sequence[str] | None, threshold: float,
          cache_dir: str | None = None) -> dict:
    manifest = load_manifest(manifest_arg)
    names = list(splits or manifest.raw["splits"])
    out, lines = {}, [f"manifest {manifest.path} ({manifest.source['type']}): valid"]
    for name in names:
        split = load_split(manifest, name, cache_dir)
        lines += split_lines(split)
        out[name] = {"images": len(split.image_ids), "boxes": len(split.coco["annotations"]),
                     "counts": split.class_counts(), "skipped": split.skipped}
    if "train" in out:
        if manifest.class_attribute is None and len(manifest.classes) < 2:
            lines.append("no class attribute: detection only (detector stage and evaluation); "
                         "the augmenter and classifier need a class")
        else:
            info = denough_dlack(out["train"]["counts"], threshold, origin=f"{manifest.name}/train")
            out["denough_dlack"] = info
            lines.append(f"Denough {info['denough']}, Dlack {info['dlack']} ({info['rule']})")
    print("\n".join(lines))
    return out


def convert(manifest_arg: str, out_dir: Path, splits: Sequence[str] | None,
            cache_dir: str | None = None) -> Path:
    manifest = load_manifest(manifest_arg)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {}
    for name in list(splits or manifest.raw["splits"]):
        split = load_split(manifest, name, cache_dir)
        coco = {"info": {"description": f"{split.label}, converted by python -m dafsl.data convert",
                         "source_type": manifest.source["type"], "selection": split.selection,
                         "skipped": split.skipped},
                "licenses": [{"id": 1, "name": manifest.raw["license"]}],
                **{k: split.coco[k] for k in ("images", "annotations", "categories")}}
        (out_dir / f"{name}.json").write_text(json.dumps(coco), encoding="utf-8")
        spec[name] = {"images": str(split.image_dir.resolve()), "annotations": f"{name}.json"}
        print(f"{split.label}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> "
              f"{out_dir / f'{name}.json'}")
    raw = {k: manifest.raw[k] for k in ("license", "citation", "categories", "class_attribute", "classes")}
    new = {"name": f"{manifest.name}_coco",
           "description": f"{manifest.name} ({manifest.path}) converted to COCO JSON",
           **raw, "source": {"type": "coco", "root": "."}, "splits": spec}
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
    print(f"manifest: {path}")
    return path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dafsl.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate a manifest and its files, print class counts")
    c.add_argument("manifest", help="manifest name (data_manifests/) or path")
    c.add_argument("--split", action="append", default=None, help="only this split (repeatable)")
    c.add_argument("--threshold", type=float, default=None,
                   help="Denough/Dlack threshold (default data.imbalance_threshold)")
    c.add_argument("--cache-dir", default=None)
    v = sub.add_parser("convert", help="write the manifest's splits as COCO JSON")
    v.add_argument("manifest")
    v.add_argument("--out", type=Path, required=True, help="output folder")
    v.add_argument("--split", action="append", default=None, help="only this split (repeatable)")
    v.add_argument("--cache-dir", default=None)
    return p


@exit_on_error
def main(argv: Sequence[str] | None = None):
    args = get_args_parser().parse_args(argv)
    if args.command == "check":
        threshold = args.threshold
        if threshold is None:
            threshold = float(read_yaml(DEFAULT_CONFIG)["data"]["imbalance_threshold"])
        return check(args.manifest, args.split, threshold, args.cache_dir)
    if args.command == "convert":
        return convert(args.manifest, args.out, args.split, args.cache_dir)
    raise DafslError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    main()
