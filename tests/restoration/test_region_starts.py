"""Per-region starts: pooling, the max rule, the modes, and the held latent at a pixel's own start."""
import pytest
import torch

from pipeline.restoration.flash import start_latent
from pipeline.restoration.region_starts import held_latent, pool_tiles, region_starts
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler, NoiseSchedule
from pipeline.sampling.seeding import NOISE_INJECTION, generators, randn_per_sample
from pipeline.sampling.tiles import Tiling

DT = torch.float64
SAMPLER = DDPMSampler(NoiseSchedule.ldm_linear())


def blocks(values, tile=4, channels=1):
    """A (1, C, rows·tile, cols·tile) map constant on each tile-sized block."""
    v = torch.as_tensor(values, dtype=DT)
    return v.repeat_interleave(tile, 0).repeat_interleave(tile, 1).expand(1, channels, -1, -1).clone()


def test_pooling_is_the_tile_mean_and_exact_for_a_constant_map():
    layout = Tiling(4, "overlap", 0).layout(8, 12)
    m = blocks([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], channels=3)
    m[0, 1, 0, 0] += 0.3                                            # one element of one channel
    pooled = pool_tiles(m, layout)
    expect = torch.tensor([[[0.1 + 0.3 / 48, 0.2, 0.3], [0.4, 0.5, 0.6]]], dtype=DT)
    assert torch.allclose(pooled, expect, atol=1e-15, rtol=0)
    for c in (0.1, 0.7, 1 / 3):
        flat = torch.full((2, 8, 13, 11), c, dtype=torch.float32)
        assert (pool_tiles(flat, Tiling(4, "overlap", 1).layout(13, 11)) == flat[0, 0, 0, 0]).all()


def test_region_mode_takes_the_max_over_covering_tiles():
    m = blocks([[0.01, 0.5], [0.01, 0.01]])                          # 8×8, damage top right
    rs = region_starts(SAMPLER, m, Tiling(4, "overlap", 0).layout(8, 8), "region")
    k_low, k_high = SAMPLER.start_index(torch.tensor([0.01, 0.5])).tolist()
    assert rs.start[0, 0, :4, 4:].unique().tolist() == [k_high]
    assert rs.start[0, 0, 4:].unique().tolist() == [k_low] and rs.top.tolist() == [k_high]
    # overlapping regions: pixels shared with the damaged tile take its start, the rest their own
    lay = Tiling(4, "overlap", 2).layout(6, 6)                       # tiles at 0 and 2
    m6 = torch.full((1, 1, 6, 6), 0.01, dtype=DT)
    m6[..., 2:6, 2:6] = 0.5                                         # tile (1, 1) is entirely damaged
    rs6 = region_starts(SAMPLER, m6, lay, "region")
    assert torch.equal(rs6.start[0, 0, 2:, 2:], torch.full((4, 4), k_high))
    assert (rs6.start[0, 0, :2, :] < k_high).all() and (rs6.start[0, 0, :, :2] < k_high).all()
    assert torch.equal(rs6.sigma2[0, 0, 2:, 2:], torch.full((4, 4), 0.5, dtype=DT))


def test_image_modes():
    m = blocks([[0.01, 0.5], [0.05, 0.05]])
    layout = Tiling(4, "overlap", 0).layout(8, 8)
    image = region_starts(SAMPLER, m, layout, "image")
    worst = region_starts(SAMPLER, m, layout, "image-max")
    mean = m.mean()
    assert torch.allclose(image.sigma2, torch.full_like(image.sigma2, mean.item()), atol=1e-15)
    assert image.start.unique().tolist() == SAMPLER.start_index(mean.view(1)).tolist()
    assert worst.start.unique().tolist() == SAMPLER.start_index(torch.tensor([0.5])).tolist()
    assert worst.top == region_starts(SAMPLER, m, layout, "region").top
    with pytest.raises(ValueError, match="region mode"):
        region_starts(SAMPLER, m, layout, "tile")


@pytest.mark.parametrize("value", [0.013, 0.1, 0.37])
def test_uniform_map_gives_the_same_starts_in_every_mode(value):
    m = torch.full((2, 3, 9, 7), value, dtype=torch.float32)
    layout = Tiling(4, "overlap", 1).layout(9, 7)
    modes = [region_starts(SAMPLER, m, layout, mode) for mode in ("region", "image", "image-max")]
    for rs in modes[1:]:
        assert torch.equal(rs.start, modes[0].start) and torch.equal(rs.sigma2, modes[0].sigma2)
    assert (modes[0].sigma2 == m[0, 0, 0, 0]).all()


@pytest.mark.parametrize("c", [1.2, 0.0, None, 30.0])
def test_held_latent_at_its_own_start_is_flashs_start_latent(c):
    sampler = DDIMSampler(NoiseSchedule.ldm_linear(), 50)
    keys = ["a", "b"]
    z_hat = torch.randn(2, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    m = torch.cat([blocks([[0.02, 0.3], [0.1, 0.02]]), blocks([[0.2, 0.2], [0.9, 0.05]])])
    rs = region_starts(sampler, m, Tiling(4, "overlap", 0).layout(8, 8), "region")
    noise = randn_per_sample((3, 8, 8), generators(5, keys, NOISE_INJECTION), dtype=DT)
    seen = torch.zeros_like(rs.start, dtype=torch.bool)
    for k in rs.start.unique().tolist():
        held = held_latent(z_hat, noise, rs.sigma2, rs.start, k, sampler, c)
        at = rs.start == k
        for b in range(2):
            for s2 in rs.sigma2[b][at[b]].unique():
                flash = start_latent(z_hat, torch.full((2,), s2.item(), dtype=DT), c,
                                     generators(5, keys, NOISE_INJECTION))
                pix = (at[b] & (rs.sigma2[b] == s2)).expand(3, -1, -1)
                assert torch.equal(held[b][pix], flash[b][pix])
                seen[b] |= at[b] & (rs.sigma2[b] == s2)
    assert seen.all()


def test_held_latent_grows_noisier_above_its_start():
    sampler = DDPMSampler(NoiseSchedule.ldm_linear())
    z_hat = torch.ones(1, 1, 4, 4, dtype=DT)
    noise = torch.zeros(1, 1, 4, 4, dtype=DT)                        # the ẑ share is √(1 − v)
    sigma2 = torch.full((1, 1, 4, 4), 0.05, dtype=DT)
    start = SAMPLER.start_index(sigma2.flatten()[:1]).view(1, 1, 1, 1).expand(1, 1, 4, 4)
    s = int(start[0, 0, 0, 0])
    shares = [held_latent(z_hat, noise, sigma2, start, k, sampler, 1.2)[0, 0, 0, 0].item()
              for k in (s, s + 50, s + 200, 999)]
    assert shares[0] == pytest.approx((1 - 1.2 * 0.05) ** 0.5)
    assert all(a > b for a, b in zip(shares, shares[1:]))
    # far above the start the held latent is at the forward process's own level
    a = sampler.alphas[999].item()
    assert shares[-1] ** 2 == pytest.approx(a, rel=0.3)


def test_bad_maps_are_refused():
    layout = Tiling(4).layout(8, 8)
    with pytest.raises(ValueError, match="finite"):
        region_starts(SAMPLER, torch.full((1, 1, 8, 8), -0.1), layout)
    with pytest.raises(ValueError, match="layout"):
        region_starts(SAMPLER, torch.full((1, 1, 8, 9), 0.1), layout)
