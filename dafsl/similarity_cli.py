"""``python -m dafsl.similarity SOURCE TARGET``: compare two datasets (seed 001, eq. 1) and
print the mode ``--kd auto`` would choose, with the similarity's bootstrap interval over
the target's objects (:mod:`dafsl.similarity`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dafsl.errors import exit_on_error
from dafsl.similarity import _describe_target, compare, max_distance, parse_p, zoo_descriptor


def describe_argument(arg: str, cfg: dict, split: str, classes: Sequence[str] | None
                      ) -> tuple[str, list[float], int | None, np.ndarray | None]:
    """(label, descriptor, size, object descriptors): ``zoo:NAME`` → the entry's stored
    descriptor (size and objects unknown); anything else is a manifest name or path whose
    ``split`` is described."""
    from dafsl.data import load_split

    if arg.startswith("zoo:"):
        label, desc = zoo_descriptor(cfg, arg[4:])
        return label, desc, None, None
    sp = load_split(arg, split, cfg["data"]["cache_dir"])
    label, objects, size = _describe_target(sp, classes, int(cfg["similarity"]["n_objects"]), "objects")
    return label, objects.mean(axis=0).tolist(), size, objects


def get_args_parser():
    import argparse

    from dafsl.config import DEFAULT_CONFIG

    p = argparse.ArgumentParser(
        prog="python -m dafsl.similarity",
        description="Compare two datasets with the Minkowski distance of seed 001, eq. 1, and "
                    "print the transfer mode --kd auto would choose for TARGET given SOURCE.")
    p.add_argument("source", help="manifest name/path, or zoo:ENTRY (stored descriptor)")
    p.add_argument("target", help="manifest name/path, or zoo:ENTRY")
    p.add_argument("--split", default="train", help="manifest split to describe (default train)")
    p.add_argument("--classes", default=None,
                   help="comma-separated classes of the target to describe (e.g. female)")
    p.add_argument("--p", default=None, help="Minkowski exponent: 1, 2, ... or inf "
                                             "(default similarity.p of the config)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    from dafsl.config import load_config
    from dafsl.log import configure

    args = get_args_parser().parse_args(argv)
    configure()
    cfg = load_config(args.config, args.overrides)
    classes = args.classes.split(",") if args.classes else None
    s_label, s_desc, _, _ = describe_argument(args.source, cfg, args.split, None)
    t_label, t_desc, size, objects = describe_argument(args.target, cfg, args.split, classes)
    s_cfg = dict(cfg["similarity"])
    if size is None:  # a zoo entry as target has no size, so the size rule cannot apply
        s_cfg["min_target_size"] = 0
    result = {"source": s_label, "target": t_label,
              **compare(s_desc, t_desc, size or 0, s_cfg, p=args.p, objects=objects,
                        seed=int(cfg["seed"]))}
    interval = result.get("similarity_interval")
    print(f"source      {s_label}\ntarget      {t_label}\n"
          f"distance    {result['distance']:.4f} (Minkowski, p={result['p']})\n"
          f"similarity  {result['similarity']:.4f} (1 - distance / "
          f"{max_distance(parse_p(result['p'])):.4f})"
          + (f", {result['confidence']:.0%} bootstrap interval [{interval[0]:.4f}, "
             f"{interval[1]:.4f}] ({result['bootstrap']} resamples of the target's objects)"
             if interval else "") + "\n"
          f"target size {'unknown' if size is None else size}\n"
          f"decision    {result['mode']}: {result['reason']}")
    return result


if __name__ == "__main__":
    main()
