"""Bop (Helwegen et al. 2019; larq.optimizers.Bop): the update rule against a NumPy re-implementation of larq's
``Bop._resource_apply_dense`` on fixed gradients, the inner optimizer on the real-valued groups, the checkpoint
round trip, the latent-weight options refused in one line, and optimizer=bop training and resuming exactly."""

from __future__ import annotations

import copy
import csv
import functools
import signal

import numpy as np
import pytest
import torch
from conftest import compose_cfg, only_record, run_train
from test_resume import essence

from onebit.core.errors import ConfigError
from onebit.nn.bop import Bop
from onebit.training import jobs


def larq_bop_step(var: np.ndarray, m: np.ndarray, grad: np.ndarray, gamma: float, threshold: float):
    """larq/optimizers.py, ``Bop._resource_apply_dense``, in NumPy: ``m_t = m + gamma (grad - m)``;
    ``var_t = lq.math.sign(-tf.sign(var * m_t - threshold) * var)``, where ``lq.math.sign(x) = sign(sign(x) + 0.1)``
    (sign(0) = +1) and ``tf.sign(0) = 0``."""
    m_t = m + gamma * (grad - m)
    var_t = np.sign(np.sign(-np.sign(var * m_t - threshold) * var) + 0.1)
    return var_t, m_t


def _groups(wb, wr):
    return [{"params": [wb], "role": "binary", "weight_decay": 0.0, "name": "binary"},
            {"params": [wr], "role": "real", "weight_decay": 0.0, "name": "real"}]


def test_bop_update_is_larqs_formula_step_by_step():
    gamma, tau = 0.5, 0.1
    w0 = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    grads = np.array([[1.0, -1.0, -1.0, 1.0, 0.1, 0.0],  # agree beyond tau: flip (0, 1); against: keep (2, 3)
                      [0.5, 0.5, -2.0, 2.0, 0.3, -0.4],
                      [-3.0, 3.0, 0.0, 0.0, 0.3, -0.4],
                      [0.0, 0.0, 1.0, -1.0, -2.0, 2.0]])
    wb, wr = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = Bop(_groups(wb, wr), inner=functools.partial(torch.optim.SGD), lr=0.1, threshold=tau, gamma=gamma)
    var, m = w0.copy(), np.zeros_like(w0)
    flips = keeps = 0
    for t, g in enumerate(grads):
        wb.grad, wr.grad = torch.tensor(g), torch.ones(3, dtype=torch.float64)
        opt.step()
        before = var.copy()
        var, m = larq_bop_step(var, m, g, gamma, tau)
        np.testing.assert_array_equal(wb.detach().numpy(), var, err_msg=f"step {t}")
        np.testing.assert_allclose(opt.state[wb]["m"].numpy(), m, rtol=0, atol=1e-15)
        flips, keeps = flips + int((var != before).sum()), keeps + int((var == before).sum())
        if t == 0:  # by hand: m = g / 2; w m = [.5, .5, -.5, -.5, .05, 0] against tau = .1
            np.testing.assert_array_equal(var, [-1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
        np.testing.assert_allclose(wr.detach().numpy(), -0.1 * (t + 1) * np.ones(3))  # SGD on the real group
    assert flips >= 4 and keeps >= 8


def test_a_flip_negates_the_weight_and_keeps_its_magnitude():
    """Latent magnitudes (a pretrained twin's) survive: the sign follows larq's rule on sign(w), |w| is kept; a
    weight of exactly 0 (sign +1) flips to -1."""
    w0 = np.array([0.3, -2.0, 0.0, 0.7])
    g = np.array([1.0, -1.0, 1.0, -1.0])  # every sign agrees with its gradient: all flip
    wb, wr = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = Bop(_groups(wb, wr), inner=functools.partial(torch.optim.SGD), threshold=1e-8, gamma=1e-3)
    wb.grad, wr.grad = torch.tensor(g), torch.zeros(1, dtype=torch.float64)
    opt.step()
    s, _ = larq_bop_step(np.where(w0 >= 0, 1.0, -1.0), np.zeros(4), g, 1e-3, 1e-8)
    np.testing.assert_array_equal(wb.detach().numpy(), [-0.3, 2.0, -1.0, 0.7])
    np.testing.assert_array_equal(np.where(wb.detach().numpy() >= 0, 1.0, -1.0), s)


def test_state_dict_round_trip_continues_exactly():
    torch.manual_seed(0)
    wb, wr = torch.nn.Parameter(torch.randn(20)), torch.nn.Parameter(torch.randn(5))
    grads = [(torch.randn(20), torch.randn(5)) for _ in range(6)]
    make = lambda b, r: Bop(_groups(b, r), inner=functools.partial(torch.optim.Adam), lr=0.01,  # noqa: E731
                            threshold=1e-3, gamma=0.3)
    opt = make(wb, wr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 ** e)

    def run(o, b, r, steps, sch):
        for gb, gr in steps:
            b.grad, r.grad = gb.clone(), gr.clone()
            o.step()
            sch.step()

    run(opt, wb, wr, grads[:3], sched)
    saved, params = copy.deepcopy(opt.state_dict()), (wb.detach().clone(), wr.detach().clone())
    saved_sched = sched.state_dict()
    run(opt, wb, wr, grads[3:], sched)

    b2, r2 = torch.nn.Parameter(params[0].clone()), torch.nn.Parameter(params[1].clone())
    opt2 = make(b2, r2)  # as Lightning restores: optimizer and schedule built, then their states loaded
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda e: 0.5 ** e)
    opt2.load_state_dict(saved)
    sched2.load_state_dict(saved_sched)
    assert opt2.inner.param_groups[0] is opt2.param_groups[1] and opt2.inner.state is opt2.state
    run(opt2, b2, r2, grads[3:], sched2)
    assert torch.equal(b2, wb) and torch.equal(r2, wr)
    assert torch.equal(opt2.state[b2]["m"], opt.state[wb]["m"])
    assert torch.equal(opt2.state[r2]["exp_avg_sq"], opt.state[wr]["exp_avg_sq"])
    assert [g["lr"] for g in opt2.param_groups] == [0.3 * 0.5 ** 6, 0.01 * 0.5 ** 6]  # gamma is scheduled too


@pytest.mark.parametrize("override,line", [
    ("optimizer.latent_weight_clip=1.3", "optimizer.latent_weight_clip=1.3 does not apply to optimizer=bop"),
    ("optimizer.binary_weight_decay=0.1", "optimizer.binary_weight_decay=0.1 does not apply to optimizer=bop"),
    ("optimizer.gamma=2", "optimizer.gamma=2 is invalid: Bop's adaptivity rate must be in (0, 1]"),
])
def test_latent_weight_options_are_refused_in_one_line(tmp_path, override, line):
    cfg = compose_cfg(["model.width=4", "logger=none", "optimizer=bop", override], tmp_path)
    with pytest.raises(ConfigError) as e:
        jobs.run(cfg, tmp_path / "run", set())
    assert line in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.rglob("record.json"))


BOP = ["model.width=4", "logger=none", "trainer.deterministic=true", "threads=1", "epochs=2", "optimizer=bop"]


@pytest.mark.slow
def test_bop_trains_digits_and_names_its_groups(tmp_path):
    cfg = compose_cfg([*BOP[1:], "model.width=8", "logger=csv"], tmp_path)
    rec, _ = jobs.run(cfg, tmp_path / "run", set())
    binary = rec.stages["binary"]
    assert binary.status == "finished" and binary.metrics["test/top1"] > 0.3  # chance: 0.1 (10 digits)
    assert 0 < binary.history[0]["diag/flip/mean"] < 0.5  # Bop flips weights, not all of them
    (path,) = [p for p in tmp_path.rglob("metrics.csv") if p.parent.name == "binary"]
    rows = list(csv.DictReader(path.open()))
    first = next(r for r in rows if r.get("lr-Bop/binary"))
    assert float(first["lr-Bop/binary"]) == pytest.approx(1e-4)  # gamma, as the binary group's lr
    assert float(first["lr-Bop/real"]) == pytest.approx(0.002) and float(first["lr-Bop/bn"]) == pytest.approx(0.002)


@pytest.mark.slow
def test_bop_run_killed_after_an_epoch_resumes_exactly(tmp_path, train_once):
    uninterrupted = train_once(*BOP)
    killed = run_train([*BOP, f"output_root={tmp_path}"], env={"ONEBIT_KILL_AT": "epoch_end:binary:0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = run_train([*BOP, f"output_root={tmp_path}"])
    assert again.returncode == 0, again.stderr[-3000:]
    after = only_record(tmp_path)
    assert after.attempts == 2 and essence(after) == essence(uninterrupted)
    assert uninterrupted.stages["binary"].metrics["test/top1"] > 0.2
