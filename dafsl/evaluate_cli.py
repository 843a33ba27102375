"""``python -m dafsl.evaluate --gt GT.json --dt DETECTIONS.json [--iou 0.5] [--out DIR]``:
11-point VOC07 mAP50 and COCO AP50 of COCO-format detections (:mod:`dafsl.evaluate`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from dafsl.errors import DafslError, exit_on_error
from dafsl.evaluate import evaluate_detections, write_report


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DafslError(f"{what} file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DafslError(f"{what} file {path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DafslError(f"{what} file {path}: cannot read ({getattr(err, 'strerror', None) or err})") from None


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dafsl.evaluate",
                                     description="11-point VOC07 mAP50 and COCO AP50 of COCO-format detections.")
    parser.add_argument("--gt", type=Path, required=True, help="COCO ground-truth JSON")
    parser.add_argument("--dt", type=Path, required=True, help="COCO results JSON (list of detections)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold for the 11-point AP (default 0.5)")
    parser.add_argument("--out", type=Path, default=None, help="directory for pr_curves.png and report.md")
    return parser


@exit_on_error
def main(argv: Sequence[str] | None = None) -> dict:
    """Print one JSON line: map50, ap50_coco, iou_threshold, per_class, classes_without_gt."""
    args = get_args_parser().parse_args(argv)
    result = evaluate_detections(_load_json(args.gt, "ground truth"), _load_json(args.dt, "detections"),
                                 iou_threshold=args.iou)
    if args.out is not None:
        write_report(result, args.out)
    summary = {k: v for k, v in result.items() if k != "pr_curves"}
    print(json.dumps(summary))
    return summary



if __name__ == "__main__":
    main()
