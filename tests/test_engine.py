"""The shared training loop: logging, checkpoints, exact resume, divergence stop."""
import math

import pytest
import torch

from dafsl.engine import TrainingDiverged, fit
from dafsl.runs import RunDir, seed_everything


class TinyTrainer:
    """Noisy linear regression: uses the global torch RNG every step (like dropout or
    RPN sampling do), so exact resume needs the RNG state restored too."""

    stage = "tiny"

    def __init__(self, lr=0.05):
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=gen)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batches(self, epoch):
        order = torch.randperm(32, generator=torch.Generator().manual_seed(epoch))
        return [order[i:i + 8] for i in range(0, 32, 8)]

    def train_step(self, idx):
        noise = 0.1 * torch.randn(len(idx), 1)
        loss = ((self.model(self.x[idx]) - self.y[idx] - noise) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def end_epoch(self, epoch):
        return {}

    def evaluate(self, epoch):
        with torch.no_grad():
            return {"val_mse": ((self.model(self.x) - self.y) ** 2).mean().item()}

    def state_dict(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])


def _strip(records):
    return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "peak_rss_mb"}
            for r in records]


def test_resumed_run_matches_uninterrupted(tmp_path):
    seed_everything(0)
    straight = fit(TinyTrainer(), RunDir(tmp_path / "a"), 4, mode="vanilla")

    seed_everything(0)
    run = RunDir(tmp_path / "b")
    fit(TinyTrainer(), run, 2, mode="vanilla")      # "killed" after epoch 2
    torch.manual_seed(1234)                                       # a new process: other RNG
    resumed = fit(TinyTrainer(), run, 4, mode="vanilla", resume=True)

    assert len(resumed) == 4
    assert _strip(resumed) == _strip(straight)
    assert resumed[-1]["wall_clock_s"] >= resumed[1]["wall_clock_s"]
    assert {"stage", "mode", "epoch", "epoch_time_s", "wall_clock_s", "loss",
            "val_mse"} <= set(resumed[0])


def test_records_logged_after_the_last_checkpoint_are_dropped_on_resume(tmp_path):
    run = RunDir(tmp_path / "c")
    fit(TinyTrainer(), run, 1, mode="vanilla")
    # a crash between logging epoch 1 and writing its checkpoint
    run.log({"stage": "tiny", "mode": "vanilla", "epoch": 1, "epoch_time_s": 0.0,
             "wall_clock_s": 0.0, "loss": 99.0})
    records = fit(TinyTrainer(), run, 2, mode="vanilla", resume=True)
    assert [r["epoch"] for r in records] == [0, 1] and records[1]["loss"] != 99.0


def test_nan_loss_stops_training_with_a_message(tmp_path):
    trainer = TinyTrainer(lr=1e6)
    with pytest.raises(TrainingDiverged, match="tiny epoch .* loss loss is"):
        fit(trainer, RunDir(tmp_path / "d"), 20, mode="vanilla")


def test_nan_stop_keeps_the_last_good_checkpoint(tmp_path):
    from dafsl.runs import load_checkpoint

    class GoesNan(TinyTrainer):
        steps = 0

        def train_step(self, idx):
            self.steps += 1
            out = super().train_step(idx)
            return {"loss": float("nan")} if self.steps == 11 else out  # epoch 2, step 2

    run = RunDir(tmp_path / "e")
    with pytest.raises(TrainingDiverged, match=r"tiny epoch 2 step 2: loss loss is nan"):
        fit(GoesNan(), run, 4, mode="vanilla")
    state = load_checkpoint(run.checkpoint_path("tiny"))
    assert state["epoch"] == 1  # the checkpoint of the last complete epoch, loadable
    assert all(torch.isfinite(v).all() for v in state["trainer"]["model"].values())


def test_keep_bounds_epoch_checkpoints_and_strips_the_optimiser(tmp_path):
    from dafsl.runs import load_checkpoint

    run = RunDir(tmp_path / "f", keep=2)
    fit(TinyTrainer(), run, 4, mode="vanilla")
    kept = sorted(p.name for p in run.checkpoints.glob("tiny_epoch*.pt"))
    assert kept == ["tiny_epoch2.pt", "tiny_epoch3.pt"]
    last = load_checkpoint(run.checkpoint_path("tiny"))
    final = load_checkpoint(run.checkpoint_path("tiny", "epoch3"))
    assert "opt" in last["trainer"] and set(final["trainer"]) == {"model"}
    assert all(torch.equal(final["trainer"]["model"][k], v) for k, v in last["trainer"]["model"].items())


def test_prefetch_thread_gives_the_same_run(tmp_path):
    seed_everything(0)
    plain = fit(TinyTrainer(), RunDir(tmp_path / "g"), 3, mode="vanilla")
    seed_everything(0)
    ahead = fit(TinyTrainer(), RunDir(tmp_path / "h", runtime={"prefetch": 2}), 3, mode="vanilla")
    assert _strip(ahead) == _strip(plain)


def test_bf16_autocast_reaches_the_step(tmp_path):
    seen = []

    class Probe(TinyTrainer):
        def train_step(self, idx):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return super().train_step(idx)

    trainer = Probe()
    before = trainer.model.weight.detach().clone()
    records = fit(trainer, RunDir(tmp_path / "i", runtime={"precision": "bf16"}), 3, mode="vanilla")
    assert set(seen) == {torch.bfloat16} and len(seen) == 12
    assert all(math.isfinite(r["loss"]) for r in records)
    assert not torch.equal(trainer.model.weight, before)
    # fp32 outside the step: the weights stay fp32
    assert trainer.model.weight.dtype == torch.float32


def test_loss_meter_reads_device_tensors_in_batches_and_names_the_bad_step():
    from dafsl.engine import LossMeter

    meter = LossMeter("tiny", 0, sync_every=3)
    meter.add(0, {"loss": torch.tensor(1.0)})
    meter.add(1, {"loss": torch.tensor(2.0)})
    assert meter.sums == {} and len(meter.pending) == 2  # nothing read back yet
    meter.add(2, {"loss": 3.0})
    assert meter.sums == {"loss": 6.0} and not meter.pending
    meter.add(3, {"loss": torch.tensor(float("inf"))})
    with pytest.raises(TrainingDiverged, match="tiny epoch 0 step 3: loss loss is inf"):
        meter.flush()
