"""The CUDA path, checked in one short script (run it whenever a GPU machine is lent).

    python pipelines/gpu_check.py                      # cuda, paper detector, bf16 and fp32
    python pipelines/gpu_check.py --device cpu --quick # what the test runs on a CPU

1. The smoke chain (``configs/smoke.yaml``, every stage and zoo build) on the device:
   it must finish and its figures are printed.
2. A short run of the paper configuration's detector (``configs/paper.yaml``:
   ResNet-50 FPN at 800 px, torchvision's heads) on rendered scenes (``synthfaces``: no
   FFHQ needed): training images per
   second over ``--steps`` steps after ``--warmup`` steps, for each ``--precision``.
3. The physical limit to compare with: the same backbone+FPN's own forward and backward
   pass on a batch of the same size, images per second. The ratio says how much of a
   training step the rest (RPN, RoI heads, losses, data, optimiser) costs.

Every figure is the median of ``--repeats`` timings; ``gpu_check.json`` holds them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dafsl.config import CONFIG_DIR, load_config  # noqa: E402
from dafsl.data import load_split  # noqa: E402
from dafsl.detector import build_detector  # noqa: E402
from dafsl.detector.data import load_scenes  # noqa: E402
from dafsl.detector.trainer import DetectorTrainer  # noqa: E402
from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.runs import atomic_write_json  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def smoke_chain(device: str, out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dafsl.pipeline", "--config", str(CONFIG_DIR / "smoke.yaml"),
                           "--stage", "all", "--set", f"device={device}", "--out", str(out), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DafslError(f"smoke chain on {device} failed: {proc.stderr.strip().splitlines()[-1][:300]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": round(time.perf_counter() - t0, 1),
            "test_map50": summary["detector"]["test_map50"], "kid": summary["augmenter"]["kid"],
            "balanced_accuracy": summary["classifier"]["test_balanced_accuracy"]}


def detector_rates(cfg: dict, device: torch.device, precision: str, steps: int, warmup: int,
                   repeats: int) -> dict:
    det = cfg["detector"]
    split = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    scenes = load_scenes(split, exclude_classes={"female"})[0]
    need = (steps + warmup) * int(det["batch_size"])
    scenes = (scenes * (need // len(scenes) + 1))[:need]
    torch.manual_seed(0)
    model = build_detector(det)
    trainer = DetectorTrainer(model, scenes, det_cfg=det, mode="vanilla", transfer_cfg=cfg["transfer"],
                              seed=0, device=device, epochs=1)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    batches = list(trainer.batches(0))
    bs = int(det["batch_size"])

    def train_rate() -> float:
        for b in batches[:warmup]:
            with torch.autocast(**amp):
                trainer.train_step(b)
        sync(device)
        t0 = time.perf_counter()
        for b in batches[warmup:warmup + steps]:
            with torch.autocast(**amp):
                losses = trainer.train_step(b)
        float(losses["loss"])
        sync(device)
        return steps * bs / (time.perf_counter() - t0)

    size = int(det["image_size"])
    x = torch.randn(bs, 3, size, size, device=device)
    backbone = model.backbone

    def backbone_rate() -> float:
        def step():
            with torch.autocast(**amp):
                feats = backbone(x)
            sum(f.float().mean() for f in feats.values()).backward()
        for _ in range(warmup):
            step()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        return steps * bs / (time.perf_counter() - t0)

    train = statistics.median(train_rate() for _ in range(repeats))
    bb = statistics.median(backbone_rate() for _ in range(repeats))
    return {"precision": precision, "batch_size": bs, "image_size": size,
            "train_img_s": round(train, 2), "backbone_fwd_bwd_img_s": round(bb, 2),
            "ratio": round(train / bb, 3)}


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--config", default=str(CONFIG_DIR / "paper.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="CPU test: smoke detector, 2 steps, 1 repeat, fp32")
    p.add_argument("--skip-chain", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DafslError("--device cuda: no CUDA device here; use --device cpu --quick to check the script")
    device = torch.device(args.device)
    if args.quick:
        args.config, args.steps, args.warmup, args.repeats = str(CONFIG_DIR / "smoke.yaml"), 2, 1, 1
        args.precision = ["fp32"]
    data = [] if args.quick else ["data.manifest=synthfaces"]  # rendered scenes, not FFHQ
    cfg = load_config(args.config, [f"device={args.device}", *data, *args.overrides])
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "config": args.config}
    if not args.skip_chain:
        result["smoke_chain"] = smoke_chain(args.device, out / "smoke")
        print(f"smoke chain on {args.device}: {result['smoke_chain']}")
    result["detector"] = []
    for precision in args.precision:
        r = detector_rates(cfg, device, precision, args.steps, args.warmup, args.repeats)
        result["detector"].append(r)
        print(f"detector {precision}: train {r['train_img_s']} img/s, backbone+FPN fwd+bwd "
              f"{r['backbone_fwd_bwd_img_s']} img/s, ratio {r['ratio']} "
              f"(batch {r['batch_size']}, {r['image_size']} px)")
    atomic_write_json(out / "gpu_check.json", result)
    print(f"written: {out / 'gpu_check.json'}")
    return result


if __name__ == "__main__":
    main()
