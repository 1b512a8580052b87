"""FCPTS (docs/methods.md#allocators): exact init, STE gradients, control loss, exact global rate, plot helper."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from ptsbench.errors import ConfigError
from ptsbench.plots.allocation import plot_layer_allocation, rates_from_record
from ptsbench.run import run
from ptsbench.sparsity.allocators import AllocContext, build_allocator
from ptsbench.sparsity.allocators._fcpts_learning import learn
from ptsbench.sparsity.allocators.fcpts import project_counts, rate_for_count
from ptsbench.sparsity.allocators.fcpts_thresholds import FlatLayers
from ptsbench.sparsity.layers import fold_batchnorm, layer_infos, prunable_modules
from ptsbench.sparsity.selection import num_pruned

FAST = ["calib.num_samples=64", "allocator.iters=4", "allocator.batch_size=8", "dataset.num_test=200"]


@pytest.fixture(scope="module")
def resnet20():
    """The BN-folded zoo ResNet-20, its prunable layers and 32 calibration images."""
    from hydra import compose, initialize_config_dir

    from ptsbench.data import build_data
    from ptsbench.models import build_model

    with initialize_config_dir(
        config_dir=str(__import__("pathlib").Path(__file__).parents[1] / "conf"), version_base="1.3"
    ):
        cfg = compose(config_name="config", overrides=["model=zoo_resnet20", "calib.num_samples=32"])
    data = build_data(cfg.dataset, cfg.calib)
    model = build_model(cfg.model, data.num_classes, data.in_chans, data.img_size, data.name)
    fold_batchnorm(model)
    return model, prunable_modules(model), data.calib_inputs


def _context(model, modules, calib):
    dense = copy.deepcopy(model).eval()
    return AllocContext(model=model, modules=modules, calib_inputs=calib, extras={"dense_model": dense})


@pytest.mark.parametrize("init", ["erk", "l2norm"])
def test_initial_thresholds_reproduce_the_init_allocation_exactly(resnet20, init):
    model, modules, calib = resnet20
    layers = layer_infos(modules)
    weights = {n: m.weight.detach() for n, m in modules.items()}
    init_rates = build_allocator(init).allocate(layers, weights, 0.7)
    ctx = _context(model, modules, calib)
    build_allocator("fcpts", init=init, iters=0).allocate(layers, weights, 0.7, ctx)
    for layer in layers:
        k = num_pruned(init_rates[layer.name], layer.numel)
        assert ctx.report["learned_rates"][layer.name] * layer.numel == pytest.approx(k, abs=1e-6), layer.name
        # the threshold really separates the k smallest |w| from the rest
        mag = weights[layer.name].abs().flatten().double() / weights[layer.name].abs().max()
        assert int((mag <= ctx.report["init_thresholds"][layer.name]).sum()) == k


def test_threshold_masks_forward_and_backward_by_hand():
    w = torch.tensor([[0.1, -0.2, 0.4, -0.8, 1.0]])
    flat = FlatLayers({"l": w}, torch.device("cpu"), bandwidth=0.1)
    t = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    keep, sparsity = flat.masks(t)
    assert keep.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0] and sparsity.item() == pytest.approx(0.4)
    # d(sum_i c_i M_i)/dt = -sum_i c_i K(a_i - t); ds/dt = KDE of |w| at t, reflected at 0
    c = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (grad_keep,) = torch.autograd.grad((keep * c).sum(), t)
    a = torch.tensor([0.1, 0.2, 0.4, 0.8, 1.0], dtype=torch.float64)

    def phi(z):
        return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) / 0.1

    assert grad_keep.item() == pytest.approx(-(c.double() * phi((a - 0.3) / 0.1)).sum().item(), rel=1e-6)
    (grad_s,) = torch.autograd.grad(flat.masks(t)[1].sum(), t)
    exact_kde = (phi((0.3 - a) / 0.1) + phi((0.3 + a) / 0.1)).sum().item() / 5
    assert grad_s.item() == pytest.approx(exact_kde, rel=2e-3)  # KDE binned on a 1,024-point grid


def test_ste_passes_a_task_gradient_to_every_threshold(resnet20):
    model, modules, calib = resnet20
    layers = layer_infos(modules)
    weights = {n: m.weight.detach() for n, m in modules.items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _context(model, modules, calib)
    # one SGD step with the control off: every threshold moves iff its task gradient != 0
    build_allocator(
        "fcpts", init="erk", iters=1, batch_size=16, momentum=0.0, penalty=0.0, lambda_lr=0.0, **{"lambda": 0.0}
    ).allocate(layers, weights, 0.7, ctx)
    t0, t1 = ctx.report["init_thresholds"], ctx.report["learned_thresholds"]
    # (a layer ERK leaves dense is pushed below rank 0 by the task alone and stays at its bound;
    # its gradient is checked in the next test)
    pruned = [n for n in t0 if ctx.report["init_rates"][n] > 0]
    assert len(pruned) > 10 and all(t1[n] != t0[n] for n in pruned), [n for n in pruned if t1[n] == t0[n]]
    assert ctx.report["task_loss_trace"][0] > 0
    # the model is left exactly as it was: same tensors, no gradients, grad flags restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_layers_the_init_leaves_dense_get_a_usable_gradient_at_step_0(resnet20):
    """docs/methods.md#decisions: no sigmoid saturation. The rank-space threshold gives ERK's dense layers (stem,
    downsample, classifier) a task gradient of the same order as the others'; with t = sigmoid(theta)
    it was scaled by t (1 - t) ~ 1e-4."""
    model, modules, calib = resnet20
    weights = {n: m.weight.detach() for n, m in modules.items()}
    init = build_allocator("erk").allocate(layer_infos(modules), weights, 0.8)
    flat = FlatLayers(weights, torch.device("cpu"))
    counts = [num_pruned(init[n], k) for n, k in zip(flat.names, flat.numels)]
    rank = (torch.tensor(counts, dtype=torch.float64) / flat.numel_t).requires_grad_()
    assert flat.pruned_counts(flat.thresholds_at(rank).detach()) == counts  # the init stays exact
    keep, _ = flat.masks(flat.thresholds_at(rank))
    masked = {f"{n}.weight": w for n, w in zip(flat.names, flat.split(flat.weight * keep))}
    x = calib[:32]
    with torch.no_grad():
        target = model(x)
    out = torch.func.functional_call(model, masked, (x,), strict=False)
    loss = (
        torch.nn.functional.kl_div(
            torch.log_softmax(out / 4, 1), torch.log_softmax(target / 4, 1), log_target=True, reduction="batchmean"
        )
        * 16
    )
    loss.backward()
    grad = dict(zip(flat.names, rank.grad.abs().tolist()))
    dense = [n for n, k in zip(flat.names, counts) if k == 0]
    assert {"conv1", "fc"} <= set(dense) and any("downsample" in n for n in dense)
    typical = sorted(g for n, g in grad.items() if n not in dense)[len(grad) // 3]
    assert all(grad[n] > 1e-2 * typical for n in dense), {n: grad[n] / typical for n in dense}
    # ds/du = 1 in rank space: the control term moves every layer by its share N_l / N
    (ds,) = torch.autograd.grad(flat.masks(flat.thresholds_at(rank))[1].sum(), rank)
    assert ds.tolist() == pytest.approx([1.0] * len(counts))


def test_dual_lambda_keeps_the_global_rate_at_the_target_from_erk_and_prunes_erk_dense_layers(make_cfg):
    """Issue 13 acceptance: a zoo ResNet at 0.8 from ERK, no per-model tuning."""
    rec = run(
        make_cfg(
            "allocator=fcpts_erk",
            "sparsity.rate=0.8",
            "calib.num_samples=64",
            "allocator.iters=40",
            "allocator.batch_size=8",
            "allocator.lr=0.03",
            "dataset.num_test=200",
        )
    )
    alloc, sp = rec["allocation"], rec["sparsity"]
    trace = alloc["sparsity_trace"]
    after = trace[int(len(trace) * alloc["warmup"]) :]
    assert len(trace) == 40 and max(abs(s - 0.8) for s in after) <= 0.005
    assert alloc["max_abs_sparsity_error_after_warmup"] <= 0.005
    assert alloc["lambda_trace"][0] == 1.0 and alloc["lambda_trace"][-1] > 1.0  # lambda learned, from allocator.lambda
    erk_dense = [n for n, r in alloc["init_rates"].items() if r == 0.0]
    assert erk_dense and any(sp["target_per_layer"][n] > 0 for n in erk_dense), erk_dense
    assert sp["zeros"] == math.floor(0.8 * sp["total"])  # the achieved rate is exact


def test_control_loss_alone_drives_the_global_rate_to_the_target():
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32), nn.Linear(32, 10))
    modules = prunable_modules(layers)
    flat = FlatLayers({n: m.weight for n, m in modules.items()}, torch.device("cpu"))
    start = [num_pruned(0.3, n) for n in flat.numels]  # far from the target 0.7
    rank = (torch.tensor(start, dtype=torch.float64) / flat.numel_t).requires_grad_()
    alloc = build_allocator("fcpts", loss="none", iters=20, lr=0.1)
    ctx = AllocContext(model=layers, modules=modules, calib_inputs=torch.zeros(4, 64))
    traces = learn(alloc.config, rank, flat, 0.7, ctx)
    achieved = sum(flat.pruned_counts(flat.thresholds_at(rank.detach()).detach())) / sum(flat.numels)
    assert traces["sparsity"][0] == pytest.approx(0.3, abs=0.01) and traces["task"] == []
    assert abs(traces["sparsity"][1] - 0.7) < 0.005 and abs(achieved - 0.7) < 0.005
    assert traces["lambda"][1] > traces["lambda"][0] == 1.0  # dual ascent while S < S*


def test_projection_hits_the_exact_count_within_layer_bounds():
    numels = [100, 1000, 50, 7]
    for counts, target in [([10, 500, 0, 3], 600), ([90, 900, 49, 6], 700), ([0, 0, 0, 0], 300), ([5, 5, 5, 5], 15)]:
        out = project_counts(counts, numels, target)
        assert sum(out) == target
        assert all(0 <= k <= n - 1 for k, n in zip(out, numels))
        if counts[2] == 0 and sum(counts):
            assert out[2] == 0  # a dense layer stays dense under rescaling
    assert project_counts([0, 0], [2, 3], 10) == [1, 2]  # infeasible: every layer keeps one weight
    for k, n in [(7, 10), (12345, 36864), (1, 3), (0, 5)]:
        assert num_pruned(rate_for_count(k, n), n) == k


def test_pipeline_run_reaches_the_target_rate_exactly(make_cfg):
    rec = run(make_cfg("allocator=fcpts_erk", "sparsity.rate=0.7", *FAST))
    sp, alloc = rec["sparsity"], rec["allocation"]
    assert rec["status"] == "ok" and rec["choices"]["allocator"] == "fcpts_erk"
    assert sp["zeros"] == math.floor(0.7 * sp["total"]) and sp["achieved"] == pytest.approx(0.7, abs=1 / sp["total"])
    assert set(alloc["init_rates"]) == set(alloc["learned_rates"]) == set(sp["target_per_layer"])
    assert len(alloc["control_loss_trace"]) == len(alloc["task_loss_trace"]) == 4
    assert alloc["learn_time_s"] > 0 and alloc["init"] == "erk"
    assert alloc["layer_order"][0] == "conv1" and alloc["layer_order"][-1] == "fc"  # model order, not sorted


@pytest.mark.parametrize(
    "knob, value, message",
    [
        (
            "init",
            "fcpts",
            r"allocator.init='fcpts' is not a starting allocation; valid choices: alphapruning, erk, l2norm, uniform",
        ),
        ("loss", "l1", r"allocator.loss='l1'; valid choices: kl, mse, none"),
        ("kde", "box", r"allocator.kde='box'; valid choices: gaussian, histogram"),
        ("bandwidth", -1.0, r"allocator.bandwidth=-1.0 must be silverman or a number > 0"),
        ("iters", -5, r"allocator.iters=-5 must be an integer >= 0"),
        ("penalty", -1, r"allocator.penalty=-1 must be a number >= 0"),
        ("warmup", 1.5, r"allocator.warmup=1.5 must be a number < 1"),
    ],
)
def test_bad_knobs_name_the_knob_and_the_choices(knob, value, message):
    with pytest.raises(ConfigError, match=message):
        build_allocator("fcpts", **{knob: value})


def test_allocation_plot_from_records(tmp_path):
    erk = {"allocation": {"rates": {"conv1": 0.0, "layer1.conv": 0.6, "fc": 0.1}}}
    fcpts = {"sparsity": {"target_per_layer": {"conv1": 0.2, "layer1.conv": 0.7, "fc": 0.0}}}
    path = plot_layer_allocation(
        {"ERK": rates_from_record(erk), "FCPTS (ERK)": rates_from_record(fcpts)},
        "resnet20, sparsity 70%",
        tmp_path / "fig4.png",
        layer_order=["conv1", "layer1.conv"],
    )
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no per-layer rates"):
        rates_from_record({"name": "x"})


def test_bad_knob_fails_before_any_data_or_model_work(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"allocator.loss='kld'; valid choices: kl, mse, none"):
        run(make_cfg("allocator=fcpts_l2norm", "allocator.loss=kld"))
    assert not (tmp_path / "out").exists()


def test_histogram_density_and_box_kernel_by_hand():
    w = torch.tensor([0.05, -0.12, 0.18, -0.5, 1.0])
    flat = FlatLayers({"l": w}, torch.device("cpu"), kde="histogram", bins=10)
    t = torch.tensor([0.15], dtype=torch.float64, requires_grad=True)
    keep, sparsity = flat.masks(t)
    assert keep.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0] and sparsity.item() == pytest.approx(0.4)
    (grad_s,) = torch.autograd.grad(sparsity.sum(), t)
    assert grad_s.item() == pytest.approx(2 / 5 * 10)  # 2 of 5 weights in t's bin [0.1, 0.2), width 0.1
    (grad_keep,) = torch.autograd.grad((flat.masks(t)[0] * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum(), t)
    assert grad_keep.item() == pytest.approx(-(2.0 + 3.0) * 10)  # the box kernel: -(c_i / width) in t's bin


def test_train_weights_learns_on_a_copy_and_leaves_the_model_untouched(resnet20):
    model, modules, calib = resnet20
    weights = {n: m.weight.detach() for n, m in modules.items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _context(model, modules, calib)
    rates = build_allocator("fcpts", iters=2, batch_size=8, train_weights=True).allocate(
        layer_infos(modules), weights, 0.6, ctx
    )
    total = sum(w.numel() for w in weights.values())
    assert sum(num_pruned(rates[n], w.numel()) for n, w in weights.items()) == num_pruned(0.6, total)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kl_falls_back_to_mse_when_outputs_are_not_class_logits():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1)).eval()
    modules = prunable_modules(net)
    weights = {n: m.weight.detach() for n, m in modules.items()}
    ctx = AllocContext(model=net, modules=modules, calib_inputs=torch.randn(16, 1, 8, 8))
    rates = build_allocator("fcpts", init="uniform", iters=3, batch_size=4).allocate(
        layer_infos(modules), weights, 0.5, ctx
    )
    assert ctx.report["task_loss"] == "mse" and len(ctx.report["task_loss_trace"]) == 3
    assert sum(num_pruned(rates[n], w.numel()) for n, w in weights.items()) == num_pruned(0.5, 72 + 144)


def test_mse_loss_compares_the_adapters_block_outputs(resnet20):
    from ptsbench.models.adapters import get_adapter
    from ptsbench.sparsity.allocators.fcpts import BlockTaps

    model, modules, calib = resnet20
    dense = copy.deepcopy(model).eval()
    taps = BlockTaps(model, dense, get_adapter("resnet"))
    try:
        assert taps.names == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
        x = calib[:8]
        assert taps.loss(lambda: model(x), lambda: dense(x)).item() == 0.0  # same weights: no error
        with torch.no_grad():
            model.layer2[0].conv1.weight.mul_(0.5)
        try:
            loss = taps.loss(lambda: model(x), lambda: dense(x)).item()
        finally:
            with torch.no_grad():
                model.layer2[0].conv1.weight.mul_(2.0)
        assert 0.0 < loss < 1.0  # blocks from layer2.0 on differ, each relative to its dense mean square
    finally:
        taps.close()
    assert not model.layer1[0]._forward_hooks
    ctx = _context(model, modules, calib)
    ctx.extras["adapter"] = get_adapter("resnet")
    build_allocator("fcpts", loss="mse", iters=2, batch_size=4).allocate(
        layer_infos(modules), {n: m.weight.detach() for n, m in modules.items()}, 0.7, ctx
    )
    assert ctx.report["task_loss"] == "mse" and all(v > 0 for v in ctx.report["task_loss_trace"])


def test_channels_last_calibration_feeds_nhwc_batches_and_learns_the_same_allocation():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)
    ).eval()
    modules = prunable_modules(model)
    weights = {n: m.weight.detach() for n, m in modules.items()}
    calib = torch.randn(32, 3, 10, 10)  # RGB: with one channel both layouts are the same tensor
    rates, layouts = {}, {}
    for channels_last in (False, True):
        seen: list[bool] = []
        hook = model[0].register_forward_pre_hook(
            lambda _m, args, seen=seen: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        try:
            rates[channels_last] = build_allocator(
                "fcpts", iters=3, batch_size=8, channels_last=channels_last
            ).allocate(layer_infos(modules), weights, 0.6, _context(model, modules, calib))
        finally:
            hook.remove()
        layouts[channels_last] = set(seen)
    assert layouts == {False: {False}, True: {True}}  # every student forward gets the asked layout
    assert all(rates[True][n] == pytest.approx(rates[False][n], abs=1e-3) for n in weights)  # only rounding differs
