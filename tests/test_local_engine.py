"""The one loop (`run_steps`) driven by `LocalEngine` in one process: what fine-tuning folds use."""
from __future__ import annotations

import torch
from torch import nn

from physiofm.objectives.base import PretrainingObjective
from physiofm.platform.config import OptimConfig, RunConfig, TrainConfig
from physiofm.platform.methods import MaskedReconstructionConfig
from physiofm.platform.train_loop import LocalEngine, build_optimizer, run_steps


class LinearRegression(PretrainingObjective):
    input_columns = ("x", "y")

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            self.backbone.weight.copy_(torch.eye(4))
            self.backbone.bias.zero_()

    def parameter_groups(self, lr):
        return [{"params": self.backbone.parameters(), "lr": lr / 10}, {"params": self.head.parameters()}]

    def forward(self, batch):
        loss = ((self.head(self.backbone(batch["x"])).squeeze(-1) - batch["y"]) ** 2).mean()
        return loss, {"scale": loss.detach() * 0 + 1}


def config(max_steps: int, grad_accum: int = 1) -> TrainConfig:
    return TrainConfig(method=MaskedReconstructionConfig(),
                       optim=OptimConfig(lr=0.2, min_lr=0.0, weight_decay=0.0, grad_accum=grad_accum),
                       run=RunConfig(max_steps=max_steps, checkpoint_every=5, log_every=1)).validate()


def test_run_steps_with_local_engine_trains_reports_and_checkpoints(one_torch_thread):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = {"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5, 3.0])}
    cfg = config(max_steps=40, grad_accum=2)
    objective = LinearRegression()
    optimizer, scheduler = build_optimizer(objective, cfg)
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 0.2]  # backbone and head rates
    engine = LocalEngine(objective, optimizer, scheduler, cfg.optim.grad_accum, cfg.optim.grad_clip)
    reports, checkpoints = [], []

    def batches(epoch):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        return ({k: v[order[i:i + 8]] for k, v in data.items()} for i in range(0, 64, 8))

    run_steps(engine, cfg, batches, report=reports.append, scheduler=scheduler,
              checkpoint=lambda report, step: checkpoints.append((step, report)))
    assert engine.global_steps == 40 and engine.micro_steps == 80  # two micro-steps per optimizer step
    assert [step for step, _ in checkpoints] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert len(reports) == 32 and all(r["scale"] == 1.0 for r in reports)
    first, last = checkpoints[0][1], checkpoints[-1][1]
    assert first["first_loss"] == reports[0]["loss"]  # the summary's first loss: the whole first step
    assert last["loss"] < 0.05 * first["first_loss"], (first, last)
    assert last["lr"] < first["lr"]  # the cosine schedule decays every group
