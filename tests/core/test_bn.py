from __future__ import annotations

import pytest
import torch
from torch import nn

from ws_core.bn import BNStatistics, collect_bn_statistics, kept_bn_buffers, recalibrate_bn


def _reference_recalibration(sub: torch.nn.Module, batches) -> torch.nn.Module:
    """torch's own BatchNorm2d with momentum=None (cumulative average) on the extracted SubNet."""
    sub.eval()
    for m in sub.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for x, _ in batches:
            sub(x)
    return sub.eval()


def test_recalibration_equals_torch_batchnorm_cumulative_average(tiny_mbv3, images):
    net = tiny_mbv3
    cfg = net.space.sample(torch.Generator().manual_seed(3))
    reference = _reference_recalibration(net.extract(cfg), images)
    stats = recalibrate_bn(net, images, cfg=cfg, num_batches=len(images))
    assert stats.config == cfg
    mine = net.extract(cfg).eval()
    ref_state, my_state = reference.state_dict(), mine.state_dict()
    for key in ref_state:
        if key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(my_state[key], ref_state[key], atol=1e-5, rtol=1e-4)
    x = images[0][0]
    net.eval()
    net.activate(cfg)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), atol=1e-4, rtol=1e-4)


def test_recalibration_touches_only_the_subnets_channels(tiny_mbv3, images):
    net = tiny_mbv3
    bn = net.stages[0].blocks[0].bn1
    with torch.no_grad():
        bn.running_mean.fill_(7.0)
    before_skipped = net.stages[0].blocks[3].bn1.running_mean.clone()
    cfg = net.space.min()
    recalibrate_bn(net, images, cfg=cfg, num_batches=2)
    mid = net.stages[0].blocks[0]._mid[min(net.space["expand"].choices)]
    assert torch.all(bn.running_mean[mid:] == 7.0)
    assert not torch.any(bn.running_mean[:mid] == 7.0)
    assert torch.equal(net.stages[0].blocks[3].bn1.running_mean, before_skipped)  # skipped block


def test_recalibration_restores_modes_momentum_and_active(tiny_mbv3, images):
    net = tiny_mbv3.train()
    active = net.active
    recalibrate_bn(net, images, cfg=net.space.min(), num_batches=1)
    assert net.training and all(m.training for m in net.modules())
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.active == active


def test_statistics_store_and_reapply(tiny_mbv3, images, tmp_path):
    net = tiny_mbv3
    cfg = net.space.sample(torch.Generator().manual_seed(5))
    stats = recalibrate_bn(net, images, cfg=cfg, num_batches=3)
    path = tmp_path / "bn.safetensors"
    stats.save(str(path))
    loaded = BNStatistics.load(str(path))
    assert loaded.config == cfg and loaded.subnet_id == cfg.id
    assert set(loaded.stats) == set(stats.stats)
    # overwrite the statistics with another SubNet's, then re-apply the stored ones
    recalibrate_bn(net, images[1:], cfg=net.space.max(), num_batches=3)
    assert not torch.equal(collect_bn_statistics(net, cfg).stats["stem.conv.bn"][0], stats.stats["stem.conv.bn"][0])
    loaded.apply(net)
    again = collect_bn_statistics(net, cfg)
    for name, (mean, var) in stats.stats.items():
        torch.testing.assert_close(again.stats[name][0], mean)
        torch.testing.assert_close(again.stats[name][1], var)
    assert list(tmp_path.iterdir()) == [path]  # atomic write left no temporary file


def test_bad_inputs(tiny_mbv3, images, tmp_path):
    net = tiny_mbv3
    before = collect_bn_statistics(net, net.space.max())
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        recalibrate_bn(net, images, num_batches=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        recalibrate_bn(net, [], num_batches=2)
    after = collect_bn_statistics(net, net.space.max())
    for name in before.stats:
        assert torch.equal(before.stats[name][0], after.stats[name][0])  # nothing lost
    bogus = BNStatistics(net.active, {"stem.conv.conv": (torch.zeros(3), torch.ones(3))})
    with pytest.raises(ValueError, match="not a BatchNorm"):
        bogus.apply(net)
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        BNStatistics.load(str(tmp_path / "x.safetensors"))


def test_kept_bn_buffers_restores_every_buffer_even_after_an_error():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    net[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "batches" in k}
    with pytest.raises(RuntimeError, match="boom"), kept_bn_buffers(net) as snapshot:
        net.train()
        net(torch.randn(4, 1, 3, 3))  # updates running stats and the batch counter
        assert int(net[1].num_batches_tracked) == 1
        raise RuntimeError("boom")
    assert set(snapshot) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value), key
