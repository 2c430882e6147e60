"""The stop rule (sonoseg.training.stopping) and precise BatchNorm (sonoseg.training.bn_recalibration);
docs/stopping.md."""

import copy
import io
import json
import math
import random

import pytest
import torch
from torch import nn

from sonoseg.networks import models
from sonoseg.training.bn_recalibration import batchnorm_layers, recalibrate_batchnorm, recalibration_slices
from sonoseg.training.stopping import StopRule, StopSettings, median, replay

QUICK = dict(patience=5, min_epochs=10, max_epochs=30)  # config/quick.yaml


def old_rule(losses, patience, min_epochs, max_epochs):
    """src/sonoseg/training/train.py's rule before this module, transcribed: patience counted from the raw best.
    Returns (epochs trained, best epoch)."""
    best, best_epoch, stale, epoch = math.inf, 0, 0, 0
    while epoch < max_epochs:
        if epoch >= min_epochs and stale >= patience:
            break
        loss = losses[epoch]
        epoch += 1
        if loss < best:
            best, best_epoch, stale = loss, epoch, 0
        else:
            stale += 1
    return epoch, best_epoch


def median_rule(losses, patience, min_epochs, max_epochs, window=3):
    """A pure median rule, for comparison: patience counted from the best median of the last `window`
    losses only (a raw new low does not reset it). Returns the epochs trained."""
    best, stale = math.inf, 0
    for epoch in range(1, max_epochs + 1):
        recent = sorted(losses[max(0, epoch - window) : epoch])
        if len(recent) == window:
            if recent[window // 2] < best:
                best, stale = recent[window // 2], 0
            else:
                stale += 1
        if epoch >= min_epochs and len(recent) == window and stale >= patience:
            return epoch
    return max_epochs


def slow_descent_with_dip(dip_epoch=3, dip=0.30, epochs=30):
    """A validation loss falling slowly (0.01 per epoch from 0.89) with one early epoch far down."""
    losses = [0.9 - 0.01 * t for t in range(1, epochs + 1)]
    losses[dip_epoch - 1] = dip
    return losses


# ----------------------------------------------------------------------------- the stop rule


def test_a_single_spurious_dip_stops_the_old_rule_but_not_the_new_one():
    losses = slow_descent_with_dip()
    epochs, best_epoch = old_rule(losses, **QUICK)
    assert (epochs, best_epoch) == (10, 3)  # the old rule: stopped at min_epochs, kept the dip

    decisions = replay(losses, StopSettings(**QUICK, window=3))
    assert len(decisions) == 30  # the new rule trains to the cap: the median kept improving
    assert decisions[-1].stop
    # A window holding the dip has the later of its other two values as median: one epoch ahead of a
    # monotone window's lag, so the window after it repeats that value - one stale epoch, never more.
    assert [d.stale_epochs for d in decisions].count(1) == 1 and max(d.stale_epochs for d in decisions) == 1
    # The dip is never the monitored value, and never reaches the plateau scheduler.
    assert all(d.plateau_value is None or d.plateau_value > 0.5 for d in decisions)


@pytest.mark.parametrize("dip_epoch", [1, 2, 3, 5, 8, 12])
def test_a_dip_anywhere_is_ignored(dip_epoch):
    decisions = replay(slow_descent_with_dip(dip_epoch=dip_epoch), StopSettings(**QUICK, window=3))
    assert len(decisions) == 30
    assert max(d.stale_epochs for d in decisions) <= 1  # the dip's window: at most one stale epoch


def test_a_single_spurious_spike_does_not_count_as_stale_either():
    losses = [0.9 - 0.01 * t for t in range(1, 31)]
    losses[14] = 2.0
    decisions = replay(losses, StopSettings(**QUICK, window=3))
    assert len(decisions) == 30
    assert all(d.plateau_value is None or d.plateau_value < 1 for d in decisions)


def test_the_plateau_scheduler_fed_the_monitored_value_does_not_halve_on_the_dip():
    def final_lr(values):
        optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3)
        for value in values:
            if value is not None:
                scheduler.step(value)
        return optimizer.param_groups[0]["lr"]

    losses = slow_descent_with_dip()
    assert final_lr(losses[:10]) < 1e-3  # the old wiring: raw losses, halved after the dip
    assert final_lr([d.plateau_value for d in replay(losses, StopSettings(**QUICK, window=3))]) == 1e-3


def test_the_kept_weights_are_the_lowest_raw_loss():
    losses = slow_descent_with_dip()
    rule = StopRule(StopSettings(**QUICK, window=3))
    keeps = [rule.update(v).keep_weights for v in losses]
    assert [i + 1 for i, k in enumerate(keeps) if k] == [1, 2, 3]  # the dip stays the lowest raw loss
    assert (rule.best_epoch, rule.best_loss) == (3, 0.30)

    losses = slow_descent_with_dip(dip=0.70)  # a dip that later epochs beat
    rule = StopRule(StopSettings(**QUICK, window=3))
    for v in losses:
        rule.update(v)
    assert rule.best_epoch == 30


def test_it_still_stops_on_a_real_plateau():
    losses = [1.0 - 0.05 * t for t in range(1, 11)] + [0.5] * 40  # improves to epoch 10, then flat
    decisions = replay(losses, StopSettings(patience=5, min_epochs=1, max_epochs=50, window=3))
    # The median of 3 last improves at epoch 11 (median of 0.55, 0.5, 0.5); five stale epochs later it stops.
    assert [d.epoch for d in decisions if d.improved][-1] == 11
    assert len(decisions) == 16 and decisions[-1].stop
    assert old_rule(losses, 5, 1, 50)[0] == 15  # one epoch later than the raw rule: the median's lag


def test_a_single_new_low_after_a_bump_still_counts():
    """The quick study's Lighter U-net @128 (bf16, precise BN), epochs 15-30: a four-epoch bump (the
    training loss jumped too), then a new low. The median ignores that one epoch; the raw new low is
    progress all the same, so the run goes on (a pure median rule stopped it at epoch 25)."""
    losses = [0.9 - 0.04 * t for t in range(1, 15)]
    losses += [0.358, 0.334, 0.347, 0.336, 0.303, 0.286, 0.400, 0.342, 0.393, 0.402, 0.273]
    losses += [0.283, 0.224, 0.219, 0.198, 0.201]
    assert median_rule(losses, **QUICK) == 25
    decisions = replay(losses, StopSettings(**QUICK, window=3))
    assert decisions[24].progress and not decisions[24].improved
    assert len(decisions) == 30 and [d.epoch for d in decisions if d.keep_weights][-1] == 29


def test_it_never_stops_earlier_than_the_old_rule_or_a_pure_median_rule():
    generator = random.Random(2)
    for _ in range(300):
        trend = generator.uniform(0, 0.03)
        noise = generator.uniform(0, 0.2)
        losses = [1 - trend * t + generator.gauss(0, noise) for t in range(40)]
        patience, min_epochs = generator.randint(1, 6), generator.randint(3, 12)
        ours = len(replay(losses, StopSettings(patience=patience, min_epochs=min_epochs, max_epochs=40, window=3)))
        assert ours >= old_rule(losses, patience, min_epochs, 40)[0]
        assert ours >= median_rule(losses, patience, min_epochs, 40)


def test_it_stops_on_a_noisy_plateau():
    losses = [1.0 - 0.05 * t for t in range(1, 11)] + [0.5, 0.45] * 20  # flat, alternating
    decisions = replay(losses, StopSettings(patience=5, min_epochs=1, max_epochs=50, window=3))
    assert decisions[-1].stop and len(decisions) < 20


def test_min_and_max_epochs_are_respected():
    flat = [0.5] * 100
    decisions = replay(flat, StopSettings(patience=0, min_epochs=7, max_epochs=20, window=3))
    assert len(decisions) == 7  # would stop at once: held to min_epochs
    decisions = replay(flat, StopSettings(patience=2, min_epochs=1, max_epochs=20, window=3))
    assert len(decisions) == 5  # the window fills at 3, then two stale epochs
    falling = [1 - 0.001 * t for t in range(100)]
    decisions = replay(falling, StopSettings(patience=2, min_epochs=1, max_epochs=20, window=3))
    assert len(decisions) == 20 and decisions[-1].stop
    rule = StopRule(StopSettings(patience=2, min_epochs=1, max_epochs=3, window=1))
    for v in (0.3, 0.2, 0.1):
        rule.update(v)
    with pytest.raises(ValueError, match="after the rule said stop"):
        rule.update(0.05)


def test_window_one_is_the_old_rule():
    generator = random.Random(0)
    for _ in range(200):
        losses = [generator.uniform(0, 1) for _ in range(40)]
        patience, min_epochs = generator.randint(0, 6), generator.randint(1, 12)
        decisions = replay(losses, StopSettings(patience=patience, min_epochs=min_epochs, max_epochs=40, window=1))
        kept = [d.epoch for d in decisions if d.keep_weights][-1]
        assert (len(decisions), kept) == old_rule(losses, patience, min_epochs, 40)


def test_the_window_fills_before_anything_is_monitored():
    rule = StopRule(StopSettings(patience=5, min_epochs=1, max_epochs=30, window=3))
    decisions = [rule.update(v) for v in (0.1, 0.9, 0.8, 0.7)]
    assert [d.monitored for d in decisions] == [None, None, 0.8, 0.8]
    assert [d.plateau_value for d in decisions] == [None, None, 0.8, 0.8]
    assert [d.improved for d in decisions] == [False, False, True, False]
    assert [d.progress for d in decisions] == [True, False, True, False]  # epoch 1: a raw new low
    assert median([0.1, 0.9]) == 0.9  # an even count: the upper middle value


def test_state_round_trip_resumes_identically():
    generator = random.Random(1)
    losses = [0.9 - 0.01 * t + generator.gauss(0, 0.05) for t in range(60)]
    settings = StopSettings(patience=5, min_epochs=10, max_epochs=60, window=3)
    whole = replay(losses, settings)
    for kill_after in range(len(whole)):
        rule = StopRule(settings)
        first = [rule.update(v) for v in losses[:kill_after]]
        saved = json.loads(json.dumps(rule.state_dict()))  # plain numbers and lists
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        buffer.seek(0)
        restored = StopRule.from_state_dict(torch.load(buffer, weights_only=True))
        assert restored.state_dict() == rule.state_dict()
        rest = []
        while not restored.stop:
            rest.append(restored.update(losses[restored.epoch], epoch=restored.epoch + 1))
        assert first + rest == whole


def test_state_of_other_settings_is_refused():
    rule = StopRule(StopSettings(patience=5, min_epochs=10, max_epochs=30, window=3))
    rule.update(0.5)
    other = StopRule(StopSettings(patience=5, min_epochs=10, max_epochs=30, window=5))
    with pytest.raises(ValueError, match="settings"):
        other.load_state_dict(rule.state_dict())
    with pytest.raises(ValueError, match="format"):
        other.load_state_dict({"epoch": 1})


def test_decisions_are_deterministic_and_checked():
    losses = slow_descent_with_dip()
    settings = StopSettings(**QUICK, window=3)
    assert replay(losses, settings) == replay(list(losses), settings)
    rule = StopRule(settings)
    with pytest.raises(ValueError, match="not finite"):
        rule.update(float("nan"))
    with pytest.raises(ValueError, match="expected epoch 1"):
        rule.update(0.5, epoch=2)
    with pytest.raises(ValueError):
        StopSettings(patience=1, min_epochs=5, max_epochs=3)


def test_settings_from_a_recipe():
    class Recipe:  # the fields src/sonoseg/training/recipe.py carries (early_stopping_window: docs/stopping.md)
        early_stopping_patience, min_epochs, max_epochs = 5, 10, 30

    assert StopSettings.from_recipe(Recipe()) == StopSettings(5, 10, 30, 3)
    Recipe.early_stopping_window = 1
    assert StopSettings.from_recipe(Recipe()).window == 1


# ----------------------------------------------------------------------------- precise BatchNorm


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.conv2, self.bn2 = nn.Conv2d(4, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn2(self.conv2(self.drop(torch.relu(self.bn1(self.conv1(x))))))


def images(n=10, size=8, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def channel_stats(h):
    flat = h.transpose(0, 1).flatten(1).double()
    return flat.mean(1), flat.var(1, unbiased=True)


def test_recalibrated_statistics_are_the_datas_own():
    """Eval outputs after recalibration equal a model whose statistics were computed by hand from the data."""
    torch.manual_seed(0)
    model = TwoBlocks()
    for bn in batchnorm_layers(model):  # stale, wrong statistics, as after a few training steps
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(0.01)
    x8 = images()
    x = x8.float() / 255

    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        h1 = model.conv1(x)
        m1, v1 = channel_stats(h1)
        # One batch of all images: the second layer sees the first normalised by the batch's own statistics.
        normalised = (h1 - h1.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            h1.var((0, 2, 3), unbiased=False, keepdim=True) + model.bn1.eps
        )
        normalised = normalised * model.bn1.weight.view(1, -1, 1, 1) + model.bn1.bias.view(1, -1, 1, 1)
        m2, v2 = channel_stats(model.conv2(torch.relu(normalised)))  # Dropout off
    for bn, (m, v) in ((reference.bn1, (m1, v1)), (reference.bn2, (m2, v2))):
        bn.running_mean.copy_(m.float())
        bn.running_var.copy_(v.float())

    model.train()
    tracked = model.bn1.num_batches_tracked.clone()
    assert recalibrate_batchnorm(model, x8, batch_size=len(x8)) == 2
    assert model.training and model.drop.training  # modes restored
    assert torch.equal(model.bn1.num_batches_tracked, tracked)
    for ours, theirs in zip(batchnorm_layers(model), batchnorm_layers(reference)):
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-4, atol=1e-5)


def test_a_first_layers_statistics_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = TwoBlocks()
    x8 = images(n=11)
    m1, v1 = channel_stats(model.conv1(x8.float() / 255).detach())
    for batch_size in (1, 2, 3, 4, 11):
        recalibrate_batchnorm(model, x8, batch_size=batch_size)
        torch.testing.assert_close(model.bn1.running_mean, m1.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.bn1.running_var, v1.float(), rtol=1e-5, atol=1e-6)
    assert recalibration_slices(11, 2)[-1] == slice(8, 11)  # no lone last sample
    assert recalibration_slices(11, 3) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 11)]


def test_recalibration_equals_pytorchs_own_statistics_on_a_study_network():
    """lighter_unet_c128 (the issue's network): with one batch of all images, the statistics are the ones
    PyTorch itself records with momentum 1 (this batch only), and eval mode then matches."""
    torch.manual_seed(0)
    model = models.build("lighter_unet_c128")
    x8 = images(n=6, size=32)
    reference = copy.deepcopy(model)
    reference.eval()
    for bn in batchnorm_layers(reference):
        bn.momentum = 1.0
        bn.train()
    with torch.no_grad():
        reference(x8.float() / 255)
    reference.eval()

    recalibrate_batchnorm(model, x8, batch_size=len(x8))
    for ours, theirs in zip(batchnorm_layers(model), batchnorm_layers(reference)):
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x8.float() / 255), reference(x8.float() / 255), rtol=1e-3, atol=1e-3)


def test_recalibration_is_deterministic_and_takes_a_forward():
    torch.manual_seed(0)
    model = TwoBlocks()
    x8 = images()
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    recalibrate_batchnorm(a, x8, batch_size=4)
    recalibrate_batchnorm(b, x8.float() / 255, batch_size=4)  # float input taken as is
    calls = []
    recalibrate_batchnorm(model, x8, batch_size=4, forward=lambda m, x: calls.append(len(x)) or m(x))
    assert calls == [4, 4, 2]
    for one, other in ((a, b), (a, model)):
        for k, v in one.state_dict().items():
            assert torch.equal(v, other.state_dict()[k]), k
    assert recalibrate_batchnorm(nn.Conv2d(3, 1, 1), x8, batch_size=4) == 0  # no BatchNorm: nothing run


def test_the_rule_says_whether_the_cap_or_the_rule_ended_training():
    from sonoseg.training.stopping import StopRule, StopSettings

    improving = StopRule(StopSettings(patience=2, min_epochs=1, max_epochs=3, window=1))
    ended = [improving.update(v).stop for v in (0.9, 0.8, 0.7)]
    assert ended == [False, False, True] and improving.ended_by == "cap"
    stale = StopRule(StopSettings(patience=2, min_epochs=1, max_epochs=10, window=1))
    for value in (0.5, 0.6, 0.7):
        stale.update(value)
    assert stale.stop and stale.ended_by == "rule"
    # Both at once (no progress for `patience` epochs, on the last allowed epoch): the rule ended it.
    both = StopRule(StopSettings(patience=2, min_epochs=1, max_epochs=3, window=1))
    for value in (0.5, 0.6, 0.7):
        both.update(value)
    assert both.ended_by == "rule"
