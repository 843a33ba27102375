"""The few-shot methods against easyfsl and hand computations, seed 000's
self-distillation loss and its frozen teacher, resume, and the CLI's errors."""
from __future__ import annotations

import math

import pytest
import torch

from dafsl.config import load_config
from dafsl.fewshot.backbone import build_backbone, conv4
from dafsl.fewshot.data import CharacterSet
from dafsl.fewshot.distill import distillation_loss, freeze
from dafsl.fewshot.episodic import EpisodicTrainer, summarise
from dafsl.fewshot.matching import MatchingNetwork
from dafsl.fewshot.protonet import PrototypicalNetwork
from dafsl.fewshot.siamese import SiameseNetwork


def fake_characters(manifest: str, split: str, *, image_size: int = 28, cache_dir=None) -> CharacterSet:
    """A random character set: 12 classes x 6 drawings, each a noisy copy of its class's
    random prototype (the real sets come from dafsl.fewshot.data)."""
    g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
    classes = 12
    protos = (torch.rand(classes, 1, image_size, image_size, generator=g) > 0.7).float()
    labels = torch.arange(classes).repeat_interleave(6)
    noise = torch.rand(len(labels), 1, image_size, image_size, generator=g)
    images = ((protos[labels] + 0.5 * noise) > 0.8).float()
    return CharacterSet(images, labels, tuple(f"{split}{c}" for c in range(classes)),
                        torch.arange(6).repeat(classes))


TINY = ["fewshot.image_size=16", "fewshot.width=8", "fewshot.epochs=2",
        "fewshot.episodes_per_epoch=3", "fewshot.val_episodes=10", "fewshot.test_episodes=20",
        "fewshot.query=3"]


# --------------------------------------------------------------------- methods

def test_protonet_equals_easyfsl_prototypical_networks():
    easyfsl = pytest.importorskip("easyfsl.methods")
    torch.manual_seed(0)
    backbone = conv4(1, 16).eval()
    support, labels = torch.rand(10, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4] * 2)
    query = torch.rand(7, 1, 28, 28)
    theirs = easyfsl.PrototypicalNetworks(backbone)
    theirs.process_support_set(support, labels)
    with torch.no_grad():
        ref = theirs(query)
        plain = PrototypicalNetwork(backbone, squared=False)
        plain.process_support_set(support, labels)
        ours = PrototypicalNetwork(backbone)  # Snell's squared distance: -(their -d)^2
        ours.process_support_set(support, labels)
        assert torch.allclose(plain(query), ref, atol=1e-5)
        assert torch.allclose(ours(query), -(ref ** 2), atol=1e-5, rtol=1e-5)
    assert ref.shape == (7, 5)


def test_protonet_by_hand():
    net = PrototypicalNetwork(None)
    net.process_support_set(torch.tensor([[0., 0.], [2., 0.], [0., 3.]]), torch.tensor([0, 0, 1]))
    # prototypes (1, 0) and (0, 3); query (1, 1): squared distances 1 and 5
    assert net(torch.tensor([[1., 1.]])).tolist() == [[-1.0, -5.0]]


def test_matching_network_by_hand():
    net = MatchingNetwork(None, feature_dim=2)
    support = torch.tensor([[1., 0.], [0., 2.], [3., 3.]])
    net.process_support_set(support, torch.tensor([0, 1, 1]))
    # query (1, 0): cosines 1, 0, 1/sqrt(2); attention = softmax; P(0) = a_0, P(1) = a_1 + a_2
    e = [math.exp(1.0), math.exp(0.0), math.exp(1 / math.sqrt(2))]
    p0, p1 = e[0] / sum(e), (e[1] + e[2]) / sum(e)
    out = net(torch.tensor([[1., 0.]]))
    assert torch.allclose(out, torch.tensor([[math.log(p0), math.log(p1)]]), atol=1e-6)
    assert torch.allclose(out.softmax(1).sum(), torch.tensor(1.0))


def test_matching_fce_runs_and_changes_the_embedding():
    torch.manual_seed(0)
    net = MatchingNetwork(None, feature_dim=4, fce=True)
    support, labels = torch.randn(6, 4), torch.tensor([0, 1, 2] * 2)
    net.process_support_set(support, labels)
    out = net(torch.randn(5, 4))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    plain = MatchingNetwork(None, feature_dim=4)
    plain.process_support_set(support, labels)
    assert not torch.allclose(net.support_embeddings, plain.support_embeddings)


def test_siamese_network_by_hand():
    net = SiameseNetwork(None, feature_dim=2)
    with torch.no_grad():
        net.distance.weight.copy_(torch.tensor([[-1.0, -2.0]]))
        net.distance.bias.fill_(3.0)
    support = torch.tensor([[0., 0.], [1., 1.], [4., 0.]])
    net.process_support_set(support, torch.tensor([0, 0, 1]))
    query = torch.tensor([[1., 0.]])
    # |q - s| = (1,0), (0,1), (3,0): log-odds 3-1 = 2, 3-2 = 1, 3-3 = 0
    assert net.pair_logits(query, support).tolist() == [[2.0, 1.0, 0.0]]
    assert net(query).tolist() == [[2.0, 0.0]]  # per-class max
    # BCE with the same pairs weighted way - 1 = 1: mean of -log s(2), -log s(1), -log(1 - s(0))
    loss = net.label_loss(None, query, torch.tensor([0]))
    want = (-math.log(1 / (1 + math.exp(-2))) - math.log(1 / (1 + math.exp(-1))) - math.log(0.5)) / 3
    assert loss.item() == pytest.approx(want, abs=1e-6)


def test_timm_backbone_builds_without_weights():
    net = build_backbone("resnet18", in_chans=1)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 512)


# --------------------------------------------------------------- distillation

def test_distillation_loss_by_hand():
    s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]])
    pt = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    ps = [1 / (1 + math.e), math.e / (1 + math.e)]
    want = sum(a * math.log(a / b) for a, b in zip(pt, ps))
    assert distillation_loss(s, t).item() == pytest.approx(want, abs=1e-6)
    # temperature 2: both softened, no T^2 factor
    pt2 = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    ps2 = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    want2 = sum(a * math.log(a / b) for a, b in zip(pt2, ps2))
    assert distillation_loss(s, t, 2.0).item() == pytest.approx(want2, abs=1e-6)
    assert distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("method", ["protonet", "matching", "siamese"])
def test_teacher_weights_and_batchnorm_statistics_do_not_change(method):
    from dafsl.fewshot.methods import build_method

    torch.manual_seed(0)
    data = fake_characters("x", "train", image_size=16)
    teacher = build_method(method, conv4(1, 8), 8)
    with torch.no_grad():  # BatchNorm statistics away from their initial values
        teacher.train().backbone(torch.rand(8, 1, 16, 16))
    freeze(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_method(method, conv4(1, 8), 8)
    opt = torch.optim.Adam(student.parameters(), lr=0.01)
    trainer = EpisodicTrainer("fewshot_student", student, opt,
                              torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), data, data,
                              way=3, shot=1, query=2, train_way=3, episodes_per_epoch=3,
                              val_episodes=2, seed=0, teacher=teacher, alpha=0.5)
    # the teacher's logits from features embedded once equal those of the episode's images
    from dafsl.fewshot.distill import teacher_logits
    ep = trainer.batches(0)[0]
    direct = teacher_logits(teacher, data.images[ep.support_idx], ep.support_labels, data.images[ep.query_idx])
    assert torch.allclose(trainer.teacher_logits(ep), direct, atol=1e-4)
    student_before = [p.clone() for p in student.parameters()]
    for ep in trainer.batches(0):
        out = trainer.train_step(ep)
        assert out["loss_kl"] > 0
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. running_mean/var
    assert any(k.endswith("running_mean") for k in before)
    assert not teacher.training
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters()))


def test_summarise_confidence_interval_by_hand():
    r = summarise([1.0, 0.0, 1.0, 1.0])
    std = math.sqrt(((0.25 ** 2) * 3 + 0.75 ** 2) / 3)
    assert r["accuracy"] == 0.75 and r["accuracy_ci95"] == pytest.approx(1.96 * std / 2)


# ------------------------------------------------------------ run, resume, CLI

@pytest.fixture
def fake_data(monkeypatch):
    import dafsl.fewshot.run as run_mod

    monkeypatch.setattr(run_mod, "load_characters", fake_characters)


def test_killed_run_resumed_equals_uninterrupted(fake_data, tmp_path, monkeypatch):
    from dafsl.fewshot.run import run_fewshot
    from dafsl.runs import read_metrics

    cfg = load_config(None, TINY + ["fewshot.distill=self"])
    full = run_fewshot(cfg, tmp_path / "full")

    calls = {"n": 0}
    step = EpisodicTrainer.train_step

    def dying(self, ep):  # killed in the student's second epoch
        if self.stage == "fewshot_student":
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
        return step(self, ep)

    monkeypatch.setattr(EpisodicTrainer, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run_fewshot(cfg, tmp_path / "resumed")
    monkeypatch.setattr(EpisodicTrainer, "train_step", step)
    resumed = run_fewshot(cfg, tmp_path / "resumed", resume=True)
    for key in ("teacher_test_accuracy", "student_test_accuracy", "student_val_accuracy"):
        assert resumed[key] == full[key]
    drop = ("epoch_time_s", "wall_clock_s", "eval_time_s", "peak_rss_mb")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "resumed" / "metrics.jsonl")) == \
        strip(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    a = torch.load(tmp_path / "full" / "fewshot" / "student_best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "fewshot" / "student_best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args, line", [
    (["--method", "protonett"], "error: fewshot.method: expected one of siamese, matching, protonet, got 'protonett'"),
    (["--way", "13"], "error: --way 13: x train has only 12 classes"),
    (["--shot", "5", "--query", "2"], "error: --shot 5 --query 2: x train has a class with only 6 images (need 7)"),
    (["--distill", "yes"], "error: fewshot.distill: expected one of none, self, got 'yes'"),
])
def test_cli_bad_input_is_one_line_exit_2(fake_data, args, line, tmp_path, capsys):
    from dafsl.fewshot.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--manifest", "x", "--out", str(tmp_path / "r"), "--quiet",
              *sum((["--set", s] for s in TINY), [])])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_cli_runs_and_prints_accuracy(fake_data, tmp_path, capsys):
    from dafsl.fewshot.__main__ import main
    from dafsl.runs import read_metrics

    summary = main(["--method", "siamese", "--distill", "none", "--way", "3", "--shot", "1",
                    "--manifest", "x", "--out", str(tmp_path / "r"), "--quiet",
                    *sum((["--set", s] for s in TINY), [])])
    assert 0.0 <= summary["teacher_test_accuracy"] <= 1.0 and summary["teacher_test_episodes"] == 20
    assert "teacher: test accuracy" in capsys.readouterr().out
    assert [r["epoch"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [0, 1]
    assert (tmp_path / "r" / "config.yaml").exists()


def test_the_schema_lists_the_registered_methods():
    from dafsl import config_schema
    from dafsl.fewshot.distill import SEED_ALPHA
    from dafsl.fewshot.methods import METHODS

    assert tuple(METHODS) == config_schema.FEWSHOT_METHODS
    assert dict(load_config(None)["fewshot"]["alpha"]) == SEED_ALPHA


def test_alpha_zero_student_is_the_teacher(fake_data, tmp_path):
    """The student starts from the teacher's initialisation and sees its episodes: with
    alpha = 0 nothing else differs, so it ends as the teacher (the sweep's alpha-0 row)."""
    from dafsl.fewshot.run import run_fewshot

    s = run_fewshot(load_config(None, TINY + ["fewshot.distill=self", "fewshot.alpha.protonet=0"]),
                    tmp_path / "r")
    a = torch.load(tmp_path / "r" / "fewshot" / "teacher_best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "r" / "fewshot" / "student_best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert s["student_test_accuracy"] == s["teacher_test_accuracy"] and s["alpha"] == 0.0


def test_compare_fewshot_quick_writes_table_and_figure(tmp_path):
    import importlib.util

    from dafsl.config import REPO_ROOT

    spec = importlib.util.spec_from_file_location("compare_fewshot",
                                                  REPO_ROOT / "pipelines" / "compare_fewshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.verdict({"mean": 0.5, "ci95": 0.01}, {"mean": 0.53, "ci95": 0.01}) == "helped"
    assert mod.verdict({"mean": 0.5, "ci95": 0.02}, {"mean": 0.53, "ci95": 0.02}) == "within noise"
    assert mod.stat([0.5, 0.7])["ci95"] == pytest.approx(1.96 * math.sqrt(0.02) / math.sqrt(2))
    data = mod.main(["--quick", "--seeds", "1", "--methods", "protonet", "--alphas", "0.5",
                     "--out", str(tmp_path)])
    assert [(r["method"], r["shot"]) for r in data["main"]] == [("protonet", 1), ("protonet", 5)]
    assert [r["label"].split(" (")[0] for r in data["sweep"]["rows"]] == \
        ["alpha 0", "alpha 0.05", "alpha 0.5", "distillation only"]
    md = (tmp_path / "compare_fewshot.md").read_text()
    assert "98.3 -> 98.4" in md and (tmp_path / "compare_fewshot.png").stat().st_size > 1000
