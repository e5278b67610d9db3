import numpy as np
import pytest
import torch

from oscar_model.factory import TINY_LADDER
from oscar_model.rates import RateLadder, RatePoint
from oscar_model.schedule import ScaledLinearSchedule


def test_nominal_bpp_is_derived():
    p = RatePoint(index=0, downsample=8, codebook_size=256, timestep=500)
    assert p.nominal_bpp == pytest.approx(8 / 64**2)  # the reference's 0.0019 level
    assert RatePoint(index=0, downsample=1, codebook_size=256, groups=2, timestep=1).nominal_bpp == 0.25


def test_tiny_ladder_spans_the_promised_range():
    bpps = [p.nominal_bpp for p in TINY_LADDER]
    assert len(bpps) >= 6 and bpps == sorted(bpps)
    assert bpps[0] == pytest.approx(0.0098, abs=1e-3) and bpps[-1] == pytest.approx(0.375)


def test_resolve_int_and_float():
    assert TINY_LADDER.resolve(2).index == 2
    assert TINY_LADDER.resolve(0.12).index == 3
    assert TINY_LADDER.resolve(0.004).index == 0  # below L0, within one level's spacing
    with pytest.raises(ValueError, match="L0 0.009766, L1 0.03125, .* L6 0.375 bpp"):
        TINY_LADDER.get(7)
    # Beyond either end by more than a level's spacing: refused, with the ladder (5.0 once ran L6).
    for far in (0.001, 0.6, 5.0):
        with pytest.raises(ValueError, match=f"{far:g} bpp is beyond this model's ladder"):
            TINY_LADDER.resolve(far)
    with pytest.raises(TypeError):
        TINY_LADDER.resolve(True)
    assert [p.index for p in TINY_LADDER.resolve_many([0.03, 1, 0.25])] == [1, 5]


def test_ladder_validation():
    with pytest.raises(ValueError):
        RatePoint(index=0, downsample=3, codebook_size=16, timestep=1)
    with pytest.raises(ValueError):
        RateLadder((RatePoint(index=1, downsample=1, codebook_size=16, timestep=1),))


def test_schedule_matches_diffusers_scaled_linear():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    np.testing.assert_allclose(ScaledLinearSchedule().alphas_cumprod, ref.double().numpy(), rtol=1e-5)


def test_reference_timesteps_give_documented_cosines():
    s = ScaledLinearSchedule()
    assert s.sqrt_alpha_bar(500) == pytest.approx(0.526, abs=2e-3)
    assert s.sqrt_alpha_bar(150) == pytest.approx(0.910, abs=2e-3)
    assert s.timestep_for_cosine(s.sqrt_alpha_bar(310)) == 310


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_recovered_from_exact_prediction(prediction_type):
    s = ScaledLinearSchedule()
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([10, 300, 900])
    abar = torch.tensor(s.alphas_cumprod, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    target = {"epsilon": eps, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0, "sample": x0}
    torch.testing.assert_close(s.predict_x0(xt, target[prediction_type], t, prediction_type), x0, atol=2e-4, rtol=1e-4)


def test_typical_bpp_steers_nearest_and_survives_json():
    """A user's bpp is matched against what levels cost on photos once that is measured."""
    measured = TINY_LADDER.with_typical_bpp([0.009, 0.022, 0.045, 0.08, 0.125, 0.15, 0.28])
    assert TINY_LADDER.nearest(0.125).index == 3  # nominal 0.125
    assert measured.nearest(0.125).index == 4  # level 4 typically lands at 0.125
    assert measured.get(4).expected_bpp == 0.125 and TINY_LADDER.get(4).expected_bpp == TINY_LADDER.get(4).nominal_bpp
    assert RateLadder.from_dicts(measured.to_dicts()) == measured
    with pytest.raises(ValueError, match="typical_bpp"):
        RatePoint(index=0, downsample=1, codebook_size=16, timestep=1, typical_bpp=0.0)
