"""Schedules and samplers: the start-step rule, the grid, and per-sample stepping."""
import pytest
import torch

from pipeline.sampling.schedules import DDIMSampler, DDPMSampler, NoiseSchedule, make_sampler
from pipeline.sampling.seeding import generators, sample_seed


def test_ldm_linear_schedule_matches_reference_endpoints():
    s = NoiseSchedule.ldm_linear()
    assert s.num_timesteps == 1000
    assert s.alphas_cumprod[0].item() == pytest.approx(0.9985, abs=1e-12)
    assert s.alphas_cumprod[-1].item() == pytest.approx(1.42e-4, rel=0.01)


def test_start_step_rule_reproduces_flash_spec_3_2():
    ddpm = DDPMSampler(NoiseSchedule.ldm_linear())
    sigma2 = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 1.0])
    assert ddpm.start_index(sigma2).tolist() == [29, 54, 76, 95, 112, 127, 141, 153, 176, 254]
    ddim = DDIMSampler(NoiseSchedule.ldm_linear(), 500)
    assert ddim.start_index(torch.tensor([0.1, 0.2, 0.3, 0.5])).tolist() == [27, 47, 63, 87]


def test_ddim_grid_is_ldm_uniform_and_nfe_is_exact():
    ddim = DDIMSampler(NoiseSchedule.ldm_linear(), 500)
    assert ddim.grid[:3].tolist() == [1, 3, 5] and ddim.grid[-1].item() == 999
    # no start value falls back to a full run: index 0 is one step, K-1 is the whole grid
    assert DDIMSampler.nfe(torch.tensor([0, 26, 499])).tolist() == [1, 27, 500]


def test_tiny_sigma_starts_at_first_step_not_from_noise():
    ddim = DDIMSampler(NoiseSchedule.ldm_linear(), 500)
    assert ddim.start_index(torch.tensor([1e-6, 0.0])).tolist() == [0, 0]


@pytest.mark.parametrize("name,kwargs", [("ddpm", {}), ("ddim", {"num_steps": 10, "eta": 1.0}), ("ddim", {"num_steps": 10, "eta": 0.0})])
def test_step_is_per_sample_exact(name, kwargs):
    sampler = make_sampler(name, NoiseSchedule.ldm_linear(50), **kwargs)
    z = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(z)
    idx = torch.tensor([0, 3, 7, 2, 9])
    keys = [f"k{i}" for i in range(5)]
    batched, x0 = sampler.step(z, eps, idx, generators(0, keys, "sampler"))
    for i in range(5):
        alone, x0_alone = sampler.step(z[i:i + 1], eps[i:i + 1], idx[i:i + 1], generators(0, keys[i:i + 1], "sampler"))
        assert torch.equal(alone[0], batched[i]) and torch.equal(x0_alone[0], x0[i])


def test_last_step_lands_on_predicted_clean_latent():
    sampler = DDPMSampler(NoiseSchedule.ldm_linear(50))
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(z)
    out, x0 = sampler.step(z, eps, torch.tensor([0, 0]), generators(0, ["a", "b"], "sampler"))
    assert torch.allclose(out, x0)


def test_seeds_depend_on_key_and_purpose_only():
    assert sample_seed(1, "a", "x") == sample_seed(1, "a", "x")
    assert len({sample_seed(1, "a", "x"), sample_seed(2, "a", "x"), sample_seed(1, "b", "x"), sample_seed(1, "a", "y")}) == 4


def test_unknown_sampler_and_bad_steps_fail():
    with pytest.raises(ValueError):
        make_sampler("euler", NoiseSchedule.ldm_linear())
    with pytest.raises(ValueError):
        DDIMSampler(NoiseSchedule.ldm_linear(), 0)
